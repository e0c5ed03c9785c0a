//! mmaction2's 3D recognizers as `import_3d` imports them: which backbone a checkpoint holds,
//! the settings mmaction2's configs build it with, and its names mapped onto ours
//! (pytorchvideo's).
//!
//! mmaction2 (mmaction/models/backbones/resnet3d.py, heads/i3d_head.py; mmcv
//! cnn/bricks/non_local.py), as this importer reads it:
//!
//! * names: ConvModule pairs `conv` + `bn`: the stem `backbone.conv1.{conv,bn}`, the bottlenecks
//!   `backbone.layer{s}.{j}.conv{1,2,3}.{conv,bn}` (our `conv_a/b/c`, `norm_a/b/c`) and
//!   `downsample.{conv,bn}` (our `branch1_conv/norm`), the classifier `cls_head.fc_cls`;
//! * non-local blocks: `layer{s}.{j}.non_local_block.{theta,phi,g}.conv` (`.{phi,g}.0.conv` with
//!   `sub_sample`, which max-pools φ and g by (1, 2, 2) after their convs), `conv_out.conv` and,
//!   with a norm, `conv_out.bn` (then `conv_out.conv` has no bias). A block's non-local block
//!   runs after its final ReLU (resnet3d.py L328-331), as ours. The instantiation (`mode`,
//!   `use_scale`) is not in the weights: it must be given (`-o non_local_cfg.mode=...`);
//!   `use_scale` defaults to false, as every mmaction2 non-local config sets it;
//! * structure: mmaction2's Bottleneck3d is pytorchvideo's (conv1 = conv_a with the temporal
//!   kernel when the block is inflated, `inflate_style='3x1x1'`; stride on conv2; the downsample
//!   1×1×1 with the stage's stride), and its inflation patterns are the hub's:
//!   I3D `inflate=((1,1,1),(1,0,1,0),(1,0,1,0,1,0),(0,1,0))` (configs/_base_/models/i3d_r50.py)
//!   is pytorchvideo i3d_r50's conv_a cycle, Slow-only `inflate=(0,0,1,1)`
//!   (resnet3d_slowonly.py) is slow_r50's. What differs is set here: I3D's stem strides 2 in time
//!   in its conv and its max pool (`conv1_stride_t=2`, `pool1_stride_t=2`); its `pool2` (2, 1, 1)
//!   after layer1 is pytorchvideo's stage-1 pool, and Slow-only has neither (`with_pool2=False`).
//!   The I3DHead pools, drops out and classifies, as pytorchvideo's head. Inputs follow
//!   mmaction2's configs: ImageNet mean/std on the 0-255 scale, I3D 32 × 2 frames, Slow-only
//!   8 × 8.
//!
//! SlowFast (resnet3d_slowfast.py, heads/slowfast_head.py; see `map_mmaction2_slowfast`): two
//! ResNet3d pathways under `backbone.slow_path` / `backbone.fast_path`, laterals without norm
//! (`fusion_norm=false`), slow frames 0, α, 2α, ... of the clip (`slow_frames=stride`), alpha 8
//! with fusion kernel 5 or alpha 4 with kernel 7 as mmaction2's configs pair them (override with
//! `-o alpha=`), 32 × 2 frames.
//!
//! X3D (backbones/x3d.py, heads/x3d_head.py; see `map_mmaction2_x3d`) imports as x3d_xs/s/m/l
//! (gamma_d 2.2, or 5.0 for L; the width comes from the stem):
//!
//! * names: stem `backbone.conv1_s.conv` (1×3×3, stride (1, 2, 2), no norm) and
//!   `backbone.conv1_t.{conv,bn}` (depthwise 5×1×1, BN, ReLU) are pytorchvideo's
//!   `blocks.0.conv.conv_t` and `conv.conv_xy` + `norm` (pytorchvideo names them swapped);
//!   BlockX3D `layer{s}.{j}.conv{1,2,3}.{conv,bn}` are `conv_a/b/c` and `norm_a`, `norm_b.0`,
//!   `norm_c`, its `se_module.fc{1,2}` the SE convs `norm_b.1.block.{0,2}`, `downsample.{conv,bn}`
//!   `branch1_conv/norm`; `backbone.conv5.{conv,bn}` is the head's `pool.pre_conv/pre_norm`;
//!   X3DHead's `fc1` (a Linear on the pooled map, no bias: `fc1_bias=False` in every mmaction2
//!   X3D config; a bias is refused) is `pool.post_conv` (a 1×1×1 conv on the pooled map, the
//!   same function), `fc2` is `proj`;
//! * structure: as pytorchvideo's create_x3d (stem; SE after conv2's BN and before the swish, on
//!   even blocks, `round_width(inner, 1/16)` wide; ReLU after the sum; head pool, fc1, ReLU,
//!   dropout, fc2; BN eps 1e-5, momentum 0.1) but for the shortcut: mmaction2's `downsample`
//!   ConvModule always has its BN (x3d.py L389-400), pytorchvideo's only where the width
//!   changes, so stage 1's first block (24 → 24, strided) differs: `shortcut_norm_always=true`;
//! * input: configs/_base_/models/x3d.py normalises with mean 114.75 and std 57.38 (0-255);
//!   frames as pytorchvideo's zoo (the x3d_s 13 × 6 and x3d_m 16 × 5 configs agree).
//!
//! ir-CSN (backbones/resnet3d_csn.py, configs/_base_/models/ircsn_r152.py) imports as csn_r101:
//! ResNet3dCSN is pytorchvideo's create_csn (stem 3×7×7 and max pool, conv1 1×1×1, conv2 a
//! depthwise 3×3×3 with the stage's (1, 2, 2, 2) temporal and spatial strides, downsample with
//! both strides, no pool2) but for its BN epsilon, 1e-3 (`bn_eps`); its CSNBottleneck3d wraps
//! conv2 in a Sequential, `conv2.0.{conv,bn}` (our `conv_b`, `norm_b`). Its depth is read from
//! the names: R152 and R50 import with `stage_depths` [3, 8, 36, 3] or [3, 4, 6, 3]. The
//! configs sample 32 × 2 frames; the IG65M-pretrained ones normalise with ImageNet's mean/std,
//! the Sports-1M and from-scratch ones with mean [110.2008, 100.63983, 95.99475] and std
//! [58.14765, 56.46975, 55.332195], which the weights cannot tell (`-o mean=... -o std=...`).
//! `bn_frozen` and `norm_eval` only freeze BNs in training. ip-CSN (`bottleneck_mode='ip'`,
//! `conv2.0` a 1×1×1 conv before the depthwise `conv2.1`) has no vidkit architecture and is
//! refused.
//!
//! R(2+1)D (backbones/resnet2plus1d.py, common/conv2plus1d.py, configs/_base_/models/
//! r2plus1d_r34.py) is refused: mmaction2 builds it from BasicBlock3d (depths 18 and 34) with
//! every ConvModule's conv a Conv2plus1d, the stem's and the shortcuts' too (conv_s (1, k, k),
//! its own BN and ReLU, then conv_t (k, 1, 1), `3·Cin·Cout·k² / (Cin·k² + 3·Cout)` channels
//! between), while r2plus1d_r50 is pytorchvideo's R(2+1)D-50: bottlenecks whose conv_b alone is
//! factorised, temporal first, with `inner` channels between; no setting maps one onto the other.
//!
//! Which backbone an mmaction2 checkpoint holds is told by its names (`Mmaction2Backbone::of`);
//! one imported as an architecture it has no place in is refused, naming the file and the
//! architectures it does import as. A tensor with no place in the architecture is refused,
//! naming the file and the tensor.

