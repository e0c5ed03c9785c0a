#!/usr/bin/env python3
"""TimeSformer fixtures for vidkit's transformer parity test (bins/tests/parity_transformer.rs);
runs in the models tier of scripts/peers.sh (torch, transformers).

Builds Hugging Face transformers' `TimesformerForVideoClassification` (a port of
facebookresearch's `timesformer/models/vit.py`: divided space-time attention, qkv with bias,
LayerNorm eps 1e-6, exact GELU) at ViT-B width (768, 12 heads, patch 16) with --depth blocks,
draws every parameter at random (numpy, --seed: Linear weights N(0, 1/fan_in), biases N(0, 0.1),
LayerNorm gains U(0.5, 1.5), cls/position/time embeddings N(0, 0.5)), runs it in eval mode on a
fixed random input and writes into OUT_DIR:

  hf/model.safetensors, hf/config.json   model.save_pretrained (id2label: class_0, class_1, ...)
  fb/model.pyth   the same weights under facebookresearch's names ({"model_state": {"model.":
                  ...}}, as PySlowFast's checkpoint saver writes them), renamed here
  mm/model.pth    the same weights under MMAction2's names ({"state_dict": {"backbone.": ...,
                  "cls_head.fc_cls.": ...}}: mmcv's transformer layers, nn.MultiheadAttention's
                  in_proj/out_proj), renamed here (mmcv does not install here; its blocks compute
                  what facebookresearch's do, mmaction/models/common/transformer.py)
  input.npy       float32 [B, T, 3, S, S] (transformers takes this layout too)
  logits.npy      float32 [B, classes]
  logits_bf16.npy the same under torch.autocast("cpu", bfloat16) (bins/tests/common/precision.rs)
  meta.json       the arguments and the versions

With --resize-frames F --resize-size R, also resized/{input,logits}.npy: the same weights run at
F frames and R pixels, the time embedding resized by nearest neighbour along time and the
position embedding bilinearly (align_corners=False) over the patch grid, as vidkit's import does
(the model rebuilt for F frames and R pixels: transformers' layers take the frame count from
the config, so an F-frame input cannot simply be fed to the T-frame model).

Usage: export_timesformer_parity.py --out DIR [--depth 2] [--frames 4] [--size 64]
       [--batch 2] [--classes 7] [--seed 0] [--resize-frames F --resize-size R]
"""
import argparse
import json
import os
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import TimesformerConfig, TimesformerForVideoClassification  # noqa: E402

