//! Training TALL as the 2019 zoo trains it (`configs/tall.yaml`, `models/tall/tall.py`,
//! `tall_net.py`'s `loss`, `reader/tall_reader.py`): every training window (`train_windows`
//! frames, `overlap`) of a video is paired with each of the video's sentences whose segment it
//! overlaps with IoU > 0.5 and whose non-intersection over the window's length (nIoL) is below
//! 0.15; the targets are the offsets from the window's boundaries to the segment's, in frames.
//! The pairs are shuffled every epoch and cut into batches of `batch_size` (56; an incomplete
//! last batch is dropped, as the reader only yields full ones); in a batch, pair (i, i) is the
//! positive and every sentence against every other pair's clip a negative (`tall_loss`). Adam
//! at 1e-3, gradients clipped to global norm 5 (`GradientClipByGlobalNorm`).
//!
//! Validation grounds the held-out queries as `vground` does and scores R@1 at IoU 0.5 with the
//! reference's `compute_IoU_recall_top_n_forreg` (temporal NMS at IoU − 0.05, hull IoU ≥ 0.5);
//! `best.safetensors` is the model of the best figure (without validation queries, the last).

use super::checkpoint::{load_checkpoint, save_checkpoint, TrainState};
use super::localizer::LocalizerSummary;
use super::optim::{trainable_vars, AdamWConfig, OptimizerConfig};
use super::schedule::LrSchedule;
use super::trainer::{apply_json_overrides, last_checkpoint, Log};
use crate::data::GroundingQuery;
use crate::model::{
    init_tall, save_model, sliding_windows, tall_config, tall_loss, tall_spec, Candidate, Grounder,
    GroundingVideo, Tall, TallSpec,
};
use crate::progress::Progress;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// How to train TALL; JSON with `-o key=value` overrides (bare spec keys such as
/// `semantic_size=64` go into `tall`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TallTrainConfig {
    pub tall: TallSpec,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// Global gradient norm clip (`clip_norm`).
    pub clip_norm: Option<f64>,
    /// A window pairs with a sentence when their IoU is above this ...
    pub iou: f64,
    /// ... and the part of the window outside the segment is below this share of it.
    pub niol: f64,
    pub seed: u64,
    pub val_every: usize,
    pub log_every: usize,
}

impl Default for TallTrainConfig {
    fn default() -> Self {
        Self {
            tall: TallSpec::default(),
            epochs: 25,
            batch_size: 56,
            optimizer: OptimizerConfig::AdamW(AdamWConfig {
                lr: 1e-3,
                weight_decay: 0.0,
                ..Default::default()
            }),
            clip_norm: Some(5.0),
            iou: 0.5,
            niol: 0.15,
            seed: 0,
            val_every: 1,
            log_every: 10,
        }
    }
}

impl TallTrainConfig {
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        *self = apply_json_overrides(&*self, overrides, "tall")?;
        self.validate()
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size < 2 || self.val_every == 0 {
            bail!("epochs and val_every must be positive, batch_size at least 2 (the batch holds the negatives)");
        }
        self.tall.validate()
    }
}

/// TALL's `calculate_IoU`: intersection over the hull (negative for disjoint segments).
pub fn hull_iou(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (u0, u1) = (a.0.min(b.0), a.1.max(b.1));
    let (i0, i1) = (a.0.max(b.0), a.1.min(b.1));
    (i1 - i0) / (u1 - u0)
}

/// TALL's `calculate_nIoL(base, sliding_clip)`: the share of the window outside the segment.
pub fn niol(segment: (f64, f64), window: (f64, f64)) -> f64 {
    let inter = window.1.min(segment.1) - window.0.max(segment.0);
    let len = window.1 - window.0;
    (len - inter) / len
}

/// TALL's `nms_temporal`: indices kept, best first (ties: the later candidate first, as its
/// stable ascending sort then `I[-1]`).
pub fn nms_temporal(c: &[Candidate], overlap: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[a].score.total_cmp(&c[b].score));
    let mut pick = Vec::new();
    while let Some(&i) = order.last() {
        pick.push(i);
        let rest = &order[..order.len() - 1];
        order = rest
            .iter()
            .copied()
            .filter(|&j| {
                let inter = (c[i].t1.min(c[j].t1) - c[i].t0.max(c[j].t0)).max(0.0);
                let o = inter / ((c[i].t1 - c[i].t0) + (c[j].t1 - c[j].t0) - inter);
                o <= overlap
            })
            .collect();
    }
    pick
}

