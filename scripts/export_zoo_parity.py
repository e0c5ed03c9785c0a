#!/usr/bin/env python3
"""Reference values for vidkit's 3D CNN parity test (bins/tests/parity_zoo.rs), from pytorchvideo
0.1.5 and torch (zoo tier of scripts/peers.sh).

Model mode (--arch NAME): builds pytorchvideo.models.hub.NAME (pretrained=False) with --classes
classes, seeded random weights and randomised BatchNorm (affine parameters drawn, running
statistics calibrated on random clips, then perturbed, so BN is not the identity), runs it in eval
mode on a fixed random clip and writes into OUT:

  model.pyth   the checkpoint as pytorchvideo/PySlowFast save it: {"model_state": state_dict,
               "epoch": ..., "cfg": ...}
  input.npy    float32 [B, T, 3, H, W] (vidkit's layout; the model sees it permuted to
               [B, 3, T, H, W])
  logits.npy   float32 [B, classes]
  logits_bf16.npy  float32, the same under torch.autocast("cpu", bfloat16): the yardstick of
               vidkit's --precision bf16 (bins/tests/common/precision.rs)
  meta.json    arch, sizes, seed, versions

With --grad it then runs the model in train mode (BatchNorm on batch statistics, dropout off) on
the same clip and adds train_logits.npy, r.npy (a random cotangent) and grads/<parameter>.npy, the
gradients of sum(train_logits · r) in float64, with grad_f32_errors.json, how far float32
gradients may land from them per parameter (torch's own float32 error, or a ReLU flip float32
rounding can cause; see export_train_gradients).

Non-local variants (--non-local FLAGS, ResNet-3D only): pytorchvideo's ResNets have no place for
a non-local block, so the script inserts pytorchvideo.layers.nonlocal_net.create_nonlocal(dim_in=C,
dim_inner=C/2, pool_size=--nl-pool, instantiation=--nl-mode) after each flagged residual block,
wrapping the two in nn.Sequential: the block's names become res_blocks.{j}.0.branch2... and the
non-local block's res_blocks.{j}.1.conv_theta..., which is the layout vidkit's `non_local` option
builds. FLAGS are mmaction2's per-stage 0/1 lists, stages separated by ';'
("0,0,0;0,1,0,1;0,1,0,1,0,1;0,0,0").

At the test's reduced size the hub head's fixed pooling kernel (made for the zoo input) does not
fit, so the head's pool is replaced by a global average pool (AdaptiveAvgPool3d(1)), which is what
vidkit's heads do; --keep-head-pool keeps the hub's pool, for inputs of the zoo's own size (the
full-size run of `make bench`). X3D and R(2+1)D hub heads end in a softmax in eval mode: it is
removed here, so both sides compare logits.

Ops mode (--ops): forward and backward values of torch's conv3d, max_pool3d, avg_pool3d and
adaptive_avg_pool3d for several configurations (groups, depthwise, dilation, padding): for each
case a directory with x.npy, w.npy, b.npy (convs), r.npy (the cotangent), y.npy, gx.npy, gw.npy,
gb.npy, and cases.json describing them.

Usage: export_zoo_parity.py --arch slow_r50 --out DIR [--frames 8] [--size 64x80] [--batch 2]
       [--classes 11] [--seed 0] [--non-local FLAGS [--nl-mode softmax] [--nl-pool 1,1,1]] [--grad]
       [--keep-head-pool]
       export_zoo_parity.py --ops --out DIR
"""
import argparse
import copy
import json
import os
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")


def save(path, t):
    np.save(path, t.detach().numpy().astype("<f4"))


def closes_pytorchvideo_branch(name):
    """norm_c closes a bottleneck's branch, a non-local block's norm its residual branch."""
    return name.endswith("norm_c") or (name.endswith(".norm") and ".res_blocks." in name)


