#!/usr/bin/env python3
"""Paddle fixtures for vidkit's Paddle parity test (bins/tests/parity_paddle.rs); runs in the
paddle tier of scripts/peers.sh (PaddlePaddle's CPU wheel, ppvideo 2.3.1).

--what model: builds a PaddleVideo recognizer with ppvideo's own classes from paddle.seed(SEED),
with the settings of PaddleVideo's configs except num_classes and num_seg:
  pptsm_r50vd       Recognizer2D, ResNetTweaksTSM depth 50, ppTSMHead
                    (configs/recognition/pptsm/pptsm_k400_frames_uniform.yaml)
  pptsmv2_lcnetv2   Recognizer2D, PPTSM_v2 (PP-LCNetV2, classifier inside), MoViNetHead
                    (configs/recognition/pptsm/v2/pptsm_lcnet_k400_8frames_uniform.yaml);
                    --temporal-attention sets use_temporal_att (the LTA module, off there)
randomises BatchNorm (affine parameters and running statistics, so that no BN is the identity)
and the classifier's bias, runs it in eval mode on a fixed random input [B, T, 3, H, W] and
writes into OUT_DIR:

  model.pdparams  paddle.save(model.state_dict()) with Paddle's default pickle protocol (4)
  input.npy       float32 [B, T, 3, H, W], already normalised
  logits.npy      float32 [B, num_classes]  (Recognizer2D.test_step: no softmax)
  logits_bf16.npy the same with every convolution's and Linear layer's input and weight rounded
                  to bfloat16 (ties to even), products summed in float32: what
                  torch.autocast("cpu", dtype=torch.bfloat16) computes, the reference drift for
                  vidkit's --precision bf16 (Paddle's own CPU bf16 AMP needs AVX512-BF16)
  meta.json       the arguments, Paddle's and numpy's versions, max |logit|

--what formats: .pdparams files written by paddle.save for the reader's tests, each a dict whose
arrays all hold arange(n) in C order (in their own dtype and shape), so the reader can be checked
without a second file format; for pickle protocols N = 2, 3, 4:

  state-pN.pdparams   a state dict of paddle.Tensors (paddle.save's state-dict path: numpy
                      arrays plus the StructuredToParameterName@@ table), one per dtype:
      a.f32 float32 [2, 3, 4], a.f64 float64 [5], a.f16 float16 [3, 2], a.i64 int64 [4],
      a.i32 int32 [2, 2], a.u8 uint8 [6], a.bool bool [2] (arange(2) > 0)
  mixed-pN.pdparams   a dict of numpy arrays and one tensor (not a state dict to Paddle, so its
                      general pickler writes the tensor as builtins.tuple(((name, array),))):
      a.f32 paddle.Tensor float32 [2, 3, 4], a.fortran numpy float32 [3, 4] in Fortran order,
      a.big numpy big-endian float32 [2, 5], a.i64 numpy int64 [4]
  split-p2.pdparams   protocol 2 with `a.split` float32 [4, 6] cut into flat parts a.split@@.0..2
      and described under UnpackBigParamInfor@@, the layout paddle.save uses for arrays over
      2^30 bytes at protocols 2 and 3 (io_utils._unpack_saved_dict); written here with pickle
      directly, as a real one would need a 1 GiB array.

PaddleVideo's Recognizer2D reshapes its input in place (paddle.reshape_): it gets a copy.

Usage: export_paddle_parity.py --what model --arch pptsm_r50vd --seed 0 --out DIR
       [--frames 8] [--size 64x80] [--batch 2] [--classes 17] [--temporal-attention]
       export_paddle_parity.py --what formats --out DIR
"""
import argparse
import json
import os
import pickle
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import paddle  # noqa: E402


