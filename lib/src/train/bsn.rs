//! Training BSN as MMAction2 trains it: first the TEM (`configs/localization/bsn/
//! bsn_tem_1xb16-400x100-20e_activitynet-feature.py`: `TEM.generate_labels`, the binary
//! logistic regression loss of `losses/binary_logistic_regression_loss.py` on actionness (×2),
//! start and end; Adam 1e-3 with L2 1e-4, ×0.1 at epochs 7 and 14, 20 epochs, gradients clipped
//! at norm 40), then the PGM over the training videos with the trained TEM (the best 500
//! candidates per video, each with its best tIoU against the ground truth), then the PEM
//! (`bsn_pem_1xb16-400x100-20e_activitynet-feature.py` on `schedules/adam_20e.py`: smooth-L1
//! between its score and that tIoU; Adam 1e-2 with L2 1e-5, ×0.1 at epoch 10, 20 epochs).
//!
//! MMAction2's `PEM.loss` draws medium and low tIoU candidates to balance them against the high
//! ones, but it weights `F.smooth_l1_loss`'s *mean*, so the weights cancel and its loss is the
//! plain mean over all candidates. That is what its models were trained with and the default
//! here; `pem_balanced` weights each candidate's loss instead, as BSN's paper describes.
//!
//! Segments are normalised by the video's duration (MMAction2's `corrected_second`, with the
//! features covering the whole video, as `vfeat --rescale` makes them), and the model trained
//! here scales its proposals by that duration too (`feature_extraction_interval` 1; MMAction2's
//! 16 stretches them to the whole 16-frame snippets its CSV features cover). Validation proposes
//! as `vpropose` does and scores ActivityNet's AUC, after each PEM epoch.

use super::checkpoint::{load_checkpoint, save_checkpoint, TrainState};
use super::localizer::{samples_ground_truth_of, LocalizerSummary, LocalizerVideo};
use super::optim::{clip_grad_norm, trainable_vars, AdamWConfig, Optimizer, OptimizerConfig};
use super::schedule::{Decay, LrSchedule};
use super::trainer::{apply_json_overrides, last_checkpoint, Log};
use crate::data::{Segment, SegmentPredictions};
use crate::metric::localization::{linspace, proposal_recall};
use crate::model::{bsn_config, bsn_spec, init_bsn, save_model, Bsn, BsnSpec, Localizer, VideoTiming};
use crate::progress::Progress;
use crate::proposals::bsn::{bsn_candidates, bsp_features, temporal_iop, temporal_iou};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// How to train BSN; JSON with `-o key=value` overrides (bare spec keys such as
/// `temporal_dim=32` go into `bsn`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BsnTrainConfig {
    pub bsn: BsnSpec,
    pub tem_epochs: usize,
    pub pem_epochs: usize,
    /// Videos per step (the PEM's step takes all their candidates).
    pub batch_size: usize,
    pub tem_optimizer: OptimizerConfig,
    pub tem_schedule: Option<LrSchedule>,
    pub pem_optimizer: OptimizerConfig,
    pub pem_schedule: Option<LrSchedule>,
    /// Global gradient norm clip (both stages).
    pub clip_grad: Option<f64>,
    /// The TEM loss's weight on actionness (`loss_weight`).
    pub tem_loss_weight: f64,
    /// Weight the PEM's candidates by tIoU band as BSN's paper (MMAction2's weights cancel).
    pub pem_balanced: bool,
    pub seed: u64,
    /// Validate every N PEM epochs (and after the last).
    pub val_every: usize,
    pub log_every: usize,
    /// Proposals per video in validation.
    pub top: usize,
}

fn adam(lr: f64, l2: f64) -> OptimizerConfig {
    OptimizerConfig::AdamW(AdamWConfig { lr, weight_decay: l2, l2: true, ..Default::default() })
}