/// `compute_IoU_recall_top_n_forreg` for one query: whether one of the top `n` after NMS at
/// `iou − 0.05` reaches `iou` with the ground truth.
pub fn recalled(c: &[Candidate], gt: (f64, f64), n: usize, iou: f64) -> bool {
    nms_temporal(c, iou - 0.05).iter().take(n).any(|&i| hull_iou(gt, (c[i].t0, c[i].t1)) >= iou)
}

/// A video's snippet features for training: rows, row centres, duration, frame rate.
pub struct TallVideo {
    pub id: String,
    pub rows: ndarray::Array2<f32>,
    pub centres: Vec<f64>,
    pub duration_s: f64,
    pub fps: f64,
    /// Its queries: embedding and ground truth (seconds).
    pub queries: Vec<(String, Vec<f32>, (f64, f64))>,
}

impl TallVideo {
    pub fn from_features(
        v: &crate::featstore::VideoFeatures,
        modality: &str,
        fps: Option<f64>,
    ) -> Result<Self> {
        let g = GroundingVideo::new(v, modality, fps)?;
        Ok(Self {
            id: v.id.clone(),
            rows: g.rows.clone(),
            centres: g.centres,
            duration_s: g.duration_s,
            fps: g.fps,
            queries: Vec::new(),
        })
    }

    pub fn view(&self) -> GroundingVideo<'_> {
        GroundingVideo {
            id: &self.id,
            rows: &self.rows,
            centres: self.centres.clone(),
            duration_s: self.duration_s,
            fps: self.fps,
        }
    }

    /// Adds `q` (its embedding size and ground truth checked by the caller).
    pub fn push_query(&mut self, q: &GroundingQuery) -> Result<()> {
        let gt = q.gt.with_context(|| format!("query {:?} has no \"gt\"", q.query_id))?;
        self.queries.push((q.query_id.clone(), q.embedding.clone(), gt));
        Ok(())
    }
}

/// One positive pair: video, window [f0, f1) frames, query, offsets (frames).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TallPair {
    pub video: usize,
    pub window: (f64, f64),
    pub query: usize,
    pub offsets: [f32; 2],
}

/// The reader's training pairs (`init_data`, mode train).
pub fn tall_pairs(videos: &[TallVideo], cfg: &TallTrainConfig) -> Vec<TallPair> {
    let mut out = Vec::new();
    for (vi, v) in videos.iter().enumerate() {
        let windows = sliding_windows(v.duration_s * v.fps, &cfg.tall.train_windows, cfg.tall.overlap);
        for &w in &windows {
            for (qi, (_, _, gt)) in v.queries.iter().enumerate() {
                let g = (gt.0 * v.fps, gt.1 * v.fps);
                if hull_iou(w, g) > cfg.iou && niol(g, w) < cfg.niol {
                    let offsets = [(g.0 - w.0) as f32, (g.1 - w.1) as f32];
                    out.push(TallPair { video: vi, window: w, query: qi, offsets });
                }
            }
        }
    }
    out
}

/// A batch's clip features [B, Dv], sentences [B, E] and offsets [B, 2].
fn batch(
    videos: &[TallVideo],
    pairs: &[TallPair],
    spec: &TallSpec,
    d: &Device,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (mut x, mut s, mut o) = (Vec::new(), Vec::new(), Vec::new());
    for p in pairs {
        let v = &videos[p.video];
        x.extend(v.view().clip_feature(p.window.0, p.window.1, spec));
        s.extend_from_slice(&v.queries[p.query].1);
        o.extend(p.offsets);
    }
    let b = pairs.len();
    Ok((
        Tensor::from_vec(x, (b, spec.visual_feature_dim), d)?,
        Tensor::from_vec(s, (b, spec.sentence_embedding_size), d)?,
        Tensor::from_vec(o, (b, 2), d)?,
    ))
}

/// R@1 at IoU 0.5 (TALL's protocol) of `model` over every query of `videos`.
pub fn validation_recall(model: &Tall, videos: &[TallVideo]) -> Result<f64> {
    let (mut hit, mut n) = (0usize, 0usize);
    for v in videos.iter().filter(|v| !v.queries.is_empty()) {
        let qs: Vec<&[f32]> = v.queries.iter().map(|q| q.1.as_slice()).collect();
        for (c, q) in model.ground(&v.view(), &qs)?.iter().zip(&v.queries) {
            hit += usize::from(recalled(c, q.2, 1, 0.5));
            n += 1;
        }
    }
    Ok(hit as f64 / n.max(1) as f64)
}

