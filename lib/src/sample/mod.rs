//! Frame-index samplers (DESIGN.md §3). Each returns, for a video of `num_frames` frames, the
//! source frame numbers of every clip. Videos shorter than a clip needs repeat frames as their
//! reference does (modulo for segment sampling, clamping to the last frame for dense/uniform);
//! `SampledClips::repeated` says when that happened.

use crate::rng::Rng;
use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    /// PaddleVideo `Sampler` (TSN/TSM/PP-TSM): integer segment length.
    Segment,
    /// MMAction2 `SampleFrames` with clip_len 1 (TSN): float segment length.
    SegmentMmaction,
    /// Dense clips of `frames` × `interval` (PySlowFast / pytorchvideo).
    Dense,
    /// `frames` points from the first to the last frame, endpoints included (PP-TimeSformer).
    Uniform,
    /// A snippet of `frames` consecutive frames centred every `interval` frames over the whole
    /// video (MMAction2 `UntrimmedSampleFrames`): features for temporal localization.
    Untrimmed,
    /// The 2019 Paddle zoo's StNet reader: `frames / seglen` segments of `seglen` consecutive
    /// frames each.
    Stnet,
}

impl std::str::FromStr for SamplerKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "segment" => Self::Segment,
            "segment-mmaction" => Self::SegmentMmaction,
            "dense" => Self::Dense,
            "uniform" => Self::Uniform,
            "untrimmed" => Self::Untrimmed,
            "stnet" => Self::Stnet,
            _ => bail!("unknown sampler {s:?} (segment, segment-mmaction, dense, uniform, untrimmed, stnet)"),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    pub kind: SamplerKind,
    /// Segments (segment samplers, uniform) or clip length (dense).
    pub frames: usize,
    /// Frame interval inside a dense clip; for `Untrimmed`, frames from one snippet's centre
    /// to the next (MMAction2's `clip_interval`).
    pub interval: usize,
    /// Temporal clips per video.
    pub clips: usize,
    /// Random (training) rather than deterministic (test) sampling.
    pub train: bool,
    /// Consecutive frames per segment (`stnet`: the reader's `seglen`, T); 1 for the others.
    /// A clip still has `frames` frames: `frames / seglen` segments.
    pub seglen: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SampledClips {
    pub clips: Vec<Vec<usize>>,
    /// True when the video was too short and frames had to repeat.
    pub repeated: bool,
}

impl SamplerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.frames == 0 {
            bail!("--frames must be at least 1");
        }
        if self.clips == 0 {
            bail!("--clips must be at least 1");
        }
        if self.interval == 0 {
            bail!("--interval must be at least 1");
        }
        if self.seglen == 0 {
            bail!("--seglen must be at least 1");
        }
        if self.kind == SamplerKind::Stnet {
            if self.frames % self.seglen != 0 {
                bail!(
                    "--sampler stnet: --frames {} is not a whole number of --seglen {} segments",
                    self.frames,
                    self.seglen
                );
            }
        } else if self.seglen != 1 {
            bail!("--seglen applies to --sampler stnet");
        }
        if self.kind == SamplerKind::Untrimmed {
            if self.clips != 1 {
                bail!("--sampler untrimmed takes a snippet every --interval frames over the whole video; leave --clips at 1");
            }
            if self.train {
                bail!("--sampler untrimmed is a test-time sampler (snippets for features); it has no --train mode");
            }
        }
        Ok(())
    }

    /// Frames a clip spans in the source; a shorter video repeats frames.
    pub fn span(&self) -> usize {
        match self.kind {
            SamplerKind::Dense => self.frames * self.interval,
            _ => self.frames,
        }
    }

    pub fn sample(&self, num_frames: usize, rng: &mut Rng) -> SampledClips {
        assert!(num_frames > 0, "sample() on an empty video");
        if self.kind == SamplerKind::Untrimmed {
            let clips = untrimmed(num_frames, self.frames, self.interval);
            return SampledClips { clips, repeated: num_frames < self.frames };
        }
        let clips: Vec<Vec<usize>> = (0..self.clips)
            .map(|k| match self.kind {
                SamplerKind::Segment => segment_paddle(num_frames, self.frames, self.train, rng),
                SamplerKind::SegmentMmaction => {
                    segment_mmaction(num_frames, self.frames, self.train, k, self.clips, rng)
                }
                SamplerKind::Dense => {
                    dense(num_frames, self.frames, self.interval, self.train, k, self.clips, rng)
                }
                SamplerKind::Uniform => uniform(num_frames, self.frames),
                SamplerKind::Stnet => {
                    stnet(num_frames, self.frames / self.seglen, self.seglen, self.train, rng)
                }
                SamplerKind::Untrimmed => unreachable!("handled above"),
            })
            .collect();
        let repeated = num_frames < self.span();
        SampledClips { clips, repeated }
    }
}

