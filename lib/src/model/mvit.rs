//! MViT (Multiscale Vision Transformers, Fan et al. 2021) as pytorchvideo 0.1.5 builds it
//! (`models/vision_transformers.py` `create_multiscale_vision_transformers`, hub
//! `mvit_base_16x4` / `mvit_base_32x3`): a Conv3d patch embedding, separable position
//! embeddings (spatial, temporal, cls), blocks of pooling attention (`nn::MultiscaleAttention`)
//! that shrink the token grid while the width grows, and a linear head on the cls token.
//!
//! Tokens: the cls token, then the patch grid row-major with the time step slowest (the patch
//! convolution's output flattened). Parameter names are pytorchvideo's
//! (`patch_embed.patch_model.weight`, `blocks.0.attn.pool_k.weight`, ..., `head.proj.weight`).
//!
//! The stage plan follows the builder: at each block of `stage_starts` the width and the head
//! count double (`round_width`, as there) and q is pooled by `q_stride`; k and v are pooled from
//! the first block by `kv_stride`, divided by every q stride on the way (`pool_kv_stride_adaptive`);
//! a block whose q is pooled max-pools its shortcut with a kernel of stride + 1.

use super::resnet3d::to_channels_first;
use super::{Model, ModelConfig};
use crate::nn::{
    drop_path, drop_path_rates, dropout, linear, max_pool3d, Conv3d, Conv3dConfig, LayerNorm, Mlp,
    MultiscaleAttention, PoolingSpec, Thw,
};
use crate::rng::Rng;
use candle_core::{Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// MViT's sizes and settings (keys of the config's `extra` map; absent keys take MViT-B's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MvitOptions {
    /// Width of the patch embedding (the first block).
    pub embed_dim: usize,
    /// Heads of the first block.
    pub num_heads: usize,
    pub depth: usize,
    /// Blocks at which width and heads double and q is pooled.
    pub stage_starts: Vec<usize>,
    pub q_stride: [usize; 3],
    /// The first block's k/v pooling stride (divided by each q stride after it).
    pub kv_stride: [usize; 3],
    /// The q and k/v pooling kernel.
    pub pool_kernel: [usize; 3],
    /// The patch convolution's kernel and stride (padding kernel / 2).
    pub patch_kernel: [usize; 3],
    pub patch_stride: [usize; 3],
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    /// The blocks' and the final LayerNorm's eps.
    pub ln_eps: f64,
    /// The pooled q/k/v LayerNorms' eps: torch's default 1e-5 in pytorchvideo, 1e-6 in
    /// torchvision's `mvit_v1_b`.
    pub attn_ln_eps: f64,
    pub drop_path_rate: f64,
}

impl MvitOptions {
    pub const KEYS: [&'static str; 14] = [
        "embed_dim",
        "num_heads",
        "depth",
        "stage_starts",
        "q_stride",
        "kv_stride",
        "pool_kernel",
        "patch_kernel",
        "patch_stride",
        "mlp_ratio",
        "qkv_bias",
        "ln_eps",
        "attn_ln_eps",
        "drop_path_rate",
    ];

    /// MViT-B as pytorchvideo's hub builds it (`mvit_video_base_config`; the 32×3 model differs
    /// only in its input).
    pub fn for_arch(arch: &str) -> Option<Self> {
        matches!(arch, "mvit_base_16x4" | "mvit_base_32x3").then(|| Self {
            embed_dim: 96,
            num_heads: 1,
            depth: 16,
            stage_starts: vec![1, 3, 14],
            q_stride: [1, 2, 2],
            kv_stride: [1, 8, 8],
            pool_kernel: [3, 3, 3],
            patch_kernel: [3, 7, 7],
            patch_stride: [2, 4, 4],
            mlp_ratio: 4.0,
            qkv_bias: true,
            ln_eps: 1e-6,
            attn_ln_eps: 1e-5,
            drop_path_rate: 0.0,
        })
    }

