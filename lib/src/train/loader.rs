//! Training data: list files decoded through the library (`clips::sample_video`) by `-j`
//! workers into batches, with a bounded prefetch queue so the model does not wait on decoding
//! when decoding is faster; or samples held in memory: records of a pre-sampled clip stream, or
//! per-video feature sequences (a feature store or `features` stream) for sequence models.

use crate::clips::{sample_video, ClipSpec, VideoItem};
use crate::infer::clip_tensor;
use crate::model::{batch_sequences, SeqBatch};
use crate::stream::{Label, StreamReader};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use crossbeam_channel::{bounded, Receiver};
use std::path::Path;
use std::sync::Arc;

/// What a model takes for one sample.
#[derive(Clone, Debug)]
pub enum Input {
    /// A normalised clip [T, 3, H, W].
    Clip(Tensor),
    /// Feature sequences [T, C], one per modality in the model's order.
    Features(Vec<Tensor>),
}

/// One labelled sample. `labels` holds one class for single-label data, any number (possibly
/// none) for multi-label data.
#[derive(Clone, Debug)]
pub struct Sample {
    pub input: Input,
    pub labels: Vec<usize>,
}

impl Sample {
    /// The class of a single-label sample (the first listed).
    pub fn label(&self) -> usize {
        self.labels.first().copied().unwrap_or(0)
    }
}

/// A batch's model input.
pub enum BatchInput {
    /// Clips [B, T, 3, H, W].
    Clips(Tensor),
    /// Feature sequences, padded per modality.
    Sequences(SeqBatch),
}

/// A batch: the model input and each sample's labels.
pub struct Batch {
    pub input: BatchInput,
    pub labels: Vec<Vec<usize>>,
    /// Inputs that failed to decode in this batch (already reported).
    pub failed: usize,
}

/// Stacks samples into one batch (all clips, or all feature sequences).
pub fn collate(samples: Vec<Sample>) -> Result<Batch> {
    let labels = samples.iter().map(|s| s.labels.clone()).collect();
    let input = match samples.first().map(|s| &s.input) {
        None => bail!("empty batch"),
        Some(Input::Clip(_)) => {
            let clips: Vec<Tensor> = samples
                .into_iter()
                .map(|s| match s.input {
                    Input::Clip(c) => Ok(c),
                    Input::Features(_) => bail!("a batch mixes clips and features"),
                })
                .collect::<Result<_>>()?;
            BatchInput::Clips(Tensor::stack(&clips, 0)?)
        }
        Some(Input::Features(f)) => {
            let modalities = f.len();
            let videos: Vec<Vec<Tensor>> = samples
                .into_iter()
                .map(|s| match s.input {
                    Input::Features(f) => Ok(f),
                    Input::Clip(_) => bail!("a batch mixes clips and features"),
                })
                .collect::<Result<_>>()?;
            BatchInput::Sequences(batch_sequences(&videos, modalities)?)
        }
    };
    Ok(Batch { input, labels, failed: 0 })
}

/// Where training clips come from.
#[derive(Clone)]
pub enum Source {
    /// Videos decoded on the fly (random sampling and crops each epoch).
    Videos(Arc<Vec<VideoItem>>),
    /// Samples prepared beforehand and reused every epoch: clips sampled by
    /// `vsample --train ... -o train.vks`, or feature sequences.
    Samples(Arc<Vec<Sample>>),
}

