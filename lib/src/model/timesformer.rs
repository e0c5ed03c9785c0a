//! TimeSformer (facebookresearch `timesformer/models/vit.py`) and PP-TimeSformer (PaddleVideo
//! `paddlevideo/modeling/backbones/vit.py` + `heads/pptimesformer_head.py`): a ViT over frame
//! patches with divided space-time attention. The two differ only in settings (q/k/v bias,
//! LayerNorm eps, normalisation, sampling), which live in the config.
//!
//! Tokens, as both references order them: one cls token, then the patches with the time step
//! fastest (token 1 + n·T + t is patch n of frame t). Each block attends over time (the T tokens
//! of one patch position, the cls token left out), adds `temporal_fc` of that to the tokens, then
//! over space (the patches of one frame, each frame with its own copy of the cls token; the
//! copies' outputs are averaged back into one), then the MLP. The head reads the final cls token.
//!
//! Parameter names are PaddleVideo's (`backbone.blocks.0.temporal_attn.qkv.weight`, ...,
//! `head.fc.weight`), Linear weights [out, in] as torch stores them.

use super::{Model, ModelConfig};
use crate::nn::{drop_path, drop_path_rates, dropout, linear, LayerNorm, Mlp, MultiHeadAttention};
use crate::rng::Rng;
use candle_core::{Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The ViT's sizes and settings (keys of the config's `extra` map; absent keys take the
/// architecture's values, [`VitOptions::for_arch`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitOptions {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub patch_size: usize,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    pub ln_eps: f64,
    /// Stochastic depth of the last block (linearly from 0 at the first), in training.
    pub drop_path_rate: f64,
    /// `divided_space_time` (the TimeSformer), or `space_only`: each frame on its own, no time
    /// embedding or temporal attention, the frames' cls tokens averaged at the end (the
    /// references' per-frame ViT baseline).
    pub attention_type: String,
}

impl VitOptions {
    pub const KEYS: [&'static str; 9] = [
        "embed_dim",
        "depth",
        "num_heads",
        "patch_size",
        "mlp_ratio",
        "qkv_bias",
        "ln_eps",
        "drop_path_rate",
        "attention_type",
    ];

    /// ViT-B/16 as each reference builds it.
    pub fn for_arch(arch: &str) -> Option<Self> {
        let base = Self {
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            patch_size: 16,
            mlp_ratio: 4.0,
            qkv_bias: true,
            ln_eps: 1e-6,
            drop_path_rate: 0.1,
            attention_type: "divided_space_time".into(),
        };
        match arch {
            // facebookresearch vit.py `TimeSformer`: qkv_bias=True, LayerNorm eps 1e-6.
            "timesformer_vit_b" => Some(base),
            // PaddleVideo configs/recognition/pptimesformer/pptimesformer_k400_videos.yaml:
            // VisionTransformer with qkv_bias False, epsilon 1e-6.
            "pptimesformer_vit_b" => Some(Self { qkv_bias: false, ..base }),
            _ => None,
        }
    }

    pub fn from_config(config: &ModelConfig) -> anyhow::Result<Self> {
        let Some(base) = Self::for_arch(&config.arch) else {
            anyhow::bail!("{} is not a TimeSformer", config.arch)
        };
        let o = config.options_over(base, &Self::KEYS)?;
        if o.embed_dim == 0 || o.depth == 0 || o.patch_size == 0 || o.num_heads == 0 {
            anyhow::bail!("{}: embed_dim, depth, num_heads and patch_size must be positive", config.arch);
        }
        if o.embed_dim % o.num_heads != 0 {
            anyhow::bail!(
                "{}: embed_dim {} is not a multiple of {} heads",
                config.arch,
                o.embed_dim,
                o.num_heads
            );
        }
        if !(o.ln_eps > 0.0) || !(0.0..1.0).contains(&o.drop_path_rate) || !(o.mlp_ratio > 0.0) {
            anyhow::bail!("{}: ln_eps and mlp_ratio must be positive, drop_path_rate in [0, 1)", config.arch);
        }
        if !["divided_space_time", "space_only"].contains(&o.attention_type.as_str()) {
            anyhow::bail!(
                "{}: attention_type {:?}: divided_space_time or space_only",
                config.arch,
                o.attention_type
            );
        }
        if config.crop_size as usize % o.patch_size != 0 {
            anyhow::bail!(
                "{}: crop_size {} is not a multiple of the {}-pixel patch",
                config.arch,
                config.crop_size,
                o.patch_size
            );
        }
        Ok(o)
    }