    pub fn from_config(config: &ModelConfig) -> anyhow::Result<Self> {
        let Some(base) = Self::for_arch(&config.arch) else {
            anyhow::bail!("{} is not an MViT", config.arch)
        };
        let o = config.options_over(base, &Self::KEYS)?;
        let arch = &config.arch;
        let positive = |a: [usize; 3]| a.iter().all(|x| *x > 0);
        if o.embed_dim == 0 || o.num_heads == 0 || o.depth == 0 {
            anyhow::bail!("{arch}: embed_dim, num_heads and depth must be positive");
        }
        if ![o.q_stride, o.kv_stride, o.pool_kernel, o.patch_kernel, o.patch_stride].into_iter().all(positive)
        {
            anyhow::bail!("{arch}: strides and kernels must be positive");
        }
        if o.stage_starts.iter().any(|s| *s >= o.depth) {
            anyhow::bail!("{arch}: stage_starts {:?} reach past depth {}", o.stage_starts, o.depth);
        }
        if !(o.ln_eps > 0.0 && o.attn_ln_eps > 0.0 && o.mlp_ratio > 0.0)
            || !(0.0..1.0).contains(&o.drop_path_rate)
        {
            anyhow::bail!("{arch}: eps and mlp_ratio must be positive, drop_path_rate in [0, 1)");
        }
        if o.embed_dim % o.num_heads != 0 {
            anyhow::bail!("{arch}: width {} is not a multiple of {} heads", o.embed_dim, o.num_heads);
        }
        for b in o.plan() {
            if b.dim % b.heads != 0 {
                anyhow::bail!("{arch}: width {} is not a multiple of {} heads", b.dim, b.heads);
            }
        }
        Ok(o)
    }

    /// The patch grid (T', H', W') of a `frames` × `size`² input.
    pub fn grid(&self, frames: usize, size: usize) -> Thw {
        let [t, h, w] = [frames, size, size];
        let out = |len: usize, a: usize| {
            let (k, s) = (self.patch_kernel[a], self.patch_stride[a]);
            (len + 2 * (k / 2)).saturating_sub(k) / s + 1
        };
        [out(t, 0), out(h, 1), out(w, 2)]
    }

    /// Each block's widths, heads and pooling, as the builder derives them.
    fn plan(&self) -> Vec<BlockPlan> {
        let mul = |i: usize| if self.stage_starts.contains(&i) { 2.0 } else { 1.0 };
        let (mut heads, mut dim) = (self.num_heads, self.embed_dim);
        let mut kv = self.kv_stride;
        let mut plan = Vec::with_capacity(self.depth);
        for i in 0..self.depth {
            heads = round_width(heads, mul(i), 1, 1);
            dim = round_width(dim, mul(i), heads, heads);
            let dim_out = round_width(dim, mul(i + 1), 0, round_width(heads, mul(i + 1), 8, 8));
            let pooled_q = self.stage_starts.contains(&i);
            if pooled_q {
                kv = [0, 1, 2].map(|d| (kv[d] / self.q_stride[d]).max(1));
            }
            let (kernel_q, stride_q) = match pooled_q {
                true => (self.pool_kernel, self.q_stride),
                false => ([1; 3], [1; 3]),
            };
            plan.push(BlockPlan {
                dim,
                dim_out,
                heads,
                pooling: PoolingSpec { kernel_q, stride_q, kernel_kv: self.pool_kernel, stride_kv: kv },
                skip: pooled_q.then(|| (self.q_stride.map(|s| if s > 1 { s + 1 } else { s }), self.q_stride)),
            });
        }
        plan
    }
}

/// pytorchvideo `layers/utils.py` `round_width`: `width · multiplier` rounded to a multiple of
/// `divisor`, at least `min_width` (0: the divisor), and not below 90% of the product.
fn round_width(width: usize, multiplier: f64, min_width: usize, divisor: usize) -> usize {
    let w = width as f64 * multiplier;
    let min_width = if min_width == 0 { divisor } else { min_width };
    let d = divisor as f64;
    let mut out = (min_width as f64).max(((w + d / 2.0) as usize / divisor * divisor) as f64);
    if out < 0.9 * w {
        out += d;
    }
    out as usize
}