def randomise_bn(model, gen, calib, closes_branch=closes_pytorchvideo_branch):
    """Draws BN affine parameters and calibrates running statistics on `calib` clips. The BNs that
    close a residual branch (`closes_branch(module name)`) get small gains: a deep random ResNet
    with unit gains is chaotic and amplifies float32 rounding towards the parity limit. Also used
    by export_mmaction3d_parity.py."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    last = {m for name, m in model.named_modules() if closes_branch(name)}
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            lo, hi = (0.2, 0.6) if m in last else (0.5, 1.5)
            m.weight.copy_(torch.empty(c).uniform_(lo, hi, generator=gen))
            m.bias.copy_(torch.empty(c).normal_(0.0, 0.2, generator=gen))
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        for x in calib:
            model(x)
        for m in bns:
            c = m.num_features
            m.running_var.mul_(torch.empty(c).uniform_(0.7, 1.4, generator=gen))
            m.running_mean.add_(torch.empty(c).normal_(0.0, 0.1, generator=gen) * m.running_var.sqrt())
            m.momentum = 0.1
    model.eval()


def pathways(arch, clip):
    """SlowFast takes [slow, fast]: pytorchvideo's PackPathway (alpha 4) of one clip [B, 3, T, H, W];
    a fresh list per call, as the model overwrites it."""
    if not arch.startswith("slowfast"):
        return clip
    t = clip.shape[2]
    idx = torch.linspace(0, t - 1, t // 4).long()
    return [torch.index_select(clip, 2, idx), clip]


def insert_non_local(model, a):
    """Wraps each flagged res block with a pytorchvideo NonLocal after it (see the module doc)."""
    from pytorchvideo.layers.nonlocal_net import create_nonlocal
    from pytorchvideo.models.resnet import ResStage

    flags = [[int(f) for f in stage.split(",")] for stage in a.non_local.split(";")]
    stages = [m for m in model.blocks if isinstance(m, ResStage)]
    assert len(stages) == len(flags) == 4, "four stages of flags for a ResNet-3D"
    pool = tuple(int(v) for v in a.nl_pool.split(","))
    for stage, fl in zip(stages, flags):
        assert len(stage.res_blocks) == len(fl), f"{len(stage.res_blocks)} blocks, {len(fl)} flags"
        for j, f in enumerate(fl):
            if f:
                block = stage.res_blocks[j]
                c = block.branch2.norm_c.num_features
                nl = create_nonlocal(dim_in=c, dim_inner=c // 2, pool_size=pool, instantiation=a.nl_mode)
                stage.res_blocks[j] = torch.nn.Sequential(block, nl)


def export_model(a):
    from pytorchvideo.models import hub

    h, w = (int(v) for v in a.size.split("x"))
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)
    model = getattr(hub, a.arch)(pretrained=False, model_num_class=a.classes)
    head = model.blocks[-1]
    if a.keep_head_pool:
        pass  # at the zoo's own input size: the hub head as it is
    elif a.arch.startswith("slowfast"):  # PoolConcatPathway before the head: one pool per pathway
        model.blocks[-2].pool = torch.nn.ModuleList([torch.nn.AdaptiveAvgPool3d(1)] * 2)
    elif hasattr(head.pool, "pool"):  # X3D's ProjectedPool: pre_conv, pool, post_conv
        head.pool.pool = torch.nn.AdaptiveAvgPool3d(1)
    else:
        head.pool = torch.nn.AdaptiveAvgPool3d(1)
    if getattr(head, "activation", None) is not None:
        head.activation = None  # X3D, R(2+1)D: softmax in eval mode; compare logits
    if a.non_local:
        insert_non_local(model, a)
    calib = [pathways(a.arch, torch.randn(4, 3, a.frames, h, w, generator=gen)) for _ in range(2)]
    randomise_bn(model, gen, calib)
    x = torch.randn(a.batch, a.frames, 3, h, w, generator=gen)
    with torch.no_grad():
        logits = model(pathways(a.arch, x.permute(0, 2, 1, 3, 4).contiguous()))
        # PyTorch's bf16 CPU mode on the same weights and input: the yardstick for vidkit's bf16.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits_bf16 = model(pathways(a.arch, x.permute(0, 2, 1, 3, 4).contiguous())).float()
    os.makedirs(a.out, exist_ok=True)
    ckpt = {"model_state": model.state_dict(), "epoch": 196, "cfg": f"{a.arch} parity fixture"}
    torch.save(ckpt, os.path.join(a.out, "model.pyth"))
    if a.grad:
        export_train_gradients(a, model, x, logits.shape)
    save(os.path.join(a.out, "input.npy"), x)
    save(os.path.join(a.out, "logits.npy"), logits)
    save(os.path.join(a.out, "logits_bf16.npy"), logits_bf16)
    import pytorchvideo

    meta = {
        "arch": a.arch,
        "frames": a.frames,
        "size": [h, w],
        "classes": a.classes,
        "seed": a.seed,
        "torch": torch.__version__,
        "pytorchvideo": pytorchvideo.__version__,
        "max_abs_logit": float(logits.abs().max()),
        "non_local": a.non_local,
        "nl_mode": a.nl_mode,
        "nl_pool": a.nl_pool,
        "keep_head_pool": a.keep_head_pool,
    }
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f)


# (name, cin, cout, kernel, stride, padding, dilation, groups, input T×H×W)
CONVS = [
    ("dense", 3, 5, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1, (5, 7, 6)),
    ("stem_i3d", 3, 4, (5, 7, 7), (1, 2, 2), (2, 3, 3), (1, 1, 1), 1, (6, 13, 11)),
    ("grouped", 6, 4, (3, 3, 1), (2, 1, 1), (1, 1, 0), (1, 1, 1), 2, (7, 6, 5)),
    ("depthwise", 6, 6, (3, 3, 3), (1, 2, 2), (1, 1, 1), (1, 1, 1), 6, (5, 9, 8)),
    ("dilated", 4, 6, (3, 3, 3), (1, 2, 1), (2, 2, 1), (2, 2, 1), 2, (7, 9, 8)),
    ("depthwise_dilated", 4, 4, (3, 3, 3), (2, 1, 2), (2, 2, 2), (2, 2, 2), 4, (7, 8, 9)),
    ("pointwise_strided", 4, 6, (1, 1, 1), (1, 2, 2), (0, 0, 0), (1, 1, 1), 1, (3, 7, 6)),
]

# (name, kind, kernel, stride, padding, count_include_pad / output size, input T×H×W)
POOLS = [
    ("max_stem", "max", (1, 3, 3), (1, 2, 2), (0, 1, 1), None, (4, 9, 8)),
    ("max_stage1", "max", (2, 1, 1), (2, 1, 1), (0, 0, 0), None, (5, 4, 3)),
    ("avg_incl", "avg", (3, 3, 3), (2, 2, 2), (1, 1, 1), True, (5, 7, 6)),
    ("avg_excl", "avg", (3, 3, 3), (2, 2, 2), (1, 1, 1), False, (5, 7, 6)),
    ("adaptive", "adaptive", None, None, None, (2, 3, 2), (5, 7, 3)),
]


def export_ops(a):
    gen = torch.Generator().manual_seed(a.seed)
    cases = []
    for name, cin, cout, k, s, p, d, g, (t, h, w) in CONVS:
        x = torch.randn(2, cin, t, h, w, generator=gen, requires_grad=True)
        wt = torch.randn(cout, cin // g, *k, generator=gen, requires_grad=True)
        b = torch.randn(cout, generator=gen, requires_grad=True)
        y = torch.nn.functional.conv3d(x, wt, b, stride=s, padding=p, dilation=d, groups=g)
        r = torch.randn(y.shape, generator=gen)
        (y * r).sum().backward()
        out = os.path.join(a.out, name)
        os.makedirs(out, exist_ok=True)
        for n, v in [("x", x), ("w", wt), ("b", b), ("r", r), ("y", y), ("gx", x.grad), ("gw", wt.grad), ("gb", b.grad)]:
            save(os.path.join(out, f"{n}.npy"), v)
        cases.append({"name": name, "op": "conv3d", "stride": s, "padding": p, "dilation": d, "groups": g})
    for name, kind, k, s, p, extra, (t, h, w) in POOLS:
        # Distinct values, so every window has one maximum and the gradient is defined.
        n = 2 * 3 * t * h * w
        x = (torch.randperm(n, generator=gen).float() / n).reshape(2, 3, t, h, w).requires_grad_(True)
        F = torch.nn.functional
        if kind == "max":
            y = F.max_pool3d(x, k, s, p)
        elif kind == "avg":
            y = F.avg_pool3d(x, k, s, p, count_include_pad=extra)
        else:
            y = F.adaptive_avg_pool3d(x, extra)
        r = torch.randn(y.shape, generator=gen)
        (y * r).sum().backward()
        out = os.path.join(a.out, name)
        os.makedirs(out, exist_ok=True)
        for nm, v in [("x", x), ("r", r), ("y", y), ("gx", x.grad)]:
            save(os.path.join(out, f"{nm}.npy"), v)
        case = {"name": name, "op": kind, "kernel": k, "stride": s, "padding": p}
        if kind == "avg":
            case["count_include_pad"] = extra
        if kind == "adaptive":
            case["output"] = extra
        cases.append(case)
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump(cases, f)


# How many of the pre-activations nearest a ReLU's zero get a flipped run, and how many float32
# runs measure that nearness (see below).
FLIP_SITES = 12
F32_RUNS = 3


def export_train_gradients(a, model, x, logits_shape):
    """Train mode (BatchNorm on batch statistics, dropout off): the logits and the gradient of
    sum(logits · r) with respect to every parameter, computed in float64 (grads/<name>.npy), and
    how far float32 gradients may land from them (grad_f32_errors.json: max |Δ| / max |g| per
    parameter).

    That bound is not torch's own float32 error alone. A deep random network in train mode has
    pre-activations within float32 rounding of a ReLU's zero; which of them flip depends on the
    order of every sum before them, and a flip moves the gradient of every layer before it by
    ~1e-3 (torch's float32 run flips at one arbitrary depth: slow_r50's gradients are then 1% off
    float64 at the median, the layers after the flip 1e-5). A float32 implementation that sums in
    another order (vidkit on a CPU without AVX-512 runs another GEMM) flips elsewhere. So the
    bound per parameter is the largest of torch's float32 error and the change of the float64
    gradient when the ReLU's derivative flips at one of the FLIP_SITES pre-activations nearest
    zero, measured in how far float32 runs move them: any flip float32 rounding can plausibly
    cause."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False  # the hooks below read each ReLU's input
    r = torch.randn(logits_shape, generator=torch.Generator().manual_seed(a.seed + 2))
    clip = x.permute(0, 2, 1, 3, 4).contiguous()
    relus = [n for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]

    def run(dtype, flip=None, record=None, noise=None):
        m = copy.deepcopy(model).to(dtype)
        m.train()
        modules = dict(m.named_modules())
        hooks = []
        for name in relus:
            def hook(mod, inp, out, name=name):
                z = inp[0]
                if record is not None:
                    record.append((name, z.detach().double()))
                if flip is not None and flip[0] == name and flip[1] == len([1 for q in calls if q == name]):
                    # The same value, the derivative at one element flipped (1 ↔ 0).
                    one = torch.zeros_like(z).flatten()
                    one[flip[2]] = -1.0 if z.flatten()[flip[2]] > 0 else 1.0
                    out = out + one.view_as(z) * (z - z.detach())
                calls.append(name)
                return out
            hooks.append(modules[name].register_forward_hook(hook))
        calls = []
        logits = m(pathways(a.arch, (clip if noise is None else clip * (1 + noise)).to(dtype)))
        (logits * r.to(dtype)).sum().backward()
        for h in hooks:
            h.remove()
        return logits, {n: p.grad.double() for n, p in m.named_parameters()}

    # A module may run more than once per forward: a site is (module, call, flat index).
    record = []
    logits, grads = run(torch.float64, record=record)
    save(os.path.join(a.out, "train_logits.npy"), logits.float())
    save(os.path.join(a.out, "r.npy"), r)
    os.makedirs(os.path.join(a.out, "grads"), exist_ok=True)
    for name, g in grads.items():
        save(os.path.join(a.out, "grads", f"{name}.npy"), g.float())

    def rel(g_other):
        return {n: float((g_other[n] - g).abs().max() / g.abs().max().clamp_min(1e-30)) for n, g in grads.items()}

    # How near each pre-activation is to flipping: |z| over how far float32 runs put it (the clip
    # and copies moved by ~4 ulps, 2^-22 relative).
    errors = {n: 0.0 for n in grads}
    spread = [torch.zeros_like(z) for _, z in record]
    gen = torch.Generator().manual_seed(a.seed + 3)
    for k in range(F32_RUNS):
        noise = None if k == 0 else 2.0**-22 * torch.randn(clip.shape, generator=gen)
        rec32 = []
        for n, e in rel(run(torch.float32, record=rec32, noise=noise)[1]).items():
            errors[n] = max(errors[n], e)
        for s_, (_, z64), (_, z32) in zip(spread, record, rec32):
            torch.maximum(s_, (z32 - z64).abs(), out=s_)
    candidates, seen = [], {}
    for (name, z), s_ in zip(record, spread):
        call = seen.get(name, 0)
        seen[name] = call + 1
        ratio = (z.abs() / s_.clamp_min(1e-300)).flatten()
        vals, idx = torch.topk(ratio, min(FLIP_SITES, ratio.numel()), largest=False)
        candidates += [(float(v), name, call, int(i)) for v, i in zip(vals, idx)]
    for _, name, call, i in sorted(candidates)[:FLIP_SITES]:
        for n, e in rel(run(torch.float64, flip=(name, call, i))[1]).items():
            errors[n] = max(errors[n], e)
    with open(os.path.join(a.out, "grad_f32_errors.json"), "w") as f:
        json.dump(errors, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", help="a pytorchvideo.models.hub name: slow_r50, x3d_xs, ...")
    ap.add_argument("--ops", action="store_true", help="export op-level forward/backward cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="64x80", help="HxW of the input")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--non-local", help="per-stage 0/1 flags, e.g. '0,0,0;0,1,0,1;0,1,0,1,0,1;0,0,0'")
    ap.add_argument("--nl-mode", default="softmax", choices=["softmax", "dot_product"])
    ap.add_argument("--nl-pool", default="1,1,1", help="pytorchvideo pool_size of the non-local blocks")
    ap.add_argument("--grad", action="store_true", help="also export train-mode gradients")
    ap.add_argument("--keep-head-pool", action="store_true",
                    help="keep the hub head's pooling kernel (for inputs of the zoo's own size)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if a.ops:
        export_ops(a)
    elif a.arch:
        export_model(a)
    else:
        ap.error("give --arch NAME or --ops")


if __name__ == "__main__":
    main()