use super::resnet3d::{stage_depths, ConvB, ResNet3dSpec};
use super::ModelConfig;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};

/// The architectures an mmaction2 3D checkpoint imports as.
pub const MMACTION2_3D_ARCHS: [&str; 9] =
    ["i3d_r50", "slow_r50", "slowfast_r50", "slowfast_r101", "x3d_xs", "x3d_s", "x3d_m", "x3d_l", "csn_r101"];

/// The mmaction2 backbone a checkpoint holds, as its names tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mmaction2Backbone {
    /// `ResNet3d` (I3D, Slow-only): `backbone.conv1.conv`, `backbone.layer{s}.{j}.conv{1,2,3}`.
    ResNet3d,
    /// `ResNet3dSlowFast`: `backbone.slow_path.*`, `backbone.fast_path.*`.
    SlowFast,
    /// `X3D`: `backbone.conv1_s.*`, `backbone.conv1_t.*`.
    X3d,
    /// `ResNet3dCSN`, bottleneck_mode 'ir': `layer{s}.{j}.conv2.0.*` alone.
    IrCsn,
    /// `ResNet3dCSN`, bottleneck_mode 'ip': `layer{s}.{j}.conv2.1.*` too.
    IpCsn,
    /// `ResNet2Plus1d`: Conv2plus1d inside ConvModules, `*.conv.conv_s.*`, `*.conv.bn_s.*`.
    R2plus1d,
}

impl Mmaction2Backbone {
    pub(super) fn of(tensors: &[(String, Tensor)]) -> Self {
        let any = |f: &dyn Fn(&str) -> bool| tensors.iter().any(|(n, _)| f(n));
        let conv2 = |k: &'static str| move |n: &str| layer_block(n).is_some_and(|(_, _, r)| r.starts_with(k));
        if any(&|n| n.starts_with("backbone.conv1_s.") || n.starts_with("backbone.conv1_t.")) {
            Self::X3d
        } else if any(&|n| n.starts_with("backbone.slow_path.") || n.starts_with("backbone.fast_path.")) {
            Self::SlowFast
        } else if any(&|n| n.contains(".conv.conv_s.") || n.contains(".conv.bn_s.")) {
            Self::R2plus1d
        } else if any(&conv2("conv2.1.")) {
            Self::IpCsn
        } else if any(&conv2("conv2.0.")) {
            Self::IrCsn
        } else {
            Self::ResNet3d
        }
    }

