//! Training C-TCN as the 2019 zoo trains it (`configs/ctcn.yaml`, `models/ctcn/ctcn.py`,
//! `fpn_ctcn.py`'s `loss`, `ctcn_utils.py`'s `BoxCoder.encode`, `reader/ctcn_reader.py`):
//! targets from each video's segments as boxes in the input's steps (each box's best anchor,
//! then every other anchor of tIoU ≥ 0.5 with a box; offsets with variances 0.1 and 0.2 and the
//! linear width coder), smooth-L1 on the positives' offsets ×2 plus softmax cross-entropy on the
//! positives and the hardest negatives (3 per positive, per video), over the positives;
//! momentum SGD 0.9 with L2 1e-4, 5e-4 then ×0.1 (the zoo's 9,000 iterations: epoch 15 of its 35
//! on ActivityNet's ~9,600 training videos at 16 a step).
//!
//! Training clips: the reader's `random_crop` (a window of 30–100 % of the sequence whose tIoU
//! with every box reaches a randomly chosen minimum, boxes kept where their centre falls inside,
//! clipped to it) then the resize to `img_size` steps (nearest: the reader also draws cv2's
//! linear, cubic and area interpolations, left out here). Its `random_move` (actions re-inserted
//! at random places of the background) is left out too. Videos without a box are skipped, as the
//! reader does. Validation decodes as `vpropose` does and scores ActivityNet's detection mAP
//! (tIoU 0.5:0.05:0.95) after each epoch.

use super::checkpoint::{load_checkpoint, save_checkpoint, TrainState};
use super::localizer::{LocalizerSummary, LocalizerVideo};
use super::optim::{trainable_vars, OptimizerConfig, SgdConfig};
use super::schedule::{Decay, LrSchedule};
use super::trainer::{apply_json_overrides, last_checkpoint, Log};
use crate::data::{Segment, SegmentGroundTruth, SegmentPredictions};
use crate::metric::localization::{detection_map, linspace};
use crate::model::{
    ctcn_config, ctcn_spec, init_ctcn, resize_nearest, save_model, Ctcn, CtcnSpec, Localizer, VideoTiming,
};
use crate::progress::Progress;
use crate::proposals::ctcn::default_boxes;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// How to train C-TCN; JSON with `-o key=value` overrides (bare spec keys such as
/// `img_size=128` go into `ctcn`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CtcnTrainConfig {
    pub ctcn: CtcnSpec,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: Option<LrSchedule>,
    /// The reader's `random_crop` of training sequences.
    pub random_crop: bool,
    /// The offsets' loss weight (`alpha`).
    pub loc_weight: f64,
    /// Negatives kept per positive by hard negative mining.
    pub neg_ratio: usize,
    pub seed: u64,
    pub val_every: usize,
    pub log_every: usize,
    /// Detections per video in validation.
    pub top: usize,
}

impl Default for CtcnTrainConfig {
    fn default() -> Self {
        Self {
            ctcn: CtcnSpec::default(),
            epochs: 35,
            batch_size: 16,
            optimizer: OptimizerConfig::Sgd(SgdConfig {
                lr: 5e-4,
                momentum: 0.9,
                weight_decay: 1e-4,
                ..Default::default()
            }),
            schedule: Some(LrSchedule::new(
                5e-4,
                Decay::Piecewise { boundaries: vec![15], values: vec![5e-4, 5e-5] },
            )),
            random_crop: true,
            loc_weight: 2.0,
            neg_ratio: 3,
            seed: 0,
            val_every: 1,
            log_every: 10,
            top: 100,
        }
    }
}

impl CtcnTrainConfig {
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        *self = apply_json_overrides(&*self, overrides, "ctcn")?;
        self.validate()
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.val_every == 0 || self.top == 0 {
            bail!("epochs, batch_size, val_every and top must be positive");
        }
        if let Some(s) = &self.schedule {
            s.validate()?;
        }
        self.ctcn.validate()
    }
}

