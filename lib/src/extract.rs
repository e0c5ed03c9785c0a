//! Feature extraction (`vfeat`): a video's frame records through a backbone to one [T, C] matrix
//! of per-frame features. Views of a clip (spatial crops) are averaged, clips are concatenated in
//! clip order, so a video sampled as K clips of F frames gives K·F rows.

use crate::infer::clip_tensor;
use crate::model::Model;
use crate::stream::{Record, RecordHeader};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use ndarray::{concatenate, Array2, Axis};
use std::collections::BTreeMap;

/// Which activations become features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// The pooled output of the last stage: what the classifier sees.
    Pool,
    /// The globally average-pooled output of backbone stage N (`layerN`, torchvision's names).
    Stage(usize),
}

impl std::str::FromStr for Layer {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "pool" {
            return Ok(Self::Pool);
        }
        match s.strip_prefix("layer").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n >= 1 => Ok(Self::Stage(n)),
            _ => bail!("unknown layer {s:?} (pool, layer1, layer2, ...)"),
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layer::Pool => write!(f, "pool"),
            Layer::Stage(n) => write!(f, "layer{n}"),
        }
    }
}

/// Runs a model as a feature extractor, `batch_frames` frames per forward pass.
pub struct Extractor<'a> {
    model: &'a Model,
    layer: Layer,
    stage: usize,
    batch_frames: usize,
    device: Device,
}

impl<'a> Extractor<'a> {
    pub fn new(model: &'a Model, layer: Layer, batch_frames: usize, device: Device) -> Result<Self> {
        if model.takes_features() {
            bail!(
                "{} takes feature sequences; vfeat runs a frame backbone (tsn_*, tsm_*)",
                model.config().arch
            );
        }
        let stages = model.num_stages();
        let stage = match layer {
            Layer::Pool => stages,
            Layer::Stage(n) if n <= stages => n,
            Layer::Stage(n) => {
                bail!("{} has stages layer1 to layer{stages}, not layer{n}", model.config().arch)
            }
        };
        Ok(Self { model, layer, stage, batch_frames: batch_frames.max(1), device })
    }

    /// Frames per forward pass: `batch_frames`, rounded down to whole groups for models that
    /// couple frames (TSM: groups of `frames`), at least one group.
    fn chunk_frames(&self) -> usize {
        match self.model.temporal_group() {
            Some(g) => (self.batch_frames / g).max(1) * g,
            None => self.batch_frames,
        }
    }

    /// Per-frame features [T_i, C] of normalised clips [T_i, 3, H, W] of one frame size.
    pub fn clip_features(&self, clips: &[Tensor]) -> Result<Vec<Array2<f32>>> {
        let group = self.model.temporal_group().unwrap_or(1);
        let lens: Vec<usize> = clips.iter().map(|c| c.dim(0)).collect::<candle_core::Result<_>>()?;
        let frames = Tensor::cat(clips, 0)?;
        let total = frames.dim(0)?;
        let (_, c, h, w) = frames.dims4()?;
        let chunk = self.chunk_frames();
        let mut rows: Vec<Array2<f32>> = Vec::new();
        // Rows per group of frames: `group` for 2D models (one per frame), 1 for 3D models (one
        // per clip).
        let mut rows_per_group = group;
        let mut start = 0;
        while start < total {
            let len = chunk.min(total - start);
            let x = frames.narrow(0, start, len)?.reshape((len / group, group, c, h, w))?;
            let y = self.model.stage_features_t(&x, self.stage, false)?;
            rows_per_group = y.dim(1)?;
            let n = y.dim(0)? * rows_per_group;
            let y = y.reshape((n, ()))?.to_dtype(candle_core::DType::F32)?;
            let ch = y.dim(1)?;
            rows.push(Array2::from_shape_vec((n, ch), y.flatten_all()?.to_vec1::<f32>()?)?);
            start += len;
        }
        let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
        let all = concatenate(Axis(0), &views)?;
        let mut out = Vec::with_capacity(lens.len());
        let mut at = 0;
        for n in lens {
            let n = n / group * rows_per_group;
            out.push(all.slice(ndarray::s![at..at + n, ..]).to_owned());
            at += n;
        }
        Ok(out)
    }

    /// One video's frame records (clips × views, as `vsample` writes them) to a `features`
    /// header and [T, C] rows: views averaged, clips concatenated in clip order.
    pub fn video_features(&self, records: &[Record]) -> Result<(RecordHeader, Array2<f32>)> {
        let mut video = VideoAccumulator::default();
        for rec in records {
            self.add(&mut video, rec.clone())?;
        }
        self.finish(video)
    }

