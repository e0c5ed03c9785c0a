//! Training checkpoints: one `.safetensors` file holding the model's variables under their own
//! names (as `model::save_model` writes them, buffers included), the optimiser's state tensors
//! under `optim/{slot}.{param}`, and JSON metadata: the model config under `vidkit_config` (so
//! `model::read_config` reads a checkpoint too) and the loop's position under `vidkit_train`
//! (epoch, iteration, step, RNG states, best metric, optimiser scalars). A run with a second
//! model trained alongside (DML's peer) adds the peer's variables under `peer/{name}`, its
//! optimiser's under `peer_optim/{slot}.{param}`, and its config and optimiser scalars to
//! `vidkit_train`. Written atomically.
//!
//! f64 scalars travel as decimal strings (Rust's shortest round-trip form) because serde_json's
//! default float parser may miss the last bit; `--resume` must be exact.

use super::optim::{OptimState, Optimizer};
use crate::model::{ModelConfig, CONFIG_KEY};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const TRAIN_KEY: &str = "vidkit_train";
const OPTIM_PREFIX: &str = "optim/";
const PEER_PREFIX: &str = "peer/";
const PEER_OPTIM_PREFIX: &str = "peer_optim/";
const FORMAT_VERSION: u32 = 1;

/// Where the loop stands. The LR schedule is a pure function of (epoch, iteration), so this is
/// also the schedule's position.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The epoch in progress or to run next (0-based).
    pub epoch: usize,
    /// Iterations of `epoch` already done (0 at an epoch boundary).
    pub iteration: usize,
    /// Optimiser steps taken in all.
    pub global_step: u64,
    /// Named generator states ([`Rng::state`]): the sampler's, the mixer's, ...
    #[serde(default)]
    pub rngs: BTreeMap<String, [u64; 4]>,
    #[serde(default, with = "exact_opt_f64")]
    pub best_metric: Option<f64>,
    #[serde(default)]
    pub best_epoch: Option<usize>,
    /// Whatever else the loop wants back (its full config, a log offset).
    #[serde(default)]
    pub extra: serde_json::Value,
}

impl TrainState {
    pub fn set_rng(&mut self, name: &str, rng: &Rng) {
        self.rngs.insert(name.to_string(), rng.state());
    }

    /// The generator saved as `name`.
    pub fn rng(&self, name: &str) -> Result<Rng> {
        let s = self.rngs.get(name).with_context(|| format!("checkpoint has no RNG state {name:?}"))?;
        if *s == [0; 4] {
            bail!("checkpoint RNG state {name:?} is all zero");
        }
        Ok(Rng::from_state(*s))
    }
}

#[derive(Serialize, Deserialize)]
struct TrainMeta {
    version: u32,
    state: TrainState,
    optim_kind: String,
    /// Optimiser scalars as exact decimal strings.
    optim_scalars: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer: Option<PeerMeta>,
}

#[derive(Serialize, Deserialize)]
struct PeerMeta {
    config: ModelConfig,
    optim_kind: String,
    optim_scalars: BTreeMap<String, String>,
}

/// A second model trained in the same loop (DML's peer): its variables, config and optimiser.
pub struct PeerRef<'a> {
    pub varmap: &'a VarMap,
    pub config: &'a ModelConfig,
    pub optim: &'a dyn Optimizer,
}

/// A loaded peer: as [`Checkpoint`]'s model parts.
pub struct PeerCheckpoint {
    pub config: ModelConfig,
    pub model: HashMap<String, Tensor>,
    pub optim: OptimState,
}

/// A loaded checkpoint, in parts: build the model from `config` and `model` (e.g.
/// `model::from_tensors`), the optimiser over its vars, then [`Checkpoint::restore`] or
/// `optimizer.load_state(&ckpt.optim)`.
pub struct Checkpoint {
    pub config: ModelConfig,
    /// Every model variable by name, buffers included.
    pub model: HashMap<String, Tensor>,
    pub optim: OptimState,
    pub state: TrainState,
    /// The peer model, when the run trained one.
    pub peer: Option<PeerCheckpoint>,
}