    /// The architectures this backbone imports as.
    fn archs(self) -> &'static [&'static str] {
        match self {
            Self::ResNet3d => &MMACTION2_3D_ARCHS[..2],
            Self::SlowFast => &MMACTION2_3D_ARCHS[2..4],
            Self::X3d => &MMACTION2_3D_ARCHS[4..8],
            Self::IrCsn => &MMACTION2_3D_ARCHS[8..],
            Self::IpCsn | Self::R2plus1d => &[],
        }
    }

    /// Refuses `arch` unless this backbone imports as it.
    pub(super) fn check_arch(self, arch: &str) -> Result<()> {
        let name = match self {
            Self::ResNet3d => "ResNet3d (I3D, Slow-only)",
            Self::SlowFast => "ResNet3dSlowFast",
            Self::X3d => "X3D",
            Self::IrCsn => "ResNet3dCSN (ir-CSN)",
            Self::IpCsn => bail!(
                "an mmaction2 ip-CSN checkpoint (ResNet3dCSN with bottleneck_mode='ip': a 1x1x1 conv2.0 before \
                 the depthwise conv2.1) has no vidkit architecture: csn_r101 is ir-CSN"
            ),
            Self::R2plus1d => bail!(
                "an mmaction2 ResNet2Plus1d checkpoint (R(2+1)D on BasicBlock3d, every conv a spatial-then-temporal \
                 Conv2plus1d: names *.conv.conv_s/bn_s/conv_t) is not supported: r2plus1d_r50 is pytorchvideo's \
                 bottleneck R(2+1)D-50, which factorises only conv_b, temporal first"
            ),
        };
        let archs = self.archs();
        if !archs.contains(&arch) {
            let (last, rest) = archs.split_last().expect("an importable backbone has architectures");
            let list =
                if rest.is_empty() { last.to_string() } else { format!("{} or {last}", rest.join(", ")) };
            bail!("an mmaction2 {name} checkpoint imports only as {list}, not as {arch}");
        }
        Ok(())
    }
}

/// The settings mmaction2's configs build `arch` with, where they differ from pytorchvideo's.
pub(super) fn mmaction2_defaults(arch: &str, config: &mut ModelConfig) -> Result<()> {
    // configs/_base_/models/*.py: ActionDataPreprocessor with ImageNet mean/std on 0-255.
    config.mean = [123.675, 116.28, 103.53];
    config.std = [58.395, 57.12, 57.375];
    match arch {
        // configs/_base_/models/i3d_r50.py: conv1_stride_t=2, pool1_stride_t=2; the i3d configs
        // sample clip_len=32, frame_interval=2.
        "i3d_r50" => {
            config.extra.insert("stem_stride_t".into(), 2.into());
            config.extra.insert("stem_pool_stride_t".into(), 2.into());
            config.frames = 32;
            config.interval = Some(2);
        }
        // configs/recognition/slowonly/slowonly_imagenet-pretrained-r50_8xb16-8x8x1-*.py; the
        // backbone's defaults are slow_r50's structure.
        "slow_r50" => {
            config.frames = 8;
            config.interval = Some(8);
        }
        // configs/_base_/models/slowfast_r50.py (resample_rate = speed_ratio: the fast pathway is
        // the clip), lateral_norm False; the configs sample clip_len=32, frame_interval=2. alpha
        // and the fusion kernel come from the weights (map_mmaction2_slowfast).
        "slowfast_r50" | "slowfast_r101" => {
            config.extra.insert("slow_frames".into(), "stride".into());
            config.frames = 32;
            config.interval = Some(2);
        }
        // configs/_base_/models/x3d.py: mean 114.75, std 57.38 (pytorchvideo's 0.45 and 0.225 of
        // 255, std rounded); the x3d_s/m configs sample as pytorchvideo's zoo (13 × 6, 16 × 5).
        // BlockX3D's downsample always has a BN (x3d.py L389-400).
        "x3d_xs" | "x3d_s" | "x3d_m" | "x3d_l" => {
            config.mean = [114.75; 3];
            config.std = [57.38; 3];
            config.extra.insert("shortcut_norm_always".into(), true.into());
            // X3DHead pools adaptively to 1 × 1 × 1 before fc1 (x3d_head.py).
            config.extra.insert("head_pool".into(), "global".into());
        }
        // configs/_base_/models/ircsn_r152.py: ResNet3dCSN's norm_cfg eps 1e-3
        // (resnet3d_csn.py L120), I3DHead dropout 0.5; the configs sample clip_len=32,
        // frame_interval=2.
        "csn_r101" => {
            config.extra.insert("bn_eps".into(), 1e-3.into());
            config.dropout = 0.5;
            config.frames = 32;
            config.interval = Some(2);
        }
        _ => bail!(
            "an mmaction2 checkpoint (backbone./cls_head. names) imports only as {}, not as {arch}",
            MMACTION2_3D_ARCHS.join(", ")
        ),
    }
    Ok(())
}