    fn divided(&self) -> bool {
        self.attention_type == "divided_space_time"
    }

    fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }
}

/// The config of a TimeSformer architecture: its input protocol (ModelConfig defaults).
pub(super) fn vit_defaults(arch: &str, base: ModelConfig) -> Option<ModelConfig> {
    VitOptions::for_arch(arch)?;
    Some(match arch {
        // pptimesformer_k400_videos.yaml: 8 segments, linspace sampling, short side 224, crop
        // 224, Normalization mean 0 std 1 on the 0–1 scale; avg_type prob; no head dropout.
        "pptimesformer_vit_b" => ModelConfig {
            frames: 8,
            mean: [0.0; 3],
            std: [255.0; 3],
            sampler: "uniform".into(),
            short_side: 224,
            crop_size: 224,
            dropout: 0.0,
            ..base
        },
        // facebookresearch configs/Kinetics/TimeSformer_divST_8x32_224.yaml: 8 frames every 32,
        // mean 0.45 std 0.225, short side 224 at test, crop 224.
        _ => ModelConfig {
            frames: 8,
            mean: [0.45 * 255.0; 3],
            std: [0.225 * 255.0; 3],
            sampler: "dense".into(),
            interval: Some(32),
            short_side: 224,
            crop_size: 224,
            dropout: 0.0,
            ..base
        },
    })
}

/// The sizes a checkpoint's tensors show (as `-o` overrides), so an import needs no options:
/// width, depth, patch, MLP ratio, q/k/v bias, frames (time embedding) and crop (position
/// embedding grid). The head count is not in the shapes: 12 unless given.
pub(super) fn vit_overrides_from_weights(tensors: &HashMap<String, Tensor>) -> Vec<String> {
    let mut o = Vec::new();
    let dim = |name: &str, i: usize| tensors.get(name).and_then(|t| t.dims().get(i).copied());
    if let Some(c) = dim("backbone.cls_token", 2) {
        o.push(format!("embed_dim={c}"));
        if let Some(h) = dim("backbone.blocks.0.mlp.fc1.weight", 0) {
            o.push(format!("mlp_ratio={}", h as f64 / c as f64));
        }
    }
    let depth =
        (0..).take_while(|i| tensors.contains_key(&format!("backbone.blocks.{i}.norm1.weight"))).count();
    if depth > 0 {
        o.push(format!("depth={depth}"));
    }
    o.push(format!("qkv_bias={}", tensors.contains_key("backbone.blocks.0.attn.qkv.bias")));
    if let Some(p) = dim("backbone.patch_embed.proj.weight", 2) {
        o.push(format!("patch_size={p}"));
        if let Some(n) = dim("backbone.pos_embed", 1) {
            let side = ((n.saturating_sub(1)) as f64).sqrt().round() as usize;
            if side * side + 1 == n {
                o.push(format!("crop_size={}", side * p));
            }
        }
    }
    match dim("backbone.time_embed", 1) {
        Some(t) => o.push(format!("frames={t}")),
        None => o.push("attention_type=space_only".into()),
    }
    o
}

/// The temporal half of a divided block.
#[derive(Clone, Debug)]
struct TemporalAttention {
    norm: LayerNorm,
    attn: MultiHeadAttention,
    fc: Linear,
}

#[derive(Clone, Debug)]
struct DividedBlock {
    norm1: LayerNorm,
    attn: MultiHeadAttention,
    /// Absent in `space_only` models.
    temporal: Option<TemporalAttention>,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: f64,
}

/// The patch grid of a forward: batch, frames, rows and columns of patches.
#[derive(Clone, Copy, Debug)]
struct Grid {
    b: usize,
    t: usize,
    gh: usize,
    gw: usize,
}