    /// Adds one record of a video, in stream order. Records wait until whole clips of about
    /// `batch_frames` frames are pending, then run: a video's frames are never all held, only
    /// its features (DESIGN.md §1). A record of kind `error` (a producer that failed part-way)
    /// fails the video with the producer's message.
    pub fn add(&self, video: &mut VideoAccumulator, rec: Record) -> Result<()> {
        let i = video.records;
        video.records += 1;
        if rec.header.kind == "error" {
            let why = rec.header.extra.get("error").and_then(|e| e.as_str()).unwrap_or("no reason given");
            bail!("the producer failed on this video after {i} records: {why}");
        }
        if rec.header.kind != "frames" {
            bail!(
                "record {i} of the video (clip {:?}, view {:?}): kind {:?}; vfeat takes frames",
                rec.header.clip,
                rec.header.view,
                rec.header.kind
            );
        }
        // Records without a clip number are clips of their own, in stream order.
        let key = rec.header.clip.unwrap_or(i);
        if key < video.taken_below {
            bail!("record {i} of the video: clip {key} after later clips were written (a clip's records must follow each other)");
        }
        video.last_key = Some(key);
        let new_clip = video.pending.last().is_some_and(|(k, _)| *k != key);
        if new_clip && video.pending_frames >= self.chunk_frames() {
            self.flush(video)?;
        }
        if video.header.is_none() {
            video.header = Some(rec.header.clone());
        }
        video.pending_frames += rec.array.shape().first().copied().unwrap_or(0);
        video.pending.push((key, rec));
        Ok(())
    }

    /// The video's `features` header and rows, once all its records were added.
    pub fn finish(&self, mut video: VideoAccumulator) -> Result<(RecordHeader, Array2<f32>)> {
        self.flush(&mut video)?;
        let rows = drain_clips(&mut video, None)?;
        let mut h = self.features_header(&video)?;
        if let Some(t) = &rows.times {
            h.extra.insert(crate::featstore::TIMES.into(), serde_json::json!(t));
        }
        h.indices = rows.indices.filter(|ix| ix.len() == rows.rows.nrows());
        h.t1 = rows.t1.or(h.t1);
        Ok((h, rows.rows))
    }

    /// The rows of the clips that are complete (every clip before the one the last record
    /// belongs to), in clip order, taken out of the accumulator: a caller that writes them as
    /// they come holds no more than a batch of a long video's features. `None` when no clip
    /// is complete yet.
    pub fn take_complete(&self, video: &mut VideoAccumulator) -> Result<Option<ClipRowsOut>> {
        let Some(last) = video.last_key else { return Ok(None) };
        let rows = drain_clips(video, Some(last))?;
        Ok((rows.rows.nrows() > 0).then_some(rows))
    }

    /// The rows that `take_complete` has not taken, once all records were added.
    pub fn finish_rows(&self, mut video: VideoAccumulator) -> Result<ClipRowsOut> {
        self.flush(&mut video)?;
        drain_clips(&mut video, None)
    }

    /// The video's `features` header, from its first record (`layer` added; the clip, view and
    /// normalisation keys dropped).
    pub fn features_header(&self, video: &VideoAccumulator) -> Result<RecordHeader> {
        let Some(mut h) = video.header.clone() else { bail!("a video without records") };
        h.kind = "features".into();
        h.layout = Some("TC".into());
        h.indices = None;
        (h.clip, h.view, h.num_clips, h.num_views, h.norm) = (None, None, None, None, None);
        h.extra.insert("layer".into(), self.layer.to_string().into());
        Ok(h)
    }

