//! The 2019 PaddlePaddle video zoo's TALL parameters (`TALL.pdparams`, written by Paddle 1.x's
//! `fluid.save`), all named by hand in `tall_net.py`: `v2s_lt_weights` [Dv, S] and
//! `s2s_lt_weights` [E, S] (fluid's fc keeps input × output), `mid_out_weights` [H, 4S, 1, 1]
//! and `sim_mat_weights` [3, H, 1, 1] (1×1 convolutions). The sizes come from the shapes; the
//! windows and contexts are `tall.yaml`'s unless set with `-o`.

use super::import_bsn::apply_spec_overrides;
use super::{tall_config, tall_from_tensors, ModelConfig, TallSpec};
use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub fn import_tall_pdparams(
    path: &Path,
    overrides: &[String],
) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let mut read: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in super::read_pdparams(path)? {
        read.insert(name, t.to_dtype(DType::F32)?);
    }
    let fail = |e: anyhow::Error| anyhow!("{}: {e:#}", path.display());
    let get = |name: &str, rank: usize| -> Result<Tensor> {
        let t =
            read.get(name).cloned().ok_or_else(|| anyhow!("no tensor {name:?}: not the 2019 zoo's TALL"))?;
        if t.rank() != rank {
            bail!("{name} is {:?}; TALL's has {rank} dimensions", t.dims());
        }
        Ok(t)
    };
    let v2s = get("v2s_lt_weights", 2).map_err(fail)?;
    let s2s = get("s2s_lt_weights", 2).map_err(fail)?;
    let mid = get("mid_out_weights", 4).map_err(fail)?;
    let sim = get("sim_mat_weights", 4).map_err(fail)?;
    if read.len() != 4 {
        let mut extra: Vec<&String> = read.keys().filter(|k| !k.ends_with("_weights")).collect();
        extra.sort();
        bail!("{}: {} tensors; TALL has 4 (first other: {:?})", path.display(), read.len(), extra.first());
    }
    let (dv, s) = v2s.dims2()?;
    let (e, s2) = s2s.dims2()?;
    let (md, sd) = (mid.dims().to_vec(), sim.dims().to_vec());
    if s2 != s || md[1] != 4 * s || md[2..] != [1, 1] || sd[1] != md[0] || sd[2..] != [1, 1] {
        bail!(
            "{}: shapes v2s {:?}, s2s {:?}, mid_out {md:?}, sim_mat {sd:?} do not fit TALL's \
             ([Dv, S], [E, S], [H, 4S, 1, 1], [3, H, 1, 1])",
            path.display(),
            v2s.dims(),
            s2s.dims()
        );
    }
    let base = TallSpec {
        visual_feature_dim: dv,
        sentence_embedding_size: e,
        semantic_size: s,
        hidden_size: md[0],
        output_size: sd[0],
        ..Default::default()
    };
    let spec: TallSpec = apply_spec_overrides(&base, overrides, "tall").map_err(fail)?;
    spec.validate().map_err(fail)?;
    let tensors: HashMap<String, Tensor> = HashMap::from([
        ("v2s.weight".to_string(), v2s.t()?.contiguous()?),
        ("s2s.weight".to_string(), s2s.t()?.contiguous()?),
        ("mid.weight".to_string(), mid.reshape((md[0], md[1]))?),
        ("sim.weight".to_string(), sim.reshape((sd[0], sd[1]))?),
    ]);
    let cfg = tall_config(&spec)?;
    let mut named: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    tall_from_tensors(cfg.clone(), tensors).map_err(fail)?;
    Ok((cfg, named))
}