impl DividedBlock {
    fn new(o: &VitOptions, drop_path: f64, vb: VarBuilder) -> Result<Self> {
        let c = o.embed_dim;
        Ok(Self {
            norm1: LayerNorm::new(c, o.ln_eps, vb.pp("norm1"))?,
            attn: MultiHeadAttention::new(c, o.num_heads, o.qkv_bias, vb.pp("attn"))?,
            temporal: match o.divided() {
                true => Some(TemporalAttention {
                    norm: LayerNorm::new(c, o.ln_eps, vb.pp("temporal_norm1"))?,
                    attn: MultiHeadAttention::new(c, o.num_heads, o.qkv_bias, vb.pp("temporal_attn"))?,
                    fc: candle_nn::linear(c, c, vb.pp("temporal_fc"))?,
                }),
                false => None,
            },
            norm2: LayerNorm::new(c, o.ln_eps, vb.pp("norm2"))?,
            mlp: Mlp::new(c, o.mlp_hidden(), vb.pp("mlp"))?,
            drop_path,
        })
    }

    /// [B, 1 + N·T, C] → the same shape (vit.py `Block.forward`, divided_space_time).
    fn forward_t(&self, x: &Tensor, g: Grid, train: bool, mut rng: Option<&mut Rng>) -> Result<Tensor> {
        let Grid { b, t, gh, gw } = g;
        let n = gh * gw;
        let c = x.dim(2)?;
        let p = self.drop_path;
        let Some(temporal) = &self.temporal else {
            // space_only: x is [B·T, 1 + N, C], one frame per row.
            let a = self.attn.forward_t(&self.norm1.forward_t(x, train)?, train)?;
            let x = (x + drop_path(&a, p, rng.as_deref_mut())?)?;
            let m = self.mlp.forward(&self.norm2.forward_t(&x, train)?)?;
            return x + drop_path(&m, p, rng)?;
        };
        // Time: the T tokens of each patch position ((b, n) rows; drop path per row, as there).
        let tokens = x.narrow(1, 1, n * t)?;
        let xt = tokens.reshape((b * n, t, c))?;
        let rt = temporal.attn.forward_t(&temporal.norm.forward_t(&xt, train)?, train)?;
        let rt = drop_path(&rt, p, rng.as_deref_mut())?;
        let rt = linear(&rt.reshape((b, n * t, c))?, &temporal.fc)?;
        let xt = (tokens + rt)?;
        // Space: the N patches of each frame with a copy of the cls token ((b, t) rows).
        let init_cls = x.narrow(1, 0, 1)?;
        let cls = init_cls.repeat((1, t, 1))?.reshape((b * t, 1, c))?;
        let xs = xt.reshape((b, gh, gw, t, c))?.permute((0, 3, 1, 2, 4))?.reshape((b * t, n, c))?;
        let xs = Tensor::cat(&[&cls, &xs], 1)?;
        let rs = self.attn.forward_t(&self.norm1.forward_t(&xs, train)?, train)?;
        let rs = drop_path(&rs, p, rng.as_deref_mut())?;
        // The frames' cls outputs averaged into one.
        let cls_out = rs.narrow(1, 0, 1)?.reshape((b, t, c))?.mean_keepdim(1)?;
        let res = rs.narrow(1, 1, n)?.reshape((b, t, gh, gw, c))?.permute((0, 2, 3, 1, 4))?.reshape((
            b,
            n * t,
            c,
        ))?;
        let x = (Tensor::cat(&[&init_cls, &xt], 1)? + Tensor::cat(&[&cls_out, &res], 1)?)?;
        let m = self.mlp.forward(&self.norm2.forward_t(&x, train)?)?;
        x + drop_path(&m, p, rng)?
    }
}

/// A divided space-time ViT with a linear head.
#[derive(Clone, Debug)]
pub struct TimeSformer {
    pub config: ModelConfig,
    pub options: VitOptions,
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    pos_embed: Tensor,
    /// Absent in `space_only` models.
    time_embed: Option<Tensor>,
    blocks: Vec<DividedBlock>,
    norm: LayerNorm,
    head: Linear,
}

