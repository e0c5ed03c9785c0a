//! BMN checkpoints as their owners save them: PaddleVideo's `.pdparams` (its `BMNLocalizer`,
//! names under `backbone.`) and MMAction2's `.pth` (its `BMN` module: `x_1d_b.0.weight`, ...,
//! with the sampling mask saved as the parameter `sample_mask`). Sizes come from the weights;
//! what the weights cannot tell (`prop_boundary_ratio` 0.5, `num_sample_perbin` 3, the configs'
//! values) can be overridden with `-o key=value`.

use super::{bmn_config, bmn_from_tensors, BmnSpec, BmnVariant, ModelConfig, SampleMask};
use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Applies `key=value` overrides of the options a checkpoint does not record.
fn apply_overrides(spec: &mut BmnSpec, overrides: &[String]) -> Result<()> {
    for o in overrides {
        let (k, v) = o.split_once('=').ok_or_else(|| anyhow!("override {o:?} is not key=value"))?;
        let bad = || anyhow!("override {o:?}: not a number");
        match k.trim() {
            "tscale" => spec.tscale = v.trim().parse().map_err(|_| bad())?,
            "dscale" => spec.dscale = v.trim().parse().map_err(|_| bad())?,
            "prop_boundary_ratio" => spec.prop_boundary_ratio = v.trim().parse().map_err(|_| bad())?,
            "num_sample_perbin" => spec.num_sample_perbin = v.trim().parse().map_err(|_| bad())?,
            "feature_extraction_interval" => {
                spec.feature_extraction_interval = v.trim().parse().map_err(|_| bad())?
            }
            other => bail!(
                "bmn has no option {other:?} (tscale, dscale, prop_boundary_ratio, num_sample_perbin, \
                 feature_extraction_interval)"
            ),
        }
    }
    Ok(())
}

/// Dimension `i` of tensor `name`, or an error saying the file is not a BMN checkpoint.
fn dim(tensors: &HashMap<String, Tensor>, path: &Path, name: &str, i: usize) -> Result<usize> {
    let t = tensors
        .get(name)
        .ok_or_else(|| anyhow!("{}: no tensor {name:?}: not a BMN checkpoint", path.display()))?;
    Ok(t.dims().get(i).copied().unwrap_or(0))
}

/// The config and the tensors in name order, after checking that they build.
fn finish(
    spec: BmnSpec,
    tensors: HashMap<String, Tensor>,
    path: &Path,
) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let cfg = bmn_config(&spec)?;
    let mut named: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    bmn_from_tensors(cfg.clone(), tensors).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok((cfg, named))
}

/// Imports PaddleVideo's BMN checkpoint: `feat_dim`, `num_sample` and the hidden widths from the
/// weights, `tscale`/`dscale` 100 unless overridden (`-o tscale=128`), `prop_boundary_ratio`
/// 0.5, `num_sample_perbin` 3 (bmn.yaml).
pub fn import_bmn_pdparams(
    path: &Path,
    overrides: &[String],
) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let read = super::read_pdparams(path)?;
    let mut tensors = HashMap::new();
    for (name, t) in read {
        let name = name.strip_prefix("backbone.").unwrap_or(&name).to_string();
        tensors.insert(name, t.to_dtype(DType::F32)?);
    }
    let d = |name: &str, i: usize| dim(&tensors, path, name, i);
    let mut spec = BmnSpec {
        feat_dim: d("b_conv1.weight", 1)? * 4,
        num_sample: d("p_conv3d1.weight", 2)?,
        hidden_1d: d("b_conv1.weight", 0)?,
        hidden_2d: d("p_conv1.weight", 0)?,
        hidden_3d: d("p_conv3d1.weight", 0)?,
        ..Default::default()
    };
    apply_overrides(&mut spec, overrides)?;
    finish(spec, tensors, path)
}

/// MMAction2's module names (`nn.Sequential` indices) and ours.
const MMACTION2_NAMES: [(&str, &str); 12] = [
    ("x_1d_b.0", "b_conv1"),
    ("x_1d_b.2", "b_conv2"),
    ("x_1d_s.0", "ts_conv1"),
    ("x_1d_s.2", "ts_conv2"),
    ("x_1d_e.0", "te_conv1"),
    ("x_1d_e.2", "te_conv2"),
    ("x_1d_p.0", "p_conv1"),
    ("x_3d_p.0", "p_conv3d1"),
    ("x_2d_p.0", "p_conv2d1"),
    ("x_2d_p.2", "p_conv2d2"),
    ("x_2d_p.4", "p_conv2d3"),
    ("x_2d_p.6", "p_conv2d4"),
];

/// Imports MMAction2's BMN checkpoint (`bmn_400x100_*.pth`): the variant `mmaction2`, sizes from
/// the weights, T = D from the saved `sample_mask` [T, N·T·T], which must equal the mask built
/// from `prop_boundary_ratio` (0.5) and `num_sample_perbin` (3) — else the error names them.
pub fn import_bmn_mmaction2(
    path: &Path,
    overrides: &[String],
) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let (read, _) = super::read_torch_state_dict(path)?;
    let mut tensors = HashMap::new();
    let mut mask = None;
    for (name, t) in read {
        let name = name.strip_prefix("module.").unwrap_or(&name);
        if name == "sample_mask" {
            mask = Some(t.to_dtype(DType::F32)?);
            continue;
        }
        let (layer, leaf) = name.rsplit_once('.').unwrap_or((name, ""));
        let ours = MMACTION2_NAMES
            .iter()
            .find(|(m, _)| *m == layer)
            .ok_or_else(|| anyhow!("{}: unexpected tensor {name:?}: not MMAction2's BMN", path.display()))?
            .1;
        tensors.insert(format!("{ours}.{leaf}"), t.to_dtype(DType::F32)?);
    }
    let mask = mask.ok_or_else(|| anyhow!("{}: no `sample_mask`: not MMAction2's BMN", path.display()))?;
    let d = |name: &str, i: usize| dim(&tensors, path, name, i);
    let tscale = mask.dims().first().copied().unwrap_or(0);
    let mut spec = BmnSpec {
        feat_dim: d("b_conv1.weight", 1)? * 4,
        tscale,
        dscale: tscale,
        num_sample: d("p_conv3d1.weight", 2)?,
        hidden_1d: d("b_conv1.weight", 0)?,
        hidden_2d: d("p_conv2d1.weight", 0)?,
        hidden_3d: d("p_conv3d1.weight", 0)?,
        variant: BmnVariant::MMAction2,
        ..Default::default()
    };
    apply_overrides(&mut spec, overrides)?;
    let want = spec.tscale * spec.num_sample * spec.dscale * spec.tscale;
    if mask.elem_count() != want {
        bail!(
            "{}: sample_mask {:?} does not fit T = D = {}, N = {}",
            path.display(),
            mask.dims(),
            spec.tscale,
            spec.num_sample
        );
    }
    let saved: Vec<f32> = mask.flatten_all()?.to_vec1()?;
    let built = SampleMask::new(&spec).dense();
    let diff = saved.iter().zip(&built).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    if diff > 1e-6 {
        bail!(
            "{}: the saved sample_mask differs from the one prop_boundary_ratio {} and num_sample_perbin {} \
             build (by {diff}): set them with -o",
            path.display(),
            spec.prop_boundary_ratio,
            spec.num_sample_perbin
        );
    }
    finish(spec, tensors, path)
}
