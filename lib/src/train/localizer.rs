//! Training a temporal localizer on per-video feature sequences and segment annotations: BMN as
//! PaddleVideo trains it (`configs/localization/bmn.yaml`, `BMNLocalizer`): features [T, C] of
//! each video (already resampled to T steps: `vfeat --rescale T`), targets from the annotations
//! ([`super::bmn::bmn_targets`], the video's duration from the annotation file as
//! `duration_second`, or from the features where the annotations have none, as THUMOS14's), `BMNLoss`, Adam with L2 decay 1e-4, the rate 1e-3 then 1e-4.
//! With `variant` `mmaction2`, MMAction2's BMN (`bmn_2xb8-400x100-9e_activitynet-feature.py`): its
//! PEM widths, the same targets (its `generate_labels`), its `BMNLoss`
//! ([`super::bmn::bmn_loss_mmaction2`]) and post-processing in validation; its config also clips
//! gradients at 40 (`-o clip_grad=40`).
//!
//! Validation proposes on the held-out videos exactly as `vpropose` does (candidates, soft-NMS,
//! the best `top`) and scores them as `veval --proposals` (ActivityNet's AR@AN AUC over tIoU
//! 0.5:0.05:0.95); `best.safetensors` is the model of the best AUC (without validation videos,
//! the last epoch's).

use super::bmn::{bmn_loss, bmn_loss_mmaction2, bmn_targets, BmnTargets};
use super::checkpoint::{load_checkpoint, save_checkpoint, TrainState};
use super::optim::{trainable_vars, AdamWConfig, OptimizerConfig};
use super::schedule::{Decay, LrSchedule};
use super::trainer::{apply_json_overrides, last_checkpoint, Log};
use crate::data::{find_video_id, AnnotatedVideo, Segment, SegmentGroundTruth, SegmentPredictions};
use crate::featstore::VideoFeatures;
use crate::metric::localization::{linspace, proposal_recall};
use crate::model::{bmn_config, bmn_spec, init_bmn, save_model, Bmn, BmnSpec, BmnVariant};
use crate::progress::Progress;
use crate::proposals::{bmn_candidates, bmn_proposals, mmaction2_bmn_candidates, mmaction2_bmn_proposals};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// How to train a localizer; JSON with `-o key=value` overrides (bare BMN keys such as
/// `tscale=32` go into `bmn`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalizerTrainConfig {
    pub bmn: BmnSpec,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// Absent: the optimiser's rate throughout.
    pub schedule: Option<LrSchedule>,
    pub seed: u64,
    /// Validate every N epochs (and after the last).
    pub val_every: usize,
    /// Log a training line every N iterations.
    pub log_every: usize,
    /// Proposals per video in validation.
    pub top: usize,
    /// Global gradient norm clip (MMAction2's BMN config: 40; PaddleVideo's: none).
    pub clip_grad: Option<f64>,
}

impl Default for LocalizerTrainConfig {
    /// bmn.yaml: 9 epochs, 4 videos per card on 4 cards, Adam with L2 1e-4, `CustomPiecewiseDecay`
    /// from 1e-3 to 1e-4 after 4200 iterations — 7 epochs of ActivityNet's 9649 training videos
    /// at 16 per step (the boundary here is in epochs, so it holds for any dataset size).
    fn default() -> Self {
        Self {
            bmn: BmnSpec::default(),
            epochs: 9,
            batch_size: 16,
            optimizer: OptimizerConfig::AdamW(AdamWConfig {
                lr: 1e-3,
                weight_decay: 1e-4,
                l2: true,
                ..Default::default()
            }),
            schedule: Some(LrSchedule::new(
                1e-3,
                Decay::Piecewise { boundaries: vec![7], values: vec![1e-3, 1e-4] },
            )),
            seed: 0,
            val_every: 1,
            log_every: 10,
            top: 100,
            clip_grad: None,
        }
    }
}