/// `BoxCoder.encode`: for boxes [start, end] in input steps with classes ≥ 1, the offsets
/// [A, 2] and classes [A] (0 the background) of every anchor.
pub fn ctcn_targets(boxes: &[(f64, f64)], labels: &[usize], spec: &CtcnSpec) -> (Vec<f32>, Vec<u32>) {
    let anchors = default_boxes(spec);
    let (na, m) = (anchors.len(), boxes.len());
    let yy: Vec<(f64, f64)> = anchors.iter().map(|&(c, w)| (c - w / 2.0, c + w / 2.0)).collect();
    // box_iou1D(default_boxes, boxes): [A, M]
    let mut ious = vec![0f64; na * m];
    for (a, &(a0, a1)) in yy.iter().enumerate() {
        for (j, &(b0, b1)) in boxes.iter().enumerate() {
            let inter = (a1.min(b1) - a0.max(b0)).max(0.0);
            ious[a * m + j] = inter / ((a0 - a1).abs() + (b0 - b1).abs() - inter);
        }
    }
    let mut index = vec![-1i64; na];
    let mut masked = ious.clone();
    if m > 0 {
        loop {
            // argmax: the best anchor of each box, then the box whose best is highest (first
            // maximum in both, as np.argmax).
            let mut best = (0usize, 0usize, f64::NEG_INFINITY);
            for j in 0..m {
                let mut bi = 0;
                for a in 1..na {
                    if masked[a * m + j] > masked[bi * m + j] {
                        bi = a;
                    }
                }
                if masked[bi * m + j] > best.2 {
                    best = (bi, j, masked[bi * m + j]);
                }
            }
            let (i, j, v) = best;
            if v < 1e-6 {
                break;
            }
            index[i] = j as i64;
            for jj in 0..m {
                masked[i * m + jj] = 0.0;
            }
            for a in 0..na {
                masked[a * m + j] = 0.0;
            }
        }
        // Anchors left unmatched with tIoU ≥ 0.5 take their best box — only when there are at
        // least two of them (the reference's `np.squeeze(mask.nonzero()).size > 1`).
        let extra: Vec<usize> = (0..na)
            .filter(|&a| {
                index[a] < 0
                    && ious[a * m..(a + 1) * m].iter().copied().fold(f64::NEG_INFINITY, f64::max) >= 0.5
            })
            .collect();
        if extra.len() > 1 {
            for a in extra {
                let row = &ious[a * m..(a + 1) * m];
                let j = (0..m).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                index[a] = j as i64;
            }
        }
    }
    let mut loc = vec![0f32; na * 2];
    let mut cls = vec![0u32; na];
    for a in 0..na {
        let j = index[a].max(0) as usize;
        let (b0, b1) = if m > 0 { boxes[j] } else { (0.0, 0.0) };
        let (bc, bw) = ((b0 + b1) / 2.0, b1 - b0);
        let (dc, dw) = ((yy[a].0 + yy[a].1) / 2.0, yy[a].1 - yy[a].0);
        loc[2 * a] = ((bc - dc) / dw / 0.1) as f32;
        loc[2 * a + 1] = ((bw / dw - 1.0) / 0.2) as f32;
        cls[a] = if index[a] < 0 || m == 0 { 0 } else { labels[j] as u32 };
    }
    (loc, cls)
}

/// The loss terms of a batch.
pub struct CtcnLoss {
    pub total: Tensor,
    pub loc: f32,
    pub cls: f32,
}