    /// Runs the pending records and adds their features to their clips' sums.
    fn flush(&self, video: &mut VideoAccumulator) -> Result<()> {
        if video.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut video.pending);
        video.pending_frames = 0;
        let first = video.records - pending.len();
        let records: Vec<&Record> = pending.iter().map(|(_, r)| r).collect();
        let feats = self.record_features(&records, first)?;
        for ((key, rec), f) in pending.into_iter().zip(feats) {
            match video.clips.get_mut(&key) {
                Some(clip) => {
                    if clip.sum.dim() != f.dim() {
                        bail!("clip {key}: views of {} and {} frames", f.nrows(), clip.sum.nrows());
                    }
                    clip.sum += &f;
                    clip.views += 1;
                }
                None => {
                    let h = rec.header;
                    video
                        .clips
                        .insert(key, ClipRows { sum: f, views: 1, indices: h.indices, t0: h.t0, t1: h.t1 });
                }
            }
        }
        Ok(())
    }

    /// Per-record features [T_i, C] of frame records; `first` numbers them in error messages.
    fn record_features(&self, records: &[&Record], first: usize) -> Result<Vec<Array2<f32>>> {
        let cfg = self.model.config();
        let group = self.model.temporal_group();
        let mut tensors = Vec::with_capacity(records.len());
        for (i, rec) in records.iter().enumerate() {
            let ctx = || {
                format!(
                    "record {} of the video (clip {:?}, view {:?})",
                    first + i,
                    rec.header.clip,
                    rec.header.view
                )
            };
            let t = clip_tensor(rec, &cfg.mean, &cfg.std, &self.device).with_context(ctx)?;
            let (n, _, h, w) = t.dims4()?;
            if n == 0 || h == 0 || w == 0 {
                bail!("{}: empty frames {:?}", ctx(), rec.array.shape());
            }
            if let Some(g) = group {
                if n % g != 0 {
                    bail!(
                        "{}: {n} frames; {} shifts across clips of {g} frames, so T must be a multiple of {g}",
                        ctx(),
                        cfg.arch
                    );
                }
            }
            tensors.push(t);
        }
        // Run clips of one frame size together.
        let mut feats: Vec<Option<Array2<f32>>> = vec![None; records.len()];
        let mut by_size: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
        for (i, t) in tensors.iter().enumerate() {
            by_size.entry(t.dims()[1..].to_vec()).or_default().push(i);
        }
        for members in by_size.values() {
            let clips: Vec<Tensor> = members.iter().map(|&i| tensors[i].clone()).collect();
            for (&i, f) in members.iter().zip(self.clip_features(&clips)?) {
                feats[i] = Some(f);
            }
        }
        Ok(feats.into_iter().map(|f| f.expect("every record ran")).collect())
    }
}

/// One video's features as its records arrive (`Extractor::add`): the clips done so far as
/// sums over their views, and the records waiting to run.
#[derive(Default)]
pub struct VideoAccumulator {
    header: Option<RecordHeader>,
    records: usize,
    pending: Vec<(usize, Record)>,
    pending_frames: usize,
    clips: BTreeMap<usize, ClipRows>,
    /// The clip key of the last record added, and the clips already taken (all keys below).
    last_key: Option<usize>,
    taken_below: usize,
}

/// Rows of consecutive clips (views averaged), with their row times when every clip has them,
/// their frame numbers, and the last clip's end time.
#[derive(Debug)]
pub struct ClipRowsOut {
    pub rows: Array2<f32>,
    pub times: Option<Vec<[f64; 2]>>,
    pub indices: Option<Vec<i64>>,
    pub t1: Option<f64>,
}

/// Takes the clips with keys below `below` (all when `None`) out of the accumulator.
fn drain_clips(video: &mut VideoAccumulator, below: Option<usize>) -> Result<ClipRowsOut> {
    let fps = video.header.as_ref().and_then(|h| h.fps);
    let keys: Vec<usize> = video.clips.keys().copied().take_while(|k| below.is_none_or(|b| *k < b)).collect();
    let mut rows = Vec::with_capacity(keys.len());
    let mut indices: Option<Vec<i64>> = Some(Vec::new());
    let mut times: Option<Vec<[f64; 2]>> = Some(Vec::new());
    let mut t1 = None;
    for k in keys {
        let clip = video.clips.remove(&k).expect("listed key");
        match (&mut times, clip.row_times(fps)) {
            (Some(all), Some(t)) => all.extend(t),
            _ => times = None,
        }
        rows.push(clip.sum / clip.views as f32);
        match (&mut indices, clip.indices) {
            (Some(all), Some(ix)) => all.extend_from_slice(&ix),
            _ => indices = None,
        }
        t1 = clip.t1;
        video.taken_below = video.taken_below.max(k + 1);
    }
    let channels = video.clips.values().next().map_or(0, |c| c.sum.ncols());
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let rows = if views.is_empty() { Array2::zeros((0, channels)) } else { concatenate(Axis(0), &views)? };
    Ok(ClipRowsOut { rows, times, indices, t1 })
}

impl VideoAccumulator {
    /// Records added so far.
    pub fn records(&self) -> usize {
        self.records
    }
}

struct ClipRows {
    sum: Array2<f32>,
    views: usize,
    indices: Option<Vec<i64>>,
    t0: Option<f64>,
    t1: Option<f64>,
}