impl LocalizerTrainConfig {
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        *self = apply_json_overrides(&*self, overrides, "bmn")?;
        self.validate()
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.val_every == 0 || self.top == 0 {
            bail!("epochs, batch_size, val_every and top must be positive");
        }
        if let Some(s) = &self.schedule {
            s.validate()?;
        }

        // The spec's own checks.
        Bmn::new(bmn_config(&self.bmn)?, self.bmn.clone(), VarBuilder::zeros(DType::F32, &Device::Cpu))?;
        Ok(())
    }
}

/// One video ready for training or validation.
#[derive(Clone, Debug)]
pub struct LocalizerSample {
    pub id: String,
    /// The features channels first, [C, T] (BMN's layout).
    pub features: Vec<f32>,
    pub duration: f64,
    /// Ground-truth segments in seconds.
    pub segments: Vec<(f64, f64)>,
    pub targets: BmnTargets,
}

/// One annotated video's feature sequence, checked against the model's input.
#[derive(Clone, Debug)]
pub struct LocalizerVideo {
    pub id: String,
    /// The features channels first, [C, T].
    pub features: Vec<f32>,
    pub duration: f64,
    /// Ground-truth segments in seconds.
    pub segments: Vec<(f64, f64)>,
    /// Their class names, where the annotations give them.
    pub labels: Vec<Option<String>>,
}

/// Pairs feature sequences with their annotations (ids matched in any of their written forms,
/// [`crate::data::video_id_forms`]) for a model taking [steps, width] (any number of steps
/// where `steps` is `None`). A video that is not
/// annotated, or whose features do not fit the model (width, length, non-finite values), is
/// reported through `skip` and left out, as is one that `make` refuses; it is an error only when
/// no video is left.
pub fn localizer_videos<T>(
    videos: Vec<VideoFeatures>,
    annotations: &[AnnotatedVideo],
    (steps, width): (Option<usize>, usize),
    modality: &str,
    source: &str,
    mut skip: impl FnMut(String),
    make: impl Fn(LocalizerVideo) -> Result<T>,
) -> Result<Vec<T>> {
    let by_id: HashMap<&str, &AnnotatedVideo> = annotations.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut out = Vec::new();
    let mut first_problem = None;
    let total = videos.len();
    for v in videos {
        let sample = (|| -> Result<T> {
            let key = find_video_id(&v.id, |f| by_id.contains_key(f)).context("not in the annotations")?;
            let ann = by_id[key.as_str()];
            let rows = v.modality(modality).with_context(|| format!("no {modality:?} features"))?;
            let (t, c) = rows.dim();
            match steps {
                Some(steps) if (t, c) != (steps, width) => bail!(
                    "features are [{t}, {c}]; the model takes [{steps}, {width}] (resample with vfeat --rescale {steps})"
                ),
                None if c != width || t == 0 => bail!("features are [{t}, {c}]; the model takes [T, {width}]"),
                _ => {}
            }
            if let Some(i) = rows.iter().position(|x| !x.is_finite()) {
                bail!("features row {} column {} is not a finite number", i / c, i % c);
            }
            let segments: Vec<(f64, f64)> = ann.segments.iter().map(|s| (s.t0, s.t1)).collect();
            let labels = ann.segments.iter().map(|s| s.label.clone()).collect();
            // The annotations' duration (PaddleVideo's `duration_second`), else the features'.
            let duration = ann
                .duration
                .or(v.duration)
                .context("no duration in the annotations or the features (a store or stream has it)")?;
            make(LocalizerVideo {
                id: ann.id.clone(),
                features: rows.t().iter().copied().collect(),
                duration,
                segments,
                labels,
            })
        })();
        match sample {
            Ok(s) => out.push(s),
            Err(e) => {
                let problem = format!("video {:?}: {e:#}", v.id);
                skip(format!("{source}: {problem}: skipped"));
                first_problem.get_or_insert(problem);
            }
        }
    }
    if out.is_empty() {
        match first_problem {
            Some(p) => bail!("{source}: none of its {total} videos can be used (the first: {p})"),
            None => bail!("{source}: no videos"),
        }
    }
    Ok(out)
}