def randomise_bn(model, seed, h, w, frames):
    """Random BatchNorm affine parameters, running statistics measured on random clips then
    perturbed (so the net neither explodes nor collapses), and a small gain on the last BN of each
    residual branch (trained ResNets have them; gains near 1 make a random deep ResNet chaotic,
    amplifying float32 rounding towards the parity limit)."""
    rng = np.random.default_rng(seed + 1)
    bns = [(n, m) for n, m in model.named_sublayers() if isinstance(m, paddle.nn.BatchNorm2D)]
    for name, m in bns:
        c = m.weight.shape[0]
        lo, hi = (0.2, 0.6) if ".conv2." in name else (0.5, 1.5)
        m.weight.set_value(rng.uniform(lo, hi, c).astype("float32"))
        m.bias.set_value(rng.normal(0.0, 0.2, c).astype("float32"))
        m._momentum = 0.0  # running statistics := those of the calibration batch
    model.train()
    with paddle.no_grad():
        x = paddle.to_tensor(rng.standard_normal((2, frames, 3, h, w)).astype("float32"))
        model.test_step([x])
    for _, m in bns:
        c = m.weight.shape[0]
        var = m._variance.numpy() * rng.uniform(0.7, 1.4, c)
        mean = m._mean.numpy() + rng.normal(0.0, 0.1, c) * np.sqrt(var)
        m._variance.set_value(var.astype("float32"))
        m._mean.set_value(mean.astype("float32"))
        m._momentum = 0.9
    model.eval()


def build_recognizer(arch, frames, classes, seed, temporal_attention=False):
    """ppvideo's Recognizer2D for `arch` with its PaddleVideo config's settings (see above),
    initialised from paddle.seed(seed)."""
    from paddlevideo.modeling.builder import build_model
    from paddlevideo.utils.config import AttrDict

    paddle.seed(seed)  # after the import, which draws from Paddle's generator

    if arch == "pptsm_r50vd":
        backbone = AttrDict(name="ResNetTweaksTSM", depth=50, num_seg=frames)
        head = AttrDict(
            name="ppTSMHead", num_classes=classes, in_channels=2048, drop_ratio=0.5, std=0.01, num_seg=frames
        )
    elif arch == "pptsmv2_lcnetv2":
        backbone = AttrDict(name="PPTSM_v2", num_seg=frames, class_num=classes, use_temporal_att=temporal_attention)
        head = AttrDict(name="MoViNetHead")
    else:
        raise SystemExit(f"unknown arch {arch}")
    return build_model(AttrDict(framework="Recognizer2D", backbone=backbone, head=head))


