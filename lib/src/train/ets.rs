//! ETS training as the 2019 PaddlePaddle video zoo trains it (`models/ets/ets.py`,
//! `reader/ets_reader.py`, `configs/ets.yaml`): pairs of a feature sequence (the span an event's
//! sentence describes, or the whole video) and its PTB-tokenized sentence, shuffled every epoch;
//! teacher-forced cross-entropy averaged over every word of the batch; Adam (β 0.9/0.999, ε 1e-8)
//! with L2 regularisation 1e-4 (none on the encoder fc's bias, which the reference gives
//! `L2Decay(0.0)`), the gradients clipped to a global norm of 5 before it, and Noam's rate
//! `scale · d^−0.5 · min(step^−0.5, step · warmup^−1.5)` with d the GRU width and warmup 1000
//! (`noam_decay(gru_hidden_dim, 1000)`, step counted from 1). Validation: the loss on the
//! validation pairs (the reference's `valid` mode); the best model is the lowest.

use super::checkpoint::{load_checkpoint, save_checkpoint, TrainState};
use super::optim::{trainable_vars, AdamW, AdamWConfig, Optimizer};
use super::trainer::{apply_json_overrides, last_checkpoint, Log};
use crate::caption::{read_captions, span_rows, Vocabulary};
use crate::featstore::VideoFeatures;
use crate::model::{ets_config, ets_spec, init_ets, save_model, Ets, EtsSpec, Padded};
use crate::progress::Progress;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How to train ETS; JSON with `-o key=value` overrides (bare ETS keys such as `fc_dim=64` go
/// into `ets`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtsTrainConfig {
    pub ets: EtsSpec,
    pub epochs: usize,
    pub batch_size: usize,
    /// Noam's `learning_rate` factor (fluid's default 1.0).
    pub lr_scale: f64,
    pub warmup_steps: usize,
    pub l2_weight_decay: f64,
    pub clip_norm: f64,
    /// Words seen fewer times in the training sentences are `<unk>` (`generate_data.py`: 3).
    pub min_count: usize,
    pub seed: u64,
    pub val_every: usize,
    pub log_every: usize,
}

impl Default for EtsTrainConfig {
    fn default() -> Self {
        Self {
            ets: EtsSpec::default(),
            epochs: 40,
            batch_size: 256,
            lr_scale: 1.0,
            warmup_steps: 1000,
            l2_weight_decay: 1e-4,
            clip_norm: 5.0,
            min_count: 3,
            seed: 0,
            val_every: 1,
            log_every: 10,
        }
    }
}

impl EtsTrainConfig {
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        *self = apply_json_overrides(&*self, overrides, "ets")?;
        self.validate()
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.val_every == 0 || self.warmup_steps == 0 {
            bail!("epochs, batch_size, val_every and warmup_steps must be positive");
        }
        if !(self.lr_scale > 0.0 && self.clip_norm > 0.0 && self.l2_weight_decay >= 0.0) {
            bail!("lr_scale and clip_norm must be positive, l2_weight_decay not negative");
        }
        self.ets.validate()
    }

    /// fluid's `noam_decay(d_model, warmup)` at optimiser step `step` (from 1).
    pub fn lr_at(&self, step: u64) -> f64 {
        let s = step.max(1) as f64;
        let d = self.ets.gru_hidden_dim as f64;
        self.lr_scale * d.powf(-0.5) * s.powf(-0.5).min(s * (self.warmup_steps as f64).powf(-1.5))
    }
}

/// One training pair: the features a sentence describes and the sentence, tokenized.
#[derive(Clone, Debug)]
pub struct CaptionPair {
    pub video: String,
    pub features: Array2<f32>,
    pub sentence: String,
}

