//! The training loop behind `vtrain` (its configuration: `config`): seeded data order,
//! augmentation, dropout and weight initialisation (so runs repeat and `--resume` continues
//! exactly), validation every N epochs, best and last model files and a resumable checkpoint
//! written atomically, logs as JSON Lines.

pub use super::config::{apply_json_overrides, DmlConfig, TrainConfig};
use super::loader::{collate, epoch_batches, BatchInput, Sample, Source};
use super::{
    cross_entropy, load_checkpoint, one_hot, save_checkpoint_with_peer, trainable_vars, GradAccumulator,
    PeerRef, Targets, TrainState,
};
use crate::model::{build, init_weights_for, save_model, Model, ModelConfig};
use crate::progress::Progress;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct TrainRun {
    pub config: TrainConfig,
    pub train: Source,
    pub val: Option<Vec<Sample>>,
    pub out_dir: PathBuf,
    pub resume: bool,
    /// Stop after this many epochs of this invocation (for tests of --resume).
    pub stop_after: Option<usize>,
    pub quiet: bool,
    /// A model file to start from instead of the initialisation (ignored when resuming): see
    /// [`load_init`].
    pub init: Option<PathBuf>,
    /// Where the model trains: the CPU, or a GPU (every op then takes candle's own path).
    pub device: Device,
    /// On the CPU, every op through candle's own path as on a GPU (`with_portable_ops`): the
    /// GPU's code, checked on a machine without one.
    pub portable_ops: bool,
}

/// Starts `varmap` (the model `config` describes, classifier `head`) from the weights of the
/// model file `path`: every tensor must be there with its shape, except the classifier's, which
/// keeps its fresh initialisation when the class counts differ (fine-tuning on other classes).
/// Returns a line saying what was taken.
pub fn load_init(
    varmap: &VarMap,
    path: &std::path::Path,
    config: &ModelConfig,
    head: &str,
) -> Result<String> {
    let file_cfg = crate::model::read_config(path)?;
    if file_cfg.arch != config.arch {
        bail!("{}: --init is a {} model; this run trains {}", path.display(), file_cfg.arch, config.arch);
    }
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("{}: unreadable model file", path.display()))?;
    let data = varmap.data().lock().expect("varmap lock");
    let (mut taken, mut fresh) = (0, Vec::new());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let in_head = name.strip_prefix(head).is_some_and(|r| r.starts_with('.'));
        match tensors.get(name.as_str()) {
            Some(t) if t.shape() == var.shape() => {
                var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
                taken += 1;
            }
            Some(_) | None if in_head => fresh.push(name.clone()),
            Some(t) => bail!(
                "{}: {name} has shape {:?}, this run's model wants {:?} (other sizes than --init's: drop the -o that changed them)",
                path.display(),
                t.dims(),
                var.dims()
            ),
            None => bail!("{}: no tensor {name}", path.display()),
        }
    }
    Ok(match fresh.is_empty() {
        true => format!("init: {taken} tensors from {}", path.display()),
        false => format!(
            "init: {taken} tensors from {}; the classifier starts fresh ({} classes here, {} there)",
            path.display(),
            config.num_classes,
            file_cfg.num_classes
        ),
    })
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TrainSummary {
    pub epochs_run: usize,
    pub last_val_top1: Option<f64>,
    /// Multi-label models: GAP@20 of the last validation (best checkpoints are chosen by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_val_gap: Option<f64>,
    pub best_val_top1: Option<f64>,
    pub best_epoch: Option<usize>,
}

/// Paths inside the output directory.
pub fn last_checkpoint(dir: &Path) -> PathBuf {
    dir.join("last.ckpt.safetensors")
}

/// Validation metrics: top-1/top-5 for single-label models; GAP@20 and hit@1 (youtube-8m) for
/// multi-label ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ValMetrics {
    pub top1: f64,
    pub top5: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit1: Option<f64>,
}

impl ValMetrics {
    /// The number best checkpoints are chosen by: GAP for multi-label models, else top-1.
    pub fn key(&self) -> f64 {
        self.gap.unwrap_or(self.top1)
    }
}