/// Blocks per layer of an mmaction2 ResNet3d: one more than the largest `j` of
/// `backbone.layer{s}.{j}.*`, for s = 1..4.
pub(super) fn layer_depths(tensors: &[(String, Tensor)]) -> Result<[usize; 4]> {
    let mut depths = [0; 4];
    for (s, j, _) in tensors.iter().filter_map(|(n, _)| layer_block(n)) {
        if (1..=4).contains(&s) {
            depths[s - 1] = depths[s - 1].max(j + 1);
        }
    }
    if depths.contains(&0) {
        bail!("blocks per layer {depths:?} from the names: backbone.layer1-4 are not all there");
    }
    Ok(depths)
}

/// The position of a mmaction2 name in our model: stage (1-based) and block, when it is inside
/// `backbone.layer{s}.{j}.`.
fn layer_block(name: &str) -> Option<(usize, usize, &str)> {
    let rest = name.strip_prefix("backbone.layer")?;
    let (s, rest) = rest.split_once('.')?;
    let (j, rest) = rest.split_once('.')?;
    Some((s.parse().ok()?, j.parse().ok()?, rest))
}

/// mmaction2 ResNet3d (or ResNet3dCSN) names → ours, for `depths` blocks per layer; also whether
/// the non-local blocks pool φ and g (`sub_sample`), when there are any.
pub(super) fn map_mmaction2_resnet3d(
    arch: &str,
    depths: [usize; 4],
    tensors: Vec<(String, Tensor)>,
) -> Result<(HashMap<String, Tensor>, Option<bool>)> {
    let spec = ResNet3dSpec::for_arch(arch).with_context(|| format!("{arch} is not a ResNet-3D"))?;
    let (stage_idx, head_idx) = spec.block_indices();
    // CSNBottleneck3d's conv2 is a Sequential: `conv2.0.{conv,bn}` (resnet3d_csn.py L61-74).
    let csn = spec.conv_b == ConvB::Depthwise;
    let with_nl: BTreeSet<(usize, usize)> = tensors
        .iter()
        .filter_map(|(n, _)| layer_block(n).filter(|(_, _, r)| r.starts_with("non_local_block.")))
        .map(|(s, j, _)| (s, j))
        .collect();
    let mut sub_sample: Option<bool> = None;
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let mapped = if let Some(p) = name.strip_prefix("backbone.conv1.conv.") {
            Some(format!("blocks.0.conv.{p}"))
        } else if let Some(p) = name.strip_prefix("backbone.conv1.bn.") {
            Some(format!("blocks.0.norm.{p}"))
        } else if let Some(p) = name.strip_prefix("cls_head.fc_cls.") {
            Some(format!("blocks.{head_idx}.proj.{p}"))
        } else if let Some((s, j, rest)) =
            layer_block(&name).filter(|(s, j, _)| (1..=4).contains(s) && *j < depths[s - 1])
        {
            let flagged = with_nl.contains(&(s, j));
            let block =
                format!("blocks.{}.res_blocks.{j}{}", stage_idx[s - 1], if flagged { ".0" } else { "" });
            let parts: Vec<&str> = rest.split('.').collect();
            match parts.as_slice() {
                ["non_local_block", rest @ ..] => {
                    let nl = format!("blocks.{}.res_blocks.{j}.1", stage_idx[s - 1]);
                    let (target, pooled) = match rest {
                        ["theta", "conv", p] => (Some(format!("conv_theta.{p}")), None),
                        [x @ ("phi" | "g"), "conv", p] => (Some(format!("conv_{x}.{p}")), Some(false)),
                        [x @ ("phi" | "g"), "0", "conv", p] => (Some(format!("conv_{x}.{p}")), Some(true)),
                        ["conv_out", "conv", p] => (Some(format!("conv_out.{p}")), None),
                        ["conv_out", "bn", p] => (Some(format!("norm.{p}")), None),
                        ["concat_project", ..] => bail!(
                            "tensor {name:?}: mmcv's non-local mode 'concatenation' is not supported \
                             (dot_product and embedded_gaussian are)"
                        ),
                        _ => (None, None),
                    };
                    if let Some(p) = pooled {
                        if sub_sample.is_some_and(|q| q != p) {
                            bail!("tensor {name:?}: some non-local blocks sub-sample and others do not");
                        }
                        sub_sample = Some(p);
                    }
                    target.map(|t| format!("{nl}.{t}"))
                }
                _ if csn => match rest.strip_prefix("conv2.") {
                    Some(r) => r.strip_prefix("0.").and_then(|r| bottleneck_name(&format!("conv2.{r}"))),
                    None => bottleneck_name(rest),
                }
                .map(|p| format!("{block}.{p}")),
                _ => bottleneck_name(rest).map(|p| format!("{block}.{p}")),
            }
        } else {
            None
        };
        let Some(mapped) = mapped else {
            let expected = if csn { "ResNet3dCSN" } else { "ResNet3d" };
            bail!(
                "tensor {name:?} has no place in mmaction2's {arch} (names of {expected} + I3DHead expected)"
            );
        };
        out.insert(mapped, t);
    }
    // mmcv's 'gaussian' mode has no theta: the block would be refused as incomplete below, with
    // a less telling message.
    for (s, j) in &with_nl {
        let theta = format!("blocks.{}.res_blocks.{j}.1.conv_theta.weight", stage_idx[s - 1]);
        if !out.contains_key(&theta) {
            bail!(
                "the non-local block of layer{s}.{j} has no theta: mmcv's mode 'gaussian' is not supported \
                 (dot_product and embedded_gaussian are)"
            );
        }
    }
    Ok((out, sub_sample))
}

