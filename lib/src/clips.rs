//! From a video file to clip-stream records: probe, sample indices, decode only those frames
//! (scaled inside ffmpeg), crop into views, optionally normalise. `vsample` is this plus I/O.

use crate::rng::Rng;
use crate::sample::{fixed_rate, SamplerConfig};
use crate::stream::{Array, Label, Norm, Record, RecordHeader};
use crate::transform::{self, CropMode};
use crate::video::{self, fixed_ratio_size, short_side_size};
use anyhow::{bail, Context, Result};
use ndarray::{Array4, Axis};
use std::path::PathBuf;

/// Which decoder reads the video. Both give byte-identical frames (tested in `video::libav`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decoder {
    /// The system FFmpeg libraries in-process: no process start, keyframe seeking. Default,
    /// chosen by measurement (README, `make bench`).
    #[default]
    Libav,
    /// One `ffmpeg` process per video (and `ffprobe` for non-MP4 containers).
    Cli,
}

impl std::str::FromStr for Decoder {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "libav" => Ok(Self::Libav),
            "cli" => Ok(Self::Cli),
            _ => bail!("unknown decoder {s:?} (libav, cli)"),
        }
    }
}

/// How to turn a video into clips and views.
#[derive(Clone, Debug)]
pub struct ClipSpec {
    pub decoder: Decoder,
    pub sampler: SamplerConfig,
    /// Short side in pixels after resizing (inside ffmpeg); `None` keeps the native size.
    pub short_side_px: Option<u32>,
    /// Resize to `short_side_px` by `int(short_side_px * 4 / 3)` whatever the aspect (the 2019
    /// Paddle zoo's `group_scale`, [`crate::video::fixed_ratio_size`]) instead of keeping it.
    pub fixed_ratio: bool,
    pub crop: CropMode,
    pub crop_px: u32,
    /// Random horizontal flip (p = 0.5 per clip); train only.
    pub flip: bool,
    /// ColorJitter drawn once per clip (torchvision's); train only.
    pub color_jitter: Option<transform::ColorJitter>,
    /// torchvision's RandomGrayscale: the clip in grey with this probability; train only.
    pub grayscale: f64,
    /// pytorchvideo's RandAugment, one draw per clip, on the resized frames before the crop (as
    /// MMAction2's `PytorchVideoWrapper` sits between `Resize` and `RandomResizedCrop`); train
    /// only.
    pub rand_augment: Option<transform::RandAugment>,
    /// pytorchvideo's AugMix, one draw per clip, where RandAugment goes; train only.
    pub augmix: Option<transform::AugMix>,
    /// Emit float32 `(x - mean) / std` instead of uint8 pixels.
    pub normalize: Option<Norm>,
    pub seed: u64,
    /// Fixed source frame numbers (one clip) instead of a sampler.
    pub indices: Option<Vec<usize>>,
    /// Frames per second over the whole video (one clip, `sample::fixed_rate`) instead of a
    /// sampler.
    pub rate_fps: Option<f64>,
    /// With `rate_fps`: at most this many frames per record (the clip split in time order), so
    /// records leave while the video is still decoding. `None` keeps one record.
    pub chunk_frames: Option<usize>,
}

/// One input video: its id as the user wrote it (list path or argument), where it is, its label.
#[derive(Clone, Debug)]
pub struct VideoItem {
    pub id: String,
    pub path: PathBuf,
    pub label: Option<Label>,
}

