//! Sliding windows over a long video's frames (`vclassify --window W --stride S`), as
//! MMAction2's `demo/long_video_demo.py` classifies a long video: the incoming frames of one
//! video (in time order, each record carrying `indices` and `fps`) are grouped into windows of
//! W seconds starting every S seconds; each window, once complete, becomes one clip of the
//! model's frames taken with the model's own sampler (test mode) over the window's frames.
//! Only the frames of windows still open are held, so memory is bounded by W, not by the
//! video's length.

use crate::rng::Rng;
use crate::sample::SamplerConfig;
use crate::stream::{Array, Label, Record, RecordHeader};
use anyhow::{bail, Context, Result};
use ndarray::{Array3, Axis};
use std::collections::VecDeque;

/// Window length and stride in seconds, and how a window's frames become a clip.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    pub window_s: f64,
    pub stride_s: f64,
    /// The model's sampler (test mode, one clip), run over the window's frames.
    pub sampler: SamplerConfig,
}

impl WindowSpec {
    pub fn validate(&self) -> Result<()> {
        if !(self.window_s > 0.0 && self.window_s.is_finite()) {
            bail!("--window must be a positive number of seconds");
        }
        if !(self.stride_s > 0.0 && self.stride_s.is_finite()) {
            bail!("--stride must be a positive number of seconds");
        }
        Ok(())
    }
}

/// One complete window: its number, span and the model's clip (a `frames` record).
#[derive(Debug)]
pub struct Window {
    pub number: usize,
    pub t0: f64,
    pub t1: f64,
    pub clip: Record,
}

struct Frame {
    t: f64,
    index: i64,
    pixels: Array3<u8>,
}

/// Builds the windows of one video from its frame records, in time order.
pub struct WindowBuilder {
    spec: WindowSpec,
    video: String,
    label: Option<Label>,
    fps: f64,
    frames: VecDeque<Frame>,
    /// The next window to complete.
    next: usize,
    /// End of the last frame seen, in seconds.
    end: f64,
    /// The video's duration (`num_frames / fps`), when the records say.
    duration: Option<f64>,
    last_index: Option<i64>,
}

impl WindowBuilder {
    /// A builder for the video of `first` (its first record).
    pub fn new(spec: WindowSpec, first: &RecordHeader) -> Result<Self> {
        let fps = first
            .fps
            .filter(|f| *f > 0.0)
            .context("--window needs records with the video's fps and frame indices (vsample writes them)")?;
        Ok(Self {
            spec,
            video: first.video.clone().unwrap_or_default(),
            label: first.label.clone(),
            fps,
            frames: VecDeque::new(),
            next: 0,
            end: 0.0,
            duration: first.extra.get("num_frames").and_then(|n| n.as_f64()).map(|n| n / fps),
            last_index: None,
        })
    }

    pub fn video(&self) -> &str {
        &self.video
    }

    /// Adds a record's frames; returns the windows they complete.
    pub fn push(&mut self, rec: &Record) -> Result<Vec<Window>> {
        if rec.header.kind != "frames" {
            bail!("record of kind {:?}; --window takes frames", rec.header.kind);
        }
        let Array::U8(pixels) = &rec.array else {
            bail!("--window takes uint8 frames (vsample without --normalize)");
        };
        let shape = pixels.shape();
        if shape.len() != 4 || shape[3] != 3 {
            bail!("expected frames of shape [T, H, W, 3], got {shape:?}");
        }
        let indices = rec.header.indices.as_ref().context("--window needs each record's frame `indices`")?;
        if indices.len() != shape[0] {
            bail!("{} indices for {} frames", indices.len(), shape[0]);
        }
        let mut done = Vec::new();
        for (k, &index) in indices.iter().enumerate() {
            if self.last_index.is_some_and(|last| index <= last) {
                bail!(
                    "frame {index} after frame {}: --window needs frames in time order",
                    self.last_index.unwrap_or(0)
                );
            }
            self.last_index = Some(index);
            let t = index as f64 / self.fps;
            while t >= self.window_end(self.next) {
                done.extend(self.take_window(f64::INFINITY)?);
            }
            self.frames.push_back(Frame {
                t,
                index,
                pixels: pixels.index_axis(Axis(0), k).into_dimensionality()?.to_owned(),
            });
            self.end = (index + 1) as f64 / self.fps;
        }
        Ok(done)
    }

    /// At the end of the video: the full windows still open, or, when the video was shorter
    /// than one window, one window over all of it. The video ends at its duration when the
    /// records give one (frames sampled at a rate end before it), else after the last frame.
    pub fn finish(mut self) -> Result<Vec<Window>> {
        let mut done = Vec::new();
        self.end = self.end.max(self.duration.unwrap_or(0.0));
        // A window ending within a rounding error of the last frame's end is full.
        while self.window_end(self.next) <= self.end + 1e-9 && !self.frames.is_empty() {
            done.extend(self.take_window(self.end)?);
        }
        if self.next == 0 && !self.frames.is_empty() {
            let frames: Vec<&Frame> = self.frames.iter().collect();
            done.push(self.clip_of(0, 0.0, self.end, &frames)?);
        }
        Ok(done)
    }