/// A bottleneck's tensor (`conv1.conv.weight`, `downsample.bn.bias`, ...) → ours inside the block
/// (`branch2.conv_a.weight`, `branch1_norm.bias`).
fn bottleneck_name(rest: &str) -> Option<String> {
    let (module, p) = rest.split_once('.')?;
    let (kind, p) = p.split_once('.')?;
    if p.contains('.') {
        return None;
    }
    let ours = match (module, kind) {
        ("conv1", "conv") => "branch2.conv_a",
        ("conv1", "bn") => "branch2.norm_a",
        ("conv2", "conv") => "branch2.conv_b",
        ("conv2", "bn") => "branch2.norm_b",
        ("conv3", "conv") => "branch2.conv_c",
        ("conv3", "bn") => "branch2.norm_c",
        ("downsample", "conv") => "branch1_conv",
        ("downsample", "bn") => "branch1_norm",
        _ => return None,
    };
    Some(format!("{ours}.{p}"))
}

/// mmaction2 `ResNet3dSlowFast` + `SlowFastHead` names → ours, with the settings its weights
/// imply. Pathways `backbone.{slow,fast}_path.*` are ResNet3d pathways (`multipathway_blocks.0`
/// and `.1`); the laterals `slow_path.conv1_lateral` and `slow_path.layer{1,2,3}_lateral`
/// (ConvModules: conv, and bn only with `lateral_norm`) are our fusions after the stem and stages
/// 1-3; the head concatenates (fast, slow) (slowfast_head.py, `torch.cat((x_fast, x_slow))`)
/// where ours concatenates (slow, fast), so the classifier's columns are swapped.
pub(super) fn map_mmaction2_slowfast(
    arch: &str,
    tensors: Vec<(String, Tensor)>,
) -> Result<(HashMap<String, Tensor>, Map<String, Value>)> {
    let depth = super::slowfast::slowfast_variant(arch).map(|(d, _)| d).context("not a SlowFast")?;
    let depths = stage_depths(depth).with_context(|| format!("no SlowFast of depth {depth}"))?;
    let fast_width = tensors
        .iter()
        .find(|(n, _)| n == &format!("backbone.fast_path.layer4.{}.conv3.conv.weight", depths[3] - 1))
        .map(|(_, t)| t.dims()[0]);
    let mut out = HashMap::new();
    let mut settings = Map::new();
    for (name, t) in tensors {
        let pathway = |rest: &str| -> Option<String> {
            let (path, rest) = rest.split_once('.')?;
            let k = match path {
                "slow_path" => 0,
                "fast_path" => 1,
                _ => return None,
            };
            let stem = |m: &str, p: &str| format!("blocks.0.multipathway_blocks.{k}.{m}.{p}");
            if let Some(p) = rest.strip_prefix("conv1.conv.") {
                return Some(stem("conv", p));
            }
            if let Some(p) = rest.strip_prefix("conv1.bn.") {
                return Some(stem("norm", p));
            }
            let fusion = |i: &str, m: &str, p: &str| format!("blocks.{i}.multipathway_fusion.{m}.{p}");
            if k == 0 {
                let lateral = rest.strip_prefix("conv1_lateral.").map(|r| ("0", r)).or_else(|| {
                    let (l, r) = rest.split_once("_lateral.")?;
                    let i = l.strip_prefix("layer").filter(|i| ["1", "2", "3"].contains(i))?;
                    Some((i, r))
                });
                if let Some((i, r)) = lateral {
                    return match r.split_once('.') {
                        Some(("conv", p)) if !p.contains('.') => Some(fusion(i, "conv_fast_to_slow", p)),
                        Some(("bn", p)) if !p.contains('.') => Some(fusion(i, "norm", p)),
                        _ => None,
                    };
                }
            }
            let rest = rest.strip_prefix("layer")?;
            let (s, rest) = rest.split_once('.')?;
            let (j, rest) = rest.split_once('.')?;
            let (s, j) = (s.parse::<usize>().ok()?, j.parse::<usize>().ok()?);
            if !(1..=4).contains(&s) || j >= depths[s - 1] {
                return None;
            }
            bottleneck_name(rest).map(|p| format!("blocks.{s}.multipathway_blocks.{k}.res_blocks.{j}.{p}"))
        };
        let (mapped, t) = if let Some(p) = name.strip_prefix("cls_head.fc_cls.") {
            let t = match (p, fast_width) {
                ("weight", Some(cf)) => {
                    let c = t.dims().get(1).copied().unwrap_or(0);
                    if c < cf {
                        bail!("tensor {name:?}: {c} inputs, fewer than the fast pathway's {cf}");
                    }
                    Tensor::cat(&[t.narrow(1, cf, c - cf)?, t.narrow(1, 0, cf)?], 1)?
                }
                ("weight", None) => bail!("no backbone.fast_path.layer4 weights: not a SlowFast-R{depth}"),
                _ => t,
            };
            (Some(format!("blocks.6.proj.{p}")), t)
        } else {
            (name.strip_prefix("backbone.").and_then(pathway), t)
        };
        let Some(mapped) = mapped else {
            bail!("tensor {name:?} has no place in mmaction2's {arch} (ResNet3dSlowFast + SlowFastHead names expected)");
        };
        if mapped == "blocks.0.multipathway_fusion.conv_fast_to_slow.weight" {
            // mmaction2's configs pair the fusion kernel with the speed ratio: 5 with alpha 8
            // (configs/_base_/models/slowfast_r50.py), 7 with alpha 4 (the 8x8x1 configs).
            let k = t.dims().get(2).copied().unwrap_or(0);
            settings.insert("fusion_kernel".into(), k.into());
            match k {
                5 => settings.insert("alpha".into(), 8.into()),
                7 => settings.insert("alpha".into(), 4.into()),
                _ => None,
            };
        }
        out.insert(mapped, t);
    }
    let norm = out.contains_key("blocks.0.multipathway_fusion.norm.weight");
    settings.insert("fusion_norm".into(), norm.into());
    Ok((out, settings))
}