/// The pairs of `captions` (a captions file) whose videos are among `features`: the span each
/// sentence describes at the features' rate (rows per second from the features' duration, else
/// the file's), PTB-tokenized as `generate_data.py` (non-ASCII characters as spaces). Also the
/// number of sentences left out: their video has no features, or their span no rows.
pub fn caption_pairs(
    features: &[VideoFeatures],
    captions_path: &Path,
    modality: &str,
    width: Option<usize>,
) -> Result<(Vec<CaptionPair>, usize)> {
    let captions = read_captions(captions_path)?;
    let by_id: std::collections::HashMap<String, &VideoFeatures> = features
        .iter()
        .flat_map(|v| crate::data::video_id_forms(&v.id).into_iter().map(move |f| (f, v)))
        .collect();
    let ascii: Vec<String> = captions
        .iter()
        .map(|c| c.sentence.chars().map(|ch| if ch.is_ascii() { ch } else { ' ' }).collect())
        .collect();
    let tokens = crate::metric::captions::ptb_tokenize(&ascii.iter().map(String::as_str).collect::<Vec<_>>());
    let (mut pairs, mut left_out) = (Vec::new(), 0);
    for (c, sentence) in captions.iter().zip(tokens) {
        let Some(v) = crate::data::video_id_forms(&c.video).iter().find_map(|f| by_id.get(f)) else {
            left_out += 1;
            continue;
        };
        let rows =
            v.modality(modality).with_context(|| format!("video {:?}: no {modality:?} features", v.id))?;
        if let Some(w) = width.filter(|w| *w != rows.ncols()) {
            bail!("video {:?}: features are {} wide; the model takes {w}", v.id, rows.ncols());
        }
        let duration = v.duration.or(c.duration).filter(|d| *d > 0.0);
        let range = match (c.span, duration) {
            (None, _) => 0..rows.nrows(),
            (Some(span), Some(d)) => span_rows(rows.nrows(), Some(span), rows.nrows() as f64 / d),
            (Some(_), None) => bail!(
                "{}: video {:?}: a timestamped sentence, but neither the features nor the file give the duration",
                captions_path.display(),
                c.video
            ),
        };
        if range.is_empty() || sentence.is_empty() {
            left_out += 1;
            continue;
        }
        pairs.push(CaptionPair {
            video: v.id.clone(),
            features: rows.slice(ndarray::s![range, ..]).to_owned(),
            sentence,
        });
    }
    Ok((pairs, left_out))
}

pub struct EtsRun {
    pub config: EtsTrainConfig,
    pub train: Vec<CaptionPair>,
    pub val: Option<Vec<CaptionPair>>,
    pub out_dir: PathBuf,
    pub resume: bool,
    pub stop_after: Option<usize>,
    pub quiet: bool,
    /// Where the model trains, and whether the CPU takes candle's own ops only (`TrainRun`'s).
    pub device: Device,
    pub portable_ops: bool,
}

/// What `vtrain` prints when ETS's training ends.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EtsSummary {
    pub epochs_run: usize,
    pub words: usize,
    pub last_val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub best_epoch: Option<usize>,
}

/// A batch's features (on `device`) and word ids.
fn batch(pairs: &[&CaptionPair], vocab: &Vocabulary, device: &Device) -> Result<(Padded, Vec<Vec<usize>>)> {
    let xs: Vec<Tensor> = pairs
        .iter()
        .map(|p| {
            let (t, c) = p.features.dim();
            Tensor::from_vec(p.features.iter().copied().collect(), (t, c), device)
        })
        .collect::<candle_core::Result<_>>()?;
    Ok((Padded::new(&xs)?, pairs.iter().map(|p| vocab.encode(&p.sentence)).collect()))
}

/// The loss over `pairs` (every word of them), in batches.
pub fn validation_loss(
    model: &Ets,
    pairs: &[CaptionPair],
    batch_size: usize,
    device: &Device,
) -> Result<f64> {
    let (mut sum, mut words) = (0f64, 0usize);
    let refs: Vec<&CaptionPair> = pairs.iter().collect();
    for chunk in refs.chunks(batch_size.max(1)) {
        let (x, sentences) = batch(chunk, &model.vocab, device)?;
        let n: usize = sentences.iter().map(|s| s.len() + 1).sum();
        sum += model.loss(&x, &sentences)?.to_scalar::<f32>()? as f64 * n as f64;
        words += n;
    }
    Ok(sum / words.max(1) as f64)
}

pub fn train_ets(run: EtsRun) -> Result<EtsSummary> {
    super::on_path(run.portable_ops, || train_ets_on(run))
}