impl TimeSformer {
    pub fn new(config: ModelConfig, vb: VarBuilder) -> Result<Self> {
        let o = VitOptions::from_config(&config).map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
        let (c, p) = (o.embed_dim, o.patch_size);
        let grid = config.crop_size as usize / p;
        let bb = vb.pp("backbone");
        let zeros = candle_nn::Init::Const(0.0);
        let rates = drop_path_rates(o.drop_path_rate, o.depth);
        let blocks = (0..o.depth)
            .map(|i| DividedBlock::new(&o, rates[i], bb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_weight: bb.get((c, 3, p, p), "patch_embed.proj.weight")?,
            patch_bias: bb.get_with_hints(c, "patch_embed.proj.bias", zeros)?,
            cls_token: bb.get_with_hints((1, 1, c), "cls_token", zeros)?,
            pos_embed: bb.get_with_hints((1, grid * grid + 1, c), "pos_embed", zeros)?,
            time_embed: match o.divided() {
                true => Some(bb.get_with_hints((1, config.frames, c), "time_embed", zeros)?),
                false => None,
            },
            blocks,
            norm: LayerNorm::new(c, o.ln_eps, bb.pp("norm"))?,
            head: candle_nn::linear(c, config.num_classes, vb.pp("head.fc"))?,
            options: o,
            config,
        })
    }

    /// The final cls token after the last LayerNorm, [B, C], for clips [B, T, 3, H, W].
    fn cls_features(&self, x: &Tensor, train: bool, mut rng: Option<&mut Rng>) -> Result<Tensor> {
        let (b, t, ch, h, w) = x.dims5()?;
        let (c, p) = (self.options.embed_dim, self.options.patch_size);
        let arch = &self.config.arch;
        if h % p != 0 || w % p != 0 {
            return Err(candle_core::Error::Msg(format!(
                "{arch}: input {w}×{h} is not a multiple of the {p}-pixel patch"
            )));
        }
        let (gh, gw) = (h / p, w / p);
        let n = gh * gw;
        if n + 1 != self.pos_embed.dim(1)? {
            let side = self.config.crop_size;
            return Err(candle_core::Error::Msg(format!("{arch}: input {w}×{h} gives {gw}×{gh} patches; the position embedding covers {side}×{side} pixels (crop to it)")));
        }
        if let Some(te) = self.time_embed.as_ref().filter(|te| te.dim(1).ok() != Some(t)) {
            return Err(candle_core::Error::Msg(format!(
                "{arch}: {t} frames; the time embedding has {}",
                te.dim(1)?
            )));
        }
        // The patch convolution (kernel = stride = patch) as one product over unfolded patches.
        let patches = x
            .reshape((b * t, ch, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * t * n, ch * p * p))?;
        let tokens = crate::nn::gemm::matmul(&patches, &self.patch_weight.reshape((c, ch * p * p))?.t()?)?
            .broadcast_add(&self.patch_bias)?
            .reshape((b * t, n, c))?
            .broadcast_add(&self.pos_embed.narrow(1, 1, n)?)?;
        let cls = (&self.cls_token + self.pos_embed.narrow(1, 0, 1)?)?;
        let grid = Grid { b, t, gh, gw };
        let Some(time_embed) = &self.time_embed else {
            // space_only: every frame with its own cls token; their outputs averaged.
            let mut x = Tensor::cat(&[&cls.broadcast_as((b * t, 1, c))?.contiguous()?, &tokens], 1)?;
            for block in &self.blocks {
                x = block.forward_t(&x, grid, train, rng.as_deref_mut())?;
            }
            let cls_out = x.narrow(1, 0, 1)?.reshape((b, t, c))?.mean(1)?;
            return self.norm.forward_t(&cls_out, train);
        };
        // Time embedding per patch position; tokens reordered with the time step fastest.
        let tokens = tokens
            .reshape((b, t, n, c))?
            .permute((0, 2, 1, 3))?
            .broadcast_add(&time_embed.unsqueeze(0)?)?
            .reshape((b, n * t, c))?;
        let mut x = Tensor::cat(&[&cls.broadcast_as((b, 1, c))?.contiguous()?, &tokens], 1)?;
        for block in &self.blocks {
            x = block.forward_t(&x, grid, train, rng.as_deref_mut())?;
        }
        // LayerNorm is per token: normalising the cls token alone gives the same row.
        self.norm.forward_t(&x.narrow(1, 0, 1)?.squeeze(1)?, train)
    }