impl Source {
    pub fn len(&self) -> usize {
        match self {
            Source::Videos(v) => v.len(),
            Source::Samples(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each sample's labels (for range checks); videos without a single label give none.
    pub fn labels(&self) -> Vec<Vec<usize>> {
        match self {
            Source::Videos(v) => v.iter().map(|i| label_set(i.label.as_ref()).unwrap_or_default()).collect(),
            Source::Samples(c) => c.iter().map(|s| s.labels.clone()).collect(),
        }
    }
}

/// A label as the class indices it names (one, or several for multi-label sets); `None` when
/// absent or negative.
pub fn label_set(label: Option<&Label>) -> Option<Vec<usize>> {
    match label? {
        Label::Single(l) if *l >= 0 => Some(vec![*l as usize]),
        Label::Multi(ls) if !ls.is_empty() && ls.iter().all(|l| *l >= 0) => {
            Some(ls.iter().map(|l| *l as usize).collect())
        }
        _ => None,
    }
}

/// Reads every record of a clip stream as a labelled sample.
pub fn read_clip_stream(path: &Path, mean: &[f32; 3], std: &[f32; 3]) -> Result<Vec<Sample>> {
    let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut out = Vec::new();
    for (n, rec) in StreamReader::new(std::io::BufReader::new(f), path.display().to_string()).enumerate() {
        let rec = rec?;
        let Some(labels) = label_set(rec.header.label.as_ref()) else {
            bail!("{}: record {n} has no label", path.display())
        };
        let clip = clip_tensor(&rec, mean, std, &Device::Cpu)
            .with_context(|| format!("{}: record {n}", path.display()))?;
        out.push(Sample { input: Input::Clip(clip), labels });
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
    let Some(labels) = label_set(item.label.as_ref()) else { bail!("{}: no label", item.id) };
    let recs = sample_video(spec, item, position)?;
    let rec = recs.first().context("no clip sampled")?;
    Ok(Sample { input: Input::Clip(clip_tensor(rec, mean, std, &Device::Cpu)?), labels })
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
        let mut pending: Vec<Sample> = Vec::new();
        let mut failed = 0usize;
        let send = |pending: &mut Vec<Sample>, failed: &mut usize| -> Result<()> {
            if pending.is_empty() {
                return Ok(());
            }
            let batch = collate(std::mem::take(pending)).map(|mut b| {
                b.failed = *failed;
                b
            });
            *failed = 0;
            tx.send(batch).map_err(|_| anyhow::anyhow!("trainer stopped"))
        };
        let result = crate::parallel::map_ordered(
            &order,
            jobs,
            |_, &idx| match &source {
                Source::Videos(v) => decode_sample(&spec, &v[idx], idx, &mean, &std),
                Source::Samples(c) => Ok(c[idx].clone()),
            },
            |_, sample| {
                match sample {
                    Ok(s) => pending.push(s),
                    Err(e) => {
                        eprintln!("vtrain: skipped: {e:#}");
                        failed += 1;
                    }
                }
                if pending.len() >= batch_size {
                    send(&mut pending, &mut failed)?;
                }
                Ok(())
            },
        );
        if result.is_ok() {
            let _ = send(&mut pending, &mut failed);
        }
    });
    rx
}

/// Training samples from per-video features (`featstore::read_features`): each video's
/// modalities in the model's order, by name, and its labels (one, or a list for multi-label
/// data). `source` names the file in errors.
pub fn feature_samples(
    videos: Vec<crate::featstore::VideoFeatures>,
    modalities: &[String],
    source: &str,
) -> Result<Vec<Sample>> {
    videos
        .into_iter()
        .map(|v| {
            let labels = match &v.label {
                Some(Label::Single(l)) if *l >= 0 => vec![*l as usize],
                Some(Label::Multi(ls)) if ls.iter().all(|l| *l >= 0) => {
                    ls.iter().map(|l| *l as usize).collect()
                }
                Some(l) => bail!("{source}: video {}: negative label {l:?}", v.id),
                None => bail!("{source}: video {} has no label", v.id),
            };
            let feats = modalities
                .iter()
                .map(|m| {
                    let a = v.modality(m).with_context(|| {
                        let have: Vec<&str> = v.modalities.iter().map(|(n, _)| n.as_str()).collect();
                        format!(
                            "{source}: video {} has no {m:?} features (it has: {})",
                            v.id,
                            have.join(", ")
                        )
                    })?;
                    if a.nrows() == 0 {
                        bail!("{source}: video {}: empty {m:?} features", v.id);
                    }
                    let data: Vec<f32> = a.iter().copied().collect();
                    Ok(Tensor::from_vec(data, a.dim(), &Device::Cpu)?)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Sample { input: Input::Features(feats), labels })
        })
        .collect()
}