/// Whether `--resume` has a checkpoint at `path` to continue from. Without one (a run killed in
/// its first epoch, before any checkpoint was written) it starts from the beginning and says so.
pub fn resume_from(path: &Path, resume: bool, quiet: bool) -> bool {
    if resume && !path.exists() {
        if !quiet {
            eprintln!("vtrain: --resume: no checkpoint {} yet: starting from the beginning", path.display());
        }
        return false;
    }
    resume
}

/// Writes `varmap`, `optim`'s state and `state` to `path` atomically.
pub fn save_checkpoint(
    path: &Path,
    varmap: &VarMap,
    config: &ModelConfig,
    optim: &dyn Optimizer,
    state: &TrainState,
) -> Result<()> {
    save_checkpoint_with_peer(path, varmap, config, optim, state, None)
}

/// The variables of `varmap` under `prefix` + their names; none may already start with one of
/// the checkpoint's prefixes.
fn prefixed_vars(varmap: &VarMap, prefix: &str) -> Result<Vec<(String, Tensor)>> {
    let data = varmap.data().lock().expect("varmap lock");
    if let Some(k) =
        data.keys().find(|k| [OPTIM_PREFIX, PEER_PREFIX, PEER_OPTIM_PREFIX].iter().any(|p| k.starts_with(p)))
    {
        bail!("model variable {k:?} clashes with the checkpoint's prefixes");
    }
    Ok(data.iter().map(|(k, v)| (format!("{prefix}{k}"), v.as_tensor().detach())).collect())
}

fn exact_scalars(os: &OptimState) -> BTreeMap<String, String> {
    os.scalars.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

/// As [`save_checkpoint`], with a peer model and its optimiser when `peer` is given.
pub fn save_checkpoint_with_peer(
    path: &Path,
    varmap: &VarMap,
    config: &ModelConfig,
    optim: &dyn Optimizer,
    state: &TrainState,
    peer: Option<PeerRef>,
) -> Result<()> {
    let mut tensors = prefixed_vars(varmap, "")?;
    let os = optim.state();
    tensors.extend(os.tensors.iter().map(|(k, t)| (format!("{OPTIM_PREFIX}{k}"), t.detach())));
    let peer_meta = match peer {
        None => None,
        Some(p) => {
            tensors.extend(prefixed_vars(p.varmap, PEER_PREFIX)?);
            let ps = p.optim.state();
            tensors.extend(ps.tensors.iter().map(|(k, t)| (format!("{PEER_OPTIM_PREFIX}{k}"), t.detach())));
            Some(PeerMeta {
                config: p.config.clone(),
                optim_kind: ps.kind.clone(),
                optim_scalars: exact_scalars(&ps),
            })
        }
    };
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = TrainMeta {
        version: FORMAT_VERSION,
        state: state.clone(),
        optim_kind: os.kind.clone(),
        optim_scalars: exact_scalars(&os),
        peer: peer_meta,
    };
    let metadata = HashMap::from([
        (CONFIG_KEY.to_string(), serde_json::to_string(config)?),
        (TRAIN_KEY.to_string(), serde_json::to_string(&meta)?),
    ]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata))
        .with_context(|| format!("{}: cannot serialise the checkpoint", path.display()))?;
    let mut f = crate::io::AtomicFile::create(path)?;
    std::io::Write::write_all(&mut f, &bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    f.commit()
}

/// Reads a checkpoint written by [`save_checkpoint`] onto `device`.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors checkpoint: {e}", path.display()))?;
    let meta = header.metadata().as_ref();
    let get = |key: &str| meta.and_then(|m| m.get(key));
    let train = get(TRAIN_KEY).with_context(|| {
        format!("{}: no training state in the metadata (a model file, not a checkpoint?)", path.display())
    })?;
    let train: TrainMeta =
        serde_json::from_str(train).with_context(|| format!("{}: bad training state", path.display()))?;
    if train.version != FORMAT_VERSION {
        bail!("{}: checkpoint format {} (this vidkit reads {FORMAT_VERSION})", path.display(), train.version);
    }
    let config =
        get(CONFIG_KEY).with_context(|| format!("{}: no model config in the metadata", path.display()))?;
    let config: ModelConfig =
        serde_json::from_str(config).with_context(|| format!("{}: bad model config", path.display()))?;
    let all = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("{}: unreadable tensors", path.display()))?;
    let mut model = HashMap::new();
    let mut optim = OptimState { kind: train.optim_kind, ..Default::default() };
    let mut peer = match train.peer {
        None => None,
        Some(p) => Some(PeerCheckpoint {
            config: p.config,
            model: HashMap::new(),
            optim: OptimState {
                kind: p.optim_kind,
                tensors: BTreeMap::new(),
                scalars: parse_scalars(p.optim_scalars, path)?,
            },
        }),
    };
    for (k, t) in all {
        if let Some(rest) = k.strip_prefix(OPTIM_PREFIX) {
            optim.tensors.insert(rest.to_string(), t);
            continue;
        }
        let (p, rest) = match (k.strip_prefix(PEER_OPTIM_PREFIX), k.strip_prefix(PEER_PREFIX)) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => {
                model.insert(k, t);
                continue;
            }
        };
        let Some(peer) = peer.as_mut() else {
            bail!("{}: tensor {k:?} belongs to a peer the metadata does not describe", path.display())
        };
        if p {
            peer.optim.tensors.insert(rest.to_string(), t);
        } else {
            peer.model.insert(rest.to_string(), t);
        }
    }
    optim.scalars = parse_scalars(train.optim_scalars, path)?;
    Ok(Checkpoint { config, model, optim, state: train.state, peer })
}