impl Default for BsnTrainConfig {
    fn default() -> Self {
        Self {
            // Features over the whole video (vfeat --rescale): times scale by the plain duration,
            // as the targets here are normalised by it.
            bsn: BsnSpec { feature_extraction_interval: 1, ..Default::default() },
            tem_epochs: 20,
            pem_epochs: 20,
            batch_size: 16,
            tem_optimizer: adam(1e-3, 1e-4),
            tem_schedule: Some(LrSchedule::new(
                1e-3,
                Decay::MultiStep { milestones: vec![7, 14], gamma: 0.1 },
            )),
            pem_optimizer: adam(1e-2, 1e-5),
            pem_schedule: Some(LrSchedule::new(1e-2, Decay::MultiStep { milestones: vec![10], gamma: 0.1 })),
            clip_grad: Some(40.0),
            tem_loss_weight: 2.0,
            pem_balanced: false,
            seed: 0,
            val_every: 1,
            log_every: 10,
            top: 100,
        }
    }
}

impl BsnTrainConfig {
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        *self = apply_json_overrides(&*self, overrides, "bsn")?;
        self.validate()
    }

    pub fn validate(&self) -> Result<()> {
        if self.tem_epochs == 0 || self.pem_epochs == 0 {
            bail!("tem_epochs and pem_epochs must be positive");
        }
        if self.batch_size == 0 || self.val_every == 0 || self.top == 0 {
            bail!("batch_size, val_every and top must be positive");
        }
        for s in [&self.tem_schedule, &self.pem_schedule].into_iter().flatten() {
            s.validate()?;
        }
        self.bsn.validate()
    }
}

/// `TEM.generate_labels` for one video: segments normalised to [0, 1]; for each step's anchor
/// [i/T, (i+1)/T], its overlap over its own length (`temporal_iop`) with the segments (action),
/// with their start regions and with their end regions (`max(1/T, ratio · length)` wide), the
/// best over the segments; [3, T] row-major.
pub fn tem_labels(segments: &[(f64, f64)], t: usize, boundary_ratio: f64) -> Vec<f32> {
    let gap = 1.0 / t as f64;
    let mut out = vec![0f32; 3 * t];
    for i in 0..t {
        let (a0, a1) = (gap * i as f64, gap * (i + 1) as f64);
        let (mut action, mut start, mut end) = (0f64, 0f64, 0f64);
        for &(s, e) in segments {
            let pad = (1.0 / t as f64).max(boundary_ratio * (e - s));
            action = action.max(temporal_iop(a0, a1, s, e));
            start = start.max(temporal_iop(a0, a1, s - pad / 2.0, s + pad / 2.0));
            end = end.max(temporal_iop(a0, a1, e - pad / 2.0, e + pad / 2.0));
        }
        out[i] = action as f32;
        out[t + i] = start as f32;
        out[2 * t + i] = end as f32;
    }
    out
}

/// `binary_logistic_regression_loss(score, label, threshold)`: positives above the threshold,
/// weighted by `0.5 · r` and negatives by `0.5 · r / (r − 1)` with r = entries / positives
/// clipped to [1.05, 21]; minus the mean log-likelihood (eps 1e-5).
pub fn binary_logistic_regression_loss(score: &Tensor, label: &[f32], threshold: f64) -> Result<Tensor> {
    let n = label.len();
    let pmask: Vec<f32> = label.iter().map(|&l| if l as f64 > threshold { 1.0 } else { 0.0 }).collect();
    let positives = pmask.iter().sum::<f32>().max(1.0) as f64;
    let ratio = (n as f64 / positives).clamp(1.05, 21.0);
    let (c0, c1) = (0.5 * ratio / (ratio - 1.0), 0.5 * ratio);
    let score = score.flatten_all()?;
    let p = Tensor::from_vec(pmask, n, score.device())?;
    let eps = 1e-5;
    let pos = ((&p * (&score + eps)?.log()?)? * c1)?;
    let neg = (((1.0 - &p)? * (1.0 - &score)?.affine(1.0, eps)?.log()?)? * c0)?;
    Ok((pos + neg)?.mean_all()?.neg()?)
}

