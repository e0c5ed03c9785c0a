//! X3D (Feichtenhofer 2020) with pytorchvideo's structure and parameter names, as
//! `pytorchvideo.models.x3d.create_x3d` builds it for the hub's x3d_xs/s/m/l:
//!
//! * `blocks.0`: stem `conv.conv_t` (1, 3, 3) stride (1, 2, 2) then `conv.conv_xy`, a depthwise
//!   (5, 1, 1) temporal conv (the names are pytorchvideo's, swapped as they are there), `norm`, ReLU;
//! * `blocks.1-4`: stages of widths 24/48/96/192 (width factor 2), ⌈depth_factor · [1, 2, 5, 3]⌉
//!   blocks (or the config's `stage_depths`); each block `branch2.conv_a` 1×1×1 → `norm_a` →
//!   ReLU → `conv_b` depthwise 3×3×3 (spatial stride 2 on a stage's first block) → `norm_b.0` →
//!   squeeze-excitation `norm_b.1` (even-numbered blocks, reduction `round_width(inner, 1/16)`)
//!   → swish → `conv_c` → `norm_c`;
//!   shortcut `branch1_conv` on the first block, `branch1_norm` only where the width changes;
//!   ReLU after the sum;
//! * head `blocks.5`: `pool.pre_conv` 1×1×1 → `pool.pre_norm` → ReLU → average pool →
//!   `pool.post_conv` (→ 2048) → ReLU → dropout → `proj`.
//!
//! The hub head ends in a softmax in eval mode; here the model outputs logits (test-time
//! aggregation applies the softmax). Its average pool has the hub's kernel, stride 1: clip length
//! × ⌈crop / 32⌉² of the hub builder's `input_clip_length` and `input_crop_size` (x3d_xs 4 × 5²,
//! x3d_s 13 × 5², x3d_m 16 × 7², x3d_l 16 × 10²), not of the input. At the zoo's test crops
//! (182, 182, 256, 356: maps of 6², 6², 8², 12²) it pools several windows, each goes through
//! `post_conv` and its ReLU, and the logits are averaged over the windows (`output_pool`); on a
//! map smaller than the kernel (reduced test inputs, where torch's pool would fail) the kernel is
//! clipped to the map, i.e. the pool is global.
//!
//! Options (config keys, absent = the hub's structure). `head_pool`: `"global"` (mmaction2's
//! X3DHead, an adaptive average pool; set by the importer) or a kernel `[t, h, w]`. For mmaction2's X3D
//! (mmaction/models/backbones/x3d.py): `shortcut_norm_always` puts a `branch1_norm` after every
//! `branch1_conv`, as mmaction2's `downsample` ConvModule always has its BN (L389-400), where
//! pytorchvideo's `create_x3d_res_block` has one only where the width changes; the two differ in
//! the first block of stage 1, which strides without widening.

use super::resnet3d::{conv3d as conv, global_pool, to_channels_first, ConvBn3d};
use super::ModelConfig;
use crate::nn::{batch_norm2d, gated_swish, swish_inference, BatchNorm2d, Conv3d};
use crate::rng::Rng;
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use serde::Deserialize;

/// pytorchvideo `round_width` (layers/utils.py): width × multiplier to a multiple of `divisor`.
fn round_width(width: usize, multiplier: f64, divisor: usize) -> usize {
    let w = width as f64 * multiplier;
    let mut out = divisor.max(((w + divisor as f64 / 2.0) as usize) / divisor * divisor);
    if (out as f64) < 0.9 * w {
        out += divisor;
    }
    out
}

/// Depth factor of each hub variant (hub/x3d.py; XS, S and M differ only in input size).
pub fn x3d_depth_factor(arch: &str) -> Option<f64> {
    match arch {
        "x3d_xs" | "x3d_s" | "x3d_m" => Some(2.2),
        "x3d_l" => Some(5.0),
        _ => None,
    }
}

/// The X3D options a config may carry (keys of its `extra` map; see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct X3dOptions {
    pub shortcut_norm_always: Option<bool>,
    /// `"global"` or `[t, h, w]`; absent: the hub's kernel for the architecture.
    pub head_pool: Option<serde_json::Value>,
}

