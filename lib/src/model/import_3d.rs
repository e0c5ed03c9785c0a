//! Importers of 3D CNN checkpoints (the zoo architectures): pytorchvideo's state dicts, whose
//! names are ours, and mmaction2's ResNet3d recognizers (I3D, Slow-only, SlowFast), whose names map onto
//! ours and whose structure differs from pytorchvideo's in settings the config then carries.
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
//! A tensor with no place in the architecture is refused, naming the file and the tensor.

use super::import::{Imported, NamedTensors};
use super::resnet3d::{stage_depths, ResNet3dSpec};
use super::{from_tensors, ModelConfig};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// The architectures an mmaction2 3D checkpoint imports as.
pub const MMACTION2_3D_ARCHS: [&str; 4] = ["i3d_r50", "slow_r50", "slowfast_r50", "slowfast_r101"];

/// Imports a pytorchvideo or mmaction2 checkpoint of a zoo architecture.
pub(super) fn import_zoo(
    path: &Path,
    arch: &str,
    overrides: &[String],
    tensors: NamedTensors,
    state_dict_key: Option<String>,
) -> Result<Imported> {
    let tensors_read = tensors.len();
    let mut kept = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let mut n = name.as_str();
        while let Some(rest) = n.strip_prefix("module.") {
            n = rest;
        }
        if !n.ends_with("num_batches_tracked") {
            kept.push((n.to_string(), t));
        }
    }
    let dropped = tensors_read - kept.len();
    let mmaction2 = kept.iter().any(|(n, _)| n.starts_with("backbone.") || n.starts_with("cls_head."));
    let mut config = ModelConfig::defaults(arch);
    let (out, sub_sample) = if mmaction2 && arch.starts_with("slowfast") {
        mmaction2_defaults(arch, &mut config).with_context(|| path.display().to_string())?;
        let (out, settings) =
            map_mmaction2_slowfast(arch, kept).with_context(|| path.display().to_string())?;
        config.extra.extend(settings);
        (out, None)
    } else if mmaction2 {
        mmaction2_defaults(arch, &mut config).with_context(|| path.display().to_string())?;
        map_mmaction2_resnet3d(arch, kept).with_context(|| path.display().to_string())?
    } else {
        (kept.into_iter().collect(), None)
    };
    let proj = out.iter().filter(|(k, _)| k.ends_with(".proj.weight")).max_by_key(|(k, _)| k.len());
    if let Some((_, w)) = proj {
        config.num_classes = w.dims().first().copied().unwrap_or(0);
    }
    let stem =
        ["blocks.0.conv.weight", "blocks.0.conv.conv_t.weight", "blocks.0.multipathway_blocks.0.conv.weight"]
            .iter()
            .find_map(|k| out.get(*k));
    if let Some(stem) = stem {
        config.base_width = stem.dims().first().copied().unwrap_or(config.base_width);
    }
    let non_local = match ResNet3dSpec::for_arch(arch) {
        Some(spec) => detect_non_local(&spec, &out).with_context(|| path.display().to_string())?,
        None => None,
    };
    if let Some((flags, mut cfg)) = non_local.clone() {
        if mmaction2 {
            // mmaction2's non-local configs all set use_scale=False; the pooling is in the names.
            cfg.insert("use_scale".into(), false.into());
            if sub_sample == Some(true) {
                cfg.insert("pool".into(), json!([1, 2, 2]));
                cfg.insert("pool_after_conv".into(), true.into());
            }
        }
        config.extra.insert("non_local".into(), json!(flags));
        config.extra.insert("non_local_cfg".into(), Value::Object(cfg));
    }
    config.apply_overrides(overrides).with_context(|| format!("{}: config", path.display()))?;
    let mode_given = config.extra.get("non_local_cfg").is_some_and(|c| c.get("mode").is_some());
    if mmaction2 && non_local.is_some() && !mode_given {
        bail!(
            "{}: an mmaction2 model with non-local blocks, whose instantiation the weights do not record: \
             give it with -o non_local_cfg.mode=dot_product or -o non_local_cfg.mode=embedded_gaussian",
            path.display()
        );
    }
    let model = from_tensors(config, out, &Device::Cpu).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    let layout = if mmaction2 { "mmaction2" } else { "pytorchvideo" };
    Ok(Imported { model, state_dict_key, layout, tensors_read, dropped })
}

/// The settings mmaction2's configs build `arch` with, where they differ from pytorchvideo's.
fn mmaction2_defaults(arch: &str, config: &mut ModelConfig) -> Result<()> {
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
        _ => bail!(
            "an mmaction2 checkpoint (backbone./cls_head. names) imports only as {}, not as {arch}",
            MMACTION2_3D_ARCHS.join(" or ")
        ),
    }
    Ok(())
}

/// The position of a mmaction2 name in our model: stage (1-based) and block, when it is inside
/// `backbone.layer{s}.{j}.`.
fn layer_block(name: &str) -> Option<(usize, usize, &str)> {
    let rest = name.strip_prefix("backbone.layer")?;
    let (s, rest) = rest.split_once('.')?;
    let (j, rest) = rest.split_once('.')?;
    Some((s.parse().ok()?, j.parse().ok()?, rest))
}