pub struct TallRun {
    pub config: TallTrainConfig,
    pub train: Vec<TallVideo>,
    pub val: Option<Vec<TallVideo>>,
    pub out_dir: PathBuf,
    pub resume: bool,
    pub stop_after: Option<usize>,
    pub quiet: bool,
    /// Where the model trains, and whether the CPU takes candle's own ops only (`TrainRun`'s).
    pub device: Device,
    pub portable_ops: bool,
}

pub fn train_tall(run: TallRun) -> Result<LocalizerSummary> {
    super::on_path(run.portable_ops, || train_tall_on(run))
}

fn train_tall_on(run: TallRun) -> Result<LocalizerSummary> {
    let device = &run.device;
    let cfg = &run.config;
    cfg.validate()?;
    let pairs = tall_pairs(&run.train, cfg);
    if pairs.len() < cfg.batch_size {
        bail!(
            "{} training pairs (window IoU > {} and nIoL < {} with a query's segment) for batch_size {}: \
             more queries, other train_windows, or a smaller batch",
            pairs.len(),
            cfg.iou,
            cfg.niol,
            cfg.batch_size
        );
    }
    std::fs::create_dir_all(&run.out_dir)
        .with_context(|| format!("{}: cannot create", run.out_dir.display()))?;
    let spec = cfg.tall.clone();
    let model_cfg = tall_config(&spec)?;
    let varmap = VarMap::new();
    let model =
        Tall::new(model_cfg.clone(), spec.clone(), VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    init_tall(&varmap, cfg.seed)?;
    let mut optim = cfg.optimizer.build(trainable_vars(&varmap)).context("optimizer")?;
    let schedule = LrSchedule::constant(cfg.optimizer.lr());
    let ckpt_path = last_checkpoint(&run.out_dir);
    let mut state = TrainState::default();
    let resume = super::resume_from(&ckpt_path, run.resume, run.quiet);
    if resume {
        let ckpt = load_checkpoint(&ckpt_path, device).context("--resume")?;
        let saved = tall_spec(&ckpt.config).with_context(|| format!("{}", ckpt_path.display()))?;
        if saved != spec {
            bail!("{}: the checkpoint's TALL settings differ from the config's", ckpt_path.display());
        }
        state = ckpt.restore(&varmap, optim.as_mut())?;
    }
    let mut log = Log::open(&run.out_dir, resume)?;
    if !resume {
        log.line(serde_json::json!({"event": "config", "config": cfg, "pairs": pairs.len()}))?;
    }
    let ipe = pairs.len() / cfg.batch_size;
    let first_epoch = state.epoch;
    let last_epoch = run.stop_after.map_or(cfg.epochs, |k| (first_epoch + k).min(cfg.epochs));
    let mut summary = LocalizerSummary {
        best_val_auc: state.best_metric,
        best_epoch: state.best_epoch,
        metric: "r1_iou0.5",
        ..Default::default()
    };
    let progress = Progress::new(
        Some((last_epoch.saturating_sub(first_epoch) * ipe * cfg.batch_size) as u64),
        "pairs",
        run.quiet,
    );
    let started = Instant::now();
    for epoch in first_epoch..last_epoch {
        let order = super::mix::permutation(&mut Rng::derive(cfg.seed, epoch as u64), pairs.len());
        let epoch_start = Instant::now();
        let (mut loss_sum, mut align_sum, mut reg_sum) = (0f64, 0f64, 0f64);
        for (iter, idx) in order.chunks_exact(cfg.batch_size).enumerate() {
            let lr = schedule.lr(epoch, iter, ipe);
            optim.set_lr(lr);
            let chosen: Vec<TallPair> = idx.iter().map(|&i| pairs[i]).collect();
            let (x, s, o) = batch(&run.train, &chosen, &spec, device)?;
            let (loss, align, reg) = tall_loss(&model.forward(&x, &s)?, &o)?;
            let loss_v = loss.to_scalar::<f32>()? as f64;
            if !loss_v.is_finite() {
                bail!("epoch {epoch} iteration {iter}: the loss is {loss_v} (lower the learning rate?)");
            }
            let mut grads = loss.backward()?;
            if let Some(max) = cfg.clip_norm {
                super::optim::clip_grad_norm(&mut grads, optim.vars(), max)?;
            }
            optim.step(&grads)?;
            state.global_step += 1;
            loss_sum += loss_v;
            align_sum += align as f64;
            reg_sum += reg as f64;
            if (iter + 1) % cfg.log_every.max(1) == 0 || iter + 1 == ipe {
                log.line(serde_json::json!({"event": "train", "epoch": epoch, "iter": iter, "loss": loss_v,
                    "align": align, "reg": reg, "lr": lr}))?;
            }
            progress.inc(idx.len() as u64);
            progress.set_message(format!(
                "epoch {}/{} iter {}/{} loss {:.4}",
                epoch + 1,
                cfg.epochs,
                iter + 1,
                ipe,
                loss_sum / (iter + 1) as f64
            ));
        }
        let k = ipe.max(1) as f64;
        let mut line = serde_json::json!({"event": "epoch", "epoch": epoch, "loss": loss_sum / k,
            "align": align_sum / k, "reg": reg_sum / k, "seconds": epoch_start.elapsed().as_secs_f64()});
        state.epoch = epoch + 1;
        state.iteration = 0;
        let validate = (epoch + 1) % cfg.val_every == 0 || epoch + 1 == cfg.epochs;
        if let (Some(val), true) = (&run.val, validate) {
            let r1 = validation_recall(&model, val)?;
            line["val_r1_iou0.5"] = r1.into();
            summary.last_val_auc = Some(r1);
            if state.best_metric.is_none_or(|b| r1 > b) {
                state.best_metric = Some(r1);
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

    fn cand(t0: f64, t1: f64, score: f64) -> Candidate {
        Candidate { t0, t1, score }
    }

    #[test]
    fn pairs_follow_the_readers_thresholds() {
        assert!((hull_iou((0.0, 10.0), (5.0, 15.0)) - 1.0 / 3.0).abs() < 1e-12);
        assert!(hull_iou((0.0, 1.0), (3.0, 4.0)) < 0.0);
        assert!((niol((0.0, 10.0), (5.0, 15.0)) - 0.5).abs() < 1e-12);
        // Two videos at 10 fps; a 12 s query segment on a 20 s video, train windows of 128 frames.
        let mut v = TallVideo {
            id: "a".into(),
            rows: ndarray::Array2::zeros((20, 1)),
            centres: (0..20).map(|i| i as f64 + 0.5).collect(),
            duration_s: 20.0,
            fps: 10.0,
            queries: Vec::new(),
        };
        v.queries.push(("q".into(), vec![1.0], (2.0, 14.0)));
        let cfg = TallTrainConfig {
            tall: TallSpec { train_windows: vec![128.0], ..Default::default() },
            ..Default::default()
        };
        let p = tall_pairs(&[v], &cfg);
        // Windows start every 25.6 frames; against [20, 140): at 0 IoU 0.77 but nIoL 0.156; at
        // 25.6 IoU 0.856, nIoL 0.106 (the pair); at 51.2 IoU 0.557 but nIoL 0.306.
        for q in &p {
            let w = q.window;
            assert!(hull_iou(w, (20.0, 140.0)) > 0.5 && niol((20.0, 140.0), w) < 0.15, "{w:?}");
            assert_eq!(q.offsets, [(20.0 - w.0) as f32, (140.0 - w.1) as f32]);
        }
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn nms_and_recall_as_tall_metrics() {
        let c = vec![cand(0.0, 10.0, 0.9), cand(1.0, 10.0, 0.8), cand(20.0, 30.0, 0.7)];
        // The second overlaps the first by 0.9 > 0.45: suppressed.
        assert_eq!(nms_temporal(&c, 0.45), vec![0, 2]);
        assert!(recalled(&c, (20.0, 30.0), 2, 0.5));
        assert!(!recalled(&c, (20.0, 30.0), 1, 0.5));
        // IoU exactly at the threshold counts (≥).
        assert!(recalled(&[cand(0.0, 10.0, 1.0)], (0.0, 5.0), 1, 0.5));
        // Ties: the later candidate first.
        assert_eq!(nms_temporal(&[cand(0.0, 1.0, 0.5), cand(5.0, 6.0, 0.5)], 0.45), vec![1, 0]);
    }
}
