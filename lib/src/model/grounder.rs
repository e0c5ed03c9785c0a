//! The task trait of temporal grounders (DESIGN.md §2.5): a model that takes one video's snippet
//! feature sequence [T, C] and sentence queries and gives, per query, candidate segments scored
//! by how well they match the sentence. `vground` runs any of them through [`load_grounder`].
//!
//! TALL's clips are sliding windows over the video, as the reference's precomputed window
//! features (`Interval128_256_overlap0.8_c3d_fc6`: windows of 128 and 256 frames, each
//! starting 20 % of its length after the previous one). Here the windows are laid over the
//! video's frames (its duration × frame rate) and a window's feature is built from our snippet
//! features: the mean of the snippet rows whose centre time falls in the window (the snippet
//! nearest the window's centre when none does), the stand-in for the reference's C3D fc6 of
//! the window (the mean of its 16-frame units' features, TALL §4.1). Its context features are
//! built the same way over the `context_size` frames before and after it (`get_context_window`,
//! `context_num` of them on each side, averaged); where a context window would leave the video
//! (the reference's context file does not exist) the last one found, at first the window's own
//! feature, stands in. At test time the reference scores every window and moves its boundaries
//! by the predicted offsets (`reg_start = start + outputs[1]`, `reg_end = end + outputs[2]`, in
//! frames); the candidates are those moved windows in seconds, best score first (temporal NMS is
//! the metric's business: `veval --grounding`).

use super::{load_tall, registry, tall_spec, ModelConfig, Tall, TallSpec};
use crate::featstore::VideoFeatures;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use ndarray::Array2;

/// One candidate segment for a query: seconds, and the model's score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub t0: f64,
    pub t1: f64,
    pub score: f64,
}

/// A video's snippet features with where each row lies in time.
pub struct GroundingVideo<'a> {
    pub id: &'a str,
    pub rows: &'a Array2<f32>,
    /// Each row's centre, seconds.
    pub centres: Vec<f64>,
    pub duration_s: f64,
    pub fps: f64,
}

impl<'a> GroundingVideo<'a> {
    /// The `modality` rows of `v`, their times from the features (row times, else the duration
    /// shared equally), the frame rate from the features or `fps`.
    pub fn new(v: &'a VideoFeatures, modality: &str, fps: Option<f64>) -> Result<Self> {
        let rows = v.modality(modality).with_context(|| format!("no {modality:?} features"))?;
        let t = rows.nrows();
        if t == 0 {
            bail!("no feature rows");
        }
        if let Some(i) = rows.iter().position(|x| !x.is_finite()) {
            bail!("features row {} column {} is not a finite number", i / rows.ncols(), i % rows.ncols());
        }
        let fps = v.fps.or(fps).filter(|f| *f > 0.0 && f.is_finite()).context(
            "no frame rate (the features carry none): give --fps, the rate the windows' frames count in",
        )?;
        let (centres, duration_s) = match (&v.times, v.duration) {
            (Some(times), d) if times.nrows() == t => {
                let c: Vec<f64> = times.rows().into_iter().map(|r| (r[0] + r[1]) / 2.0).collect();
                let end = times.rows().into_iter().map(|r| r[1]).fold(0.0, f64::max);
                (c, d.unwrap_or(end).max(end))
            }
            (_, Some(d)) if d > 0.0 => ((0..t).map(|i| (i as f64 + 0.5) * d / t as f64).collect(), d),
            _ => bail!("the features carry neither row times nor the video's duration"),
        };
        Ok(Self { id: &v.id, rows, centres, duration_s, fps })
    }

    /// Frames in the video.
    pub fn frames(&self) -> f64 {
        self.duration_s * self.fps
    }