/// The TEM's loss for outputs [B, 3, T] and labels [B, 3, T] (row-major): `weight ·` actionness
/// + start + end, each over the whole batch; also the three terms.
pub fn tem_loss(out: &Tensor, labels: &[f32], threshold: f64, weight: f64) -> Result<(Tensor, [f32; 3])> {
    let (b, _, t) = out.dims3()?;
    let mut terms = Vec::new();
    for k in 0..3 {
        let score = out.narrow(1, k, 1)?;
        let label: Vec<f32> =
            (0..b).flat_map(|i| labels[(i * 3 + k) * t..(i * 3 + k + 1) * t].iter().copied()).collect();
        terms.push(binary_logistic_regression_loss(&score, &label, threshold)?);
    }
    let values = [terms[0].to_scalar::<f32>()?, terms[1].to_scalar::<f32>()?, terms[2].to_scalar::<f32>()?];
    let total = ((&terms[0] * weight)? + &terms[1])?.add(&terms[2])?;
    Ok((total, values))
}

/// `PEM.loss` for scores [N] against the candidates' tIoU: smooth-L1 (β 1), MMAction2's plain
/// mean, or with `balanced` the mean over the high-tIoU candidates and a random share of the
/// medium and low ones (`u_m`, `u_l` uniform draws in [0, 1), as its `torch.rand`).
pub fn pem_loss(
    score: &Tensor,
    iou: &[f32],
    spec: &BsnSpec,
    balanced: bool,
    u_m: &[f32],
    u_l: &[f32],
) -> Result<Tensor> {
    let n = iou.len();
    let target = Tensor::from_vec(iou.to_vec(), n, score.device())?;
    let d = (score.flatten_all()? - &target)?;
    let ad = d.abs()?;
    let quadratic = (d.sqr()? * 0.5)?;
    let linear = (&ad - 0.5)?;
    let per = ad.lt(1.0)?.where_cond(&quadratic, &linear)?;
    if !balanced {
        return Ok(per.mean_all()?);
    }
    let (high, low) =
        (spec.pem_high_temporal_iou_threshold as f32, spec.pem_low_temporal_iou_threshold as f32);
    let h: Vec<bool> = iou.iter().map(|&v| v > high).collect();
    let m: Vec<bool> = iou.iter().map(|&v| v <= high && v > low).collect();
    let l: Vec<bool> = iou.iter().map(|&v| v <= low).collect();
    let count = |x: &[bool]| x.iter().filter(|&&b| b).count() as f64;
    let (nh, nm, nl) = (count(&h), count(&m), count(&l));
    let r_m = if nm > 0.0 { (spec.pem_u_ratio_m * nh / nm).min(1.0) } else { 1.0 };
    let r_l = if nl > 0.0 { (spec.pem_u_ratio_l * nh / nl).min(1.0) } else { 1.0 };
    let w: Vec<f32> = (0..n)
        .map(|i| {
            let sm = m[i] && (u_m[i] as f64) > 1.0 - r_m;
            let sl = l[i] && (u_l[i] as f64) > 1.0 - r_l;
            (h[i] as u8 + sm as u8 + sl as u8) as f32
        })
        .collect();
    let total: f32 = w.iter().sum();
    if total == 0.0 {
        return Ok(per.mean_all()?);
    }
    let w = Tensor::from_vec(w, n, score.device())?;
    Ok(((per * w)?.sum_all()? / total as f64)?)
}

/// One video's PEM training data: its candidates' BSP features [N, width] and best tIoU with the
/// ground truth (`generate_candidate_proposals` with annotations, the best `pgm_train_top_k`).
pub struct PemVideo {
    pub features: Vec<f32>,
    pub iou: Vec<f32>,
}