/// `FPNCTCN.loss`: `(weight · Σ smooth-L1 over the positives' offsets + Σ cross-entropy over the
/// positives and each video's `neg_ratio` · positives hardest negatives) / positives`.
pub fn ctcn_loss(
    loc: &Tensor,
    cls: &Tensor,
    loc_targets: &[f32],
    cls_targets: &[u32],
    loc_weight: f64,
    neg_ratio: usize,
) -> Result<CtcnLoss> {
    let (n, a, k) = cls.dims3()?;
    let dev = loc.device();
    let pos: Vec<f32> = cls_targets.iter().map(|&c| if c > 0 { 1.0 } else { 0.0 }).collect();
    let num_pos: f32 = pos.iter().sum();
    if num_pos == 0.0 {
        bail!("a batch without positive anchors");
    }
    // Smooth-L1 (sigma 1) on the positives.
    let target = Tensor::from_vec(loc_targets.to_vec(), (n, a, 2), dev)?;
    let mask = Tensor::from_vec(pos.clone(), (n, a, 1), dev)?;
    let d = (loc - &target)?.broadcast_mul(&mask)?;
    let ad = d.abs()?;
    let sl1 = ad.lt(1.0)?.where_cond(&(d.sqr()? * 0.5)?, &(&ad - 0.5)?)?;
    let loc_loss = sl1.sum_all()?;
    // Cross-entropy per anchor.
    let logp = candle_nn::ops::log_softmax(cls, D::Minus1)?;
    let onehot: Vec<f32> = cls_targets
        .iter()
        .flat_map(|&c| (0..k).map(move |j| if j as u32 == c { 1.0 } else { 0.0 }))
        .collect();
    let onehot = Tensor::from_vec(onehot, (n, a, k), dev)?;
    let ce = (logp * onehot)?.sum(D::Minus1)?.neg()?;
    // Hard negative mining on the losses' values: per video, the negatives ranked by loss.
    let ce_v: Vec<f32> = ce.flatten_all()?.to_vec1()?;
    let mut select = pos.clone();
    for v in 0..n {
        let row = v * a..(v + 1) * a;
        let pos_v: f32 = pos[row.clone()].iter().sum();
        let keep = (neg_ratio as f32 * pos_v) as usize;
        let mut negs: Vec<usize> = row.clone().filter(|&i| pos[i] == 0.0).collect();
        negs.sort_by(|&x, &y| ce_v[y].total_cmp(&ce_v[x]));
        for &i in negs.iter().take(keep) {
            select[i] = 1.0;
        }
    }
    let select = Tensor::from_vec(select, (n, a), dev)?;
    let cls_loss = (ce * select)?.sum_all()?;
    let total = ((&loc_loss * loc_weight)? + &cls_loss)?.affine(1.0 / num_pos as f64, 0.0)?;
    Ok(CtcnLoss {
        loc: loc_loss.to_scalar::<f32>()? * loc_weight as f32 / num_pos,
        cls: cls_loss.to_scalar::<f32>()? / num_pos,
        total,
    })
}

/// The reader's `random_crop` on features [T, W] and boxes in rows: a window of ⌊T · s⌋ rows
/// (s uniform in [0.3, 1]) for each minimum tIoU in (0, 0.1, 0.3, 0.5, 0.7, 0.9) that the
/// window reaches with every box within 100 draws, or the whole sequence; one of these at
/// random; boxes whose centre lies inside, shifted and clipped (none left: the background).
fn random_crop(
    rows: &ndarray::Array2<f32>,
    boxes: &[(f64, f64)],
    labels: &[usize],
    rng: &mut Rng,
) -> (ndarray::Array2<f32>, Vec<(f64, f64)>, Vec<usize>) {
    let t = rows.nrows();
    let mut params = vec![(0usize, t)];
    for min_iou in [0.0, 0.1, 0.3, 0.5, 0.7, 0.9] {
        for _ in 0..100 {
            let h = (t as f64 * rng.uniform_range(0.3, 1.0)) as usize;
            if h == 0 || h >= t {
                continue;
            }
            let y = (rng.uniform() * (t - h) as f64) as usize;
            let ok = boxes.iter().all(|&(b0, b1)| {
                let (r0, r1) = (y as f64, (y + h) as f64);
                let inter = (b1.min(r1) - b0.max(r0)).max(0.0);
                inter / ((b1 - b0).abs() + (r1 - r0) - inter) >= min_iou
            });
            if ok {
                params.push((y, h));
                break;
            }
        }
    }
    let (y, h) = params[(rng.uniform() * params.len() as f64) as usize % params.len()];
    let crop = rows.slice(ndarray::s![y..y + h, ..]).to_owned();
    let (mut b, mut l) = (Vec::new(), Vec::new());
    for (&(b0, b1), &c) in boxes.iter().zip(labels) {
        let centre = (b0 + b1) / 2.0;
        if centre >= y as f64 && centre <= (y + h) as f64 {
            b.push(((b0 - y as f64).clamp(0.0, h as f64), (b1 - y as f64).clamp(0.0, h as f64)));
            l.push(c);
        }
    }
    (crop, b, l)
}