    /// Clip features [B, 1, C] (the head's input).
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.cls_features(x, train, None)?.unsqueeze(1)
    }

    pub fn forward_t(&self, x: &Tensor, train: bool, mut dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        let rng = if train { dropout_rng.as_deref_mut() } else { None };
        let f = self.cls_features(x, train, rng)?;
        let f = dropout(&f, self.config.dropout as f64, if train { dropout_rng } else { None })?;
        linear(&f, &self.head)
    }
}

/// TimeSformer and PP-TimeSformer (the registry's builder).
pub(super) fn build_timesformer(config: &ModelConfig, vb: VarBuilder) -> anyhow::Result<Model> {
    Ok(Model::new(TimeSformer::new(config.clone(), vb)?))
}

impl super::Recognizer for TimeSformer {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn forward_train(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        TimeSformer::forward_t(self, x, train, dropout_rng)
    }
    fn classifier(&self) -> String {
        "head.fc".into()
    }
    fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        TimeSformer::features_t(self, x, train)
    }
}

/// Resizes a checkpoint's time and position embeddings to `config`'s frames and crop, once, at
/// import: time by nearest neighbour along the frame axis (`F.interpolate(mode="nearest")`, what
/// the references do in their forward), position by bilinear interpolation over the patch grid
/// (`F.interpolate(mode="bilinear", align_corners=False)`; the cls position stays). The
/// references resize in every forward instead, and PaddleVideo's `vit.py` interpolates its time
/// embedding over the wrong axes (a 16-frame input to an 8-frame model fails there).
pub(super) fn resize_embeddings(
    tensors: &mut HashMap<String, Tensor>,
    config: &ModelConfig,
) -> anyhow::Result<()> {
    let o = VitOptions::from_config(config)?;
    if let Some(t) = tensors.get("backbone.time_embed") {
        let (_, t0, c) = t.dims3()?;
        let t1 = config.frames;
        if t0 != t1 {
            // torch's legacy nearest: source index floor(i · in / out).
            let idx: Vec<u32> = (0..t1).map(|i| ((i * t0) / t1) as u32).collect();
            let idx = Tensor::new(idx.as_slice(), t.device())?;
            let resized = t.index_select(&idx, 1)?;
            debug_assert_eq!(resized.dims(), [1, t1, c]);
            tensors.insert("backbone.time_embed".into(), resized);
        }
    }
    if let Some(p) = tensors.get("backbone.pos_embed") {
        let (_, n0, c) = p.dims3()?;
        let g0 = ((n0 - 1) as f64).sqrt().round() as usize;
        let g1 = config.crop_size as usize / o.patch_size;
        if g0 * g0 + 1 != n0 {
            anyhow::bail!("pos_embed has {n0} rows: not a cls row and a square patch grid");
        }
        if g0 != g1 {
            let grid: Vec<f32> = p.narrow(1, 1, n0 - 1)?.flatten_all()?.to_vec1()?; // [g0·g0, C]
            let out = resize_grid(&grid, g0, g1, g1, c);
            let patches = Tensor::from_vec(out, (1, g1 * g1, c), p.device())?;
            let resized = Tensor::cat(&[&p.narrow(1, 0, 1)?, &patches], 1)?;
            tensors.insert("backbone.pos_embed".into(), resized);
        }
    }
    Ok(())
}

/// Bilinear resize of a square `g0`×`g0` grid of `c`-vectors (row-major) to `h1`×`w1`,
/// `F.interpolate(mode="bilinear", align_corners=False)`.
pub(super) fn resize_grid(grid: &[f32], g0: usize, h1: usize, w1: usize, c: usize) -> Vec<f32> {
    let (taps_y, taps_x) = (bilinear_taps(g0, h1), bilinear_taps(g0, w1));
    let mut out = vec![0f32; h1 * w1 * c];
    for (y, &(y0, y1, wy)) in taps_y.iter().enumerate() {
        for (x, &(x0, x1, wx)) in taps_x.iter().enumerate() {
            let row = &mut out[(y * w1 + x) * c..(y * w1 + x + 1) * c];
            for (yy, fy) in [(y0, 1.0 - wy), (y1, wy)] {
                for (xx, fx) in [(x0, 1.0 - wx), (x1, wx)] {
                    let src = &grid[(yy * g0 + xx) * c..(yy * g0 + xx + 1) * c];
                    let f = (fy * fx) as f32;
                    row.iter_mut().zip(src).for_each(|(r, s)| *r += f * s);
                }
            }
        }
    }
    out
}

