//! Live sources (issue 22, point 7): a capture device (`/dev/video*`), or any input read as a
//! stream (`vsample --live`: an http(s) stream, a FIFO, a growing file). There is no frame count
//! to probe and no seeking, so the system ffmpeg reads the source as it arrives, its `fps` filter
//! takes `rate` frames per second of the source's clock, and the frames leave in records of at
//! most `chunk` frames as soon as they are decoded. Reading ends at the source's end or after
//! `duration` seconds. Frame k of the output is numbered k at `rate` frames per second (t = k /
//! rate): the indices and fps that `vclassify --window` groups into windows.

use crate::clips::{clip_records, ClipSpec, VideoItem};
use crate::transform;
use crate::video::{self, short_side_size, FFMPEG};
use anyhow::{bail, Context, Result};
use ffmpeg_sidecar::command::FfmpegCommand;
use ndarray::{Array4, ArrayView3, Axis};
use std::io::Read;
use std::path::Path;

/// Whether `path` names a V4L2 capture device, which ffmpeg opens with `-f v4l2`.
pub fn is_capture_device(path: &Path) -> bool {
    path.to_string_lossy().starts_with("/dev/video")
}

/// How to read a live source.
#[derive(Clone, Copy, Debug)]
pub struct LiveSpec {
    /// Frames per second taken from the source.
    pub rate: f64,
    /// Stop after this many seconds of the source (at its end otherwise).
    pub duration: Option<f64>,
    /// Frames per record.
    pub chunk: usize,
}

impl LiveSpec {
    pub fn validate(&self) -> Result<()> {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            bail!("--fps must be a positive number of frames per second");
        }
        if self.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
            bail!("--duration must be a positive number of seconds");
        }
        if self.chunk == 0 {
            bail!("--chunk must be at least 1 frame");
        }
        Ok(())
    }
}

/// Samples a live source into records as frames arrive: each record holds up to `live.chunk`
/// frames (resized to the spec's short side, cropped into its views, as `sample_video_each`
/// does for files), goes to `emit` when full, and the last one at the end. Returns the records
/// emitted; a source that gives no frame, or ffmpeg failing, is an error naming the source
/// (after the records already emitted).
pub fn sample_live(
    spec: &ClipSpec,
    live: &LiveSpec,
    item: &VideoItem,
    emit: &mut dyn FnMut(crate::stream::Record) -> Result<()>,
) -> Result<usize> {
    live.validate()?;
    let src = item.path.to_str().context("the source's name is not UTF-8")?;
    if is_capture_device(&item.path) && !item.path.exists() {
        bail!("{src}: no such capture device");
    }
    let mut cmd = FfmpegCommand::new_with_path(FFMPEG);
    cmd.args(["-loglevel", "error", "-nostdin"]);
    if is_capture_device(&item.path) {
        cmd.args(["-f", "v4l2"]);
    }
    cmd.input(src);
    if let Some(d) = live.duration {
        cmd.args(["-t", &format!("{d}")]);
    }
    cmd.args(["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", &format!("fps={}", live.rate)]).args([
        "-f",
        "image2pipe",
        "-c:v",
        "ppm",
        "-pix_fmt",
        "rgb24",
        "pipe:1",
    ]);
    let mut child =
        cmd.spawn().with_context(|| format!("{src}: cannot run {FFMPEG} (is ffmpeg installed?)"))?;
    let (mut stdout, err_thread) = video::frame_pipes(&mut child)?;
    let info = video::VideoInfo {
        path: item.path.clone(),
        codec: String::new(),
        container: "live".into(),
        width: 0,
        height: 0,
        rotation: 0,
        fps: live.rate,
        num_frames: 0,
        duration_s: 0.0,
    };
    let mut rng = crate::rng::Rng::derive(spec.seed, 0);
    let (mut frames, mut first_index, mut next_index) = (Vec::<Array4<u8>>::new(), 0usize, 0usize);
    let mut emitted = 0usize;
    let mut flush = |frames: &mut Vec<Array4<u8>>, first: usize, rng: &mut crate::rng::Rng| -> Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        let views: Vec<_> = frames.iter().map(|f| f.view()).collect();
        let clip = ndarray::concatenate(Axis(0), &views)?;
        frames.clear();
        let idx: Vec<usize> = (first..first + clip.shape()[0]).collect();
        for mut r in clip_records(spec, item, &info, (0, 1), &idx, clip, false, rng)? {
            // A live source has no length: no clip count, no frame count.
            r.header.num_clips = None;
            r.header.clip = None;
            r.header.extra.remove("num_frames");
            emit(r)?;
            emitted += 1;
        }
        Ok(())
    };
    let mut frame: Vec<u8> = Vec::new();
    let mut result: Result<()> = Ok(());
    loop {
        let (w, h) = match video::read_ppm_header(&mut stdout) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) => {
                result = Err(e.into());
                break;
            }
        };
        frame.resize(w * h * 3, 0);
        if let Err(e) = stdout.read_exact(&mut frame) {
            result = Err(anyhow::Error::from(e).context("the frame stream ends inside a frame"));
            break;
        }
        let view = ArrayView3::from_shape((h, w, 3), &frame[..])?.insert_axis(Axis(0));
        let resized = match spec.short_side_px {
            Some(s) => {
                let (ow, oh) = short_side_size(w as u32, h as u32, s);
                transform::resize_bilinear(view, ow, oh)
            }
            None => view.to_owned(),
        };
        if frames.first().is_some_and(|f| f.shape() != resized.shape()) {
            result = Err(anyhow::anyhow!("the frame size changes mid-stream ({w}x{h})"));
            break;
        }
        frames.push(resized);
        next_index += 1;
        if frames.len() >= live.chunk {
            if let Err(e) = flush(&mut frames, first_index, &mut rng) {
                result = Err(e);
                break;
            }
            first_index = next_index;
        }
    }
    if result.is_ok() {
        result = flush(&mut frames, first_index, &mut rng);
    }
    if result.is_err() {
        let _ = child.kill();
    }
    drop(stdout);
    let status = child.wait().with_context(|| format!("{src}: waiting for ffmpeg"))?;
    let stderr = err_thread.join().unwrap_or_default();
    // ffmpeg-sidecar tags ffmpeg's lines with their level: the errors say why.
    let errors: Vec<u8> = String::from_utf8_lossy(&stderr)
        .lines()
        .filter(|l| l.starts_with("[error]") || l.starts_with("[fatal]"))
        .flat_map(|l| format!("{}\n", l.split_once("] ").map_or(l, |(_, r)| r)).into_bytes())
        .collect();
    let reason = if errors.is_empty() { String::new() } else { video::stderr_reason(&errors) };
    if let Err(e) = result {
        // An error of ours (a consumer gone, a bad frame) comes first; ffmpeg was stopped.
        return Err(e.context(src.to_string()));
    }
    if !status.success() {
        bail!(
            "{src}: ffmpeg could not read the source: {}",
            if reason.is_empty() { "no reason given" } else { &reason }
        );
    }
    if next_index == 0 {
        bail!(
            "{src}: no frame in the source{}",
            if reason.is_empty() { String::new() } else { format!(": {reason}") }
        );
    }
    Ok(emitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_specs() {
        assert!(is_capture_device(Path::new("/dev/video0")) && !is_capture_device(Path::new("v.mp4")));
        let bad = LiveSpec { rate: 0.0, duration: None, chunk: 4 };
        assert!(bad.validate().is_err());
        assert!(LiveSpec { rate: 2.0, duration: Some(-1.0), chunk: 4 }.validate().is_err());
    }
}