/// Samples one video into records (clips × views, clip-major). `position` is the video's place
/// in the input, which seeds its randomness so results do not depend on `-j`.
pub fn sample_video(spec: &ClipSpec, item: &VideoItem, position: usize) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    sample_video_each(spec, item, position, &mut |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// `sample_video`, streaming: each record goes to `emit` as soon as the frames of its clip are
/// decoded, and a frame is kept only while a clip still to be emitted needs it, so memory is
/// bounded by the clips in flight, not by the video's length (DESIGN.md §1). Returns the
/// number of records emitted. When decoding fails part-way, the records emitted before the
/// failure stay emitted and the error is returned.
pub fn sample_video_each(
    spec: &ClipSpec,
    item: &VideoItem,
    position: usize,
    emit: &mut dyn FnMut(Record) -> Result<()>,
) -> Result<usize> {
    let info = match spec.decoder {
        Decoder::Libav => video::probe_libav(&item.path)?,
        Decoder::Cli => video::probe(&item.path)?,
    };
    let mut rng = Rng::derive(spec.seed, position as u64);
    let (clips, repeated) = match &spec.indices {
        Some(ix) => {
            if let Some(&bad) = ix.iter().find(|&&i| i >= info.num_frames) {
                bail!(
                    "{}: frame {bad} asked for, but the video has {} frames",
                    item.path.display(),
                    info.num_frames
                );
            }
            (vec![ix.clone()], false)
        }
        None => {
            let s = match spec.rate_fps {
                Some(rate) => fixed_rate(info.num_frames, info.fps, rate)
                    .with_context(|| item.path.display().to_string())?,
                None => spec.sampler.sample(info.num_frames, &mut rng),
            };
            (s.clips, s.repeated)
        }
    };
    if clips.is_empty() {
        bail!(
            "{}: {} frames is shorter than half a snippet interval ({} frames): no snippet to take",
            item.path.display(),
            info.num_frames,
            spec.sampler.interval / 2
        );
    }
    // A fixed rate over a long video is one clip in time order: split it into records of at
    // most `chunk_frames` frames so they can leave as they are decoded.
    let clips = match (spec.rate_fps, spec.chunk_frames) {
        (Some(_), Some(chunk)) if chunk > 0 => {
            clips.iter().flat_map(|c| c.chunks(chunk).map(<[usize]>::to_vec)).collect()
        }
        _ => clips,
    };
    let size = spec.short_side_px.map(|s| {
        if spec.fixed_ratio {
            fixed_ratio_size(info.width, info.height, s)
        } else {
            short_side_size(info.width, info.height, s)
        }
    });
    let all: Vec<usize> = clips.iter().flatten().copied().collect();
    let mut assembler = ClipAssembler::new(&clips);
    let mut emitted = 0usize;
    let mut on_frame = |index: usize, frame: ndarray::ArrayView3<u8>| -> Result<()> {
        for (k, clip) in assembler.push(index, frame)? {
            for r in clip_records(spec, item, &info, (k, clips.len()), &clips[k], clip, repeated, &mut rng)? {
                emit(r)?;
                emitted += 1;
            }
        }
        Ok(())
    };
    match spec.decoder {
        Decoder::Libav => video::decode_each_libav(&info, &all, size, &mut on_frame)?,
        Decoder::Cli => video::decode_each_cli(&info, &all, size, &mut on_frame)?,
    }
    Ok(emitted)
}

/// Builds clips from frames that arrive in ascending frame order. Clips are released in clip
/// order, each as soon as its last frame has arrived (and every earlier clip is out); a frame is
/// dropped when the last clip that uses it is out.
struct ClipAssembler<'c> {
    clips: &'c [Vec<usize>],
    /// For each clip, its largest frame number: it is complete once that frame has arrived.
    last_frame: Vec<usize>,
    /// The last clip that uses each frame.
    last_use: std::collections::HashMap<usize, usize>,
    frames: std::collections::BTreeMap<usize, ndarray::Array3<u8>>,
    next_clip: usize,
}

impl<'c> ClipAssembler<'c> {
    fn new(clips: &'c [Vec<usize>]) -> Self {
        let mut last_use = std::collections::HashMap::new();
        for (k, c) in clips.iter().enumerate() {
            for &i in c {
                last_use.insert(i, k);
            }
        }
        let last_frame = clips.iter().map(|c| c.iter().copied().max().unwrap_or(0)).collect();
        Self { clips, last_frame, last_use, frames: Default::default(), next_clip: 0 }
    }

    /// Takes frame `index`; returns the clips it completes, as (clip number, [T, H, W, 3]).
    fn push(&mut self, index: usize, frame: ndarray::ArrayView3<u8>) -> Result<Vec<(usize, Array4<u8>)>> {
        if self.last_use.contains_key(&index) {
            self.frames.insert(index, frame.to_owned());
        }
        let mut done = Vec::new();
        while self.next_clip < self.clips.len() && self.last_frame[self.next_clip] <= index {
            let k = self.next_clip;
            let views: Vec<_> = self.clips[k]
                .iter()
                .map(|i| {
                    self.frames
                        .get(i)
                        .map(|f| f.view())
                        .with_context(|| format!("frame {i} of clip {k} was not decoded"))
                })
                .collect::<Result<_>>()?;
            done.push((k, ndarray::stack(Axis(0), &views)?));
            self.next_clip += 1;
            let last_use = &self.last_use;
            self.frames.retain(|i, _| last_use[i] > k);
        }
        Ok(done)
    }
}

