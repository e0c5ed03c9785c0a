//! Importer: PaddleVideo `.pdparams` checkpoints → vidkit models (DESIGN.md §2.4).
//!
//! The file is read by `read_pdparams` (no code from it runs). Names: a PaddleVideo
//! `Recognizer2D` state dict (`model.state_dict()`, what PaddleVideo's `save` writes and its
//! released `ppTSM_*.pdparams` hold) maps onto ours by one rule, component by component:
//! `_conv` → `conv`, `_batch_norm` → `bn`, `_mean` → `running_mean`, `_variance` →
//! `running_var`; everything else unchanged. So `backbone.bb_1_0.short._batch_norm._variance`
//! becomes `backbone.bb_1_0.short.bn.running_var` and `head.fc.weight` stays. Paddle's `Linear`
//! stores its weight as [in, out]: every 2-D `weight` is transposed to [out, in]. PP-TSMv2 keeps
//! its classifier in the backbone: `backbone.fc.*` becomes `head.fc.*`; the fused kernels of its
//! re-parameterisable blocks (`...dw_conv.weight`/`.bias`, filled only by `rep()` for deployment,
//! the blocks computing with their `dw_conv_list` branches) are dropped. Temporal attention is
//! switched on when the checkpoint has its weights (`backbone.global_attention.fc.*`).

use super::import::config_from_weights;
use super::{from_tensors, read_pdparams, Imported, NamedTensors};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The registered architectures whose reference is PaddleVideo.
pub const PADDLE_ARCHS: [&str; 3] = ["pptsm_r50vd", "pptsmv2_lcnetv2", "pptimesformer_vit_b"];