fn pem_video(model: &Bsn, v: &LocalizerVideo) -> Result<PemVideo> {
    let spec = &model.spec;
    let t = spec.temporal_dim;
    let x = Tensor::from_vec(v.features.clone(), (1, spec.feat_dim, t), model.device())?;
    let tem: Vec<f32> = model.tem(&x)?.flatten_all()?.to_vec1()?;
    let cands = bsn_candidates(&tem[t..2 * t], &tem[2 * t..], spec.peak_threshold, spec.pgm_train_top_k);
    // The reference's tIoU uses the unrounded boundaries (float64) and the unclipped segments.
    let segs: Vec<(f64, f64)> = v.segments.iter().map(|&(s, e)| (s / v.duration, e / v.duration)).collect();
    let iou = cands
        .iter()
        .map(|c| {
            let (a0, a1) = c.bounds_f64(t);
            segs.iter().map(|&(s, e)| temporal_iou(a0, a1, s, e)).fold(0.0, f64::max) as f32
        })
        .collect();
    Ok(PemVideo { features: bsp_features(&tem[..t], &cands, &spec.sampling()), iou })
}

pub struct BsnRun {
    pub config: BsnTrainConfig,
    pub train: Vec<LocalizerVideo>,
    pub val: Option<Vec<LocalizerVideo>>,
    pub out_dir: PathBuf,
    pub resume: bool,
    pub stop_after: Option<usize>,
    pub quiet: bool,
    /// Where the model trains, and whether the CPU takes candle's own ops only (`TrainRun`'s).
    pub device: Device,
    pub portable_ops: bool,
}

/// Proposals of `model` for each video, in seconds (as vpropose writes them).
pub fn propose_videos(model: &Bsn, videos: &[LocalizerVideo], top: usize) -> Result<SegmentPredictions> {
    let t = model.spec.temporal_dim;
    videos
        .iter()
        .map(|v| {
            let rows =
                ndarray::Array2::from_shape_fn((t, model.spec.feat_dim), |(i, c)| v.features[c * t + i]);
            let timing = VideoTiming { seconds: Some(v.duration), frames: None };
            let segs = model
                .propose(&rows, &timing, top)?
                .iter()
                .map(|p| Segment { t0: p.xmin, t1: p.xmax, label: None, score: p.score })
                .collect();
            Ok((v.id.clone(), segs))
        })
        .collect()
}

fn validation_auc(model: &Bsn, videos: &[LocalizerVideo], top: usize) -> Result<f64> {
    let preds = propose_videos(model, videos, top)?;
    Ok(proposal_recall(&samples_ground_truth_of(videos), &preds, Some(100.0), &linspace(0.5, 0.95, 10))?.auc)
}

fn vars_under(varmap: &VarMap, prefix: &str) -> Vec<(String, candle_core::Var)> {
    trainable_vars(varmap).into_iter().filter(|(n, _)| n.starts_with(prefix)).collect()
}

pub fn train_bsn(run: BsnRun) -> Result<LocalizerSummary> {
    super::on_path(run.portable_ops, || train_bsn_on(run))
}