    fn window_start(&self, j: usize) -> f64 {
        j as f64 * self.spec.stride_s
    }

    fn window_end(&self, j: usize) -> f64 {
        self.window_start(j) + self.spec.window_s
    }

    /// Window `next` from the frames inside it (none when the frames skip it), its end no
    /// later than `video_end`; then the frames no later window needs are dropped.
    fn take_window(&mut self, video_end: f64) -> Result<Option<Window>> {
        let j = self.next;
        let (t0, t1) = (self.window_start(j), self.window_end(j));
        let inside: Vec<&Frame> = self.frames.iter().filter(|f| f.t >= t0 && f.t < t1).collect();
        let w =
            if inside.is_empty() { None } else { Some(self.clip_of(j, t0, t1.min(video_end), &inside)?) };
        self.next += 1;
        let keep_from = self.window_start(self.next);
        while self.frames.front().is_some_and(|f| f.t < keep_from) {
            self.frames.pop_front();
        }
        Ok(w)
    }

    fn clip_of(&self, number: usize, t0: f64, t1: f64, frames: &[&Frame]) -> Result<Window> {
        let picks = self.spec.sampler.sample(frames.len(), &mut Rng::new(0)).clips.remove(0);
        let views: Vec<_> = picks.iter().map(|&p| frames[p].pixels.view()).collect();
        let pixels = ndarray::stack(Axis(0), &views)?;
        let mut h = RecordHeader::frames(self.video.clone());
        h.label = self.label.clone();
        h.clip = Some(number);
        h.indices = Some(picks.iter().map(|&p| frames[p].index).collect());
        h.fps = Some(self.fps);
        (h.t0, h.t1) = (Some(t0), Some(t1));
        Ok(Window { number, t0, t1, clip: Record { header: h, array: Array::U8(pixels.into_dyn()) } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::SamplerKind;

    /// A record of frames at `indices`, each frame filled with its index.
    fn rec(indices: &[i64]) -> Record {
        let a = ndarray::Array4::from_shape_fn((indices.len(), 2, 2, 3), |(t, ..)| indices[t] as u8);
        let mut h = RecordHeader::frames("v");
        h.fps = Some(4.0);
        h.indices = Some(indices.to_vec());
        Record { header: h, array: Array::U8(a.into_dyn()) }
    }

    fn spec(window_s: f64, stride_s: f64, frames: usize) -> WindowSpec {
        WindowSpec {
            window_s,
            stride_s,
            sampler: SamplerConfig {
                kind: SamplerKind::Segment,
                frames,
                interval: 1,
                clips: 1,
                train: false,
                seglen: 1,
            },
        }
    }

    #[test]
    fn windows_of_w_seconds_every_s_seconds_in_time_order() {
        // 4 frames per second (every 5th frame of a 20 fps source: index / 4 fps = seconds here),
        // 10 s; windows of 2 s every 1 s: [0,2), [1,3), ..., [8,10): 9 windows of 8 frames.
        let mut b = WindowBuilder::new(spec(2.0, 1.0, 4), &rec(&[0]).header).unwrap();
        let all: Vec<i64> = (0..40).collect();
        let mut got = Vec::new();
        for chunk in all.chunks(7) {
            got.extend(b.push(&rec(chunk)).unwrap());
            // never more than one window's frames (plus the one arriving) held
            assert!(b.frames.len() <= 9, "{}", b.frames.len());
        }
        got.extend(b.finish().unwrap());
        let spans: Vec<(usize, f64, f64)> = got.iter().map(|w| (w.number, w.t0, w.t1)).collect();
        assert_eq!(spans, (0..9).map(|j| (j, j as f64, j as f64 + 2.0)).collect::<Vec<_>>());
        // window 3 holds frames 12..=19; PaddleVideo segment sampling of 8 into 4: 0, 2, 4, 6
        let w = &got[3];
        assert_eq!(w.clip.header.indices.as_deref(), Some(&[12i64, 14, 16, 18][..]));
        let Array::U8(px) = &w.clip.array else { panic!() };
        assert_eq!(px.shape(), &[4, 2, 2, 3]);
        assert_eq!(px[[1, 0, 0, 0]], 14);
    }

    #[test]
    fn a_short_video_is_one_window_and_disorder_is_refused() {
        let mut b = WindowBuilder::new(spec(8.0, 1.0, 2), &rec(&[0]).header).unwrap();
        assert!(b.push(&rec(&[0, 1, 2, 3, 4])).unwrap().is_empty());
        let w = b.finish().unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].t0, w[0].t1), (0.0, 1.25));
        let mut b = WindowBuilder::new(spec(1.0, 1.0, 2), &rec(&[0]).header).unwrap();
        b.push(&rec(&[0, 1, 2])).unwrap();
        assert!(b.push(&rec(&[2, 3])).unwrap_err().to_string().contains("time order"));
        let mut h = rec(&[0]).header;
        h.fps = None;
        assert!(WindowBuilder::new(spec(1.0, 1.0, 2), &h).is_err());
        assert!(spec(0.0, 1.0, 2).validate().is_err() && spec(1.0, -1.0, 2).validate().is_err());
    }
}