/// PaddleVideo `paddlevideo/loader/pipelines/sample.py`, `Sampler.__call__` with seg_len 1:
/// `average_dur = int(frames_len / num_seg)`; train `idx = randint(0, average_dur - 1) + i *
/// average_dur`, test `idx = (average_dur - 1) // 2 + i * average_dur`; when `average_dur < 1`,
/// `idx = i`; finally `idx % frames_len`.
fn segment_paddle(len: usize, num_seg: usize, train: bool, rng: &mut Rng) -> Vec<usize> {
    let average_dur = len / num_seg;
    (0..num_seg)
        .map(|i| {
            let idx = if average_dur >= 1 {
                let within = if train { rng.below(average_dur) } else { (average_dur - 1) / 2 };
                within + i * average_dur
            } else {
                i
            };
            idx % len
        })
        .collect()
}

/// MMAction2 `mmaction/datasets/transforms/loading.py`, `SampleFrames` with clip_len 1,
/// frame_interval 1, num_clips = segments, out_of_bound_opt 'loop'.
/// Test (`_get_test_clips`): `avg_interval = (L - 1 + 1) / N` (float); offsets =
/// `int(arange(N) * avg_interval + avg_interval / 2)`. For K > 1 test clips (vidkit's
/// extension) clip k takes the point `(k + 0.5) / K` of each segment instead of its middle.
/// Train (`_get_train_clips`): `avg_interval = L // N`; if > 0, `arange(N) * avg + randint(avg)`;
/// elif `L > N`, sorted `randint(L, size=N)`; else `around(arange(N) * L / N)`.
fn segment_mmaction(
    len: usize,
    num_seg: usize,
    train: bool,
    k: usize,
    clips: usize,
    rng: &mut Rng,
) -> Vec<usize> {
    let offsets: Vec<usize> = if train {
        let avg = len / num_seg;
        if avg > 0 {
            (0..num_seg).map(|i| i * avg + rng.below(avg)).collect()
        } else if len > num_seg {
            // Unreachable for clip_len 1 (avg == 0 implies len < num_seg) but kept for fidelity.
            let mut v: Vec<usize> = (0..num_seg).map(|_| rng.below(len)).collect();
            v.sort_unstable();
            v
        } else {
            let ratio = len as f64 / num_seg as f64;
            (0..num_seg).map(|i| round_half_even(i as f64 * ratio) as usize).collect()
        }
    } else {
        let avg = len as f64 / num_seg as f64;
        let frac = (k as f64 + 0.5) / clips as f64;
        (0..num_seg).map(|i| (i as f64 * avg + avg * frac) as usize).collect()
    };
    offsets.into_iter().map(|o| o % len).collect()
}

/// numpy's `around`: halves go to the even neighbour.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// PySlowFast `slowfast/datasets/decoder.py`: `get_start_end_idx` with clip_size = T × τ:
/// `delta = max(L - clip_size, 0)`; train `start = uniform(0, delta)`, test clip k of K
/// `start = delta * k / K`; `end = start + clip_size - 1`; then `temporal_sampling`:
/// `linspace(start, end, T).clamp(0, L - 1).long()`.
fn dense(len: usize, t: usize, tau: usize, train: bool, k: usize, clips: usize, rng: &mut Rng) -> Vec<usize> {
    let clip_size = (t * tau) as f64;
    let delta = (len as f64 - clip_size).max(0.0);
    let start = if train { rng.uniform_range(0.0, delta) } else { delta * k as f64 / clips as f64 };
    let end = start + clip_size - 1.0;
    linspace_trunc(start, end, t, len)
}