/// [`localizer_videos`] for BMN, with each video's targets.
pub fn localizer_samples(
    videos: Vec<VideoFeatures>,
    annotations: &[AnnotatedVideo],
    spec: &BmnSpec,
    modality: &str,
    source: &str,
    skip: impl FnMut(String),
) -> Result<Vec<LocalizerSample>> {
    localizer_videos(videos, annotations, (Some(spec.tscale), spec.feat_dim), modality, source, skip, |v| {
        let targets = bmn_targets(&v.segments, v.duration, spec.tscale, spec.dscale)?;
        Ok(LocalizerSample {
            id: v.id,
            features: v.features,
            duration: v.duration,
            segments: v.segments,
            targets,
        })
    })
}

pub struct LocalizerRun {
    pub config: LocalizerTrainConfig,
    pub train: Vec<LocalizerSample>,
    pub val: Option<Vec<LocalizerSample>>,
    pub out_dir: PathBuf,
    pub resume: bool,
    /// Stop after this many epochs of this invocation.
    pub stop_after: Option<usize>,
    pub quiet: bool,
    /// Where the model trains, and whether the CPU takes candle's own ops only (`TrainRun`'s).
    pub device: Device,
    pub portable_ops: bool,
}

/// What `vtrain` prints when a localizer's training ends. The validation figure is the
/// proposal AUC (BMN, BSN) or, for a detector (C-TCN), the detection mAP: `metric` says which.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LocalizerSummary {
    pub epochs_run: usize,
    pub last_val_auc: Option<f64>,
    pub best_val_auc: Option<f64>,
    pub best_epoch: Option<usize>,
    /// `auc` or `map`.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub metric: &'static str,
}

/// Features of `samples` as one batch [B, C, T] on `device`.
fn batch_input(samples: &[&LocalizerSample], spec: &BmnSpec, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = samples.iter().flat_map(|s| s.features.iter().copied()).collect();
    Ok(Tensor::from_vec(data, (samples.len(), spec.feat_dim, spec.tscale), device)?)
}

/// Proposals of `model` for each sample, in seconds (as vpropose writes them).
pub fn propose_samples(model: &Bmn, samples: &[LocalizerSample], top: usize) -> Result<SegmentPredictions> {
    let spec = &model.spec;
    let mut preds = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(8) {
        let refs: Vec<&LocalizerSample> = chunk.iter().collect();
        let out = model.forward(&batch_input(&refs, spec, model.device())?)?;
        for (i, s) in chunk.iter().enumerate() {
            let bm: Vec<f32> = out.bm.get(i)?.flatten_all()?.to_vec1()?;
            let start: Vec<f32> = out.start.get(i)?.to_vec1()?;
            let end: Vec<f32> = out.end.get(i)?.to_vec1()?;
            let props = match spec.variant {
                BmnVariant::PaddleVideo => {
                    bmn_proposals(bmn_candidates(&bm, &start, &end, spec.dscale)?, s.duration, top)
                }
                BmnVariant::MMAction2 => mmaction2_bmn_proposals(
                    mmaction2_bmn_candidates(&bm, &start, &end, spec.dscale)?,
                    s.duration,
                    None,
                    spec.feature_extraction_interval,
                    top,
                ),
            };
            let segs = props
                .iter()
                .map(|p| Segment { t0: p.xmin, t1: p.xmax, label: None, score: p.score })
                .collect();
            preds.push((s.id.clone(), segs));
        }
    }
    Ok(preds)
}

/// The ground truth of `samples` as `veval` reads it.
pub fn samples_ground_truth(samples: &[LocalizerSample]) -> SegmentGroundTruth {
    ground_truth(samples.iter().map(|s| (&s.id, &s.segments)))
}

/// The ground truth of `videos` as `veval` reads it.
pub fn samples_ground_truth_of(videos: &[LocalizerVideo]) -> SegmentGroundTruth {
    ground_truth(videos.iter().map(|v| (&v.id, &v.segments)))
}

