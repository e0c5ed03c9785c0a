//! Inference over clip streams: records become normalised clip tensors, run through a model in
//! batches, and the per-record scores are averaged per video (DESIGN.md §3, test-time
//! aggregation over clips × views: softmax probabilities by default, or logits).

use crate::model::Model;
use crate::stream::{Array, Label, Prediction, Record};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};

/// How per-record scores are combined into one per video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// Average of softmax probabilities (mmaction2 `average_clips='prob'`).
    Softmax,
    /// Average of raw logits (`average_clips='score'`).
    Logits,
    /// Per-class sigmoid probabilities (multi-label models).
    Sigmoid,
}

impl std::str::FromStr for Aggregate {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "softmax" | "prob" => Ok(Self::Softmax),
            "logits" | "score" => Ok(Self::Logits),
            "sigmoid" => Ok(Self::Sigmoid),
            _ => bail!("unknown aggregation {s:?} (softmax, logits, sigmoid)"),
        }
    }
}

/// One record's frames as a normalised [T, 3, H, W] f32 tensor. uint8 frames are normalised
/// with `mean`/`std`; float frames must already be (their header's `norm`).
pub fn clip_tensor(rec: &Record, mean: &[f32; 3], std: &[f32; 3], device: &Device) -> Result<Tensor> {
    let shape = rec.array.shape();
    if shape.len() != 4 || shape[3] != 3 {
        bail!("expected frames of shape [T, H, W, 3] (layout THWC), got {shape:?}");
    }
    let (t, h, w) = (shape[0], shape[1], shape[2]);
    let thwc = match &rec.array {
        Array::U8(a) => {
            let data: Vec<u8> = a.iter().copied().collect();
            let x = Tensor::from_vec(data, (t, h, w, 3), device)?.to_dtype(DType::F32)?;
            let m = Tensor::from_slice(mean, (1, 1, 1, 3), device)?;
            let s = Tensor::from_slice(std, (1, 1, 1, 3), device)?;
            x.broadcast_sub(&m)?.broadcast_div(&s)?
        }
        Array::F32(_) | Array::F16(_) => {
            if rec.header.norm.is_none() {
                bail!(
                    "float frames without a `norm` header: normalise with the model's mean/std or send uint8"
                );
            }
            let data: Vec<f32> = rec.array.to_f32().iter().copied().collect();
            Tensor::from_vec(data, (t, h, w, 3), device)?
        }
    };
    Ok(thwc.permute((0, 3, 1, 2))?.contiguous()?)
}

/// Scores [B, classes] for a batch of clips [B, T, 3, H, W].
pub fn score_batch(model: &Model, clips: &[Tensor], aggregate: Aggregate) -> Result<Vec<Vec<f32>>> {
    let x = Tensor::stack(clips, 0)?;
    scores_of(&model.forward_t(&x, false)?, aggregate)
}

/// Scores [B, classes] for a batch of videos' feature sequences (each: one [T, C] tensor per
/// modality, in the model's order).
pub fn score_sequences(model: &Model, videos: &[Vec<Tensor>], aggregate: Aggregate) -> Result<Vec<Vec<f32>>> {
    let modalities = videos.first().map(Vec::len).unwrap_or(0);
    let batch = crate::model::batch_sequences(videos, modalities)?;
    scores_of(&model.forward_seq(&batch, false, None)?, aggregate)
}

fn scores_of(logits: &Tensor, aggregate: Aggregate) -> Result<Vec<Vec<f32>>> {
    let scores = match aggregate {
        Aggregate::Softmax => candle_nn::ops::softmax(logits, D::Minus1)?,
        Aggregate::Logits => logits.clone(),
        Aggregate::Sigmoid => candle_nn::ops::sigmoid(logits)?,
    };
    Ok(scores.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// Averages the scores of consecutive records of the same video. A video ends when another
/// begins, when its `num_clips × num_views` records have arrived, or at the end of the input.
#[derive(Default)]
pub struct VideoAverager {
    current: Option<(String, Option<Label>, Vec<f64>, usize, usize)>,
}

impl VideoAverager {
    /// Adds one record's scores; returns the previous video's prediction when it is complete.
    pub fn push(
        &mut self,
        rec: &Record,
        scores: &[f32],
        topk: usize,
        names: Option<&[String]>,
    ) -> Vec<Prediction> {
        let video = rec.header.video.clone().unwrap_or_default();
        let expected = rec.header.num_clips.unwrap_or(1) * rec.header.num_views.unwrap_or(1);
        let mut done = Vec::new();
        let same = matches!(&self.current, Some((v, _, _, n, e)) if *v == video && n < e);
        if !same {
            done.extend(self.finish(topk, names));
            self.current =
                Some((video, rec.header.label.clone(), vec![0.0; scores.len()], 0, expected.max(1)));
        }
        if let Some((_, _, sum, n, e)) = &mut self.current {
            for (s, v) in sum.iter_mut().zip(scores) {
                *s += *v as f64;
            }
            *n += 1;
            if *n >= *e {
                done.extend(self.finish(topk, names));
            }
        }
        done
    }

    /// Drops the pending video if it is `video` (its producer failed part-way).
    pub fn discard(&mut self, video: &str) {
        if self.current.as_ref().is_some_and(|(v, ..)| v == video) {
            self.current = None;
        }
    }

    /// The pending video's prediction, if any.
    pub fn finish(&mut self, topk: usize, names: Option<&[String]>) -> Option<Prediction> {
        let (video, label, sum, n, _) = self.current.take()?;
        let scores = sum.iter().map(|s| (s / n as f64) as f32).collect();
        let mut p = Prediction::from_scores(video, label, scores, topk, names);
        p.extra.insert("records".into(), n.into());
        Some(p)
    }
}

/// Checks a record against what the model takes, with a message naming the problem.
pub fn check_record(rec: &Record, frames: usize) -> Result<()> {
    if rec.header.kind != "frames" {
        bail!("record of kind {:?}; vclassify takes frames", rec.header.kind);
    }
    let t = rec.array.shape().first().copied().unwrap_or(0);
    if t != frames {
        bail!("record has {t} frames, the model takes {frames} (sample with --frames {frames})");
    }
    Ok(())
}

/// Shorthand for callers that want a context line naming the record.
pub fn record_context(source: &str, n: usize, rec: &Record) -> String {
    format!("{source}: record {n} ({})", rec.header.video.as_deref().unwrap_or("?"))
}
