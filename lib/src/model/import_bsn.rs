//! BSN checkpoints as MMAction2 saves them: its TEM and its PEM are two models trained one after
//! the other, each a `.pth` of its own (`conv1.weight`, `conv2.*`, `conv3.*`; `fc1.*`, `fc2.*`).
//! Both go into one vidkit model file. Widths come from the weights; what they cannot tell
//! (`temporal_dim` 100, the PGM's and post-processing's settings: MMAction2's ActivityNet
//! configs) can be set with `-o key=value`, any [`BsnSpec`] field.

use super::{bsn_config, bsn_from_tensors, BsnSpec, ModelConfig};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// `key=value` overrides of any field of a localizer's spec (values as JSON, else strings; an
/// `ARCH.` prefix allowed), refusing unknown keys with the known ones.
pub(super) fn apply_spec_overrides<T: serde::Serialize + serde::de::DeserializeOwned>(
    spec: &T,
    overrides: &[String],
    arch: &str,
) -> Result<T> {
    let mut root = serde_json::to_value(spec)?;
    for o in overrides {
        let (k, v) = o.split_once('=').ok_or_else(|| anyhow!("override {o:?} is not key=value"))?;
        let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
        let key = k.trim().strip_prefix(&format!("{arch}.")).unwrap_or(k.trim());
        if root.get(key).is_none() {
            let known: Vec<String> =
                root.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
            bail!("{arch} has no option {key:?} (known: {})", known.join(", "));
        }
        root[key] = value;
    }
    serde_json::from_value(root).with_context(|| format!("{arch} options after -o"))
}

fn apply_overrides(spec: BsnSpec, overrides: &[String]) -> Result<BsnSpec> {
    let spec = apply_spec_overrides(&spec, overrides, "bsn")?;
    spec.validate()?;
    Ok(spec)
}

/// The state dict of one of the two checkpoints, names without `module.`, checked against the
/// layers it must hold.
fn read_part(path: &Path, layers: &[&str], what: &str) -> Result<HashMap<String, Tensor>> {
    let (read, _) = super::read_torch_state_dict(path)?;
    let mut out = HashMap::new();
    for (name, t) in read {
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        let layer = name.rsplit_once('.').map_or(name.as_str(), |(l, _)| l);
        if !layers.contains(&layer) {
            let other = if what == "TEM" { "fc1" } else { "conv1" };
            let hint = if layer == other {
                format!(
                    " (a {} checkpoint? the TEM is IN, the PEM --pem)",
                    if what == "TEM" { "PEM" } else { "TEM" }
                )
            } else {
                String::new()
            };
            bail!("{}: unexpected tensor {name:?}: not MMAction2's BSN {what}{hint}", path.display());
        }
        out.insert(name, t.to_dtype(DType::F32)?);
    }
    for l in layers {
        for leaf in ["weight", "bias"] {
            if !out.contains_key(&format!("{l}.{leaf}")) {
                bail!("{}: no tensor \"{l}.{leaf}\": not MMAction2's BSN {what}", path.display());
            }
        }
    }
    Ok(out)
}

/// Imports MMAction2's BSN: the TEM's checkpoint and the PEM's. `feat_dim`, `tem_hidden_dim`
/// and `pem_hidden_dim` from the weights; the PEM's input width must be the BSP sampling's
/// (16 + 8 + 8 = 32 unless `num_sample_*` are set).
pub fn import_bsn_mmaction2(
    tem_path: &Path,
    pem_path: &Path,
    overrides: &[String],
) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let tem = read_part(tem_path, &["conv1", "conv2", "conv3"], "TEM")?;
    let pem = read_part(pem_path, &["fc1", "fc2"], "PEM")?;
    let dim = |m: &HashMap<String, Tensor>, name: &str, i: usize| m[name].dims().get(i).copied().unwrap_or(0);
    let spec = BsnSpec {
        feat_dim: dim(&tem, "conv1.weight", 1),
        tem_hidden_dim: dim(&tem, "conv1.weight", 0),
        pem_hidden_dim: dim(&pem, "fc1.weight", 0),
        ..Default::default()
    };
    let spec = apply_overrides(spec, overrides)?;
    if dim(&tem, "conv3.weight", 0) != 3 {
        bail!(
            "{}: conv3 gives {} outputs; BSN's TEM gives 3 (actionness, start, end)",
            tem_path.display(),
            dim(&tem, "conv3.weight", 0)
        );
    }
    let pem_in = dim(&pem, "fc1.weight", 1);
    if pem_in != spec.pem_feat_dim() {
        bail!(
            "{}: the PEM takes features {pem_in} wide; the BSP sampling gives {} (num_sample_action + \
             num_sample_start + num_sample_end: set them with -o)",
            pem_path.display(),
            spec.pem_feat_dim()
        );
    }
    let mut tensors = HashMap::new();
    for (name, t) in tem {
        tensors.insert(format!("tem.{name}"), t);
    }
    for (name, t) in pem {
        tensors.insert(format!("pem.{name}"), t);
    }
    let cfg = bsn_config(&spec)?;
    let mut named: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    bsn_from_tensors(cfg.clone(), tensors).map_err(|e| anyhow!("{}: {e:#}", tem_path.display()))?;
    Ok((cfg, named))
}