/// Source taps of a linear resize from `n_in` to `n_out` samples, PyTorch's `align_corners=False`
/// rule: (lower index, upper index, weight of the upper).
pub(super) fn bilinear_taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f64)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
            let lo = (src.floor() as usize).min(n_in - 1);
            let hi = (lo + 1).min(n_in - 1);
            (lo, hi, src - lo as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn tiny(attention: &str) -> TimeSformer {
        let mut cfg = ModelConfig::defaults("timesformer_vit_b");
        let o: Vec<String> = [
            "embed_dim=24",
            "num_heads=2",
            "depth=2",
            "patch_size=8",
            "crop_size=16",
            "frames=4",
            "num_classes=3",
            &format!("attention_type={attention}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cfg.apply_overrides(&o).unwrap();
        let vm = VarMap::new();
        let m = TimeSformer::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        crate::model::init_weights(&vm, 5).unwrap();
        // Non-zero embeddings, so that frame order is visible to the divided model.
        for (name, var) in crate::nn::vars_by_name(&vm) {
            if name.ends_with("embed") {
                var.set(&crate::rng::randn(0f32, 1., var.shape(), &Device::Cpu).unwrap()).unwrap();
            }
        }
        m
    }

    /// Reversing the frames changes the divided model's logits (time embedding, temporal
    /// attention) but not the space-only one's, whose frames are a set averaged at the end.
    #[test]
    fn only_the_divided_model_sees_frame_order() {
        let x = crate::rng::randn(0f32, 1., (2, 4, 3, 16, 16), &Device::Cpu).unwrap();
        let reversed = x.index_select(&Tensor::new(&[3u32, 2, 1, 0], &Device::Cpu).unwrap(), 1).unwrap();
        for (attention, order_matters) in [("divided_space_time", true), ("space_only", false)] {
            let m = tiny(attention);
            let (a, b) =
                (m.forward_t(&x, false, None).unwrap(), m.forward_t(&reversed, false, None).unwrap());
            assert_eq!(a.dims(), [2, 3]);
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d > 1e-4, order_matters, "{attention}: reversing frames moved the logits by {d}");
        }
        assert!(tiny("space_only").time_embed.is_none());
    }

    /// A 2-block PP-TimeSformer 24 wide with 2 heads, 8-pixel patches over 16 pixels and 4 frames
    /// (`extra` overrides on top), initialised as the references do.
    fn initialised(extra: &[&str]) -> (TimeSformer, VarMap) {
        let mut cfg = ModelConfig::defaults("pptimesformer_vit_b");
        let base = ["embed_dim=24", "num_heads=2", "depth=2", "patch_size=8", "crop_size=16", "frames=4"];
        let o: Vec<String> = base.iter().chain(extra).map(|s| s.to_string()).collect();
        cfg.apply_overrides(&o).unwrap();
        let vm = VarMap::new();
        let m = TimeSformer::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        crate::model::init_weights_for(&vm, "pptimesformer_vit_b", 5).unwrap();
        (m, vm)
    }

    /// Every parameter gets a gradient from a training forward (the composed LayerNorm and
    /// softmax; temporal_fc starts at 0 past the first block, as the references initialise it).
    #[test]
    fn training_reaches_every_parameter() {
        let (m, vm) = initialised(&["num_classes=3"]);
        let x = crate::rng::randn(0f32, 1., (2, 4, 3, 16, 16), &Device::Cpu).unwrap();
        let y = m.forward_t(&x, true, None).unwrap();
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            let gr = g.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            let mx = gr.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            // Past the first block the temporal branch waits behind its zero temporal_fc.
            let behind_zero_fc =
                name.contains(".temporal_") && !name.contains("temporal_fc") && !name.contains("blocks.0.");
            assert!(mx > 0.0 || behind_zero_fc, "zero gradient for {name}");
        }
    }

    /// It can memorise a handful of random clips (AdamW): the loss falls by 10×.
    #[test]
    fn memorises_a_fixed_batch() {
        use crate::train::{cross_entropy, trainable_vars, AdamWConfig, OptimizerConfig, Targets};
        let (m, vm) = initialised(&["num_classes=4", "embed_dim=32", "drop_path_rate=0"]);
        let x = crate::rng::randn(0f32, 1., (8, 4, 3, 16, 16), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1, 2, 3, 0, 1, 2, 3], &Device::Cpu).unwrap();
        let adamw = OptimizerConfig::AdamW(AdamWConfig { lr: 0.001, ..Default::default() });
        let mut opt = adamw.build(trainable_vars(&vm)).unwrap();
        let (mut first, mut last) = (None, 0.0);
        for _ in 0..100 {
            let logits = m.forward_t(&x, true, None).unwrap();
            let loss = cross_entropy(&logits, Targets::Labels(&labels), 0.0).unwrap();
            last = loss.to_scalar::<f32>().unwrap();
            first.get_or_insert(last);
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        eprintln!("loss {} → {last}", first.unwrap());
        assert!(last < 0.1 * first.unwrap(), "loss {} → {last}", first.unwrap());
    }

    /// Order alone separates two classes (a patch lit in the first or in the second half of the
    /// clip, elsewhere noise): the divided model learns it from the references' initialisation
    /// (time embedding 0, where the model cannot tell order: measured, a plateau at ln 2 for ~175
    /// steps, then the loss falls below 0.01 by step 275).
    #[test]
    fn learns_order_from_scratch() {
        use crate::train::{cross_entropy, trainable_vars, AdamWConfig, OptimizerConfig, Targets};
        let (m, vm) = initialised(&["num_classes=2", "embed_dim=32", "drop_path_rate=0"]);
        let adamw = OptimizerConfig::AdamW(AdamWConfig { lr: 0.001, ..Default::default() });
        let mut opt = adamw.build(trainable_vars(&vm)).unwrap();
        let mut rng = crate::rng::Rng::new(3);
        let batch = |rng: &mut crate::rng::Rng| {
            let mut x = vec![0f32; 16 * 4 * 3 * 16 * 16];
            let mut labels = vec![0u32; 16];
            for b in 0..16 {
                let label = rng.below(2);
                labels[b] = label as u32;
                let (py, px) = (rng.below(2) * 8, rng.below(2) * 8);
                for t in 0..4 {
                    let lit = (t < 2) == (label == 0);
                    for c in 0..3 {
                        for y in 0..16 {
                            for xx in 0..16 {
                                let i = (((b * 4 + t) * 3 + c) * 16 + y) * 16 + xx;
                                let inside = lit && (py..py + 8).contains(&y) && (px..px + 8).contains(&xx);
                                x[i] = if inside { 1.0 } else { 0.1 * (rng.uniform() as f32 - 0.5) };
                            }
                        }
                    }
                }
            }
            (
                Tensor::from_vec(x, (16, 4, 3, 16, 16), &Device::Cpu).unwrap(),
                Tensor::new(labels.as_slice(), &Device::Cpu).unwrap(),
            )
        };
        let mut losses = Vec::new();
        for _ in 0..300 {
            let (x, labels) = batch(&mut rng);
            let logits = m.forward_t(&x, true, None).unwrap();
            let loss = cross_entropy(&logits, Targets::Labels(&labels), 0.0).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let (first, last) =
            (losses[..25].iter().sum::<f32>() / 25.0, losses[275..].iter().sum::<f32>() / 25.0);
        eprintln!("mean loss of the first 25 steps {first}, of the last 25 {last}");
        assert!(first > 0.6 && last < 0.1, "loss {first} → {last}");
    }
}

#[cfg(test)]
mod gradient_check {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn gradients_match_finite_differences() {
        let mut cfg = ModelConfig::defaults("pptimesformer_vit_b");
        let o: Vec<String> = [
            "embed_dim=16",
            "num_heads=2",
            "depth=2",
            "patch_size=8",
            "crop_size=16",
            "frames=3",
            "num_classes=3",
            "drop_path_rate=0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cfg.apply_overrides(&o).unwrap();
        let vm = VarMap::new();
        let m = TimeSformer::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        crate::nn::reseed_params(&vm);
        let x = crate::rng::rand(0f32, 1., (2, 3, 3, 16, 16), &Device::Cpu).unwrap();
        crate::model::gradcheck::assert_gradients(&vm, |train| m.forward_t(&x, train, None).unwrap());
    }
}