impl ClipRows {
    /// Where each row lies in the source: a frame's own [i / fps, (i + 1) / fps] for per-frame
    /// rows (2D backbones), the clip's [t0, t1] for one row per clip (3D backbones).
    fn row_times(&self, fps: Option<f64>) -> Option<Vec<[f64; 2]>> {
        let rows = self.sum.nrows();
        match (&self.indices, fps) {
            (Some(ix), Some(fps)) if ix.len() == rows && rows > 1 && fps > 0.0 => {
                Some(ix.iter().map(|&i| [i as f64 / fps, (i + 1) as f64 / fps]).collect())
            }
            _ if rows == 1 => Some(vec![[self.t0?, self.t1?]]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{build, init_weights, ModelConfig};
    use crate::stream::Array;
    use candle_nn::{VarBuilder, VarMap};

    fn model(arch: &str, frames: usize) -> Model {
        let mut cfg = ModelConfig::defaults(arch);
        cfg.num_classes = 3;
        cfg.base_width = 4;
        cfg.frames = frames;
        let varmap = VarMap::new();
        let m = build(&cfg, VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu)).unwrap();
        init_weights(&varmap, 5).unwrap();
        m
    }

    fn frames(t: usize, seed: u8, clip: usize, view: usize) -> Record {
        let a = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[t, 16, 16, 3]), |i| {
            (i[0] * 31 + i[1] * 7 + i[2] * 3 + i[3] + seed as usize) as u8
        });
        let mut h = RecordHeader::frames("v");
        (h.clip, h.view, h.num_clips, h.num_views) = (Some(clip), Some(view), Some(2), Some(2));
        h.indices = Some((0..t as i64).map(|i| i + 100 * clip as i64).collect());
        Record { header: h, array: Array::U8(a) }
    }

    fn features_of(m: &Model, rec: &Record, stage: usize) -> Array2<f32> {
        let cfg = m.config();
        let x = clip_tensor(rec, &cfg.mean, &cfg.std, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let y = m.stage_features_t(&x, stage, false).unwrap().squeeze(0).unwrap();
        let (t, c) = y.dims2().unwrap();
        Array2::from_shape_vec((t, c), y.flatten_all().unwrap().to_vec1().unwrap()).unwrap()
    }

    fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
        assert_eq!(a.dim(), b.dim());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn views_average_and_clips_concatenate_whatever_the_batch() {
        for arch in ["tsn_r18", "tsm_r18"] {
            let m = model(arch, 2);
            let recs = vec![frames(4, 0, 0, 0), frames(4, 9, 0, 1), frames(4, 50, 1, 0), frames(4, 77, 1, 1)];
            let want0 = (features_of(&m, &recs[0], 4) + features_of(&m, &recs[1], 4)) / 2.0;
            let want1 = (features_of(&m, &recs[2], 4) + features_of(&m, &recs[3], 4)) / 2.0;
            let want = concatenate(Axis(0), &[want0.view(), want1.view()]).unwrap();
            for batch in [1, 3, 64] {
                let ex = Extractor::new(&m, Layer::Pool, batch, Device::Cpu).unwrap();
                let (h, got) = ex.video_features(&recs).unwrap();
                assert!(max_diff(&got, &want) < 1e-4, "{arch} batch {batch}: {}", max_diff(&got, &want));
                assert_eq!(h.kind, "features");
                assert_eq!(h.indices, Some(vec![0, 1, 2, 3, 100, 101, 102, 103]));
                assert_eq!((h.clip, h.num_views), (None, None));
            }
            let ex = Extractor::new(&m, "layer2".parse().unwrap(), 8, Device::Cpu).unwrap();
            let (_, l2) = ex.video_features(&recs[..1]).unwrap();
            assert!(max_diff(&l2, &features_of(&m, &recs[0], 2)) < 1e-5);
            assert_eq!(l2.ncols(), 8); // ResNet-18 stage 2: 2 × base width 4
        }
    }

    #[test]
    fn tsm_needs_whole_groups_and_unknown_layers_are_refused() {
        let m = model("tsm_r18", 4);
        let ex = Extractor::new(&m, Layer::Pool, 8, Device::Cpu).unwrap();
        let err = ex.video_features(&[frames(6, 0, 0, 0)]).unwrap_err();
        assert!(format!("{err:#}").contains("multiple of 4"), "{err:#}");
        assert!(Extractor::new(&m, Layer::Stage(5), 8, Device::Cpu).is_err());
        assert!("layer0".parse::<Layer>().is_err() && "fc".parse::<Layer>().is_err());
    }
}