fn parse_scalars(scalars: BTreeMap<String, String>, path: &Path) -> Result<BTreeMap<String, f64>> {
    scalars
        .into_iter()
        .map(|(k, v)| {
            let x: f64 =
                v.parse().with_context(|| format!("{}: bad optimiser scalar {k} = {v:?}", path.display()))?;
            Ok((k, x))
        })
        .collect()
}

impl Checkpoint {
    /// Copies the saved variables into `varmap`, which must hold exactly the same names and
    /// shapes (the first difference is named).
    pub fn restore_vars(&self, varmap: &VarMap) -> Result<()> {
        copy_vars(&self.model, varmap)
    }

    /// Restores the model's variables and the optimiser's state; returns the loop's position.
    pub fn restore(&self, varmap: &VarMap, optim: &mut dyn Optimizer) -> Result<TrainState> {
        self.restore_vars(varmap)?;
        optim.load_state(&self.optim)?;
        Ok(self.state.clone())
    }
}

impl PeerCheckpoint {
    /// Restores the peer's variables and its optimiser's state.
    pub fn restore(&self, varmap: &VarMap, optim: &mut dyn Optimizer) -> Result<()> {
        copy_vars(&self.model, varmap).context("peer")?;
        optim.load_state(&self.optim).context("peer optimiser")
    }
}

/// Copies `saved` into `varmap`, which must hold exactly the same names and shapes (the first
/// difference is named).
fn copy_vars(saved: &HashMap<String, Tensor>, varmap: &VarMap) -> Result<()> {
    {
        let data = varmap.data().lock().expect("varmap lock");
        let mut missing: Vec<&String> = data.keys().filter(|k| !saved.contains_key(*k)).collect();
        missing.sort();
        if let Some(m) = missing.first() {
            bail!("checkpoint lacks {} of the model's variables, first {m:?}", missing.len());
        }
        let mut extra: Vec<&String> = saved.keys().filter(|k| !data.contains_key(*k)).collect();
        extra.sort();
        if let Some(e) = extra.first() {
            bail!("checkpoint has {} variables the model lacks, first {e:?}", extra.len());
        }
        for (name, var) in data.iter() {
            let t = &saved[name];
            if t.shape() != var.shape() {
                bail!("checkpoint variable {name} has shape {:?}, the model's {:?}", t.dims(), var.dims());
            }
            var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
        }
    }
    Ok(())
}