impl X3dOptions {
    pub const KEYS: [&'static str; 2] = ["shortcut_norm_always", "head_pool"];

    pub fn from_config(config: &ModelConfig) -> Result<Self> {
        config.extra_options(&Self::KEYS)
    }

    /// The head's average-pool kernel (None: global): the config's, else the hub's for `arch`.
    pub fn head_pool_kernel(&self, arch: &str) -> Result<Option<[usize; 3]>> {
        match &self.head_pool {
            Some(serde_json::Value::String(s)) if s == "global" => Ok(None),
            Some(v) => match serde_json::from_value::<[usize; 3]>(v.clone()) {
                Ok(k) if k.iter().all(|&d| d > 0) => Ok(Some(k)),
                _ => candle_core::bail!(
                    "x3d: head_pool must be \"global\" or [t, h, w] of positive sizes, not {v}"
                ),
            },
            // pytorchvideo.models.hub.x3d: (input_clip_length, ⌈input_crop_size / 32⌉²).
            None => Ok(match arch {
                "x3d_xs" => Some([4, 5, 5]),
                "x3d_s" => Some([13, 5, 5]),
                "x3d_m" => Some([16, 7, 7]),
                "x3d_l" => Some([16, 10, 10]),
                _ => None,
            }),
        }
    }
}

fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// pytorchvideo `SqueezeExcitation`: x · σ(W₂ ReLU(W₁ avgpool(x) + b₁) + b₂).
#[derive(Clone, Debug)]
struct SqueezeExcitation {
    reduce: Conv3d,
    expand: Conv3d,
}

impl SqueezeExcitation {
    /// The per-(sample, channel) gate σ(…) [N, C, 1, 1, 1] the block multiplies x by.
    fn gate(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, c, ..) = x.dims5()?;
        let s = global_pool(x, train)?.reshape((b, c, 1, 1, 1))?;
        sigmoid(&self.expand.forward(&self.reduce.forward(&s)?.relu()?)?)
    }
}

#[derive(Clone, Debug)]
struct X3dBlock {
    branch1: Option<Conv3d>,
    branch1_norm: Option<BatchNorm2d>,
    a: ConvBn3d,
    b: ConvBn3d,
    se: Option<SqueezeExcitation>,
    c: ConvBn3d,
}