fn ground_truth<'a>(videos: impl Iterator<Item = (&'a String, &'a Vec<(f64, f64)>)>) -> SegmentGroundTruth {
    SegmentGroundTruth {
        videos: videos
            .map(|(id, segments)| {
                let segs =
                    segments.iter().map(|&(t0, t1)| Segment { t0, t1, label: None, score: 1.0 }).collect();
                (id.clone(), segs)
            })
            .collect(),
        classes: Vec::new(),
    }
}

/// ActivityNet's proposal AUC (AN up to 100, tIoU 0.5:0.05:0.95) of `model` on `samples`.
pub fn validation_auc(model: &Bmn, samples: &[LocalizerSample], top: usize) -> Result<f64> {
    let preds = propose_samples(model, samples, top)?;
    Ok(proposal_recall(&samples_ground_truth(samples), &preds, Some(100.0), &linspace(0.5, 0.95, 10))?.auc)
}

/// Two [D·T] uniform draws in [0, 1) for the PEM regression's sampling.
fn uniform_maps(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut draw = || (0..n).map(|_| rng.uniform() as f32).collect::<Vec<f32>>();
    let mid = draw();
    (mid, draw())
}

pub fn train_localizer(run: LocalizerRun) -> Result<LocalizerSummary> {
    super::on_path(run.portable_ops, || train_bmn(run))
}

