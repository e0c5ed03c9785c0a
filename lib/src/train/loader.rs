//! Training data: list files decoded through the library (`clips::sample_video`) by `-j`
//! workers into batches, with a bounded prefetch queue so the model does not wait on decoding
//! when decoding is faster; or records of a pre-sampled clip stream held in memory.

use crate::clips::{sample_video, ClipSpec, VideoItem};
use crate::infer::clip_tensor;
use crate::stream::{Label, StreamReader};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use crossbeam_channel::{bounded, Receiver};
use std::path::Path;
use std::sync::Arc;

/// One labelled clip, normalised: [T, 3, H, W].
#[derive(Clone, Debug)]
pub struct Sample {
    pub clip: Tensor,
    pub label: usize,
}

/// A batch: clips [B, T, 3, H, W] and their labels.
pub struct Batch {
    pub clips: Tensor,
    pub labels: Vec<usize>,
    /// Inputs that failed to decode in this batch (already reported).
    pub failed: usize,
}

/// Where training clips come from.
#[derive(Clone)]
pub enum Source {
    /// Videos decoded on the fly (random sampling and crops each epoch).
    Videos(Arc<Vec<VideoItem>>),
    /// Clips sampled beforehand (`vsample --train ... -o train.vks`), reused every epoch.
    Clips(Arc<Vec<Sample>>),
}

impl Source {
    pub fn len(&self) -> usize {
        match self {
            Source::Videos(v) => v.len(),
            Source::Clips(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn labels(&self) -> Vec<Option<usize>> {
        match self {
            Source::Videos(v) => {
                v.iter().map(|i| i.label.as_ref().and_then(Label::single).map(|l| l as usize)).collect()
            }
            Source::Clips(c) => c.iter().map(|s| Some(s.label)).collect(),
        }
    }
}

/// Reads every record of a clip stream as a labelled sample.
pub fn read_clip_stream(path: &Path, mean: &[f32; 3], std: &[f32; 3]) -> Result<Vec<Sample>> {
    let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut out = Vec::new();
    for (n, rec) in StreamReader::new(std::io::BufReader::new(f), path.display().to_string()).enumerate() {
        let rec = rec?;
        let label = match rec.header.label.as_ref().and_then(Label::single) {
            Some(l) if l >= 0 => l as usize,
            _ => bail!("{}: record {n} has no single label", path.display()),
        };
        let clip = clip_tensor(&rec, mean, std, &Device::Cpu)
            .with_context(|| format!("{}: record {n}", path.display()))?;
        out.push(Sample { clip, label });
    }
    Ok(out)
}

/// Decodes one video into one normalised training clip (the first clip and view).
pub fn decode_sample(
    spec: &ClipSpec,
    item: &VideoItem,
    position: usize,
    mean: &[f32; 3],
    std: &[f32; 3],
) -> Result<Sample> {
    let label = match item.label.as_ref().and_then(Label::single) {
        Some(l) if l >= 0 => l as usize,
        _ => bail!("{}: no single label", item.id),
    };
    let recs = sample_video(spec, item, position)?;
    let rec = recs.first().context("no clip sampled")?;
    Ok(Sample { clip: clip_tensor(rec, mean, std, &Device::Cpu)?, label })
}

/// Starts producing the batches of one epoch in `order` on a background thread; at most
/// `prefetch` batches wait in the queue. Per-item seeds come from `spec.seed` and the item's
/// index in the source, so results do not depend on `jobs`.
#[allow(clippy::too_many_arguments)]
pub fn epoch_batches(
    source: Source,
    spec: ClipSpec,
    order: Vec<usize>,
    batch_size: usize,
    jobs: usize,
    prefetch: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Receiver<Result<Batch>> {
    let (tx, rx) = bounded(prefetch.max(1));
    std::thread::spawn(move || {
        let mut clips: Vec<Tensor> = Vec::new();
        let mut labels = Vec::new();
        let mut failed = 0usize;
        let send = |clips: &mut Vec<Tensor>, labels: &mut Vec<usize>, failed: &mut usize| -> Result<()> {
            if clips.is_empty() {
                return Ok(());
            }
            let batch = Tensor::stack(clips, 0).map(|c| Batch {
                clips: c,
                labels: std::mem::take(labels),
                failed: *failed,
            });
            clips.clear();
            *failed = 0;
            tx.send(batch.map_err(anyhow::Error::from)).map_err(|_| anyhow::anyhow!("trainer stopped"))
        };
        let result = crate::parallel::map_ordered(
            &order,
            jobs,
            |_, &idx| match &source {
                Source::Videos(v) => decode_sample(&spec, &v[idx], idx, &mean, &std),
                Source::Clips(c) => Ok(c[idx].clone()),
            },
            |_, sample| {
                match sample {
                    Ok(s) => {
                        clips.push(s.clip);
                        labels.push(s.label);
                    }
                    Err(e) => {
                        eprintln!("vtrain: skipped: {e:#}");
                        failed += 1;
                    }
                }
                if clips.len() >= batch_size {
                    send(&mut clips, &mut labels, &mut failed)?;
                }
                Ok(())
            },
        );
        if result.is_ok() {
            let _ = send(&mut clips, &mut labels, &mut failed);
        }
    });
    rx
}