/// mmaction2 `X3D` + `X3DHead` names → ours (pytorchvideo's; see the module doc). X3DHead's `fc1`
/// weight [2048, C] becomes the 1×1×1 `pool.post_conv` [2048, C, 1, 1, 1].
pub(super) fn map_mmaction2_x3d(
    arch: &str,
    tensors: Vec<(String, Tensor)>,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let conv_bn = |rest: &str, conv: &str, norm: &str| -> Option<String> {
            let (kind, p) = rest.split_once('.')?;
            match kind {
                _ if p.contains('.') => None,
                "conv" => Some(format!("{conv}.{p}")),
                "bn" => Some(format!("{norm}.{p}")),
                _ => None,
            }
        };
        let block = |s: usize, j: usize, rest: &str| -> Option<String> {
            let (module, rest) = rest.split_once('.')?;
            let ours = match module {
                "conv1" => conv_bn(rest, "branch2.conv_a", "branch2.norm_a"),
                "conv2" => conv_bn(rest, "branch2.conv_b", "branch2.norm_b.0"),
                "conv3" => conv_bn(rest, "branch2.conv_c", "branch2.norm_c"),
                "downsample" => conv_bn(rest, "branch1_conv", "branch1_norm"),
                "se_module" => match rest.split_once('.')? {
                    ("fc1", p) if !p.contains('.') => Some(format!("branch2.norm_b.1.block.0.{p}")),
                    ("fc2", p) if !p.contains('.') => Some(format!("branch2.norm_b.1.block.2.{p}")),
                    _ => None,
                },
                _ => None,
            }?;
            Some(format!("blocks.{s}.res_blocks.{j}.{ours}"))
        };
        let (mapped, t) = if let Some(rest) = name.strip_prefix("backbone.conv1_s.") {
            // A ConvModule without norm (x3d.py L446-455).
            let p = rest.strip_prefix("conv.").filter(|p| !p.contains('.'));
            (p.map(|p| format!("blocks.0.conv.conv_t.{p}")), t)
        } else if let Some(rest) = name.strip_prefix("backbone.conv1_t.") {
            (conv_bn(rest, "blocks.0.conv.conv_xy", "blocks.0.norm"), t)
        } else if let Some(rest) = name.strip_prefix("backbone.conv5.") {
            (conv_bn(rest, "blocks.5.pool.pre_conv", "blocks.5.pool.pre_norm"), t)
        } else if name == "cls_head.fc1.bias" {
            bail!(
                "tensor {name:?}: an X3DHead with fc1_bias=True has no place in vidkit's X3D head, whose \
                 post_conv has no bias (every mmaction2 X3D config sets fc1_bias=False)"
            );
        } else if name == "cls_head.fc1.weight" {
            let &[o, i] = t.dims() else { bail!("tensor {name:?}: shape {:?}, not [out, in]", t.dims()) };
            (Some("blocks.5.pool.post_conv.weight".to_string()), t.reshape((o, i, 1, 1, 1))?)
        } else if let Some(p) = name.strip_prefix("cls_head.fc2.") {
            (Some(format!("blocks.5.proj.{p}")), t)
        } else if let Some((s, j, rest)) = layer_block(&name).filter(|(s, _, _)| (1..=4).contains(s)) {
            (block(s, j, rest), t)
        } else {
            (None, t)
        };
        let Some(mapped) = mapped else {
            bail!("tensor {name:?} has no place in mmaction2's {arch} (names of X3D + X3DHead expected)");
        };
        out.insert(mapped, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    const R50: [usize; 4] = [3, 4, 6, 3];

    fn t(shape: &[usize]) -> Tensor {
        Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
    }

    fn named(names: &[&str]) -> Vec<(String, Tensor)> {
        names.iter().map(|n| (n.to_string(), t(&[1]))).collect()
    }

    fn sorted_keys(m: &HashMap<String, Tensor>) -> Vec<&str> {
        let mut k: Vec<&str> = m.keys().map(String::as_str).collect();
        k.sort();
        k
    }

    #[test]
    fn mmaction2_names_map_onto_pytorchvideo_ones() {
        let names = [
            "backbone.conv1.conv.weight",
            "backbone.conv1.bn.running_mean",
            "backbone.layer1.0.conv1.conv.weight",
            "backbone.layer1.0.downsample.bn.bias",
            "backbone.layer2.1.conv2.bn.weight",
            "backbone.layer2.1.non_local_block.g.0.conv.bias",
            "backbone.layer2.1.non_local_block.theta.conv.weight",
            "backbone.layer2.1.non_local_block.conv_out.bn.running_var",
            "backbone.layer4.2.conv3.conv.weight",
            "cls_head.fc_cls.weight",
        ];
        let tensors = names.iter().map(|n| (n.to_string(), t(&[1]))).collect();
        let (out, sub) = map_mmaction2_resnet3d("i3d_r50", R50, tensors).unwrap();
        let mut got: Vec<&String> = out.keys().collect();
        got.sort();
        assert_eq!(
            got,
            [
                "blocks.0.conv.weight",
                "blocks.0.norm.running_mean",
                "blocks.1.res_blocks.0.branch1_norm.bias",
                "blocks.1.res_blocks.0.branch2.conv_a.weight",
                "blocks.3.res_blocks.1.0.branch2.norm_b.weight",
                "blocks.3.res_blocks.1.1.conv_g.bias",
                "blocks.3.res_blocks.1.1.conv_theta.weight",
                "blocks.3.res_blocks.1.1.norm.running_var",
                "blocks.5.res_blocks.2.branch2.conv_c.weight",
                "blocks.6.proj.weight",
            ]
        );
        assert_eq!(sub, Some(true));
        // Slow-only has no stage-1 pool: the head is blocks.5.
        let (out, _) =
            map_mmaction2_resnet3d("slow_r50", R50, vec![("cls_head.fc_cls.bias".into(), t(&[3]))]).unwrap();
        assert!(out.contains_key("blocks.5.proj.bias"));
    }

    #[test]
    fn unknown_and_unsupported_names_are_refused() {
        let err = |n: &str| {
            format!(
                "{:#}",
                map_mmaction2_resnet3d("i3d_r50", R50, vec![(n.to_string(), t(&[1]))]).unwrap_err()
            )
        };
        assert!(err("backbone.layer1.0.conv4.conv.weight").contains("has no place"));
        assert!(err("backbone.layer1.3.conv1.conv.weight").contains("has no place"));
        assert!(err("backbone.fast_path.conv1.conv.weight").contains("has no place"));
        assert!(err("backbone.layer1.0.non_local_block.concat_project.conv.weight").contains("concatenation"));
        assert!(err("backbone.layer1.0.non_local_block.g.conv.weight").contains("'gaussian'"));
        assert!(err("backbone.layer1.0.conv2.0.conv.weight").contains("has no place"));
        let mut c = ModelConfig::defaults("c2d_r50");
        assert!(mmaction2_defaults("c2d_r50", &mut c)
            .unwrap_err()
            .to_string()
            .contains("i3d_r50, slow_r50, slowfast_r50"));
    }

    #[test]
    fn mmaction2_x3d_names_map_onto_pytorchvideo_ones() {
        let mut tensors = named(&[
            "backbone.conv1_s.conv.weight",
            "backbone.conv1_t.conv.weight",
            "backbone.conv1_t.bn.running_var",
            "backbone.layer1.0.conv1.conv.weight",
            "backbone.layer1.0.conv2.bn.bias",
            "backbone.layer1.0.se_module.fc1.weight",
            "backbone.layer1.0.se_module.fc2.bias",
            "backbone.layer1.0.downsample.bn.weight",
            "backbone.layer3.10.conv3.conv.weight",
            "backbone.conv5.bn.running_mean",
            "cls_head.fc2.weight",
        ]);
        tensors.push(("cls_head.fc1.weight".into(), t(&[2048, 432])));
        let out = map_mmaction2_x3d("x3d_m", tensors).unwrap();
        assert_eq!(
            sorted_keys(&out),
            [
                "blocks.0.conv.conv_t.weight",
                "blocks.0.conv.conv_xy.weight",
                "blocks.0.norm.running_var",
                "blocks.1.res_blocks.0.branch1_norm.weight",
                "blocks.1.res_blocks.0.branch2.conv_a.weight",
                "blocks.1.res_blocks.0.branch2.norm_b.0.bias",
                "blocks.1.res_blocks.0.branch2.norm_b.1.block.0.weight",
                "blocks.1.res_blocks.0.branch2.norm_b.1.block.2.bias",
                "blocks.3.res_blocks.10.branch2.conv_c.weight",
                "blocks.5.pool.post_conv.weight",
                "blocks.5.pool.pre_norm.running_mean",
                "blocks.5.proj.weight",
            ]
        );
        assert_eq!(out["blocks.5.pool.post_conv.weight"].dims(), [2048, 432, 1, 1, 1]);
        let err = |n: &str| format!("{:#}", map_mmaction2_x3d("x3d_s", named(&[n])).unwrap_err());
        assert!(err("backbone.conv1_s.bn.weight").contains("has no place in mmaction2's x3d_s"));
        assert!(err("backbone.layer1.0.se_module.fc3.weight").contains("has no place"));
        assert!(err("backbone.layer5.0.conv1.conv.weight").contains("has no place"));
        assert!(err("cls_head.fc1.bias").contains("fc1_bias=True"));
    }

    #[test]
    fn mmaction2_csn_names_and_depths() {
        let tensors = named(&[
            "backbone.conv1.conv.weight",
            "backbone.layer1.2.conv2.0.conv.weight",
            "backbone.layer1.0.downsample.bn.bias",
            "backbone.layer2.7.conv2.0.bn.running_var",
            "backbone.layer3.35.conv1.bn.weight",
            "backbone.layer4.2.conv3.conv.weight",
            "cls_head.fc_cls.weight",
        ]);
        assert_eq!(Mmaction2Backbone::of(&tensors), Mmaction2Backbone::IrCsn);
        let depths = layer_depths(&tensors).unwrap();
        assert_eq!(depths, [3, 8, 36, 3], "ResNet3dCSN-152");
        let (out, _) = map_mmaction2_resnet3d("csn_r101", depths, tensors).unwrap();
        assert_eq!(
            sorted_keys(&out),
            [
                "blocks.0.conv.weight",
                "blocks.1.res_blocks.0.branch1_norm.bias",
                "blocks.1.res_blocks.2.branch2.conv_b.weight",
                "blocks.2.res_blocks.7.branch2.norm_b.running_var",
                "blocks.3.res_blocks.35.branch2.norm_a.weight",
                "blocks.4.res_blocks.2.branch2.conv_c.weight",
                "blocks.5.proj.weight",
            ]
        );
        let err =
            |n: &str| format!("{:#}", map_mmaction2_resnet3d("csn_r101", R50, named(&[n])).unwrap_err());
        // conv2 outside its Sequential, or a second module in it (ip-CSN), has no place.
        assert!(err("backbone.layer1.0.conv2.conv.weight").contains("ResNet3dCSN + I3DHead"));
        assert!(err("backbone.layer1.0.conv2.1.conv.weight").contains("has no place"));
        assert!(err("backbone.layer1.3.conv1.conv.weight").contains("has no place"));
        assert!(layer_depths(&named(&["backbone.layer1.0.conv1.conv.weight"])).is_err());
    }

    /// The names tell the backbone; an architecture it has no place in is refused up front.
    #[test]
    fn mmaction2_backbones_are_told_by_their_names() {
        let of = |n: &str| Mmaction2Backbone::of(&named(&[n, "cls_head.fc_cls.weight"]));
        assert_eq!(of("backbone.layer1.0.conv1.conv.weight"), Mmaction2Backbone::ResNet3d);
        assert_eq!(of("backbone.fast_path.conv1.conv.weight"), Mmaction2Backbone::SlowFast);
        assert_eq!(of("backbone.conv1_t.bn.weight"), Mmaction2Backbone::X3d);
        assert_eq!(of("backbone.layer1.0.conv2.1.bn.weight"), Mmaction2Backbone::IpCsn);
        assert_eq!(of("backbone.conv1.conv.conv_s.weight"), Mmaction2Backbone::R2plus1d);
        let refusal = |b: Mmaction2Backbone, arch: &str| b.check_arch(arch).unwrap_err().to_string();
        assert_eq!(
            refusal(Mmaction2Backbone::X3d, "csn_r101"),
            "an mmaction2 X3D checkpoint imports only as x3d_xs, x3d_s, x3d_m or x3d_l, not as csn_r101"
        );
        assert!(refusal(Mmaction2Backbone::ResNet3d, "x3d_m").contains("imports only as i3d_r50 or slow_r50"));
        assert!(refusal(Mmaction2Backbone::IrCsn, "i3d_r50").contains("imports only as csn_r101,"));
        assert!(refusal(Mmaction2Backbone::R2plus1d, "r2plus1d_r50").contains("ResNet2Plus1d"));
        assert!(refusal(Mmaction2Backbone::IpCsn, "csn_r101").contains("ip-CSN"));
        for arch in MMACTION2_3D_ARCHS {
            let mut c = ModelConfig::defaults(arch);
            mmaction2_defaults(arch, &mut c).unwrap();
        }
    }
}