#[derive(Clone, Debug, PartialEq)]
struct BlockPlan {
    dim: usize,
    dim_out: usize,
    heads: usize,
    pooling: PoolingSpec,
    /// The shortcut's max pool (kernel, stride), in blocks that pool q.
    skip: Option<([usize; 3], [usize; 3])>,
}

/// pytorchvideo `MultiScaleBlock`.
#[derive(Clone, Debug)]
struct MvitBlock {
    norm1: LayerNorm,
    attn: MultiscaleAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    /// dim → dim_out on the normalised input, where the width grows.
    proj: Option<Linear>,
    skip: Option<([usize; 3], [usize; 3])>,
    drop_path: f64,
}

impl MvitBlock {
    fn new(o: &MvitOptions, p: &BlockPlan, drop_path: f64, vb: VarBuilder) -> Result<Self> {
        let hidden = (p.dim as f64 * o.mlp_ratio) as usize;
        Ok(Self {
            norm1: LayerNorm::new(p.dim, o.ln_eps, vb.pp("norm1"))?,
            attn: MultiscaleAttention::new(
                p.dim,
                p.heads,
                o.qkv_bias,
                p.pooling,
                o.attn_ln_eps,
                vb.pp("attn"),
            )?,
            norm2: LayerNorm::new(p.dim, o.ln_eps, vb.pp("norm2"))?,
            mlp: Mlp {
                fc1: candle_nn::linear(p.dim, hidden, vb.pp("mlp.fc1"))?,
                fc2: candle_nn::linear(hidden, p.dim_out, vb.pp("mlp.fc2"))?,
            },
            proj: match p.dim != p.dim_out {
                true => Some(candle_nn::linear(p.dim, p.dim_out, vb.pp("proj"))?),
                false => None,
            },
            skip: p.skip,
            drop_path,
        })
    }

    /// [B, 1 + T·H·W, C] over `thw` → [B, 1 + T'·H'·W', C_out] and the new grid.
    fn forward_t(
        &self,
        x: &Tensor,
        thw: Thw,
        train: bool,
        mut rng: Option<&mut Rng>,
    ) -> Result<(Tensor, Thw)> {
        let (a, thw_new) = self.attn.forward_t(&self.norm1.forward_t(x, train)?, thw, train)?;
        let shortcut = match self.skip {
            // Inference: pooled where the tokens lie.
            Some((kernel, stride)) if !train && crate::nn::fusable(x) => {
                crate::nn::max_pool_tokens(&x.contiguous()?, thw, kernel, stride)?.0
            }
            Some((kernel, stride)) => max_pool_tokens(x, thw, kernel, stride)?,
            None => x.clone(),
        };
        let x = (shortcut + drop_path(&a, self.drop_path, rng.as_deref_mut())?)?;
        let xn = self.norm2.forward_t(&x, train)?;
        let m = self.mlp.forward(&xn)?;
        let x = match &self.proj {
            Some(p) => linear(&xn, p)?,
            None => x,
        };
        Ok(((x + drop_path(&m, self.drop_path, rng)?)?, thw_new))
    }
}

/// The shortcut's max pool over the token grid (the cls token passes), padding kernel / 2.
fn max_pool_tokens(x: &Tensor, thw: Thw, kernel: [usize; 3], stride: [usize; 3]) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    let [t, h, w] = thw;
    let grid = x.narrow(1, 1, n - 1)?.reshape((b, t, h, w, c))?.permute((0, 4, 1, 2, 3))?.contiguous()?;
    let pooled = max_pool3d(&grid, kernel, stride, kernel.map(|k| k / 2))?;
    let (_, _, t1, h1, w1) = pooled.dims5()?;
    let tokens = pooled.reshape((b, c, t1 * h1 * w1))?.transpose(1, 2)?;
    Tensor::cat(&[&x.narrow(1, 0, 1)?, &tokens], 1)
}