    /// The mean snippet feature over frames [f0, f1) (the nearest snippet when none lies in it).
    pub fn span_feature(&self, f0: f64, f1: f64) -> Vec<f32> {
        let (t0, t1) = (f0 / self.fps, f1 / self.fps);
        let lo = self.centres.partition_point(|&c| c < t0);
        let hi = self.centres.partition_point(|&c| c < t1);
        let c = self.rows.ncols();
        if hi > lo {
            let mut acc = vec![0f32; c];
            for r in lo..hi {
                for (a, x) in acc.iter_mut().zip(self.rows.row(r)) {
                    *a += x;
                }
            }
            let n = (hi - lo) as f32;
            return acc.into_iter().map(|a| a / n).collect();
        }
        let mid = (t0 + t1) / 2.0;
        let nearest = (0..self.centres.len())
            .min_by(|&a, &b| (self.centres[a] - mid).abs().total_cmp(&(self.centres[b] - mid).abs()))
            .unwrap_or(0);
        self.rows.row(nearest).to_vec()
    }

    /// `get_context_window` + `np.hstack((left, clip, right))` for the window [f0, f1) frames.
    pub fn clip_feature(&self, f0: f64, f1: f64, spec: &TallSpec) -> Vec<f32> {
        let clip = self.span_feature(f0, f1);
        let (c, total) = (spec.context_size, self.frames());
        let eps = 1e-6;
        let (mut last_left, mut last_right) = (clip.clone(), clip.clone());
        let mut left = vec![0f32; clip.len()];
        let mut right = vec![0f32; clip.len()];
        for k in 0..spec.context_num {
            let (l0, l1) = (f0 - c * (k + 1) as f64, f0 - c * k as f64);
            if l0 >= -eps {
                last_left = self.span_feature(l0, l1);
            }
            let (r0, r1) = (f1 + c * k as f64, f1 + c * (k + 1) as f64);
            if r1 <= total + eps {
                last_right = self.span_feature(r0, r1);
            }
            for (a, x) in left.iter_mut().zip(&last_left) {
                *a += x;
            }
            for (a, x) in right.iter_mut().zip(&last_right) {
                *a += x;
            }
        }
        let n = spec.context_num as f32;
        left.iter().map(|x| x / n).chain(clip).chain(right.iter().map(|x| x / n)).collect()
    }
}

/// Sliding windows [start, end) in frames over a video of `frames` frames: for each length L,
/// starts 0, L·(1 − overlap), 2·L·(1 − overlap), ... while the window ends inside the video; a
/// video shorter than every window gets one window over all of it.
pub fn sliding_windows(frames: f64, lengths: &[f64], overlap: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for &l in lengths {
        let stride = l * (1.0 - overlap);
        let mut k = 0usize;
        loop {
            let s = k as f64 * stride;
            if s + l > frames + 1e-6 {
                break;
            }
            out.push((s, s + l));
            k += 1;
        }
    }
    if out.is_empty() && frames > 0.0 {
        out.push((0.0, frames));
    }
    out
}

/// A model that grounds sentence queries in a video.
pub trait Grounder: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// The width of a snippet feature and of a sentence embedding it takes.
    fn input_sizes(&self) -> (usize, usize);

    /// For each query embedding, every candidate segment of `video`, best first.
    fn ground(&self, video: &GroundingVideo, queries: &[&[f32]]) -> Result<Vec<Vec<Candidate>>>;
}

/// Windows embedded at a time (bounds the [W, Dv] clip features held at once).
const WINDOW_CHUNK: usize = 512;

impl Tall {
    /// The test windows of `video` (frames) and their embedded clip features [W, S].
    pub fn embed_windows(&self, video: &GroundingVideo) -> Result<(Vec<(f64, f64)>, Tensor)> {
        let windows = sliding_windows(video.frames(), &self.spec.windows, self.spec.overlap);
        let dv = self.spec.visual_feature_dim;
        let mut parts = Vec::new();
        for chunk in windows.chunks(WINDOW_CHUNK) {
            let feats: Vec<f32> =
                chunk.iter().flat_map(|&(s, e)| video.clip_feature(s, e, &self.spec)).collect();
            let x = Tensor::from_vec(feats, (chunk.len(), dv), self.device())?;
            parts.push(self.embed_clips(&x)?);
        }
        Ok((windows, Tensor::cat(&parts, 0)?))
    }
}

impl Grounder for Tall {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn input_sizes(&self) -> (usize, usize) {
        (self.spec.snippet_width(), self.spec.sentence_embedding_size)
    }

