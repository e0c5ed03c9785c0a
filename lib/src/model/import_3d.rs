//! Importers of 3D CNN checkpoints (the zoo architectures): pytorchvideo's state dicts, whose
//! names are ours, and mmaction2's ResNet3d recognizers (I3D, Slow-only, SlowFast), whose names map onto
//! ours and whose structure differs from pytorchvideo's in settings the config then carries.
//!
//! mmaction2's backbones, their settings and name maps: `import_mmaction2_3d`. Which
//! backbone an mmaction2 checkpoint holds is told by its names; one imported as an
//! architecture it has no place in is refused, naming the file and the architectures it does
//! import as. A tensor with no place in the architecture is refused, naming the file and the
//! tensor.

use super::import::{Imported, NamedTensors};
use super::import_mmaction2_3d::{
    layer_depths, map_mmaction2_resnet3d, map_mmaction2_slowfast, map_mmaction2_x3d, mmaction2_defaults,
    Mmaction2Backbone,
};
use super::resnet3d::{stage_depths, ResNet3dSpec};
use super::{from_tensors, ModelConfig};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

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
    let (out, sub_sample) = if mmaction2 {
        let file = || path.display().to_string();
        let backbone = Mmaction2Backbone::of(&kept);
        backbone.check_arch(arch).with_context(file)?;
        mmaction2_defaults(arch, &mut config).with_context(file)?;
        match backbone {
            Mmaction2Backbone::SlowFast => {
                let (out, settings) = map_mmaction2_slowfast(arch, kept).with_context(file)?;
                config.extra.extend(settings);
                (out, None)
            }
            Mmaction2Backbone::X3d => (map_mmaction2_x3d(arch, kept).with_context(file)?, None),
            Mmaction2Backbone::IrCsn => {
                // ResNet3dCSN comes in depths 50, 101 and 152: the blocks per layer say which.
                let depths = layer_depths(&kept).with_context(file)?;
                if Some(depths) != stage_depths(101) {
                    config.stage_depths = Some(depths);
                }
                map_mmaction2_resnet3d(arch, depths, kept).with_context(file)?
            }
            _ => {
                let depth = ResNet3dSpec::for_arch(arch).map_or(50, |s| s.depth);
                let depths = stage_depths(depth).with_context(|| format!("no ResNet-3D of depth {depth}"))?;
                map_mmaction2_resnet3d(arch, depths, kept).with_context(file)?
            }
        }
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
        Some(spec) => {
            let depths = config.stage_depths.or_else(|| stage_depths(spec.depth));
            detect_non_local(&spec, depths, &out).with_context(|| path.display().to_string())?
        }
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

/// Non-local blocks in our names (`blocks.{b}.res_blocks.{j}.1.conv_theta.weight`) of a model
/// of `depths` blocks per stage: the `non_local` flags and what the weights tell of
/// `non_local_cfg` (reduction, norm, out_bias).
fn detect_non_local(
    spec: &ResNet3dSpec,
    depths: Option<[usize; 4]>,
    tensors: &HashMap<String, Tensor>,
) -> Result<Option<(Vec<Vec<u8>>, Map<String, Value>)>> {
    let (stage_idx, _) = spec.block_indices();
    let Some(depths) = depths else { return Ok(None) };
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

    const R50: [usize; 4] = [3, 4, 6, 3];

    fn t(shape: &[usize]) -> Tensor {
        Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
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
        let (flags, cfg) = detect_non_local(&spec, Some(R50), &m).unwrap().unwrap();
        assert_eq!(flags, vec![vec![0, 0, 0], vec![0, 1, 0, 0], vec![0, 0, 0, 0, 0, 1], vec![0, 0, 0]]);
        assert_eq!(Value::Object(cfg), json!({"reduction": 2, "norm": true, "out_bias": false}));
        assert!(detect_non_local(&spec, Some(R50), &HashMap::new()).unwrap().is_none());
        // A block beyond the model's depth is refused.
        let err = detect_non_local(&spec, Some([3, 4, 5, 3]), &m).unwrap_err();
        assert!(err.to_string().contains("stage 3 has 5 blocks"), "{err}");
    }
}