fn train_bmn(run: LocalizerRun) -> Result<LocalizerSummary> {
    let cfg = &run.config;
    let device = &run.device;
    cfg.validate()?;
    if run.train.is_empty() {
        bail!("no training videos");
    }
    std::fs::create_dir_all(&run.out_dir)
        .with_context(|| format!("{}: cannot create", run.out_dir.display()))?;
    let spec = cfg.bmn.clone();
    let model_cfg = bmn_config(&spec)?;
    let varmap = VarMap::new();
    let model =
        Bmn::new(model_cfg.clone(), spec.clone(), VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    init_bmn(&varmap, &spec, cfg.seed)?;
    let vars = trainable_vars(&varmap);
    let mut optim = cfg.optimizer.build(vars).context("optimizer")?;
    let schedule = cfg.schedule.clone().unwrap_or_else(|| LrSchedule::constant(cfg.optimizer.lr()));
    let ckpt_path = last_checkpoint(&run.out_dir);
    let mut state = TrainState::default();
    let resume = super::resume_from(&ckpt_path, run.resume, run.quiet);
    if resume {
        let ckpt = load_checkpoint(&ckpt_path, device).context("--resume")?;
        let saved = bmn_spec(&ckpt.config).with_context(|| format!("{}", ckpt_path.display()))?;
        if saved != spec {
            bail!("{}: the checkpoint's BMN sizes differ from the config's", ckpt_path.display());
        }
        state = ckpt.restore(&varmap, optim.as_mut())?;
    }
    let mut log = Log::open(&run.out_dir, resume)?;
    if !resume {
        log.line(serde_json::json!({"event": "config", "config": cfg}))?;
    }
    let n = run.train.len();
    let ipe = n.div_ceil(cfg.batch_size);
    let first_epoch = state.epoch;
    let last_epoch = run.stop_after.map_or(cfg.epochs, |k| (first_epoch + k).min(cfg.epochs));
    let mut summary = LocalizerSummary {
        best_val_auc: state.best_metric,
        best_epoch: state.best_epoch,
        ..Default::default()
    };
    let progress =
        Progress::new(Some((last_epoch.saturating_sub(first_epoch) * n) as u64), "videos", run.quiet);
    let started = Instant::now();
    for epoch in first_epoch..last_epoch {
        let order = super::mix::permutation(&mut Rng::derive(cfg.seed, epoch as u64), n);
        let epoch_start = Instant::now();
        let (mut loss_sum, mut terms) = (0f64, [0f64; 3]);
        for (iter, idx) in order.chunks(cfg.batch_size).enumerate() {
            let lr = schedule.lr(epoch, iter, ipe);
            optim.set_lr(lr);
            let batch: Vec<&LocalizerSample> = idx.iter().map(|&i| &run.train[i]).collect();
            let out = model.forward_differentiable(&batch_input(&batch, &spec, device)?)?;
            let step_key = (epoch as u64) << 32 | iter as u64;
            let (u_mid, u_low) =
                uniform_maps(&mut Rng::derive(cfg.seed ^ 0xB3A1, step_key), spec.dscale * spec.tscale);
            let targets: Vec<BmnTargets> = batch.iter().map(|s| s.targets.clone()).collect();
            let loss = match spec.variant {
                BmnVariant::PaddleVideo => bmn_loss(&out, &targets, &u_mid, &u_low)?,
                BmnVariant::MMAction2 => bmn_loss_mmaction2(&out, &targets, &u_mid, &u_low)?,
            };
            let loss_v = loss.total.to_scalar::<f32>()? as f64;
            if !loss_v.is_finite() {
                bail!("epoch {epoch} iteration {iter}: the loss is {loss_v} (lower the learning rate?)");
            }
            let mut grads = loss.total.backward()?;
            if let Some(max) = cfg.clip_grad {
                super::optim::clip_grad_norm(&mut grads, optim.vars(), max)?;
            }
            optim.step(&grads)?;
            state.global_step += 1;
            loss_sum += loss_v;
            for (t, v) in terms.iter_mut().zip([loss.tem, loss.pem_reg, loss.pem_cls]) {
                *t += v as f64;
            }
            if (iter + 1) % cfg.log_every.max(1) == 0 || iter + 1 == ipe {
                let line = serde_json::json!({"event": "train", "epoch": epoch, "iter": iter, "loss": loss_v,
                    "tem": loss.tem, "pem_reg": loss.pem_reg, "pem_cls": loss.pem_cls, "lr": lr});
                log.line(line)?;
            }
            progress.inc(batch.len() as u64);
            progress.set_message(format!(
                "epoch {}/{} iter {}/{} loss {:.4} lr {:.1e}",
                epoch + 1,
                cfg.epochs,
                iter + 1,
                ipe,
                loss_sum / (iter + 1) as f64,
                lr
            ));
        }
        let k = ipe.max(1) as f64;
        let mut line = serde_json::json!({"event": "epoch", "epoch": epoch, "loss": loss_sum / k, "tem": terms[0] / k,
            "pem_reg": terms[1] / k, "pem_cls": terms[2] / k, "seconds": epoch_start.elapsed().as_secs_f64()});
        state.epoch = epoch + 1;
        state.iteration = 0;
        let validate = (epoch + 1) % cfg.val_every == 0 || epoch + 1 == cfg.epochs;
        if let (Some(val), true) = (&run.val, validate) {
            let auc = validation_auc(&model, val, cfg.top)?;
            line["val_auc"] = auc.into();
            summary.last_val_auc = Some(auc);
            if state.best_metric.is_none_or(|b| auc > b) {
                state.best_metric = Some(auc);
                state.best_epoch = Some(epoch);
                save_model(&varmap, &model_cfg, &run.out_dir.join("best.safetensors"))?;
            }
        }
        log.line(line.clone())?;
        if !run.quiet {
            progress.eprintln(&format!("vtrain: {line}"));
        }
        save_model(&varmap, &model_cfg, &run.out_dir.join("last.safetensors"))?;
        if run.val.is_none() {
            // Nothing to choose by: the best model is the latest.
            save_model(&varmap, &model_cfg, &run.out_dir.join("best.safetensors"))?;
        }
        state.extra = serde_json::json!({"config": cfg});
        save_checkpoint(&ckpt_path, &varmap, &model_cfg, optim.as_ref(), &state)?;
        summary.epochs_run += 1;
    }
    progress.finish();
    summary.best_val_auc = state.best_metric;
    summary.best_epoch = state.best_epoch;
    if !run.quiet {
        eprintln!("vtrain: done in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(summary)
}
