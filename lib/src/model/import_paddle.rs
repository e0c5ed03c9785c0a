//! Importer: PaddleVideo `.pdparams` checkpoints → vidkit models (DESIGN.md §2.4).
//!
//! The file is read by `read_pdparams` (no code from it runs). Names: a PaddleVideo
//! `Recognizer2D` state dict (`model.state_dict()`, what PaddleVideo's `save` writes and its
//! released `ppTSM_*.pdparams` hold) maps onto ours by one rule, component by component:
//! `_conv` → `conv`, `_batch_norm` → `bn`, `_mean` → `running_mean`, `_variance` →
//! `running_var`; everything else unchanged. So `backbone.bb_1_0.short._batch_norm._variance`
//! becomes `backbone.bb_1_0.short.bn.running_var` and `head.fc.weight` stays. Paddle's `Linear`
//! stores its weight as [in, out]: every 2-D `weight` is transposed to [out, in].

use super::import::config_from_weights;
use super::{from_tensors, read_pdparams, Imported, NamedTensors};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The registered architectures whose reference is PaddleVideo.
pub const PADDLE_ARCHS: [&str; 1] = ["pptsm_r50vd"];

/// One Paddle structured name → ours.
fn map_paddle_name(name: &str) -> String {
    name.split('.')
        .map(|part| match part {
            "_conv" => "conv",
            "_batch_norm" => "bn",
            "_mean" => "running_mean",
            "_variance" => "running_var",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn map_paddle_tensors(tensors: NamedTensors) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let mapped = map_paddle_name(&name);
        let t = if t.rank() == 2 && mapped.ends_with(".weight") { t.t()?.contiguous()? } else { t };
        if out.insert(mapped.clone(), t).is_some() {
            bail!("two checkpoint tensors map to {mapped:?}");
        }
    }
    Ok(out)
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
    let tensors = map_paddle_tensors(tensors).with_context(|| path.display().to_string())?;

    let config = config_from_weights(path, arch, &tensors, "backbone.conv1_3.conv.weight", overrides)?;
    let model =
        from_tensors(config, tensors, &Device::Cpu).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok(Imported { model, state_dict_key: None, layout: "paddlevideo", tensors_read, dropped: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn linear_weights_are_transposed() {
        let w = Tensor::arange(0f32, 6., &Device::Cpu).unwrap().reshape((3, 2)).unwrap();
        let conv = Tensor::zeros((4, 3, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        let m =
            map_paddle_tensors(vec![("head.fc.weight".into(), w), ("c._conv.weight".into(), conv)]).unwrap();
        assert_eq!(m["head.fc.weight"].to_vec2::<f32>().unwrap(), vec![vec![0., 2., 4.], vec![1., 3., 5.]]);
        assert_eq!(m["c.conv.weight"].dims(), &[4, 3, 1, 1]);
    }
}