/// The records (one per view) of clip `k` of `num_clips`, taken at source frames `clip_idx`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn clip_records(
    spec: &ClipSpec,
    item: &VideoItem,
    info: &video::VideoInfo,
    (k, num_clips): (usize, usize),
    clip_idx: &[usize],
    clip: Array4<u8>,
    repeated: bool,
    rng: &mut Rng,
) -> Result<Vec<Record>> {
    let num_views = spec.crop.num_views();
    let mut clip = clip;
    if let Some(ra) = &spec.rand_augment {
        transform::rand_augment(clip.view_mut(), &ra.draw(rng), &ra.transform_hparas)?;
    }
    if let Some(am) = &spec.augmix {
        transform::augmix(clip.view_mut(), &am.draw(rng), &am.transform_hparas)?;
    }
    let views = transform::views(clip.view(), spec.crop, spec.crop_px, spec.flip, rng)
        .with_context(|| item.path.display().to_string())?;
    // One jitter for the whole clip, every view and frame alike.
    let jitter = spec.color_jitter.filter(|j| !j.is_identity()).map(|j| (j, j.draw(rng)));
    let grey = spec.grayscale > 0.0 && rng.uniform() < spec.grayscale;
    let mut out = Vec::with_capacity(num_views);
    for (v, mut view) in views.into_iter().enumerate() {
        if let Some((j, d)) = &jitter {
            j.apply(view.view_mut(), d)?;
        }
        if grey {
            transform::grayscale(view.view_mut())?;
        }
        let mut h = RecordHeader::frames(item.id.clone());
        h.label = item.label.clone();
        h.clip = Some(k);
        h.view = Some(v);
        h.num_clips = Some(num_clips);
        h.num_views = Some(num_views);
        h.indices = Some(clip_idx.iter().map(|&i| i as i64).collect());
        if info.fps > 0.0 {
            h.fps = Some(info.fps);
            h.t0 = Some(clip_idx[0] as f64 / info.fps);
            h.t1 = Some((clip_idx[clip_idx.len() - 1] + 1) as f64 / info.fps);
        }
        h.extra.insert("num_frames".into(), info.num_frames.into());
        if repeated {
            // The video is shorter than a clip: frames repeat, as in the reference samplers.
            h.extra.insert("frames_repeated".into(), true.into());
        }
        let array = match &spec.normalize {
            Some(n) => {
                h.norm = Some(n.clone());
                let mean = [n.mean[0], n.mean[1], n.mean[2]];
                let std = [n.std[0], n.std[1], n.std[2]];
                Array::F32(transform::normalize(view.view(), &mean, &std).into_dyn())
            }
            None => Array::U8(view.into_dyn()),
        };
        out.push(Record { header: h, array });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::SamplerKind;

    fn testsrc(dir: &std::path::Path, frames: usize) -> PathBuf {
        let p = dir.join("t.mp4");
        let st = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size=64x48:rate=25:duration={}", frames as f64 / 25.0))
            .args(["-pix_fmt", "yuv420p", "-c:v", "libx264", "-y"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        p
    }

    fn spec(frames: usize, crop: CropMode) -> ClipSpec {
        ClipSpec {
            decoder: Decoder::Libav,
            sampler: SamplerConfig {
                kind: SamplerKind::Segment,
                frames,
                interval: 1,
                clips: 1,
                train: false,
                seglen: 1,
            },
            short_side_px: Some(32),
            fixed_ratio: false,
            crop,
            crop_px: 32,
            flip: false,
            color_jitter: None,
            grayscale: 0.0,
            rand_augment: None,
            augmix: None,
            normalize: None,
            seed: 0,
            indices: None,
            rate_fps: None,
            chunk_frames: None,
        }
    }

    #[test]
    fn clips_and_views_carry_their_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = testsrc(dir.path(), 40);
        let item = VideoItem { id: "t.mp4".into(), path, label: Some(Label::Single(2)) };
        let recs = sample_video(&spec(4, CropMode::Three), &item, 0).unwrap();
        assert_eq!(recs.len(), 3);
        // 64x48 → short side 32 → 43x32 (42.67 rounds up), three 32x32 views
        assert_eq!(recs[0].array.shape(), &[4, 32, 32, 3]);
        let h = &recs[2].header;
        assert_eq!((h.clip, h.view, h.num_views), (Some(0), Some(2), Some(3)));
        assert_eq!(h.indices.as_deref(), Some(&[4i64, 14, 24, 34][..])); // paddle: avg 10 → 4 + 10i
        assert_eq!(h.label, Some(Label::Single(2)));
        assert!(!h.extra.contains_key("frames_repeated"));
        // a video shorter than the clip says so
        let recs = sample_video(&spec(60, CropMode::Center), &item, 0).unwrap();
        assert_eq!(recs[0].header.extra.get("frames_repeated"), Some(&serde_json::Value::Bool(true)));
        assert_eq!(recs[0].array.shape()[0], 60);
    }
}