/// Logits of one batch in eval or train mode, its clips or feature sequences moved to `device`
/// (the loader builds them on the CPU).
fn forward_batch(
    model: &Model,
    input: &BatchInput,
    train: bool,
    rng: Option<&mut Rng>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    match input {
        BatchInput::Clips(x) => model.forward_train(&x.to_device(device)?, train, rng),
        BatchInput::Sequences(s) if device.is_cpu() => model.forward_seq(s, train, rng),
        BatchInput::Sequences(s) => {
            let mut moved = Vec::with_capacity(s.len());
            for p in s {
                let (x, mask) = (p.x.to_device(device)?, p.mask.to_device(device)?);
                moved.push(crate::model::Padded { x, mask, lengths: p.lengths.clone() });
            }
            model.forward_seq(&moved, train, rng)
        }
    }
}

/// Validation metrics of `model` (its parameters on `device`) on held-out samples, in batches.
pub fn evaluate(model: &Model, samples: &[Sample], batch: usize, device: &Device) -> Result<ValMetrics> {
    let mut scores = Vec::new();
    let mut labels: Vec<Vec<usize>> = Vec::new();
    for chunk in samples.chunks(batch.max(1)) {
        let b = collate(chunk.to_vec())?;
        let logits = forward_batch(model, &b.input, false, None, device)?;
        scores.extend(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?);
        labels.extend(b.labels);
    }
    if model.config().multilabel {
        // Ranking metrics: logits rank as the sigmoid probabilities do.
        let gap = crate::metric::gap(&scores, &labels, 20);
        let hit1 = crate::metric::hit_at_one(&scores, &labels);
        return Ok(ValMetrics { top1: hit1, top5: 0.0, gap: Some(gap), hit1: Some(hit1) });
    }
    let single: Vec<usize> = labels.iter().map(|l| l.first().copied().unwrap_or(0)).collect();
    Ok(ValMetrics {
        top1: crate::metric::top_k_accuracy(&scores, &single, 1),
        top5: crate::metric::top_k_accuracy(&scores, &single, 5),
        gap: None,
        hit1: None,
    })
}

/// Multi-hot targets [B, C] of per-sample label lists.
fn multi_hot(labels: &[Vec<usize>], classes: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, ls) in labels.iter().enumerate() {
        for &l in ls {
            v[i * classes + l] = 1.0;
        }
    }
    Ok(Tensor::from_vec(v, (labels.len(), classes), device)?)
}

/// A run's `log.jsonl`: one JSON object per line, appended to on resume.
pub(crate) struct Log {
    file: std::fs::File,
}

