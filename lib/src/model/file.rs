//! The model file: weights as safetensors, the config as JSON under the metadata key
//! `vidkit_config`. Loading checks that the file's tensors and the architecture's parameters are
//! the same set with the same shapes, and names the first difference.

use super::{build, Model, ModelConfig};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

pub const CONFIG_KEY: &str = "vidkit_config";

/// A model with its parameters (trainable ones and BatchNorm buffers) in a VarMap.
pub struct LoadedModel {
    pub model: Model,
    pub varmap: VarMap,
}

/// Writes all variables of `varmap` and `config` to `path` atomically.
pub fn save_model(varmap: &VarMap, config: &ModelConfig, path: &Path) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut tensors: Vec<(String, Tensor)> =
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    drop(data);
    save_tensors(&tensors, config, path)
}

/// Writes named tensors and `config` to `path` atomically (a model file).
pub fn save_tensors(tensors: &[(String, Tensor)], config: &ModelConfig, path: &Path) -> Result<()> {
    let meta = HashMap::from([(CONFIG_KEY.to_string(), serde_json::to_string(config)?)]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
        .with_context(|| format!("{}: cannot serialise the model", path.display()))?;
    let mut f = crate::io::AtomicFile::create(path)?;
    std::io::Write::write_all(&mut f, &bytes)?;
    f.commit()
}

/// Reads only the config of a model file.
pub fn read_config(path: &Path) -> Result<ModelConfig> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read model", path.display()))?;
    config_from_bytes(&bytes, path)
}

fn config_from_bytes(bytes: &[u8], path: &Path) -> Result<ModelConfig> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors model file: {e}", path.display()))?;
    let json = meta.metadata().as_ref().and_then(|m| m.get(CONFIG_KEY)).with_context(|| {
        format!("{}: no vidkit config in the metadata (import it with vconvert)", path.display())
    })?;
    let config: ModelConfig =
        serde_json::from_str(json).with_context(|| format!("{}: bad vidkit config", path.display()))?;
    config.precision().with_context(|| format!("{}: bad vidkit config", path.display()))?;
    Ok(config)
}

/// Loads a model file onto `device`, refusing weights that do not fit the architecture.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read model", path.display()))?;
    load_model_bytes(&bytes, path, device)
}

/// Loads a model file already in memory; `path` names it in errors. The architecture is first
/// built over the file's own tensors (a missing or misshapen one as a zero-stride view), so a
/// config that asks for more parameters than the file has bytes is refused before anything of
/// its size is allocated.
pub fn load_model_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<LoadedModel> {
    let config = config_from_bytes(bytes, path)?;
    let tensors = candle_core::safetensors::load_buffer(bytes, device)
        .with_context(|| format!("{}: unreadable tensors", path.display()))?;
    let budget = ParameterBudget { tensors: tensors.clone(), elements_left: Mutex::new(bytes.len()) };
    build(&config, VarBuilder::from_backend(Box::new(budget), DType::F32, device.clone()))
        .with_context(|| format!("{}: weights do not fit {}", path.display(), config.arch))?;
    from_tensors(config, tensors, device).with_context(|| format!("{}", path.display()))
}

/// A dry-run backend: hands out the file's tensors, and for parameters the file lacks (or has
/// in another shape) a view of one zero, counting their elements against the file's size (every
/// stored element takes at least a byte).
struct ParameterBudget {
    tensors: HashMap<String, Tensor>,
    elements_left: Mutex<usize>,
}

impl candle_nn::var_builder::SimpleBackend for ParameterBudget {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let count = s.dims().iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let mut left = self.elements_left.lock().map_err(|_| candle_core::Error::Msg("lock".into()))?;
        match count.and_then(|c| left.checked_sub(c)) {
            Some(rest) => *left = rest,
            None => {
                return Err(candle_core::Error::Msg(format!(
                    "{name} of shape {:?} needs more parameters than the file holds bytes",
                    s.dims()
                )))
            }
        }
        match self.tensors.get(name) {
            Some(t) if t.dims() == s.dims() => t.to_dtype(dtype),
            _ => Tensor::zeros((), dtype, dev)?.broadcast_as(s),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _: &Device) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype),
            None => Err(candle_core::Error::Msg(format!("no tensor {name}"))),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Builds `config`'s architecture and fills it from `tensors` (names and shapes must match).