/// MViT with its linear head.
#[derive(Clone, Debug)]
pub struct Mvit {
    pub config: ModelConfig,
    pub options: MvitOptions,
    patch: Conv3d,
    cls_token: Tensor,
    pos_spatial: Tensor,
    pos_temporal: Tensor,
    pos_class: Tensor,
    /// The patch grid the position embeddings cover.
    grid: Thw,
    blocks: Vec<MvitBlock>,
    norm: LayerNorm,
    head: Linear,
}

impl Mvit {
    pub fn new(config: ModelConfig, vb: VarBuilder) -> Result<Self> {
        let o = MvitOptions::from_config(&config).map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
        let c = o.embed_dim;
        let grid = o.grid(config.frames, config.crop_size as usize);
        let patch_cfg = Conv3dConfig {
            stride: o.patch_stride,
            padding: o.patch_kernel.map(|k| k / 2),
            bias: true,
            ..Default::default()
        };
        let pe = vb.pp("cls_positional_encoding");
        let zeros = candle_nn::Init::Const(0.0);
        let plan = o.plan();
        let rates = drop_path_rates(o.drop_path_rate, o.depth);
        let blocks = plan
            .iter()
            .enumerate()
            .map(|(i, p)| MvitBlock::new(&o, p, rates[i], vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let width = plan.last().map_or(c, |p| p.dim_out);
        Ok(Self {
            patch: Conv3d::new(3, c, o.patch_kernel, patch_cfg, vb.pp("patch_embed.patch_model"))?,
            cls_token: pe.get_with_hints((1, 1, c), "cls_token", zeros)?,
            pos_spatial: pe.get_with_hints((1, grid[1] * grid[2], c), "pos_embed_spatial", zeros)?,
            pos_temporal: pe.get_with_hints((1, grid[0], c), "pos_embed_temporal", zeros)?,
            pos_class: pe.get_with_hints((1, 1, c), "pos_embed_class", zeros)?,
            grid,
            blocks,
            norm: LayerNorm::new(width, o.ln_eps, vb.pp("norm_embed"))?,
            head: candle_nn::linear(width, config.num_classes, vb.pp("head.proj"))?,
            options: o,
            config,
        })
    }

    /// The final cls token after the last LayerNorm, [B, C], for clips [B, T, 3, H, W].
    fn cls_features(&self, x: &Tensor, train: bool, mut rng: Option<&mut Rng>) -> Result<Tensor> {
        let arch = &self.config.arch;
        let (_, t, _, h, w) = x.dims5()?;
        let x = to_channels_first(x, self.config.frames)?;
        let y = self.patch.forward(&x)?;
        let (b, c, gt, gh, gw) = y.dims5()?;
        if [gt, gh, gw] != self.grid {
            let side = self.config.crop_size;
            return Err(candle_core::Error::Msg(format!(
                "{arch}: input {t}×{w}×{h} gives a {gt}×{gw}×{gh} patch grid; the position embeddings cover {}×{side}×{side} (crop to {side})",
                self.config.frames
            )));
        }
        let tokens = y.flatten_from(2)?.transpose(1, 2)?;
        let pos = self
            .pos_spatial
            .unsqueeze(1)?
            .broadcast_add(&self.pos_temporal.unsqueeze(2)?)?
            .reshape((1, gt * gh * gw, c))?;
        let tokens = tokens.broadcast_add(&pos)?;
        let cls = (&self.cls_token + &self.pos_class)?.broadcast_as((b, 1, c))?.contiguous()?;
        let mut x = Tensor::cat(&[&cls, &tokens], 1)?;
        let mut thw = self.grid;
        for block in &self.blocks {
            (x, thw) = block.forward_t(&x, thw, train, rng.as_deref_mut())?;
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

/// MViT (the registry's builder).
pub(super) fn build_mvit(config: &ModelConfig, vb: VarBuilder) -> anyhow::Result<Model> {
    Ok(Model::new(Mvit::new(config.clone(), vb)?))
}

impl super::Recognizer for Mvit {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn forward_train(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        Mvit::forward_t(self, x, train, dropout_rng)
    }
    fn classifier(&self) -> String {
        "head.proj".into()
    }
    fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Mvit::features_t(self, x, train)
    }
}

/// Resizes a checkpoint's position embeddings to `config`'s frames and crop, once, at import:
/// the spatial one bilinearly over its square grid, the temporal one linearly along time (both
/// `F.interpolate` with `align_corners=False`); the cls position stays. pytorchvideo cannot run
/// other sizes at all (pytorchvideo#180).
pub(super) fn resize_mvit_embeddings(
    tensors: &mut HashMap<String, Tensor>,
    config: &ModelConfig,
) -> anyhow::Result<()> {
    let o = MvitOptions::from_config(config)?;
    let [t1, h1, w1] = o.grid(config.frames, config.crop_size as usize);
    const SPATIAL: &str = "cls_positional_encoding.pos_embed_spatial";
    const TEMPORAL: &str = "cls_positional_encoding.pos_embed_temporal";
    if let Some(p) = tensors.get(TEMPORAL) {
        let (_, t0, c) = p.dims3()?;
        if t0 != t1 {
            let rows: Vec<f32> = p.flatten_all()?.to_vec1()?;
            let taps = super::timesformer::bilinear_taps(t0, t1);
            let mut out = vec![0f32; t1 * c];
            for (i, &(lo, hi, wt)) in taps.iter().enumerate() {
                for (src, f) in [(lo, 1.0 - wt), (hi, wt)] {
                    let f = f as f32;
                    out[i * c..(i + 1) * c]
                        .iter_mut()
                        .zip(&rows[src * c..(src + 1) * c])
                        .for_each(|(o, s)| *o += f * s);
                }
            }
            tensors.insert(TEMPORAL.into(), Tensor::from_vec(out, (1, t1, c), p.device())?);
        }
    }
    if let Some(p) = tensors.get(SPATIAL) {
        let (_, n0, c) = p.dims3()?;
        let g0 = (n0 as f64).sqrt().round() as usize;
        if g0 * g0 != n0 {
            anyhow::bail!("{SPATIAL} has {n0} rows: not a square patch grid");
        }
        if (g0, g0) != (h1, w1) {
            let grid: Vec<f32> = p.flatten_all()?.to_vec1()?;
            let resized = super::timesformer::resize_grid(&grid, g0, h1, w1, c);
            tensors.insert(SPATIAL.into(), Tensor::from_vec(resized, (1, h1 * w1, c), p.device())?);
        }
    }
    Ok(())
}

/// The sizes a pytorchvideo-named checkpoint's tensors show (as `-o` overrides): widths, depth,
/// stages, heads (the first block's k pool has one kernel per head channel), kernels, MLP ratio,
/// q/k/v bias, classes, and frames and crop from the position embeddings (at the default patch
/// stride). k/v strides are not in the shapes: MViT-B's unless given.
pub(super) fn mvit_overrides_from_weights(tensors: &HashMap<String, Tensor>) -> Vec<String> {
    let mut o = Vec::new();
    let dims = |name: &str| tensors.get(name).map(|t| t.dims().to_vec());
    let base = MvitOptions::for_arch("mvit_base_16x4").expect("MViT-B");
    if let Some(w) = dims("patch_embed.patch_model.weight").filter(|d| d.len() == 5) {
        let c = w[0];
        o.push(format!("embed_dim={c}"));
        o.push(format!("patch_kernel=[{},{},{}]", w[2], w[3], w[4]));
        if let Some(k) = dims("blocks.0.attn.pool_k.weight").filter(|d| d.len() == 5) {
            if k[0] > 0 && c % k[0] == 0 {
                o.push(format!("num_heads={}", c / k[0]));
            }
            o.push(format!("pool_kernel=[{},{},{}]", k[2], k[3], k[4]));
        }
        if let Some(h) = dims("blocks.0.mlp.fc1.weight") {
            o.push(format!("mlp_ratio={}", h[0] as f64 / c as f64));
        }
    }
    let depth = (0..).take_while(|i| tensors.contains_key(&format!("blocks.{i}.norm1.weight"))).count();
    if depth > 0 {
        o.push(format!("depth={depth}"));
        let starts: Vec<String> = (0..depth)
            .filter(|i| tensors.contains_key(&format!("blocks.{i}.attn.pool_q.weight")))
            .map(|i| i.to_string())
            .collect();
        o.push(format!("stage_starts=[{}]", starts.join(",")));
    }
    o.push(format!("qkv_bias={}", tensors.contains_key("blocks.0.attn.q.bias")));
    if let Some(h) = dims("head.proj.weight") {
        o.push(format!("num_classes={}", h[0]));
    }
    if let Some(t) = dims("cls_positional_encoding.pos_embed_temporal") {
        o.push(format!("frames={}", t[1] * base.patch_stride[0]));
    }
    if let Some(s) = dims("cls_positional_encoding.pos_embed_spatial") {
        let side = (s[1] as f64).sqrt().round() as usize;
        if side * side == s[1] {
            o.push(format!("crop_size={}", side * base.patch_stride[1]));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// MViT-B's plan is pytorchvideo's: widths 96 → 768, heads 1 → 8, q pooled at 1, 3, 14,
    /// k/v strides 8 → 4 → 2 → 1 spatially.
    #[test]
    fn mvit_b_plan_matches_the_hub_model() {
        let plan = MvitOptions::for_arch("mvit_base_16x4").unwrap().plan();
        let dims: Vec<(usize, usize, usize)> = plan.iter().map(|p| (p.dim, p.dim_out, p.heads)).collect();
        assert_eq!(dims[..4], [(96, 192, 1), (192, 192, 2), (192, 384, 2), (384, 384, 4)]);
        assert_eq!(dims[13..], [(384, 768, 4), (768, 768, 8), (768, 768, 8)]);
        let kv: Vec<[usize; 3]> = plan.iter().map(|p| p.pooling.stride_kv).collect();
        assert_eq!(kv[0], [1, 8, 8]);
        assert_eq!(kv[1..3], [[1, 4, 4], [1, 4, 4]]);
        assert_eq!(kv[3], [1, 2, 2]);
        assert_eq!(kv[14..], [[1, 1, 1], [1, 1, 1]]);
        let pooled: Vec<usize> = (0..16).filter(|i| plan[*i].skip.is_some()).collect();
        assert_eq!(pooled, [1, 3, 14]);
        assert_eq!(plan[1].skip, Some(([1, 3, 3], [1, 2, 2])));
        assert_eq!(MvitOptions::for_arch("mvit_base_16x4").unwrap().grid(16, 224), [8, 56, 56]);
    }

    fn tiny() -> (Mvit, VarMap) {
        let mut cfg = ModelConfig::defaults("mvit_base_16x4");
        let o: Vec<String> = [
            "embed_dim=16",
            "num_heads=1",
            "depth=3",
            "stage_starts=[1]",
            "frames=4",
            "crop_size=32",
            "num_classes=3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cfg.apply_overrides(&o).unwrap();
        let vm = VarMap::new();
        let m = Mvit::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        crate::model::init_weights_for(&vm, "mvit_base_16x4", 5).unwrap();
        (m, vm)
    }

    /// A narrow MViT runs, its training forward matches inference, every parameter gets a
    /// gradient and the gradients match finite differences; a wrong input size is refused with
    /// the crop to use.
    #[test]
    fn a_narrow_mvit_runs_and_trains() {
        let (m, vm) = tiny();
        let x = crate::rng::randn(0f32, 1., (2, 4, 3, 32, 32), &Device::Cpu).unwrap();
        let eval = m.forward_t(&x, false, None).unwrap();
        assert_eq!(eval.dims(), [2, 3]);
        let train = m.forward_t(&x, true, None).unwrap();
        let d = (&eval - &train).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "{d}");
        let g = train.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            assert!(g.get(var.as_tensor()).is_some(), "no gradient for {name}");
        }
        crate::model::gradcheck::assert_gradients(&vm, |train| m.forward_t(&x, train, None).unwrap());
        let wrong = crate::rng::randn(0f32, 1., (1, 4, 3, 40, 40), &Device::Cpu).unwrap();
        let e = m.forward_t(&wrong, false, None).unwrap_err().to_string();
        assert!(e.contains("crop to 32"), "{e}");
    }
}