impl Log {
    pub(crate) fn open(dir: &Path, append: bool) -> Result<Self> {
        let path = dir.join("log.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .with_context(|| format!("{}: cannot open log", path.display()))?;
        Ok(Self { file })
    }

    pub(crate) fn line(&mut self, v: Value) -> Result<()> {
        writeln!(self.file, "{v}")?;
        Ok(())
    }
}

pub fn train(run: TrainRun) -> Result<TrainSummary> {
    super::on_path(run.portable_ops, || train_on(run))
}

fn train_on(run: TrainRun) -> Result<TrainSummary> {
    let cfg = &run.config;
    cfg.validate()?;
    if run.train.is_empty() {
        bail!("no training samples");
    }
    std::fs::create_dir_all(&run.out_dir)
        .with_context(|| format!("{}: cannot create", run.out_dir.display()))?;
    let device = run.device.clone();
    // The CPU kernels round the products' operands to bf16 (`nn::autocast`); f16 has no
    // matrix unit on these CPUs and runs on candle's ops only.
    if let (Some(super::Amp::F16), true) = (cfg.amp, device.is_cpu() && !run.portable_ops) {
        bail!("amp=f16 runs on candle's ops (--device cuda or cpu-portable); the CPU kernels take amp=bf16");
    }
    let half = cfg.amp.map(super::Amp::dtype);
    let mut scaler = cfg.amp.and_then(super::Amp::scaler);
    if let (Some(s), Some(init)) = (scaler.as_mut(), cfg.loss_scale) {
        s.scale = init;
    }
    let varmap = VarMap::new();
    let model = build(&cfg.model, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    init_weights_for(&varmap, &cfg.model.arch, cfg.seed)?;
    if let (Some(p), false) = (&run.init, run.resume) {
        let said = load_init(&varmap, p, &cfg.model, &model.classifier())?;
        if !run.quiet {
            eprintln!("vtrain: {said}");
        }
    }
    let vars = trainable_vars(&varmap);
    let mut optim = cfg.optimizer.build_for_model(vars.clone(), &model.classifier())?;
    let schedule = cfg.schedule();
    schedule.validate()?;
    // The DML peer, built from the main config with the peer's own keys on top.
    let peer = match &cfg.dml {
        None => None,
        Some(d) => {
            let mut v = serde_json::to_value(&cfg.model)?;
            v["arch"] = Value::String(d.arch.clone());
            for (k, val) in &d.model {
                v[k] = val.clone();
            }
            let pcfg: ModelConfig = serde_json::from_value(v).context("dml.model")?;
            let pvars = VarMap::new();
            let pmodel = build(&pcfg, VarBuilder::from_varmap(&pvars, DType::F32, &device))?;
            init_weights_for(&pvars, &pcfg.arch, cfg.seed ^ 0xD31)?;
            let popt = cfg
                .optimizer
                .build_for_model(trainable_vars(&pvars), &pmodel.classifier())
                .context("the dml peer")?;
            Some((pcfg, pvars, pmodel, popt))
        }
    };
    let mut peer = peer;
    let peer_vars = peer.as_ref().map(|(_, pvars, _, _)| trainable_vars(pvars)).unwrap_or_default();
    let mut state = TrainState::default();
    let ckpt_path = last_checkpoint(&run.out_dir);
    let resume = super::resume_from(&ckpt_path, run.resume, run.quiet);
    if resume {
        let ckpt = load_checkpoint(&ckpt_path, &device).context("--resume")?;
        if ckpt.config.arch != cfg.model.arch {
            bail!(
                "{}: checkpoint is {}, the config says {}",
                ckpt_path.display(),
                ckpt.config.arch,
                cfg.model.arch
            );
        }
        state = ckpt.restore(&varmap, optim.as_mut())?;
        if let (Some(s), Some(saved)) = (scaler.as_mut(), state.extra.get("loss_scaler")) {
            if !saved.is_null() {
                *s = serde_json::from_value(saved.clone())
                    .with_context(|| format!("{}: loss_scaler", ckpt_path.display()))?;
            }
        }
        match (&ckpt.peer, peer.as_mut()) {
            (None, None) => {}
            (Some(saved), Some((pcfg, pvars, _, popt))) => {
                if saved.config.arch != pcfg.arch {
                    bail!(
                        "{}: the checkpoint's DML peer is {}, the config says {}",
                        ckpt_path.display(),
                        saved.config.arch,
                        pcfg.arch
                    );
                }
                saved.restore(pvars, popt.as_mut()).with_context(|| format!("{}", ckpt_path.display()))?;
            }
            (None, Some(_)) => {
                bail!("{}: the checkpoint has no DML peer; resume without dml", ckpt_path.display())
            }
            (Some(_), None) => bail!(
                "{}: the checkpoint holds a DML peer; resume with the same dml config",
                ckpt_path.display()
            ),
        }
    }
    let mut log = Log::open(&run.out_dir, resume)?;
    if !resume {
        log.line(serde_json::json!({"event": "config", "config": cfg}))?;
    }
    let n = run.train.len();
    let ipe = n.div_ceil(cfg.batch_size);
    let mut summary =
        TrainSummary { best_val_top1: state.best_metric, best_epoch: state.best_epoch, ..Default::default() };
    let started = Instant::now();
    let first_epoch = state.epoch;
    let last_epoch = match run.stop_after {
        Some(k) => (first_epoch + k).min(cfg.epochs),
        None => cfg.epochs,
    };
    // Clips over the epochs of this run: rate and ETA on a terminal, nothing in a log.
    let progress =
        Progress::new(Some((last_epoch.saturating_sub(first_epoch) * n) as u64), "clips", run.quiet);
    for epoch in first_epoch..last_epoch {
        let order = super::mix::permutation(&mut Rng::derive(cfg.seed, epoch as u64), n);
        let rx = epoch_batches(
            run.train.clone(),
            cfg.train_spec(epoch)?,
            order,
            cfg.batch_size,
            cfg.jobs,
            cfg.prefetch,
            cfg.model.mean,
            cfg.model.std,
        );
        let mut acc = GradAccumulator::new(&vars, cfg.accumulate);
        // Under f16's loss scaling: no inf or NaN in the gradients of this optimiser step yet.
        let mut window_finite = true;
        let (mut loss_sum, mut loss_n, mut clips_done) = (0f64, 0usize, 0usize);
        let epoch_start = Instant::now();
        for (iter, batch) in rx.iter().enumerate() {
            let batch = batch?;
            let lr = schedule.lr(epoch, iter, ipe);
            optim.set_lr(lr);
            let step_key = (epoch as u64) << 32 | iter as u64;
            let b = batch.labels.len();
            let single: Vec<u32> =
                batch.labels.iter().map(|l| l.first().copied().unwrap_or(0) as u32).collect();
            let labels = Tensor::from_vec(single, b, &device)?;
            let mut drop_rng = Rng::derive(cfg.seed ^ 0xD20F, step_key);
            let (inputs, soft) = match (&cfg.mix, &batch.input) {
                (Some(mix), BatchInput::Clips(clips)) => {
                    let targets =
                        one_hot(&labels.to_device(&Device::Cpu)?, cfg.model.num_classes, DType::F32)?;
                    let mixed = mix.apply(clips, &targets, &mut Rng::derive(cfg.seed ^ 0x313C, step_key))?;
                    (BatchInput::Clips(mixed.clips), Some(mixed.targets.to_device(&device)?))
                }
                (Some(_), BatchInput::Sequences(_)) => bail!("mix applies to clips, not feature sequences"),
                (None, _) => (batch.input, None),
            };
            let targets = match &soft {
                Some(t) => Targets::Soft(t),
                None => Targets::Labels(&labels),
            };
            let logits = crate::nn::with_autocast(half, || {
                forward_batch(&model, &inputs, true, Some(&mut drop_rng), &device)
            })?;
            let mut loss = if cfg.model.multilabel {
                // Paddle's multi-label heads: sigmoid cross-entropy summed over classes, averaged
                // over the batch (AttentionCluster/NeXtVLAD `reduce_sum(dim=-1)` then `mean`).
                let y = multi_hot(&batch.labels, cfg.model.num_classes, &device)?;
                (super::bce_with_logits(&logits, &y)? * cfg.model.num_classes as f64)?
            } else {
                cross_entropy(&logits, targets, cfg.label_smoothing)?
            };
            if let (Some(d), Some((_, _, pmodel, popt))) = (&cfg.dml, peer.as_mut()) {
                popt.set_lr(lr);
                let plogits = crate::nn::with_autocast(half, || {
                    forward_batch(
                        pmodel,
                        &inputs,
                        true,
                        Some(&mut Rng::derive(cfg.seed ^ 0xD32, step_key)),
                        &device,
                    )
                })?;
                let (lp, lq) = (super::log_softmax(&logits, 1)?, super::log_softmax(&plogits, 1)?);
                // Each model learns from the other's (fixed) prediction.
                let mutual =
                    ((super::kl_div(&lp, &lq.detach())? + super::kl_div(&lq, &lp.detach())?)? * d.weight)?;
                let peer_ce = cross_entropy(&plogits, targets, cfg.label_smoothing)?;
                loss = ((loss + peer_ce)? + mutual)?;
            }
            let loss_v = loss.to_scalar::<f32>()? as f64;
            if !loss_v.is_finite() {
                bail!("epoch {epoch} iteration {iter}: the loss is {loss_v} (lower the learning rate?)");
            }
            let (grads, finite) = match &scaler {
                Some(s) => {
                    let mut g = s.scale(&loss)?.backward()?;
                    let finite = s.unscale(&mut g, &vars)? & s.unscale(&mut g, &peer_vars)?;
                    (g, finite)
                }
                None => (loss.backward()?, true),
            };
            window_finite &= finite;
            acc.add(&grads)?;
            if acc.is_ready() || iter + 1 == ipe {
                if let Some(mut g) = acc.take()? {
                    // A step with an inf or NaN gradient is skipped (GradScaler's `step`).
                    if window_finite {
                        if let Some(max) = cfg.clip_grad {
                            super::clip_grad_norm(&mut g, &vars, max)?;
                        }
                        optim.step(&g)?;
                        state.global_step += 1;
                    }
                    if let Some(s) = scaler.as_mut() {
                        s.update(!window_finite);
                    }
                    window_finite = true;
                }
            }
            if let Some((_, _, _, popt)) = peer.as_mut() {
                // The peer steps every iteration on the same backward pass (no accumulation).
                if acc.count() == 0 && finite {
                    popt.step(&grads)?;
                }
            }
            loss_sum += loss_v;
            loss_n += 1;
            clips_done += b;
            let rate = clips_done as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            if (iter + 1) % cfg.log_every.max(1) == 0 || iter + 1 == ipe {
                let mut line = serde_json::json!({"event": "train", "epoch": epoch, "iter": iter, "loss": loss_v, "lr": lr, "clips_per_s": rate});
                if let Some(s) = &scaler {
                    line["loss_scale"] = s.scale.into();
                }
                log.line(line)?;
            }
            progress.inc(b as u64);
            progress.set_message(format!(
                "epoch {}/{} iter {}/{} loss {:.4} lr {:.3e}",
                epoch + 1,
                cfg.epochs,
                iter + 1,
                ipe,
                loss_sum / loss_n as f64,
                lr
            ));
        }
        let mut line = serde_json::json!({"event": "epoch", "epoch": epoch, "loss": loss_sum / loss_n.max(1) as f64, "seconds": epoch_start.elapsed().as_secs_f64()});
        state.epoch = epoch + 1;
        state.iteration = 0;
        let validate = (epoch + 1) % cfg.val_every == 0 || epoch + 1 == cfg.epochs;
        if let (Some(val), true) = (&run.val, validate) {
            let m = evaluate(&model, val, cfg.batch_size, &device)?;
            line["val_top1"] = m.top1.into();
            line["val_top5"] = m.top5.into();
            if let Some(g) = m.gap {
                line["val_gap"] = g.into();
                line["val_hit1"] = m.hit1.unwrap_or(0.0).into();
                line.as_object_mut().map(|o| o.remove("val_top5"));
            }
            summary.last_val_top1 = Some(m.top1);
            summary.last_val_gap = m.gap;
            if state.best_metric.is_none_or(|b| m.key() > b) {
                state.best_metric = Some(m.key());
                state.best_epoch = Some(epoch);
                save_model(&varmap, &cfg.model, &run.out_dir.join("best.safetensors"))?;
            }
        }
        log.line(line.clone())?;
        if !run.quiet {
            progress.eprintln(&format!("vtrain: {line}"));
        }
        save_model(&varmap, &cfg.model, &run.out_dir.join("last.safetensors"))?;
        if let Some((pcfg, pvars, _, _)) = &peer {
            save_model(pvars, pcfg, &run.out_dir.join("peer_last.safetensors"))?;
        }
        state.extra = serde_json::json!({"config": cfg, "loss_scaler": scaler});
        let peer_ref =
            peer.as_ref().map(|(config, varmap, _, optim)| PeerRef { varmap, config, optim: optim.as_ref() });
        save_checkpoint_with_peer(&ckpt_path, &varmap, &cfg.model, optim.as_ref(), &state, peer_ref)?;
        summary.epochs_run += 1;
    }
    progress.finish();
    summary.best_val_top1 = state.best_metric;
    summary.best_epoch = state.best_epoch;
    if !run.quiet {
        eprintln!("vtrain: done in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(summary)
}
