//! Features from a clip stream: records of kind `features`, layout `TC` (or `C`, one row), the
//! modality in the optional header key `modality`. The records of one video follow each other
//! and are concatenated along T in stream order.

use super::{VideoFeatures, TIMES};
use crate::stream::{Record, RecordHeader, StreamReader};
use anyhow::{bail, Context, Result};
use ndarray::{concatenate, Array2, Axis, Ix2};
use std::collections::HashSet;
use std::io::BufRead;

/// The modality of a features record without a `modality` key.
pub const DEFAULT_MODALITY: &str = "rgb";

/// A features record's modality and its rows as [T, C] f32.
pub fn record_rows(rec: &Record) -> Result<(String, Array2<f32>)> {
    if rec.header.kind != "features" {
        bail!("record of kind {:?}; features expected (extract them with vfeat)", rec.header.kind);
    }
    let a = rec.array.to_f32();
    let shape = a.shape().to_vec();
    let rows = match (rec.header.layout.as_deref(), shape.len()) {
        (Some("TC") | None, 2) => a.into_dimensionality::<Ix2>()?,
        (Some("C") | None, 1) => a.into_shape_with_order((1, shape[0]))?,
        (layout, _) => {
            bail!("features of shape {shape:?} with layout {layout:?}; expected TC [T, C] or C [C]")
        }
    };
    let modality = match rec.header.extra.get("modality") {
        None => DEFAULT_MODALITY.to_string(),
        Some(serde_json::Value::String(m)) if !m.is_empty() => m.clone(),
        Some(other) => bail!("header key `modality` is {other}; expected a non-empty string"),
    };
    Ok((modality, rows))
}

/// A features header's row times (key `times`: one `[start, end]` in seconds per row).
pub fn header_times(h: &RecordHeader) -> Result<Option<Vec<[f64; 2]>>> {
    let Some(v) = h.extra.get(TIMES) else { return Ok(None) };
    let bad = || anyhow::anyhow!("header key `{TIMES}` must be a list of [start, end] pairs in seconds");
    let rows = v.as_array().ok_or_else(bad)?;
    rows.iter()
        .map(|r| match r.as_array().map(|p| p.iter().map(|x| x.as_f64()).collect::<Vec<_>>()) {
            Some(p) if p.len() == 2 => Ok([p[0].ok_or_else(bad)?, p[1].ok_or_else(bad)?]),
            _ => Err(bad()),
        })
        .collect::<Result<_>>()
        .map(Some)
}

/// Yields one `VideoFeatures` per video of a features stream, as soon as the video's last record
/// has been read (when another video starts, or at the end).
pub struct FeatureStreamReader<R: BufRead> {
    records: StreamReader<R>,
    /// The first record of the next video, read while finishing the previous one.
    lookahead: Option<Record>,
    finished: HashSet<String>,
    records_read: usize,
}

impl<R: BufRead> FeatureStreamReader<R> {
    /// `source` names the stream in error messages (a path, or `<stdin>`).
    pub fn new(inner: R, source: impl Into<String>) -> Self {
        Self {
            records: StreamReader::new(inner, source),
            lookahead: None,
            finished: HashSet::new(),
            records_read: 0,
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        if let Some(r) = self.lookahead.take() {
            return Ok(Some(r));
        }
        let r = self.records.next_record()?;
        if r.is_some() {
            self.records_read += 1;
        }
        Ok(r)
    }

    /// The next video, `None` at the end of the stream.
    pub fn next_video(&mut self) -> Result<Option<VideoFeatures>> {
        let Some(first) = self.next_record()? else { return Ok(None) };
        let source = self.records.source().to_string();
        let n = self.records_read - 1;
        let id =
            first.header.video.clone().with_context(|| format!("{source}: record {n}: no `video` key"))?;
        if !self.finished.insert(id.clone()) {
            bail!("{source}: record {n}: video {id:?} appears again after other videos (its records must follow each other)");
        }
        let mut video = VideoBuilder::new(&first.header, &id);
        let mut rec = first;
        let mut n = n;
        loop {
            video.push(&rec).with_context(|| format!("{source}: record {n} ({id})"))?;
            match self.next_record()? {
                Some(r) if r.header.video.as_deref() == Some(id.as_str()) => {
                    rec = r;
                    n = self.records_read - 1;
                }
                other => {
                    self.lookahead = other;
                    break;
                }
            }
        }
        Ok(Some(video.finish()?))
    }
}

/// Builds one video's features from its `features` records: the first record's header gives
/// the attributes, each record's rows are appended to its modality.
pub struct VideoBuilder {
    video: VideoFeatures,
    parts: Vec<(String, Vec<Array2<f32>>)>,
    /// Row times of the records of the first modality; `None` once a record lacks them.
    times: Option<Vec<[f64; 2]>>,
}

impl VideoBuilder {
    pub fn new(first: &RecordHeader, id: &str) -> Self {
        let num_frames = first.extra.get("num_frames").and_then(|v| v.as_f64());
        let duration =
            first.extra.get("duration").and_then(|v| v.as_f64()).or(match (num_frames, first.fps) {
                (Some(n), Some(fps)) if fps > 0.0 => Some(n / fps),
                _ => None,
            });
        let source = first.extra.get("source").and_then(|v| v.as_str()).unwrap_or(id);
        let video = VideoFeatures {
            id: id.to_string(),
            label: first.label.clone(),
            fps: first.fps,
            duration,
            source: Some(source.to_string()),
            modalities: Vec::new(),
            times: None,
        };
        Self { video, parts: Vec::new(), times: Some(Vec::new()) }
    }

    pub fn push(&mut self, rec: &Record) -> Result<()> {
        let (modality, rows) = record_rows(rec)?;
        let first_modality = self.parts.first().is_none_or(|(m, _)| *m == modality);
        if first_modality {
            match (header_times(&rec.header)?, &mut self.times) {
                (Some(t), Some(all)) if t.len() == rows.nrows() => all.extend(t),
                (Some(t), Some(_)) => bail!("{} row times for {} rows", t.len(), rows.nrows()),
                _ => self.times = None,
            }
        }
        match self.parts.iter_mut().find(|(m, _)| *m == modality) {
            Some((_, v)) if v[0].ncols() != rows.ncols() => {
                bail!("{} {modality} channels after {}", rows.ncols(), v[0].ncols())
            }
            Some((_, v)) => v.push(rows),
            None => self.parts.push((modality, vec![rows])),
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<VideoFeatures> {
        // In name order, as a store lists its datasets.
        self.parts.sort_by(|a, b| a.0.cmp(&b.0));
        for (modality, v) in self.parts {
            let views: Vec<_> = v.iter().map(|a| a.view()).collect();
            self.video.modalities.push((modality, concatenate(Axis(0), &views)?));
        }
        if let Some(t) = self.times.filter(|t| !t.is_empty()) {
            let rows = t.len();
            let times = Array2::from_shape_vec((rows, 2), t.into_iter().flatten().collect())?;
            super::h5::check_times(&self.video, &times)?;
            self.video.times = Some(times);
        }
        Ok(self.video)
    }
}

impl<R: BufRead> Iterator for FeatureStreamReader<R> {
    type Item = Result<VideoFeatures>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_video().transpose()
    }
}