/// The 2019 Paddle video zoo's `PaddleCV/video/reader/kinetics_reader.py`, `video_loader` (the
/// reader of its StNet config, format pkl): `average_dur = int(L / nsample)`; when
/// `average_dur >= seglen`, train `idx = randint(0, average_dur - seglen)`, test
/// `idx = (average_dur - seglen) // 2`, plus `i * average_dur`; elif `average_dur >= 1`,
/// `idx = i * average_dur`; else `idx = i`; the segment is frames `idx .. idx + seglen`, each
/// `% L`. (Its `mp4_loader` takes `(average_dur - 1) // 2` at test time instead; the config's
/// pkl reader is the one the zoo's numbers come from.)
fn stnet(len: usize, nsample: usize, seglen: usize, train: bool, rng: &mut Rng) -> Vec<usize> {
    let average_dur = len / nsample;
    (0..nsample)
        .flat_map(|i| {
            let idx = if average_dur >= seglen {
                let within =
                    if train { rng.below(average_dur - seglen + 1) } else { (average_dur - seglen) / 2 };
                within + i * average_dur
            } else if average_dur >= 1 {
                i * average_dur
            } else {
                i
            };
            (idx..idx + seglen).map(move |j| j % len)
        })
        .collect()
}

/// MMAction2 `mmaction/datasets/transforms/loading.py`, `UntrimmedSampleFrames` with
/// frame_interval 1: centres `arange(clip_interval // 2, L, clip_interval)`; clip c takes
/// `c + arange(-(clip_len // 2), clip_len - clip_len // 2)`, clipped to [0, L - 1]. One clip per
/// centre, in time order.
fn untrimmed(len: usize, clip_len: usize, clip_interval: usize) -> Vec<Vec<usize>> {
    let before = (clip_len / 2) as i64;
    let after = (clip_len - clip_len / 2) as i64;
    (clip_interval / 2..len)
        .step_by(clip_interval)
        .map(|c| (c as i64 - before..c as i64 + after).map(|i| i.clamp(0, len as i64 - 1) as usize).collect())
        .collect()
}

/// PaddleVideo `Sampler` with `linspace_sample`: `linspace(0, L - 1, N)`, clipped, `astype(int64)`.
/// The reference uses it for train and test alike.
fn uniform(len: usize, n: usize) -> Vec<usize> {
    linspace_trunc(0.0, (len - 1) as f64, n, len)
}

/// Frames at `rate` per second over the whole video (one clip; test mode), as torchvision's
/// `VideoClips` resamples a video to `frame_rate` (`torchvision/datasets/video_utils.py`,
/// `compute_clips_for_video` and `_resample_video_idx`): `step = fps / rate`; an integer step
/// takes every step-th frame from frame 0 (`video_pts[::step]`, so ceil(L / step) frames);
/// otherwise `n = floor(L * rate / fps)` frames at `floor(i * step)`, computed in float32 as
/// torch does. A rate above the video's repeats frames.
pub fn fixed_rate(num_frames: usize, video_fps: f64, rate: f64) -> Result<SampledClips> {
    if !(rate > 0.0 && rate.is_finite()) {
        bail!("--fps must be a positive number of frames per second");
    }
    if !(video_fps > 0.0 && video_fps.is_finite()) {
        bail!("the video's frame rate is unknown, so it cannot be sampled at a fixed rate");
    }
    let step = video_fps / rate;
    let indices: Vec<usize> = if step.fract() == 0.0 {
        (0..num_frames).step_by(step as usize).collect()
    } else {
        let n = (num_frames as f64 * rate / video_fps).floor() as usize;
        (0..n).map(|i| ((i as f32) * (step as f32)).floor() as usize).collect()
    };
    if indices.is_empty() {
        bail!("a video of {num_frames} frames at {video_fps} fps has no frame at {rate} per second");
    }
    let repeated = step < 1.0;
    Ok(SampledClips { clips: vec![indices], repeated })
}

/// numpy/torch linspace (endpoints included), clamped to [0, len - 1], truncated to integers.
fn linspace_trunc(start: f64, end: f64, n: usize, len: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let v = if n == 1 { start } else { start + (end - start) * i as f64 / (n - 1) as f64 };
            v.clamp(0.0, (len - 1) as f64) as usize
        })
        .collect()
}

#[cfg(test)]
mod tests;