def bf16_round(a):
    """float32 values rounded to the nearest bfloat16 (ties to even; NaN stays NaN), as float32."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = np.where(nan, u | 0x00400000, u + np.uint32(0x7FFF) + ((u >> 16) & 1)) & np.uint32(0xFFFF0000)
    return r.astype(np.uint32).view(np.float32).reshape(np.shape(a))


def bf16_emulated(roots, run):
    """run() with every Conv and Linear layer under `roots` rounding its weight and input to
    bf16, and Tensor.matmul (attention's products) its operands: torch.autocast's bf16 operands
    with float32 sums. Also used by export_pptimesformer_parity.py."""
    kinds = (paddle.nn.Conv1D, paddle.nn.Conv2D, paddle.nn.Conv3D, paddle.nn.Linear)
    layers = [l for root in roots for l in [root] + root.sublayers() if isinstance(l, kinds)]
    saved = [l.weight.numpy().copy() for l in layers]

    def rounded(t):
        return paddle.to_tensor(bf16_round(t.numpy()))

    def round_inputs(layer, inputs):
        return tuple(rounded(t) for t in inputs)

    matmul = paddle.Tensor.matmul
    hooks = []
    try:
        for l in layers:
            l.weight.set_value(bf16_round(l.weight.numpy()))
            hooks.append(l.register_forward_pre_hook(round_inputs))
        paddle.Tensor.matmul = lambda a, b, *args, **kw: matmul(rounded(a), rounded(b), *args, **kw)
        with paddle.no_grad():
            return run()
    finally:
        paddle.Tensor.matmul = matmul
        for h in hooks:
            h.remove()
        for l, w in zip(layers, saved):
            l.weight.set_value(w)


def export_model(a):
    h, w = (int(v) for v in a.size.split("x"))
    model = build_recognizer(a.arch, a.frames, a.classes, a.seed, a.temporal_attention)
    randomise_bn(model, a.seed, h, w, a.frames)
    rng = np.random.default_rng(a.seed + 2)
    fc = model.head.fc if a.arch == "pptsm_r50vd" else model.backbone.fc
    fc.bias.set_value(rng.normal(0.0, 0.1, a.classes).astype("float32"))

    x = rng.standard_normal((a.batch, a.frames, 3, h, w)).astype("float32")
    with paddle.no_grad():
        logits = model.test_step([paddle.to_tensor(x.copy())]).numpy()
    logits_bf16 = bf16_emulated([model], lambda: model.test_step([paddle.to_tensor(x.copy())]).numpy())

    os.makedirs(a.out, exist_ok=True)
    paddle.save(model.state_dict(), os.path.join(a.out, "model.pdparams"))
    np.save(os.path.join(a.out, "input.npy"), x.astype("<f4"))
    np.save(os.path.join(a.out, "logits.npy"), logits.astype("<f4"))
    np.save(os.path.join(a.out, "logits_bf16.npy"), logits_bf16.astype("<f4"))
    versions = {"paddle": paddle.__version__, "numpy": np.__version__}
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(dict(vars(a), **versions, max_abs_logit=float(np.abs(logits).max())), f)


def arange(shape, dtype):
    return np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)


def export_formats(a):
    os.makedirs(a.out, exist_ok=True)
    tensors = {
        "a.f32": arange((2, 3, 4), "float32"),
        "a.f64": arange((5,), "float64"),
        "a.f16": arange((3, 2), "float16"),
        "a.i64": arange((4,), "int64"),
        "a.i32": arange((2, 2), "int32"),
        "a.u8": arange((6,), "uint8"),
        "a.bool": np.arange(2) > 0,
    }
    mixed = {
        "a.f32": paddle.to_tensor(arange((2, 3, 4), "float32")),
        "a.fortran": np.asfortranarray(arange((3, 4), "float32")),
        "a.big": arange((2, 5), ">f4"),
        "a.i64": arange((4,), "int64"),
    }
    assert not mixed["a.fortran"].flags.c_contiguous
    for protocol in (2, 3, 4):
        state = {k: paddle.to_tensor(v) for k, v in tensors.items()}
        paddle.save(state, os.path.join(a.out, f"state-p{protocol}.pdparams"), protocol=protocol)
        paddle.save(dict(mixed), os.path.join(a.out, f"mixed-p{protocol}.pdparams"), protocol=protocol)
    flat = arange((4, 6), "float32").flatten()
    split = {
        "a.split@@.0": flat[0:10],
        "a.split@@.1": flat[10:20],
        "a.split@@.2": flat[20:24],
        "StructuredToParameterName@@": {},
        "UnpackBigParamInfor@@": {
            "a.split": {"OriginShape": (4, 6), "slices": ["a.split@@.0", "a.split@@.1", "a.split@@.2"]}
        },
    }
    with open(os.path.join(a.out, "split-p2.pdparams"), "wb") as f:
        pickle.dump(split, f, protocol=2)
    # Paddle itself must read the split layout back as one array, else the fixture is wrong.
    back = paddle.load(os.path.join(a.out, "split-p2.pdparams"), return_numpy=True)
    assert back["a.split"].shape == (4, 6) and (back["a.split"] == arange((4, 6), "float32")).all()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--what", choices=["model", "formats"], required=True)
    ap.add_argument("--arch", default="pptsm_r50vd")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="64x80", help="HxW of the input")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=17)
    ap.add_argument("--temporal-attention", action="store_true", help="PP-TSMv2's LTA module")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    paddle.set_device("cpu")
    if a.what == "model":
        export_model(a)
    else:
        export_formats(a)


if __name__ == "__main__":
    main()