# Hugging Face's per-layer module names and facebookresearch's (vit.py `Block`).
HF_TO_FB_LAYER = [
    ("attention.attention.qkv.", "attn.qkv."),
    ("attention.output.dense.", "attn.proj."),
    ("temporal_attention.attention.qkv.", "temporal_attn.qkv."),
    ("temporal_attention.output.dense.", "temporal_attn.proj."),
    ("temporal_dense.", "temporal_fc."),
    ("layernorm_before.", "norm1."),
    ("temporal_layernorm.", "temporal_norm1."),
    ("layernorm_after.", "norm2."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
]
HF_TO_FB = {
    "timesformer.embeddings.cls_token": "cls_token",
    "timesformer.embeddings.position_embeddings": "pos_embed",
    "timesformer.embeddings.time_embeddings": "time_embed",
    "timesformer.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "timesformer.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "timesformer.layernorm.weight": "norm.weight",
    "timesformer.layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}


def fb_name(hf):
    if hf in HF_TO_FB:
        return "model." + HF_TO_FB[hf]
    rest = hf[len("timesformer.encoder.layer."):]
    i, part = rest.split(".", 1)
    for a, b in HF_TO_FB_LAYER:
        if part.startswith(a):
            return f"model.blocks.{i}.{b}{part[len(a):]}"
    raise KeyError(hf)


FB_TO_MM_LAYER = [
    ("temporal_norm1.", "attentions.0.norm."),
    ("temporal_attn.qkv.weight", "attentions.0.attn.in_proj_weight"),
    ("temporal_attn.qkv.bias", "attentions.0.attn.in_proj_bias"),
    ("temporal_attn.proj.", "attentions.0.attn.out_proj."),
    ("temporal_fc.", "attentions.0.temporal_fc."),
    ("norm1.", "attentions.1.norm."),
    ("attn.qkv.weight", "attentions.1.attn.in_proj_weight"),
    ("attn.qkv.bias", "attentions.1.attn.in_proj_bias"),
    ("attn.proj.", "attentions.1.attn.out_proj."),
    ("norm2.", "ffns.0.norm."),
    ("mlp.fc1.", "ffns.0.layers.0.0."),
    ("mlp.fc2.", "ffns.0.layers.1."),
]


def mm_name(fb):
    rest = fb[len("model."):]
    if rest.startswith("head."):
        return "cls_head.fc_cls." + rest[len("head."):]
    if rest.startswith("patch_embed.proj."):
        return "backbone.patch_embed.projection." + rest[len("patch_embed.proj."):]
    if not rest.startswith("blocks."):
        return "backbone." + rest
    i, part = rest[len("blocks."):].split(".", 1)
    for a, b in FB_TO_MM_LAYER:
        if part.startswith(a):
            return f"backbone.transformer_layers.layers.{i}.{b}{part[len(a):]}"
    raise KeyError(fb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resize-frames", type=int)
    ap.add_argument("--resize-size", type=int)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    config = TimesformerConfig(image_size=a.size, patch_size=16, num_frames=a.frames, hidden_size=768,
                               num_hidden_layers=a.depth, num_attention_heads=12, intermediate_size=3072,
                               qkv_bias=True, layer_norm_eps=1e-6, attention_type="divided_space_time",
                               num_labels=a.classes, id2label={i: f"class_{i}" for i in range(a.classes)},
                               label2id={f"class_{i}": i for i in range(a.classes)})
    model = TimesformerForVideoClassification(config).eval()

    rng = np.random.default_rng(a.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            if "layernorm" in name and name.endswith(".weight"):
                v = rng.uniform(0.5, 1.5, shape)
            elif name.endswith(".bias"):
                v = rng.normal(0.0, 0.1, shape)
            elif name.endswith("embeddings") or name.endswith("cls_token"):
                v = rng.normal(0.0, 0.5, shape)
            elif name.endswith("projection.weight"):
                v = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
            else:  # Linear [out, in]
                v = rng.normal(0.0, 1.0 / np.sqrt(shape[1]), shape)
            p.copy_(torch.from_numpy(v.astype("float32")))

    x = rng.standard_normal((a.batch, a.frames, 3, a.size, a.size)).astype("float32")
    with torch.no_grad():
        logits = model(pixel_values=torch.from_numpy(x)).logits.numpy()
        # PyTorch's bf16 CPU mode on the same weights and input: the yardstick for vidkit's bf16.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits_bf16 = model(pixel_values=torch.from_numpy(x)).logits.float().numpy()

    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(os.path.join(a.out, "hf"), safe_serialization=True)
    os.makedirs(os.path.join(a.out, "fb"), exist_ok=True)
    fb = {fb_name(k): v.clone() for k, v in model.state_dict().items()}
    torch.save({"model_state": fb}, os.path.join(a.out, "fb", "model.pyth"))
    os.makedirs(os.path.join(a.out, "mm"), exist_ok=True)
    mm = {mm_name(k): v for k, v in fb.items()}
    torch.save({"state_dict": mm}, os.path.join(a.out, "mm", "model.pth"))
    np.save(os.path.join(a.out, "input.npy"), x)
    np.save(os.path.join(a.out, "logits.npy"), logits.astype("<f4"))
    np.save(os.path.join(a.out, "logits_bf16.npy"), logits_bf16.astype("<f4"))
    if a.resize_frames:
        resized(a, config, model, rng)
    meta = dict(vars(a), torch=torch.__version__, transformers=transformers.__version__,
                max_logit=float(np.abs(logits).max()))
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def resized(a, config, model, rng):
    state = model.state_dict()
    te = state["timesformer.embeddings.time_embeddings"]  # [1, T, C]
    state["timesformer.embeddings.time_embeddings"] = F.interpolate(
        te.transpose(1, 2), size=a.resize_frames, mode="nearest").transpose(1, 2)
    pe = state["timesformer.embeddings.position_embeddings"]  # [1, 1 + g*g, C]
    c = pe.shape[2]
    g0, g1 = a.size // 16, a.resize_size // 16
    grid = pe[:, 1:].reshape(1, g0, g0, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(g1, g1), mode="bilinear", align_corners=False)
    state["timesformer.embeddings.position_embeddings"] = torch.cat(
        [pe[:, :1], grid.permute(0, 2, 3, 1).reshape(1, g1 * g1, c)], 1)
    config2 = TimesformerConfig(**{**config.to_dict(), "num_frames": a.resize_frames,
                                   "image_size": a.resize_size})
    model2 = TimesformerForVideoClassification(config2).eval()
    model2.load_state_dict(state)
    x = rng.standard_normal((a.batch, a.resize_frames, 3, a.resize_size, a.resize_size)).astype("float32")
    with torch.no_grad():
        logits = model2(pixel_values=torch.from_numpy(x)).logits.numpy()
    os.makedirs(os.path.join(a.out, "resized"), exist_ok=True)
    np.save(os.path.join(a.out, "resized", "input.npy"), x)
    np.save(os.path.join(a.out, "resized", "logits.npy"), logits.astype("<f4"))


if __name__ == "__main__":
    main()