/// `Option<f64>` as an exact decimal string (numbers are accepted on input too).
mod exact_opt_f64 {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => s.serialize_some(&x.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<serde_json::Value>::deserialize(d)? {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => s.parse().map(Some).map_err(D::Error::custom),
            Some(serde_json::Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(D::Error::custom(format!("expected a number, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::{trainable_vars, OptimizerConfig, SgdConfig};
    use candle_core::DType;
    use candle_nn::Init;

    /// A linear model y = x·w + b with a BatchNorm-style buffer that changes as training runs.
    fn model(init: Init) -> VarMap {
        let vm = VarMap::new();
        vm.get((3, 2), "fc.weight", init, DType::F32, &Device::Cpu).unwrap();
        vm.get(2, "fc.bias", init, DType::F32, &Device::Cpu).unwrap();
        vm.get(2, "bn.running_mean", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        vm
    }

    fn var(vm: &VarMap, name: &str) -> candle_core::Var {
        vm.data().lock().unwrap()[name].clone()
    }

    /// One training step on a batch drawn from `rng`: MSE against a fixed target map.
    fn train_step(vm: &VarMap, opt: &mut dyn Optimizer, rng: &mut Rng) {
        let xs: Vec<f32> = (0..12).map(|_| rng.uniform_range(-1.0, 1.0) as f32).collect();
        let x = Tensor::from_vec(xs, (4, 3), &Device::Cpu).unwrap();
        let target = x.sum_keepdim(1).unwrap().broadcast_as((4, 2)).unwrap();
        let (w, b) = (var(vm, "fc.weight"), var(vm, "fc.bias"));
        let y = x.matmul(w.as_tensor()).unwrap().broadcast_add(b.as_tensor()).unwrap();
        let loss = (y - target).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
        // The buffer moves as BatchNorm's running mean would.
        let rm = var(vm, "bn.running_mean");
        rm.set(
            &((rm.as_tensor().detach() * 0.9).unwrap()
                + (x.mean(0).unwrap().narrow(0, 0, 2).unwrap() * 0.1).unwrap())
            .unwrap(),
        )
        .unwrap();
    }

    fn values(vm: &VarMap) -> Vec<(String, Vec<f32>)> {
        let data = vm.data().lock().unwrap();
        let mut v: Vec<_> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn resume_continues_exactly_like_an_uninterrupted_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let cfg = OptimizerConfig::Sgd(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-3,
            ..Default::default()
        });
        let mut config = ModelConfig::defaults("tsn_r18");
        config.num_classes = 2;

        // Straight run: 2 steps, checkpoint, 1 more step.
        let vm = model(Init::Randn { mean: 0.0, stdev: 1.0 });
        let mut opt = cfg.build(trainable_vars(&vm)).unwrap();
        let mut rng = Rng::new(42);
        train_step(&vm, opt.as_mut(), &mut rng);
        train_step(&vm, opt.as_mut(), &mut rng);
        let mut state = TrainState {
            epoch: 1,
            iteration: 0,
            global_step: 2,
            best_metric: Some(0.1 + 0.2),
            best_epoch: Some(0),
            ..Default::default()
        };
        state.set_rng("sampler", &rng);
        state.extra = serde_json::json!({"note": "anything"});
        save_checkpoint(&path, &vm, &config, opt.as_ref(), &state).unwrap();
        train_step(&vm, opt.as_mut(), &mut rng);

        // Resumed run: a fresh model and optimiser, restored, then the same one step.
        let ckpt = load_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(ckpt.config, config);
        assert_eq!(crate::model::read_config(&path).unwrap(), config);
        let vm2 = model(Init::Const(0.0));
        let mut opt2 = cfg.build(trainable_vars(&vm2)).unwrap();
        let st = ckpt.restore(&vm2, opt2.as_mut()).unwrap();
        assert_eq!(st, state);
        assert_eq!(st.best_metric, Some(0.30000000000000004));
        assert_eq!(opt2.state().tensors.len(), 2, "momentum buffers for weight and bias");
        let mut rng2 = st.rng("sampler").unwrap();
        train_step(&vm2, opt2.as_mut(), &mut rng2);

        assert_eq!(values(&vm), values(&vm2));
        assert_eq!(rng.next_u64(), rng2.next_u64());
        // Without the optimiser state the step would differ (the test has teeth).
        let vm3 = model(Init::Const(0.0));
        ckpt.restore_vars(&vm3).unwrap();
        let mut opt3 = cfg.build(trainable_vars(&vm3)).unwrap();
        train_step(&vm3, opt3.as_mut(), &mut st.rng("sampler").unwrap());
        assert_ne!(values(&vm), values(&vm3));
    }

    /// A DML peer travels in the same file: its variables and optimiser state come back, and a
    /// checkpoint without one loads with `peer: None`.
    #[test]
    fn peer_model_and_optimiser_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let cfg = OptimizerConfig::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() });
        let config = ModelConfig::defaults("tsn_r18");
        let mut peer_config = config.clone();
        peer_config.base_width = 16;
        let (vm, pvm) = (model(Init::Const(0.5)), model(Init::Randn { mean: 0.0, stdev: 1.0 }));
        let mut opt = cfg.build(trainable_vars(&vm)).unwrap();
        let mut popt = cfg.build(trainable_vars(&pvm)).unwrap();
        let mut rng = Rng::new(7);
        train_step(&pvm, popt.as_mut(), &mut rng);
        train_step(&vm, opt.as_mut(), &mut rng);
        let peer = PeerRef { varmap: &pvm, config: &peer_config, optim: popt.as_ref() };
        save_checkpoint_with_peer(&path, &vm, &config, opt.as_ref(), &TrainState::default(), Some(peer))
            .unwrap();

        let ckpt = load_checkpoint(&path, &Device::Cpu).unwrap();
        let saved = ckpt.peer.as_ref().expect("a peer");
        assert_eq!(saved.config, peer_config);
        let (vm2, pvm2) = (model(Init::Const(0.0)), model(Init::Const(0.0)));
        let mut opt2 = cfg.build(trainable_vars(&vm2)).unwrap();
        let mut popt2 = cfg.build(trainable_vars(&pvm2)).unwrap();
        ckpt.restore(&vm2, opt2.as_mut()).unwrap();
        saved.restore(&pvm2, popt2.as_mut()).unwrap();
        assert_eq!((values(&vm2), values(&pvm2)), (values(&vm), values(&pvm)));
        for (a, b) in [(&popt, &popt2), (&opt, &opt2)] {
            let (sa, sb) = (a.state(), b.state());
            assert_eq!(sa.scalars, sb.scalars);
            assert_eq!(sa.tensors.keys().collect::<Vec<_>>(), sb.tensors.keys().collect::<Vec<_>>());
            for (k, t) in &sa.tensors {
                let u = &sb.tensors[k];
                assert_eq!(
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    u.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    "{k}"
                );
            }
        }
        save_checkpoint(&path, &vm, &config, opt.as_ref(), &TrainState::default()).unwrap();
        assert!(load_checkpoint(&path, &Device::Cpu).unwrap().peer.is_none());
    }

    #[test]
    fn mismatches_and_model_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vm = model(Init::Const(1.0));
        let opt = OptimizerConfig::default().build(trainable_vars(&vm)).unwrap();
        let config = ModelConfig::defaults("tsn_r18");
        let path = dir.path().join("c.safetensors");
        save_checkpoint(&path, &vm, &config, opt.as_ref(), &TrainState::default()).unwrap();
        let ckpt = load_checkpoint(&path, &Device::Cpu).unwrap();
        let fewer = VarMap::new();
        fewer.get((3, 2), "fc.weight", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let err = ckpt.restore_vars(&fewer).unwrap_err().to_string();
        assert!(err.contains("variables the model lacks, first \"bn.running_mean\""), "{err}");
        let wider = model(Init::Const(0.0));
        wider.get(4, "head.bias", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let err = ckpt.restore_vars(&wider).unwrap_err().to_string();
        assert!(err.contains("lacks 1 of the model's variables, first \"head.bias\""), "{err}");
        let other = VarMap::new();
        other.get((3, 3), "fc.weight", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        other.get(2, "fc.bias", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        other.get(2, "bn.running_mean", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let err = ckpt.restore_vars(&other).unwrap_err().to_string();
        assert!(err.contains("fc.weight has shape [3, 2]"), "{err}");
        let model_file = dir.path().join("m.safetensors");
        crate::model::save_model(&vm, &config, &model_file).unwrap();
        let err = load_checkpoint(&model_file, &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("not a checkpoint"), "{err}");
        assert!(TrainState::default().rng("sampler").is_err());
    }
}
