#!/usr/bin/env python3
"""PP-TimeSformer fixtures for vidkit's transformer parity test (bins/tests/parity_transformer.rs);
runs in the paddle tier of scripts/peers.sh (PaddlePaddle's CPU wheel, ppvideo 2.3.1).

Builds ppvideo's own `VisionTransformer` (paddlevideo/modeling/backbones/vit.py, divided
space-time attention, qkv without bias, epsilon 1e-6 as configs/recognition/pptimesformer/
pptimesformer_k400_videos.yaml) and `ppTimeSformerHead` at ViT-B width (768, 12 heads, patch 16)
with --depth blocks, draws every parameter at random (numpy, --seed: Linear weights N(0, 1/fan_in),
biases N(0, 0.1), LayerNorm gains U(0.5, 1.5), cls/position/time embeddings N(0, 0.5), so that
temporal_fc, which the reference initialises to zero past the first block, is not), runs it in
eval mode on a fixed random input and writes into OUT_DIR:

  model.pdparams  {"backbone.<name>": ..., "head.fc.weight": ..., "head.fc.bias": ...} as
                  PaddleVideo's recognizer state dict (paddle.save; Linear weights [in, out])
  input.npy       float32 [B, T, 3, S, S] (vidkit's layout; Paddle gets [B, 3, T, S, S])
  logits.npy      float32 [B, classes] (RecognizerTransformer: head(backbone(x)), one view)
  logits_bf16.npy the same with the products' operands rounded to bf16 (bf16_emulated of
                  export_paddle_parity.py): the reference drift for --precision bf16
  meta.json       the arguments and Paddle's version

Usage: export_pptimesformer_parity.py --out DIR [--depth 2] [--frames 4] [--size 64]
       [--batch 2] [--classes 7] [--seed 0]
"""
import argparse
import json
import os
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import paddle  # noqa: E402
from export_paddle_parity import bf16_emulated  # noqa: E402 (this folder, run as a script)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from paddlevideo.modeling.backbones.vit import VisionTransformer
    from paddlevideo.modeling.heads.pptimesformer_head import ppTimeSformerHead

    paddle.seed(a.seed)
    backbone = VisionTransformer(img_size=a.size, patch_size=16, embed_dim=768, depth=a.depth,
                                 num_heads=12, qkv_bias=False, epsilon=1e-6, num_seg=a.frames,
                                 attention_type="divided_space_time", drop_path_rate=0.1)
    head = ppTimeSformerHead(num_classes=a.classes, in_channels=768)

    rng = np.random.default_rng(a.seed)
    state = {}
    for prefix, layer in (("backbone.", backbone), ("head.", head)):
        for name, p in layer.named_parameters():
            shape = p.shape
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                v = rng.uniform(0.5, 1.5, shape)
            elif name.endswith(".bias"):
                v = rng.normal(0.0, 0.1, shape)
            elif name in ("cls_token", "pos_embed", "time_embed"):
                v = rng.normal(0.0, 0.5, shape)
            elif name == "patch_embed.proj.weight":
                v = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
            else:  # Linear [in, out]
                v = rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)
            p.set_value(v.astype("float32"))
            state[prefix + name] = p
    backbone.eval()
    head.eval()

    x = rng.standard_normal((a.batch, a.frames, 3, a.size, a.size)).astype("float32")
    def forward():
        with paddle.no_grad():
            return head(backbone(paddle.to_tensor(x.transpose(0, 2, 1, 3, 4).copy()))).numpy()

    logits = forward()
    logits_bf16 = bf16_emulated([backbone, head], forward)

    os.makedirs(a.out, exist_ok=True)
    paddle.save(state, os.path.join(a.out, "model.pdparams"))
    np.save(os.path.join(a.out, "input.npy"), x)
    np.save(os.path.join(a.out, "logits.npy"), logits.astype("<f4"))
    np.save(os.path.join(a.out, "logits_bf16.npy"), logits_bf16.astype("<f4"))
    meta = dict(vars(a), paddle=paddle.__version__, max_logit=float(np.abs(logits).max()))
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