pub fn from_tensors(
    config: ModelConfig,
    tensors: HashMap<String, Tensor>,
    device: &Device,
) -> Result<LoadedModel> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = build(&config, vb)?;
    {
        let data = varmap.data().lock().expect("varmap lock");
        let mut missing: Vec<&String> = data.keys().filter(|k| !tensors.contains_key(*k)).collect();
        missing.sort();
        if let Some(m) = missing.first() {
            bail!("weights do not fit {}: {} tensors missing, first {m:?}", config.arch, missing.len());
        }
        let mut extra: Vec<&String> = tensors.keys().filter(|k| !data.contains_key(*k)).collect();
        extra.sort();
        if let Some(e) = extra.first() {
            bail!("weights do not fit {}: {} unexpected tensors, first {e:?}", config.arch, extra.len());
        }
        for (name, var) in data.iter() {
            let t = &tensors[name];
            if t.shape() != var.shape() {
                bail!(
                    "weights do not fit {}: {name} has shape {:?}, the model wants {:?}",
                    config.arch,
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
    }
    Ok(LoadedModel { model, varmap })
}

impl LoadedModel {
    /// The model for inference: built again over its weights detached (the same storage, no
    /// copy). candle has no no-grad mode: over variables every op records its inputs, so an
    /// eval forward would keep all its intermediates alive until the output is dropped.
    pub fn for_inference(&self) -> Result<Model> {
        frozen(&self.varmap, self.model.config())
    }
}

/// `config`'s architecture over `varmap`'s values as plain tensors (see `for_inference`).
pub fn frozen(varmap: &VarMap, config: &ModelConfig) -> Result<Model> {
    let data = varmap.data().lock().expect("varmap lock");
    let device = data.values().next().map(|v| v.device().clone()).unwrap_or(Device::Cpu);
    let tensors: HashMap<String, Tensor> =
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    drop(data);
    build(config, VarBuilder::from_tensors(tensors, DType::F32, &device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_mismatch_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ModelConfig::defaults("tsm_r18");
        cfg.num_classes = 5;
        cfg.frames = 4;
        cfg.base_width = 8;
        let varmap = VarMap::new();
        let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        let path = dir.path().join("m.safetensors");
        save_model(&varmap, &cfg, &path).unwrap();
        let loaded = load_model(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.model.config(), &cfg);
        let x = crate::rng::randn(0f32, 1., (2, 4, 3, 32, 32), &Device::Cpu).unwrap();
        let a = model.forward_t(&x, false).unwrap();
        let b = loaded.model.forward_t(&x, false).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
        // Same weights under another architecture: refused with the first difference named.
        let mut other = cfg.clone();
        other.arch = "tsm_r34".into();
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let err = from_tensors(other, tensors.clone(), &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("weights do not fit tsm_r34") && err.contains("missing"), "{err}");
        let mut wide = cfg.clone();
        wide.num_classes = 7;
        let err = from_tensors(wide, tensors, &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("head.fc") && err.contains("shape"), "{err}");
    }

    /// The inference model gives the trained model's logits, and its eval forward records no op
    /// (so each intermediate is freed when the next layer is done with it), for a 2D and a 3D
    /// model on the kernels' path and on the candle-only one.
    #[test]
    fn inference_model_keeps_no_graph() {
        for (arch, frames) in [("tsm_r18", 4), ("x3d_xs", 4)] {
            let mut cfg = ModelConfig::defaults(arch);
            (cfg.num_classes, cfg.frames, cfg.base_width) = (3, frames, 8);
            let varmap = VarMap::new();
            let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
            crate::model::init_weights_for(&varmap, arch, 5).unwrap();
            let loaded = LoadedModel { model, varmap };
            let inference = loaded.for_inference().unwrap();
            let x = crate::rng::randn(0f32, 1., (1, frames, 3, 32, 32), &Device::Cpu).unwrap();
            for candle_only in [false, true] {
                let run = |m: &Model| {
                    if candle_only {
                        crate::nn::with_portable_ops(|| m.forward_t(&x, false)).unwrap()
                    } else {
                        m.forward_t(&x, false).unwrap()
                    }
                };
                let (want, got) = (run(&loaded.model), run(&inference));
                assert!(want.track_op(), "{arch}: the trained model's forward records its ops");
                assert!(!got.track_op(), "{arch} (candle only: {candle_only}): an op was recorded");
                let diff =
                    (want - got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert_eq!(diff, 0.0, "{arch}");
            }
        }
    }
}

/// A model file's config, checked by `check` (the architecture's spec), and its tensors; errors
/// name the file.
pub(super) fn read_model_file(
    path: &Path,
    check: impl Fn(&ModelConfig) -> Result<()>,
) -> Result<(ModelConfig, HashMap<String, candle_core::Tensor>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read model", path.display()))?;
    let cfg = read_config(path)?;
    check(&cfg).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu)
        .map_err(|e| anyhow::anyhow!("{}: unreadable tensors: {e}", path.display()))?;
    Ok((cfg, tensors))
}