/// mmaction2 ResNet3d names → ours; also whether the non-local blocks pool φ and g
/// (`sub_sample`), when there are any.
fn map_mmaction2_resnet3d(
    arch: &str,
    tensors: Vec<(String, Tensor)>,
) -> Result<(HashMap<String, Tensor>, Option<bool>)> {
    let spec = ResNet3dSpec::for_arch(arch).with_context(|| format!("{arch} is not a ResNet-3D"))?;
    let (stage_idx, head_idx) = spec.block_indices();
    let depths = stage_depths(spec.depth).with_context(|| format!("no ResNet-3D of depth {}", spec.depth))?;
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
                _ => bottleneck_name(rest).map(|p| format!("{block}.{p}")),
            }
        } else {
            None
        };
        let Some(mapped) = mapped else {
            bail!(
                "tensor {name:?} has no place in mmaction2's {arch} (names of ResNet3d + I3DHead expected)"
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
fn map_mmaction2_slowfast(
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

/// Non-local blocks in our names (`blocks.{b}.res_blocks.{j}.1.conv_theta.weight`): the
/// `non_local` flags and what the weights tell of `non_local_cfg` (reduction, norm, out_bias).
fn detect_non_local(
    spec: &ResNet3dSpec,
    tensors: &HashMap<String, Tensor>,
) -> Result<Option<(Vec<Vec<u8>>, Map<String, Value>)>> {
    let (stage_idx, _) = spec.block_indices();
    let Some(depths) = stage_depths(spec.depth) else { return Ok(None) };
    let mut flags: Vec<Vec<u8>> = depths.iter().map(|&n| vec![0; n]).collect();
    let mut found = None;
    for (name, t) in tensors {
        let Some(rest) = name.strip_prefix("blocks.") else { continue };
        let parts: Vec<&str> = rest.split('.').collect();
        let [b, "res_blocks", j, "1", "conv_theta", "weight"] = parts.as_slice() else { continue };
        let (Ok(b), Ok(j)) = (b.parse::<usize>(), j.parse::<usize>()) else { continue };
        let Some(s) = stage_idx.iter().position(|&i| i == b) else { continue };
        if j >= depths[s] {
            bail!("tensor {name:?}: stage {} has {} blocks", s + 1, depths[s]);
        }
        flags[s][j] = 1;
        // conv_theta: [dim_inner, channels, 1, 1, 1]
        let dims = t.dims();
        let (inner, channels) = (dims.first().copied().unwrap_or(0), dims.get(1).copied().unwrap_or(0));
        if inner == 0 || channels % inner != 0 {
            bail!("tensor {name:?}: {inner} inner channels do not divide {channels}");
        }
        let head = &name[..name.len() - "conv_theta.weight".len()];
        let cfg = (
            channels / inner,
            tensors.contains_key(&format!("{head}norm.weight")),
            tensors.contains_key(&format!("{head}conv_out.bias")),
        );
        if found.is_some_and(|f| f != cfg) {
            bail!("tensor {name:?}: the non-local blocks differ in width ratio, norm or bias");
        }
        found = Some(cfg);
    }
    Ok(found.map(|(reduction, norm, out_bias)| {
        let mut cfg = Map::new();
        cfg.insert("reduction".into(), reduction.into());
        cfg.insert("norm".into(), norm.into());
        cfg.insert("out_bias".into(), out_bias.into());
        (flags, cfg)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn t(shape: &[usize]) -> Tensor {
        Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
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
        let (out, sub) = map_mmaction2_resnet3d("i3d_r50", tensors).unwrap();
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
            map_mmaction2_resnet3d("slow_r50", vec![("cls_head.fc_cls.bias".into(), t(&[3]))]).unwrap();
        assert!(out.contains_key("blocks.5.proj.bias"));
    }

    #[test]
    fn unknown_and_unsupported_names_are_refused() {
        let err = |n: &str| {
            format!("{:#}", map_mmaction2_resnet3d("i3d_r50", vec![(n.to_string(), t(&[1]))]).unwrap_err())
        };
        assert!(err("backbone.layer1.0.conv4.conv.weight").contains("has no place"));
        assert!(err("backbone.layer1.3.conv1.conv.weight").contains("has no place"));
        assert!(err("backbone.fast_path.conv1.conv.weight").contains("has no place"));
        assert!(err("backbone.layer1.0.non_local_block.concat_project.conv.weight").contains("concatenation"));
        assert!(err("backbone.layer1.0.non_local_block.g.conv.weight").contains("'gaussian'"));
        let mut c = ModelConfig::defaults("x3d_m");
        assert!(mmaction2_defaults("x3d_m", &mut c)
            .unwrap_err()
            .to_string()
            .contains("i3d_r50 or slow_r50 or slowfast_r50"));
    }

    #[test]
    fn non_local_flags_and_settings_come_from_the_weights() {
        let spec = ResNet3dSpec::for_arch("i3d_r50").unwrap();
        let mut m = HashMap::new();
        for (b, j) in [(3, 1), (4, 5)] {
            let head = format!("blocks.{b}.res_blocks.{j}.1.");
            m.insert(format!("{head}conv_theta.weight"), t(&[256, 512, 1, 1, 1]));
            m.insert(format!("{head}norm.weight"), t(&[512]));
        }
        let (flags, cfg) = detect_non_local(&spec, &m).unwrap().unwrap();
        assert_eq!(flags, vec![vec![0, 0, 0], vec![0, 1, 0, 0], vec![0, 0, 0, 0, 0, 1], vec![0, 0, 0]]);
        assert_eq!(Value::Object(cfg), json!({"reduction": 2, "norm": true, "out_bias": false}));
        assert!(detect_non_local(&spec, &HashMap::new()).unwrap().is_none());
    }
}