/// One Paddle structured name → ours; `None` for tensors no model uses.
fn map_paddle_name(name: &str) -> Option<String> {
    if name.ends_with(".dw_conv.weight") || name.ends_with(".dw_conv.bias") {
        return None;
    }
    let name = match name.strip_prefix("backbone.fc.") {
        Some(rest) => format!("head.fc.{rest}"),
        None => name.to_string(),
    };
    let mapped = name
        .split('.')
        .map(|part| match part {
            "_conv" => "conv",
            "_batch_norm" => "bn",
            "_mean" => "running_mean",
            "_variance" => "running_var",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".");
    Some(mapped)
}

/// The mapped tensors and how many were dropped.
fn map_paddle_tensors(tensors: NamedTensors) -> Result<(HashMap<String, Tensor>, usize)> {
    let mut out = HashMap::new();
    let mut dropped = 0;
    for (name, t) in tensors {
        let Some(mapped) = map_paddle_name(&name) else {
            dropped += 1;
            continue;
        };
        let t = if t.rank() == 2 && mapped.ends_with(".weight") { t.t()?.contiguous()? } else { t };
        if out.insert(mapped.clone(), t).is_some() {
            bail!("two checkpoint tensors map to {mapped:?}");
        }
    }
    Ok((out, dropped))
}

/// Imports a `.pdparams` as `arch` (one of `PADDLE_ARCHS`): `num_classes` and `base_width` from
/// the weights unless overridden, then `-o key=value` overrides; weights that do not fit are
/// refused with the first difference named. Errors name `path`.
pub fn import_paddle(path: &Path, arch: &str, overrides: &[String]) -> Result<Imported> {
    if !PADDLE_ARCHS.contains(&arch) {
        bail!(
            "{}: a Paddle checkpoint imports as {} (PaddleVideo's models), not {arch}",
            path.display(),
            PADDLE_ARCHS.join(", ")
        );
    }
    let tensors = read_pdparams(path)?;
    let tensors_read = tensors.len();
    let (tensors, dropped) = map_paddle_tensors(tensors).with_context(|| path.display().to_string())?;
    let stem = if arch == "pptsm_r50vd" {
        "backbone.conv1_3.conv.weight"
    } else {
        "backbone.stem.1.pw_conv.conv.weight"
    };
    let mut overrides = overrides.to_vec();
    // PaddleClas's ImageNet ViT (`pos_embed`, `blocks.0.attn.qkv.weight`, `head.weight`) starts
    // a PP-TimeSformer as PaddleVideo's `pretrain_vit_param_trans` does (see import_vit.rs).
    let image_vit = arch == "pptimesformer_vit_b" && tensors.contains_key("pos_embed");
    let (mut tensors, dropped) = if image_vit {
        let before = tensors.len();
        let t: HashMap<String, Tensor> = tensors
            .into_iter()
            .filter(|(n, _)| !n.starts_with("head."))
            .map(|(n, t)| (format!("backbone.{n}"), t))
            .collect();
        let dropped = dropped + before - t.len();
        (t, dropped)
    } else {
        (tensors, dropped)
    };
    if arch == "pptimesformer_vit_b" {
        // Sizes from the shapes first, so the user's own -o come after and win.
        let mut sizes = super::timesformer::vit_overrides_from_weights(&tensors);
        if image_vit {
            sizes.retain(|o| o != "attention_type=space_only");
        }
        overrides.splice(0..0, sizes);
    }
    if tensors.contains_key("backbone.global_attention.fc.weight") {
        overrides.insert(0, "temporal_attention=true".to_string());
    }
    let config = config_from_weights(path, arch, &tensors, stem, &overrides)?;
    if image_vit {
        if super::VitOptions::from_config(&config)?.attention_type == "divided_space_time" {
            super::import_vit::adopt_image_vit(&mut tensors);
        }
        super::import_vit::complete_from_init(&mut tensors, &config)
            .with_context(|| path.display().to_string())?;
    }
    if arch == "pptimesformer_vit_b" {
        super::timesformer::resize_embeddings(&mut tensors, &config)
            .with_context(|| path.display().to_string())?;
    }
    let model =
        from_tensors(config, tensors, &Device::Cpu).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok(Imported { model, state_dict_key: None, layout: "paddlevideo", tensors_read, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_paddle_name(name: &str) -> String {
        super::map_paddle_name(name).unwrap()
    }

    fn map_paddle_name_or_dropped(name: &str) -> Option<String> {
        super::map_paddle_name(name)
    }

    #[test]
    fn paddle_names_map_by_the_documented_rule() {
        assert_eq!(map_paddle_name("backbone.conv1_1._conv.weight"), "backbone.conv1_1.conv.weight");
        assert_eq!(
            map_paddle_name("backbone.bb_1_0.short._batch_norm._variance"),
            "backbone.bb_1_0.short.bn.running_var"
        );
        assert_eq!(
            map_paddle_name("backbone.bb_3_2.conv2._batch_norm._mean"),
            "backbone.bb_3_2.conv2.bn.running_mean"
        );
        assert_eq!(
            map_paddle_name("backbone.bb_0_0.conv0._batch_norm.bias"),
            "backbone.bb_0_0.conv0.bn.bias"
        );
        assert_eq!(map_paddle_name("head.fc.weight"), "head.fc.weight");
        // PP-TSMv2
        assert_eq!(map_paddle_name("backbone.fc.bias"), "head.fc.bias");
        assert_eq!(
            map_paddle_name("backbone.stages.2.0.dw_conv_list.1.bn._mean"),
            "backbone.stages.2.0.dw_conv_list.1.bn.running_mean"
        );
        assert_eq!(
            map_paddle_name("backbone.stem.1.dw_conv.conv.weight"),
            "backbone.stem.1.dw_conv.conv.weight"
        );
        assert_eq!(map_paddle_name_or_dropped("backbone.stages.3.1.dw_conv.bias"), None);
    }

    #[test]
    fn linear_weights_are_transposed() {
        let w = Tensor::arange(0f32, 6., &Device::Cpu).unwrap().reshape((3, 2)).unwrap();
        let conv = Tensor::zeros((4, 3, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (m, _) =
            map_paddle_tensors(vec![("head.fc.weight".into(), w), ("c._conv.weight".into(), conv)]).unwrap();
        assert_eq!(m["head.fc.weight"].to_vec2::<f32>().unwrap(), vec![vec![0., 2., 4.], vec![1., 3., 5.]]);
        assert_eq!(m["c.conv.weight"].dims(), &[4, 3, 1, 1]);
    }
}