fn train_bsn_on(run: BsnRun) -> Result<LocalizerSummary> {
    let cfg = &run.config;
    let device = &run.device;
    cfg.validate()?;
    if run.train.is_empty() {
        bail!("no training videos");
    }
    std::fs::create_dir_all(&run.out_dir)
        .with_context(|| format!("{}: cannot create", run.out_dir.display()))?;
    let spec = cfg.bsn.clone();
    let model_cfg = bsn_config(&spec)?;
    let varmap = VarMap::new();
    let model =
        Bsn::new(model_cfg.clone(), spec.clone(), VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    init_bsn(&varmap, cfg.seed)?;
    let mut tem_optim = cfg.tem_optimizer.build(vars_under(&varmap, "tem.")).context("tem optimizer")?;
    let mut pem_optim = cfg.pem_optimizer.build(vars_under(&varmap, "pem.")).context("pem optimizer")?;
    let tem_schedule =
        cfg.tem_schedule.clone().unwrap_or_else(|| LrSchedule::constant(cfg.tem_optimizer.lr()));
    let pem_schedule =
        cfg.pem_schedule.clone().unwrap_or_else(|| LrSchedule::constant(cfg.pem_optimizer.lr()));
    let ckpt_path = last_checkpoint(&run.out_dir);
    let mut state = TrainState::default();
    let resume = super::resume_from(&ckpt_path, run.resume, run.quiet);
    if resume {
        let ckpt = load_checkpoint(&ckpt_path, device).context("--resume")?;
        let saved = bsn_spec(&ckpt.config).with_context(|| format!("{}", ckpt_path.display()))?;
        if saved != spec {
            bail!("{}: the checkpoint's BSN settings differ from the config's", ckpt_path.display());
        }
        ckpt.restore_vars(&varmap)?;
        // The optimiser saved is the stage's that ran last.
        match ckpt.state.epoch {
            e if e < cfg.tem_epochs => tem_optim.load_state(&ckpt.optim)?,
            e if e > cfg.tem_epochs => pem_optim.load_state(&ckpt.optim)?,
            _ => {}
        }
        state = ckpt.state.clone();
    }
    let mut log = Log::open(&run.out_dir, resume)?;
    if !resume {
        log.line(serde_json::json!({"event": "config", "config": cfg}))?;
    }
    let total_epochs = cfg.tem_epochs + cfg.pem_epochs;
    let first_epoch = state.epoch;
    let last_epoch = run.stop_after.map_or(total_epochs, |k| (first_epoch + k).min(total_epochs));
    let mut summary = LocalizerSummary {
        best_val_auc: state.best_metric,
        best_epoch: state.best_epoch,
        ..Default::default()
    };
    let n = run.train.len();
    let ipe = n.div_ceil(cfg.batch_size);
    let t = spec.temporal_dim;
    let labels: Vec<Vec<f32>> = run
        .train
        .iter()
        .map(|v| {
            let segs: Vec<(f64, f64)> = v
                .segments
                .iter()
                .map(|&(s, e)| ((s / v.duration).clamp(0.0, 1.0), (e / v.duration).clamp(0.0, 1.0)))
                .collect();
            tem_labels(&segs, t, spec.boundary_ratio)
        })
        .collect();
    let mut pem_data: Option<Vec<PemVideo>> = None;
    let progress =
        Progress::new(Some((last_epoch.saturating_sub(first_epoch) * n) as u64), "videos", run.quiet);
    let started = Instant::now();
    for epoch in first_epoch..last_epoch {
        let tem_stage = epoch < cfg.tem_epochs;
        let stage_epoch = if tem_stage { epoch } else { epoch - cfg.tem_epochs };
        if !tem_stage && pem_data.is_none() {
            // The PGM over the training videos, with the TEM as trained (fixed from here on).
            pem_data = Some(run.train.iter().map(|v| pem_video(&model, v)).collect::<Result<_>>()?);
        }
        let order = super::mix::permutation(&mut Rng::derive(cfg.seed, epoch as u64), n);
        let epoch_start = Instant::now();
        let mut loss_sum = 0f64;
        for (iter, idx) in order.chunks(cfg.batch_size).enumerate() {
            let (optim, schedule): (&mut Box<dyn Optimizer>, &LrSchedule) =
                if tem_stage { (&mut tem_optim, &tem_schedule) } else { (&mut pem_optim, &pem_schedule) };
            let lr = schedule.lr(stage_epoch, iter, ipe);
            optim.set_lr(lr);
            let loss = if tem_stage {
                let feats: Vec<f32> =
                    idx.iter().flat_map(|&i| run.train[i].features.iter().copied()).collect();
                let x = Tensor::from_vec(feats, (idx.len(), spec.feat_dim, t), device)?;
                let label: Vec<f32> = idx.iter().flat_map(|&i| labels[i].iter().copied()).collect();
                tem_loss(&model.tem_t(&x, true)?, &label, spec.tem_match_threshold, cfg.tem_loss_weight)?.0
            } else {
                let data = pem_data.as_ref().expect("computed above");
                let feats: Vec<f32> = idx.iter().flat_map(|&i| data[i].features.iter().copied()).collect();
                let iou: Vec<f32> = idx.iter().flat_map(|&i| data[i].iou.iter().copied()).collect();
                let rows = iou.len();
                let x = Tensor::from_vec(feats, (rows, spec.pem_feat_dim()), device)?;
                let mut rng = Rng::derive(cfg.seed ^ 0xB5_7E00, (epoch as u64) << 32 | iter as u64);
                let u_m: Vec<f32> = (0..rows).map(|_| rng.uniform() as f32).collect();
                let u_l: Vec<f32> = (0..rows).map(|_| rng.uniform() as f32).collect();
                pem_loss(&model.pem(&x)?, &iou, &spec, cfg.pem_balanced, &u_m, &u_l)?
            };
            let loss_v = loss.to_scalar::<f32>()? as f64;
            if !loss_v.is_finite() {
                bail!("epoch {epoch} iteration {iter}: the loss is {loss_v} (lower the learning rate?)");
            }
            let mut grads = loss.backward()?;
            if let Some(max) = cfg.clip_grad {
                clip_grad_norm(&mut grads, optim.vars(), max)?;
            }
            optim.step(&grads)?;
            state.global_step += 1;
            loss_sum += loss_v;
            let stage = if tem_stage { "tem" } else { "pem" };
            if (iter + 1) % cfg.log_every.max(1) == 0 || iter + 1 == ipe {
                let line = serde_json::json!({"event": "train", "stage": stage, "epoch": epoch, "iter": iter,
                    "loss": loss_v, "lr": lr});
                log.line(line)?;
            }
            progress.inc(idx.len() as u64);
            progress.set_message(format!(
                "{stage} epoch {}/{} iter {}/{} loss {:.4} lr {:.1e}",
                stage_epoch + 1,
                if tem_stage { cfg.tem_epochs } else { cfg.pem_epochs },
                iter + 1,
                ipe,
                loss_sum / (iter + 1) as f64,
                lr
            ));
        }
        let stage = if tem_stage { "tem" } else { "pem" };
        let mut line = serde_json::json!({"event": "epoch", "stage": stage, "epoch": epoch,
            "loss": loss_sum / ipe.max(1) as f64, "seconds": epoch_start.elapsed().as_secs_f64()});
        state.epoch = epoch + 1;
        state.iteration = 0;
        let validate = !tem_stage && ((stage_epoch + 1) % cfg.val_every == 0 || epoch + 1 == total_epochs);
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
        if run.val.is_none() && !tem_stage {
            save_model(&varmap, &model_cfg, &run.out_dir.join("best.safetensors"))?;
        }
        state.extra = serde_json::json!({"config": cfg});
        let optim: &dyn Optimizer = if tem_stage { tem_optim.as_ref() } else { pem_optim.as_ref() };
        save_checkpoint(&ckpt_path, &varmap, &model_cfg, optim, &state)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tem_labels_mark_the_segment_and_its_boundaries() {
        // T = 10, one segment [0.2, 0.6]: pad max(0.1, 0.1 · 0.4) = 0.1.
        let l = tem_labels(&[(0.2, 0.6)], 10, 0.1);
        let (action, start, end) = (&l[..10], &l[10..20], &l[20..]);
        assert_eq!(action, [0., 0., 1., 1., 1., 1., 0., 0., 0., 0.]);
        // start region [0.15, 0.25]: half of anchors 1 and 2
        assert!((start[1] - 0.5).abs() < 1e-6 && (start[2] - 0.5).abs() < 1e-6 && start[3] == 0.0);
        assert!((end[5] - 0.5).abs() < 1e-6 && (end[6] - 0.5).abs() < 1e-6 && end[4] == 0.0);
    }

    #[test]
    fn the_logistic_loss_weights_the_rarer_positives() {
        let s = Tensor::new(&[0.9f32, 0.1, 0.2, 0.3], &Device::Cpu).unwrap();
        let l = binary_logistic_regression_loss(&s, &[1.0, 0.0, 0.0, 0.0], 0.5).unwrap();
        // r = 4: c1 = 2, c0 = 2/3
        let want = -(2.0 * (0.9f64 + 1e-5).ln()
            + 2.0 / 3.0 * ((0.9f64 + 1e-5).ln() + (0.8f64 + 1e-5).ln() + (0.7f64 + 1e-5).ln()))
            / 4.0;
        assert!((l.to_scalar::<f32>().unwrap() as f64 - want).abs() < 1e-5);
    }
}