/// One video ready for training: features [T, W] (time × concepts), its boxes in rows and their
/// classes (≥ 1).
pub struct CtcnVideo {
    pub id: String,
    pub rows: ndarray::Array2<f32>,
    pub boxes: Vec<(f64, f64)>,
    pub labels: Vec<usize>,
    pub duration: f64,
    pub segments: Vec<(f64, f64, String)>,
}

/// Videos with their classes (1 + the index in `classes`) and boxes in rows; a segment of an
/// unknown or missing class is an error naming it; a video without segments is left out (the
/// reader skips those without positives).
pub fn ctcn_videos(videos: Vec<LocalizerVideo>, classes: &[String], width: usize) -> Result<Vec<CtcnVideo>> {
    let mut out = Vec::new();
    for v in videos {
        if v.segments.is_empty() {
            continue;
        }
        let t = v.features.len() / width;
        let rows = ndarray::Array2::from_shape_fn((t, width), |(i, c)| v.features[c * t + i]);
        let (mut boxes, mut labels, mut segments) = (Vec::new(), Vec::new(), Vec::new());
        for (&(s, e), l) in v.segments.iter().zip(&v.labels) {
            let name =
                l.as_deref().with_context(|| format!("video {:?}: a segment without a label", v.id))?;
            let k = classes
                .iter()
                .position(|c| c == name)
                .with_context(|| format!("video {:?}: class {name:?} is not among the model's", v.id))?;
            boxes.push((s / v.duration * t as f64, e / v.duration * t as f64));
            labels.push(k + 1);
            segments.push((s, e, name.to_string()));
        }
        out.push(CtcnVideo { id: v.id, rows, boxes, labels, duration: v.duration, segments });
    }
    Ok(out)
}

pub struct CtcnRun {
    pub config: CtcnTrainConfig,
    /// Class names without the background (the model's labels).
    pub classes: Vec<String>,
    pub train: Vec<CtcnVideo>,
    pub val: Option<Vec<CtcnVideo>>,
    pub out_dir: PathBuf,
    pub resume: bool,
    pub stop_after: Option<usize>,
    pub quiet: bool,
    /// Where the model trains, and whether the CPU takes candle's own ops only (`TrainRun`'s).
    pub device: Device,
    pub portable_ops: bool,
}

/// Detections of `model` for each video, in seconds, labelled with class names.
pub fn detect_videos(
    model: &Ctcn,
    videos: &[CtcnVideo],
    classes: &[String],
    top: usize,
) -> Result<SegmentPredictions> {
    videos
        .iter()
        .map(|v| {
            let timing = VideoTiming { seconds: Some(v.duration), frames: None };
            let segs = model
                .propose(&v.rows, &timing, top)?
                .iter()
                .map(|p| Segment {
                    t0: p.xmin,
                    t1: p.xmax,
                    label: p.label.and_then(|i| classes.get(i).cloned()),
                    score: p.score,
                })
                .collect();
            Ok((v.id.clone(), segs))
        })
        .collect()
}