impl X3dBlock {
    /// `shortcut_norm_always`: a BN after the shortcut conv wherever there is one (mmaction2),
    /// else only where the width changes (pytorchvideo).
    fn new(
        cin: usize,
        inner: usize,
        cout: usize,
        stride: [usize; 3],
        se: bool,
        shortcut_norm_always: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let br = vb.pp("branch2");
        let one = [1, 1, 1];
        let cb = |conv: Conv3d, norm: VarBuilder, c: usize| -> Result<ConvBn3d> {
            Ok(ConvBn3d { conv, bn: batch_norm2d(c, norm)? })
        };
        let se = if se {
            let mid = round_width(inner, 0.0625, 8);
            let s = br.pp("norm_b.1.block");
            Some(SqueezeExcitation {
                reduce: conv(inner, mid, one, one, 1, true, s.pp("0"))?,
                expand: conv(mid, inner, one, one, 1, true, s.pp("2"))?,
            })
        } else {
            None
        };
        let projects = cin != cout || stride != one;
        let normed = cin != cout || (projects && shortcut_norm_always);
        Ok(Self {
            branch1: if projects {
                Some(conv(cin, cout, one, stride, 1, false, vb.pp("branch1_conv"))?)
            } else {
                None
            },
            branch1_norm: if normed { Some(batch_norm2d(cout, vb.pp("branch1_norm"))?) } else { None },
            a: cb(conv(cin, inner, one, one, 1, false, br.pp("conv_a"))?, br.pp("norm_a"), inner)?,
            b: cb(
                conv(inner, inner, [3, 3, 3], stride, inner, false, br.pp("conv_b"))?,
                br.pp("norm_b.0"),
                inner,
            )?,
            se,
            c: cb(conv(inner, cout, one, one, 1, false, br.pp("conv_c"))?, br.pp("norm_c"), cout)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.a.forward_act(x, train, None, true)?;
        let y = self.b.forward_t(&y, train)?;
        // The squeeze-excitation product and the swish after it as one op.
        let y = match &self.se {
            Some(se) => gated_swish(&y, &se.gate(&y, train)?, train)?,
            None if !train => swish_inference(&y)?,
            None => y.silu()?,
        };
        let mut shortcut = match &self.branch1 {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        if let Some(bn) = &self.branch1_norm {
            shortcut = bn.forward_t(&shortcut, train)?;
        }
        self.c.forward_act(&y, train, Some(&shortcut), true)
    }
}

#[derive(Clone, Debug)]
pub struct X3d {
    pub config: ModelConfig,
    stem_xy: Conv3d,
    stem_t: Conv3d,
    stem_norm: BatchNorm2d,
    stages: Vec<Vec<X3dBlock>>,
    pre: ConvBn3d,
    /// The head's average-pool kernel (None: global).
    head_pool: Option<[usize; 3]>,
    post: Conv3d,
    proj: Linear,
}

impl X3d {
    /// `config.base_width` is the stem's output width (24 in the hub models, `round_width(12, 2)`);
    /// the stages' widths scale with it (8 gives 8/16/32/64 for the hub's 24/48/96/192).
    pub fn new(config: ModelConfig, depth_factor: f64, vb: VarBuilder) -> Result<Self> {
        let opts = X3dOptions::from_config(&config)?;
        let head_pool = opts.head_pool_kernel(&config.arch)?;
        let shortcut_norm_always = opts.shortcut_norm_always.unwrap_or(false);
        let blocks = vb.pp("blocks");
        let stem_out = config.base_width;
        let s = blocks.pp("0");
        let stem_xy = conv(3, stem_out, [1, 3, 3], [1, 2, 2], 1, false, s.pp("conv.conv_t"))?;
        let stem_t = conv(stem_out, stem_out, [5, 1, 1], [1, 1, 1], stem_out, false, s.pp("conv.conv_xy"))?;
        let stem_norm = batch_norm2d(stem_out, s.pp("norm"))?;
        // create_x3d: stage widths from stem_dim_in = stem width / 2, ×2 per stage, then × width
        // factor 2; inner width int(2.25 × out).
        let mut dim = stem_out / 2;
        let mut cin = stem_out;
        let mut stages = Vec::new();
        let mut inner = 0;
        let depths = config
            .stage_depths
            .unwrap_or([1usize, 2, 5, 3].map(|d| (depth_factor * d as f64).ceil() as usize));
        for (i, depth) in depths.into_iter().enumerate() {
            if i > 0 {
                dim = round_width(dim, 2.0, 8);
            }
            let cout = round_width(dim, 2.0, 8);
            inner = (2.25 * cout as f64) as usize;
            let sv = blocks.pp((i + 1).to_string()).pp("res_blocks");
            let mut stage = Vec::new();
            for j in 0..depth {
                let stride = if j == 0 { [1, 2, 2] } else { [1, 1, 1] };
                let c_in = if j == 0 { cin } else { cout };
                let (se, vb) = (j % 2 == 0, sv.pp(j.to_string()));
                stage.push(X3dBlock::new(c_in, inner, cout, stride, se, shortcut_norm_always, vb)?);
            }
            stages.push(stage);
            cin = cout;
        }
        let h = blocks.pp("5");
        let one = [1, 1, 1];
        let pre = ConvBn3d {
            conv: conv(cin, inner, one, one, 1, false, h.pp("pool.pre_conv"))?,
            bn: batch_norm2d(inner, h.pp("pool.pre_norm"))?,
        };
        let post = conv(inner, 2048, one, one, 1, false, h.pp("pool.post_conv"))?;
        let proj = candle_nn::linear(2048, config.num_classes, h.pp("proj"))?;
        Ok(Self { config, stem_xy, stem_t, stem_norm, stages, pre, head_pool, post, proj })
    }

    /// Clip features [B, 1, 2048] after the head's projected pool: the mean over the pool's
    /// windows of ReLU(post_conv(window average)), which the (linear) projection turns into the
    /// hub's window-averaged logits.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = to_channels_first(x, self.config.frames)?;
        let y = self.stem_t.forward(&self.stem_xy.forward(&x)?)?;
        let mut y = crate::nn::relu(&self.stem_norm.forward_t(&y, train)?)?;
        for stage in &self.stages {
            for block in stage {
                y = block.forward_t(&y, train)?;
            }
        }
        let y = self.pre.forward_act(&y, train, None, true)?;
        let (b, c, t, h, w) = y.dims5()?;
        let kernel = self.head_pool.map(|[kt, kh, kw]| [kt.min(t), kh.min(h), kw.min(w)]);
        match kernel {
            Some(k) if k != [t, h, w] => {
                let windows = crate::nn::avg_pool3d(&y, k, [1; 3], [0; 3], true)?;
                let f = self.post.forward(&windows)?.relu()?;
                f.flatten_from(2)?.mean_keepdim(2)?.reshape((b, 1, ()))
            }
            _ => {
                let pooled = global_pool(&y, train)?.reshape((b, c, 1, 1, 1))?;
                self.post.forward(&pooled)?.relu()?.reshape((b, 1, ()))
            }
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        let f = self.features_t(x, train)?.squeeze(1)?;
        let f = crate::nn::dropout(&f, self.config.dropout as f64, dropout_rng)?;
        self.proj.forward(&f)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::resnet3d::tests::{blocks_per_stage, param_shapes};
    use crate::model::ModelConfig;

    #[test]
    fn base_width_and_stage_depths_scale_x3d() {
        let mut cfg = ModelConfig::defaults("x3d_xs");
        cfg.num_classes = 4;
        let hub = param_shapes(&cfg);
        assert_eq!(blocks_per_stage(&hub, "", [1, 2, 3, 4]), [3, 5, 11, 7]);
        assert_eq!(hub["blocks.4.res_blocks.0.branch2.conv_c.weight"], [192, 432, 1, 1, 1]);
        (cfg.base_width, cfg.stage_depths) = (8, Some([1, 2, 2, 1]));
        let s = param_shapes(&cfg);
        assert_eq!(blocks_per_stage(&s, "", [1, 2, 3, 4]), [1, 2, 2, 1]);
        // Stage widths 8/16/32/64, inner 2.25×, the head's 2048 as in the hub model.
        for (stage, (cout, inner)) in [(8, 18), (16, 36), (32, 72), (64, 144)].into_iter().enumerate() {
            let name = format!("blocks.{}.res_blocks.0.branch2.conv_c.weight", stage + 1);
            assert_eq!(s[&name], [cout, inner, 1, 1, 1], "{name}");
        }
        assert_eq!(s["blocks.5.pool.post_conv.weight"], [2048, 144, 1, 1, 1]);
        assert!(s.keys().all(|k| hub.contains_key(k)));
    }

    /// pytorchvideo: no BN on stage 1's strided shortcut (24 → 24); mmaction2: a BN on every
    /// shortcut conv, and nothing else changes.
    #[test]
    fn shortcut_norm_always_adds_stage_one_shortcut_norm() {
        let mut cfg = ModelConfig::defaults("x3d_s");
        (cfg.num_classes, cfg.base_width) = (4, 8);
        let hub = param_shapes(&cfg);
        cfg.apply_overrides(&["shortcut_norm_always=true".into()]).unwrap();
        let mm = param_shapes(&cfg);
        let added: Vec<&String> = mm.keys().filter(|k| !hub.contains_key(*k)).collect();
        let prefix = "blocks.1.res_blocks.0.branch1_norm.";
        assert_eq!(added.len(), 4, "{added:?}");
        assert!(added.iter().all(|k| k.starts_with(prefix)), "{added:?}");
        assert_eq!(mm[&format!("{prefix}weight")], [8]);
        assert!(hub.keys().all(|k| mm.contains_key(k)));
    }

    #[test]
    fn round_width_matches_pytorchvideo() {
        // Values computed by pytorchvideo.layers.utils.round_width.
        assert_eq!(super::round_width(12, 2.0, 8), 24);
        assert_eq!(super::round_width(54, 0.0625, 8), 8);
        assert_eq!(super::round_width(432, 0.0625, 8), 32);
        assert_eq!(super::round_width(96, 2.0, 8), 192);
    }
}