    fn ground(&self, video: &GroundingVideo, queries: &[&[f32]]) -> Result<Vec<Vec<Candidate>>> {
        let (w, e) = self.input_sizes();
        if video.rows.ncols() != w {
            bail!("features are {} wide; the model takes snippet features {w} wide", video.rows.ncols());
        }
        if let Some(q) = queries.iter().find(|q| q.len() != e) {
            bail!("an embedding of {} values; the model takes {e}", q.len());
        }
        let (windows, v) = self.embed_windows(video)?;
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            let s = self.embed_sentences(&Tensor::from_slice(q, (1, e), self.device())?)?;
            let o: Vec<Vec<f32>> = self.pairs(&v, &s)?.squeeze(0)?.to_vec2()?;
            let mut c: Vec<Candidate> = windows
                .iter()
                .zip(&o)
                .map(|(&(s, e), r)| Candidate {
                    t0: (s + r[1] as f64) / video.fps,
                    t1: (e + r[2] as f64) / video.fps,
                    score: r[0] as f64,
                })
                .collect();
            c.sort_by(|a, b| b.score.total_cmp(&a.score));
            out.push(c);
        }
        Ok(out)
    }
}

/// What a registry row of a grounder calls to load its model file (config already read).
pub type GrounderLoader = fn(&std::path::Path, &ModelConfig) -> Result<Box<dyn Grounder>>;

/// Loads a grounder model file, whichever registered family it is; any other model is refused
/// with what it is and which tools run it.
pub fn load_grounder(path: &std::path::Path) -> Result<Box<dyn Grounder>> {
    let cfg = super::read_config(path)?;
    let info = registry::require_task(&cfg.arch, &[registry::Task::Grounder])
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    match info.builder {
        registry::Builder::Grounder(load) => load(path, &cfg),
        _ => bail!("{}: {} is not a grounder", path.display(), cfg.arch),
    }
}

/// TALL (the 2019 zoo's CTRL).
pub(super) fn load_tall_grounder(path: &std::path::Path, cfg: &ModelConfig) -> Result<Box<dyn Grounder>> {
    tall_spec(cfg).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    Ok(Box::new(load_tall(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_slide_by_a_fifth_of_their_length() {
        let w = sliding_windows(300.0, &[128.0, 256.0], 0.8);
        let starts: Vec<f64> = w.iter().filter(|x| x.1 - x.0 == 128.0).map(|x| x.0).collect();
        assert_eq!(starts.len(), 7); // 0, 25.6, ..., 153.6 (+128 = 281.6 ≤ 300)
        assert!((starts[1] - 25.6).abs() < 1e-9);
        assert_eq!(w.iter().filter(|x| x.1 - x.0 == 256.0).count(), 1);
        assert_eq!(sliding_windows(100.0, &[128.0], 0.8), vec![(0.0, 100.0)]);
    }

    #[test]
    fn clip_features_average_their_snippets_and_fall_back_to_the_clip() {
        // 10 snippets of 16 frames at 16 fps (one a second), feature = [row index].
        let rows = Array2::from_shape_fn((10, 1), |(i, _)| i as f32);
        let v = VideoFeatures {
            id: "v".into(),
            label: None,
            fps: Some(16.0),
            duration: Some(10.0),
            source: None,
            modalities: vec![("rgb".into(), rows)],
            times: None,
        };
        let g = GroundingVideo::new(&v, "rgb", None).unwrap();
        let spec = TallSpec { visual_feature_dim: 3, context_size: 32.0, ..Default::default() };
        // Window frames [32, 64): snippets 2 and 3; left context [0, 32): 0, 1; right [64, 96): 4, 5.
        assert_eq!(g.clip_feature(32.0, 64.0, &spec), vec![0.5, 2.5, 4.5]);
        // At the start no left context: the clip's own feature stands in.
        assert_eq!(g.clip_feature(0.0, 32.0, &spec), vec![0.5, 0.5, 2.5]);
        // A span between centres takes the nearest snippet.
        assert_eq!(g.span_feature(40.0, 42.0), vec![2.0]);
    }
}