/// ActivityNet's detection mAP (tIoU 0.5:0.05:0.95) of `model` on `videos`.
pub fn validation_map(model: &Ctcn, videos: &[CtcnVideo], classes: &[String], top: usize) -> Result<f64> {
    let preds = detect_videos(model, videos, classes, top)?;
    let gt = SegmentGroundTruth {
        videos: videos
            .iter()
            .map(|v| {
                let segs = v
                    .segments
                    .iter()
                    .map(|(t0, t1, l)| Segment { t0: *t0, t1: *t1, label: Some(l.clone()), score: 1.0 })
                    .collect();
                (v.id.clone(), segs)
            })
            .collect(),
        // ActivityNet's classes are those of the evaluated subset's ground truth.
        classes: classes
            .iter()
            .filter(|c| videos.iter().any(|v| v.segments.iter().any(|s| &s.2 == *c)))
            .cloned()
            .collect(),
    };
    Ok(detection_map(&gt, &preds, &linspace(0.5, 0.95, 10))?.map)
}

/// One training sample: the (cropped) features resized to the model's steps, the targets.
fn training_sample(v: &CtcnVideo, cfg: &CtcnTrainConfig, rng: &mut Rng) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let spec = &cfg.ctcn;
    let (rows, boxes, labels) = if cfg.random_crop {
        random_crop(&v.rows, &v.boxes, &v.labels, rng)
    } else {
        (v.rows.clone(), v.boxes.clone(), v.labels.clone())
    };
    let t = rows.nrows().max(1);
    let scale = spec.img_size as f64 / t as f64;
    let rows = resize_nearest(&rows, spec.img_size);
    let boxes: Vec<(f64, f64)> = boxes.iter().map(|&(a, b)| (a * scale, b * scale)).collect();
    let (loc, cls) = ctcn_targets(&boxes, &labels, spec);
    (rows.iter().copied().collect(), loc, cls)
}

pub fn train_ctcn(run: CtcnRun) -> Result<LocalizerSummary> {
    super::on_path(run.portable_ops, || train_ctcn_on(run))
}