fn train_ets_on(run: EtsRun) -> Result<EtsSummary> {
    let cfg = &run.config;
    let device = &run.device;
    cfg.validate()?;
    if run.train.is_empty() {
        bail!("no training sentences");
    }
    std::fs::create_dir_all(&run.out_dir)
        .with_context(|| format!("{}: cannot create", run.out_dir.display()))?;
    let vocab = Vocabulary::build(run.train.iter().map(|p| p.sentence.as_str()), cfg.min_count);
    if vocab.len() < cfg.ets.beam_size {
        bail!("a vocabulary of {} words cannot fill a beam of {}", vocab.len(), cfg.ets.beam_size);
    }
    let model_cfg = ets_config(&cfg.ets, &vocab)?;
    let varmap = VarMap::new();
    let model = Ets::new(model_cfg.clone(), VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    init_ets(&varmap, cfg.seed)?;
    let adam =
        AdamWConfig { lr: cfg.lr_at(1), weight_decay: cfg.l2_weight_decay, l2: true, ..Default::default() };
    let mut optim: Box<dyn Optimizer> = Box::new(
        AdamW::new(trainable_vars(&varmap), adam)?.with_no_decay(|n, _| n == "encoder.input_fc.bias"),
    );
    let ckpt_path = last_checkpoint(&run.out_dir);
    let mut state = TrainState::default();
    let resume = super::resume_from(&ckpt_path, run.resume, run.quiet);
    if resume {
        let ckpt = load_checkpoint(&ckpt_path, device).context("--resume")?;
        let (saved, saved_vocab) =
            ets_spec(&ckpt.config).with_context(|| format!("{}", ckpt_path.display()))?;
        if saved != cfg.ets || saved_vocab != vocab {
            bail!("{}: the checkpoint's ETS sizes or vocabulary differ from this run's", ckpt_path.display());
        }
        state = ckpt.restore(&varmap, optim.as_mut())?;
    }
    let mut log = Log::open(&run.out_dir, resume)?;
    if !resume {
        log.line(serde_json::json!({"event": "config", "config": cfg, "words": vocab.len()}))?;
    }
    let n = run.train.len();
    let ipe = n.div_ceil(cfg.batch_size);
    let first_epoch = state.epoch;
    let last_epoch = run.stop_after.map_or(cfg.epochs, |k| (first_epoch + k).min(cfg.epochs));
    let mut summary = EtsSummary { words: vocab.len(), ..Default::default() };
    let progress =
        Progress::new(Some((last_epoch.saturating_sub(first_epoch) * n) as u64), "sentences", run.quiet);
    let started = Instant::now();
    for epoch in first_epoch..last_epoch {
        let order = super::mix::permutation(&mut Rng::derive(cfg.seed, epoch as u64), n);
        let epoch_start = Instant::now();
        let mut loss_sum = 0f64;
        for (iter, idx) in order.chunks(cfg.batch_size).enumerate() {
            let lr = cfg.lr_at(state.global_step + 1);
            optim.set_lr(lr);
            let pairs: Vec<&CaptionPair> = idx.iter().map(|&i| &run.train[i]).collect();
            let (x, sentences) = batch(&pairs, &vocab, device)?;
            let loss = model.loss(&x, &sentences)?;
            let loss_v = loss.to_scalar::<f32>()? as f64;
            if !loss_v.is_finite() {
                bail!("epoch {epoch} iteration {iter}: the loss is {loss_v} (lower lr_scale?)");
            }
            let mut grads = loss.backward()?;
            super::optim::clip_grad_norm(&mut grads, optim.vars(), cfg.clip_norm)?;
            optim.step(&grads)?;
            state.global_step += 1;
            loss_sum += loss_v;
            if (iter + 1) % cfg.log_every.max(1) == 0 || iter + 1 == ipe {
                log.line(serde_json::json!({"event": "train", "epoch": epoch, "iter": iter, "loss": loss_v, "lr": lr}))?;
            }
            progress.inc(pairs.len() as u64);
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
        let mut line = serde_json::json!({"event": "epoch", "epoch": epoch, "loss": loss_sum / ipe.max(1) as f64,
            "seconds": epoch_start.elapsed().as_secs_f64()});
        state.epoch = epoch + 1;
        state.iteration = 0;
        let validate = (epoch + 1) % cfg.val_every == 0 || epoch + 1 == cfg.epochs;
        if let (Some(val), true) = (&run.val, validate) {
            let v = validation_loss(&model, val, cfg.batch_size, device)?;
            line["val_loss"] = v.into();
            summary.last_val_loss = Some(v);
            // Lower is better: the state keeps the best as its negative.
            if state.best_metric.is_none_or(|b| -v > b) {
                state.best_metric = Some(-v);
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
    summary.best_val_loss = state.best_metric.map(|b| -b);
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
    fn noam_rises_for_warmup_steps_then_falls_as_one_over_root_step() {
        let c = EtsTrainConfig::default();
        let peak = c.lr_at(1000);
        assert!((peak - 512f64.powf(-0.5) * 1000f64.powf(-0.5)).abs() < 1e-12);
        assert!(c.lr_at(500) < peak && c.lr_at(4000) < peak);
        assert!((c.lr_at(4000) / peak - 0.5).abs() < 1e-12);
    }
}