fn train_ctcn_on(run: CtcnRun) -> Result<LocalizerSummary> {
    let cfg = &run.config;
    let device = &run.device;
    cfg.validate()?;
    if run.train.is_empty() {
        bail!("no training videos with annotated segments");
    }
    if run.classes.len() + 1 != cfg.ctcn.num_classes {
        bail!(
            "{} classes in the annotations; the model has {} (with the background)",
            run.classes.len(),
            cfg.ctcn.num_classes
        );
    }
    std::fs::create_dir_all(&run.out_dir)
        .with_context(|| format!("{}: cannot create", run.out_dir.display()))?;
    let spec = cfg.ctcn.clone();
    let mut model_cfg = ctcn_config(&spec)?;
    model_cfg.labels = Some(run.classes.clone());
    let varmap = VarMap::new();
    let model =
        Ctcn::new(model_cfg.clone(), spec.clone(), VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    init_ctcn(&varmap, cfg.seed)?;
    let mut optim = cfg.optimizer.build(trainable_vars(&varmap)).context("optimizer")?;
    let schedule = cfg.schedule.clone().unwrap_or_else(|| LrSchedule::constant(cfg.optimizer.lr()));
    let ckpt_path = last_checkpoint(&run.out_dir);
    let mut state = TrainState::default();
    let resume = super::resume_from(&ckpt_path, run.resume, run.quiet);
    if resume {
        let ckpt = load_checkpoint(&ckpt_path, device).context("--resume")?;
        let saved = ctcn_spec(&ckpt.config).with_context(|| format!("{}", ckpt_path.display()))?;
        if saved != spec {
            bail!("{}: the checkpoint's C-TCN settings differ from the config's", ckpt_path.display());
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
        metric: "map",
        ..Default::default()
    };
    let progress =
        Progress::new(Some((last_epoch.saturating_sub(first_epoch) * n) as u64), "videos", run.quiet);
    let started = Instant::now();
    let (t, w) = (spec.img_size, spec.concept_size);
    for epoch in first_epoch..last_epoch {
        let order = super::mix::permutation(&mut Rng::derive(cfg.seed, epoch as u64), n);
        let epoch_start = Instant::now();
        let mut loss_sum = 0f64;
        let mut steps = 0usize;
        for (iter, idx) in order.chunks(cfg.batch_size).enumerate() {
            let lr = schedule.lr(epoch, iter, ipe);
            optim.set_lr(lr);
            let mut rng = Rng::derive(cfg.seed ^ 0xC7C7_0000, (epoch as u64) << 32 | iter as u64);
            let (mut x, mut locs, mut clss) = (Vec::new(), Vec::new(), Vec::new());
            for &i in idx {
                let (rows, loc, cls) = training_sample(&run.train[i], cfg, &mut rng);
                // A crop that kept no box: the reader skips the sample.
                if cls.iter().all(|&c| c == 0) {
                    continue;
                }
                x.extend(rows);
                locs.extend(loc);
                clss.extend(cls);
            }
            let b = x.len() / (t * w);
            if b == 0 {
                continue;
            }
            let xt = Tensor::from_vec(x, (b, t, w), device)?;
            let out = model.forward_train(&xt, rng.next_u64())?;
            let loss = ctcn_loss(&out.loc, &out.cls, &locs, &clss, cfg.loc_weight, cfg.neg_ratio)?;
            let loss_v = loss.total.to_scalar::<f32>()? as f64;
            if !loss_v.is_finite() {
                bail!("epoch {epoch} iteration {iter}: the loss is {loss_v} (lower the learning rate?)");
            }
            optim.step(&loss.total.backward()?)?;
            state.global_step += 1;
            loss_sum += loss_v;
            steps += 1;
            if (iter + 1) % cfg.log_every.max(1) == 0 || iter + 1 == ipe {
                log.line(serde_json::json!({"event": "train", "epoch": epoch, "iter": iter, "loss": loss_v,
                    "loc": loss.loc, "cls": loss.cls, "lr": lr}))?;
            }
            progress.inc(idx.len() as u64);
            progress.set_message(format!(
                "epoch {}/{} iter {}/{} loss {:.4} lr {:.1e}",
                epoch + 1,
                cfg.epochs,
                iter + 1,
                ipe,
                loss_sum / steps as f64,
                lr
            ));
        }
        let mut line = serde_json::json!({"event": "epoch", "epoch": epoch, "loss": loss_sum / steps.max(1) as f64,
            "seconds": epoch_start.elapsed().as_secs_f64()});
        state.epoch = epoch + 1;
        state.iteration = 0;
        let validate = (epoch + 1) % cfg.val_every == 0 || epoch + 1 == cfg.epochs;
        if let (Some(val), true) = (&run.val, validate) {
            let map = validation_map(&model, val, &run.classes, cfg.top)?;
            line["val_map"] = map.into();
            summary.last_val_auc = Some(map);
            if state.best_metric.is_none_or(|b| map > b) {
                state.best_metric = Some(map);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_box_takes_its_best_anchor_and_the_overlapping_ones() {
        let spec = CtcnSpec { img_size: 64, concept_size: 4, num_classes: 3, ..Default::default() };
        // A box exactly on the first level's anchor 0 of step 2 ([8, 12]), class 2.
        let (loc, cls) = ctcn_targets(&[(8.0, 12.0)], &[2], &spec);
        let a = 2 * 7;
        assert_eq!(cls[a], 2);
        assert!(loc[2 * a].abs() < 1e-6 && loc[2 * a + 1].abs() < 1e-6);
        assert!(cls.iter().filter(|&&c| c == 2).count() >= 2, "anchors of tIoU ≥ 0.5 too");
        assert!(cls.iter().filter(|&&c| c == 0).count() > 200);
        // Offsets: the box against a neighbouring anchor ([10, 14]: centre 12, width 4).
        let (loc, _) = ctcn_targets(&[(8.0, 12.0)], &[2], &spec);
        let b = 3 * 7;
        assert!((loc[2 * b] - (10.0 - 14.0) / 4.0 / 0.1).abs() < 1e-5);
    }
}
