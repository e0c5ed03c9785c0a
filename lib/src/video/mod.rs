//! Video probing and decoding through the system ffmpeg (never a downloaded one).
//!
//! One `ffprobe` per video learns the stream's size, rate, rotation and exact frame count; one
//! `ffmpeg` per video decodes only the wanted frames, with selection, rotation and scaling done
//! inside ffmpeg so only the sampled, resized frames cross the pipe (DESIGN.md §4, §6).

mod decode;
mod libav;
mod mp4;
mod probe;

pub use decode::{decode_each_cli, decode_frames, DecodedFrames};
pub(crate) use decode::{frame_pipes, read_ppm_header};
pub use libav::{decode_each_libav, decode_frames_libav, probe_libav};
pub(crate) use probe::stderr_reason;
pub use probe::{probe, probe_with_ffprobe, VideoInfo};

/// Whether `path` is an http(s) URL, which libav reads over the network (no file checks, no
/// `file:` prefix).
pub fn is_url(path: &std::path::Path) -> bool {
    let s = path.to_string_lossy();
    s.starts_with("http://") || s.starts_with("https://")
}

/// Receives decoded frames one at a time, in ascending frame order: (source frame number,
/// [H, W, 3] RGB). The view lives only for the call; an error stops decoding.
pub type FrameSink<'a> = dyn FnMut(usize, ndarray::ArrayView3<u8>) -> anyhow::Result<()> + 'a;

/// The system binaries. ffmpeg-sidecar would prefer a binary next to our executable; we name the
/// system ones explicitly so a stray or downloaded copy is never picked up.
pub(crate) const FFMPEG: &str = "ffmpeg";
pub(crate) const FFPROBE: &str = "ffprobe";

/// Output size after a short-side resize to `short_px`, rounded as mmcv's `rescale_size`
/// (`int(x * scale + 0.5)`), which mmaction2's `Resize(scale=(-1, S))` uses.
pub fn short_side_size(width: u32, height: u32, short_px: u32) -> (u32, u32) {
    let scale = short_px as f64 / width.min(height) as f64;
    let w = ((width as f64 * scale + 0.5) as u32).max(1);
    let h = ((height as f64 * scale + 0.5) as u32).max(1);
    (w, h)
}

/// The 2019 Paddle video zoo's `group_scale` (`PaddleCV/video/reader/kinetics_reader.py`; also
/// PaddleVideo's `Scale` with `fixed_ratio`): a frame whose short side is already `short_px`
/// stays as it is; any other becomes `short_px` by `int(short_px * 4 / 3)`, the long side along
/// the frame's longer axis (width when square).
pub fn fixed_ratio_size(width: u32, height: u32, short_px: u32) -> (u32, u32) {
    if (width <= height && width == short_px) || (height <= width && height == short_px) {
        return (width, height);
    }
    let long = (short_px as f64 * 4.0 / 3.0) as u32;
    if width < height {
        (short_px, long)
    } else {
        (long, short_px)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ratio_is_four_by_three_unless_the_short_side_fits() {
        assert_eq!(fixed_ratio_size(1280, 720, 256), (341, 256));
        assert_eq!(fixed_ratio_size(240, 320, 256), (256, 341));
        assert_eq!(fixed_ratio_size(300, 300, 256), (341, 256));
        assert_eq!(fixed_ratio_size(455, 256, 256), (455, 256)); // short side already 256
    }

    #[test]
    fn short_side_rounds_like_mmcv() {
        assert_eq!(short_side_size(340, 256, 256), (340, 256));
        assert_eq!(short_side_size(1280, 720, 256), (455, 256)); // 455.11
        assert_eq!(short_side_size(320, 240, 128), (171, 128)); // 170.67
        assert_eq!(short_side_size(240, 320, 112), (112, 149)); // 149.33
    }
}

/// `../shared/realvideo` beside the checkout; when it is absent, `None` after a loud SKIP, or a
/// failure when `CI` is set (a check that cannot run must not pass there).
#[cfg(test)]
pub(crate) fn realvideo_dir() -> Option<std::path::PathBuf> {
    let d = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/realvideo");
    if d.is_dir() {
        return Some(d);
    }
    let why = format!("{} is absent; real-video checks skipped", d.display());
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("cannot run under CI: {why}");
    }
    eprintln!("SKIP: {why}");
    None
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use std::path::PathBuf;

    fn realvideo() -> Option<PathBuf> {
        super::realvideo_dir()
    }

    /// The native MP4 reader agrees with ffprobe wherever it answers.
    #[test]
    fn native_mp4_probe_matches_ffprobe() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (name, extra) in [("plain.mp4", ""), ("fast.mp4", "+faststart")] {
            let p = dir.path().join(name);
            let mut cmd = std::process::Command::new("ffmpeg");
            cmd.args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=96x64:rate=24:duration=2",
                "-pix_fmt",
                "yuv420p",
            ]);
            if !extra.is_empty() {
                cmd.args(["-movflags", extra]);
            }
            assert!(cmd.arg(&p).status().unwrap().success());
            files.push(p);
        }
        if let Some(d) = realvideo() {
            for n in [
                "android_phone_vfr_1080p_h264.mp4",
                "derived_android_phone_rotate90.mp4",
                "imageio_cockatoo_720p_h264.mp4",
                "imageio_realshort_h264.mp4",
            ] {
                files.push(d.join(n));
            }
        }
        let mut answered = 0;
        for f in &files {
            let slow = probe_with_ffprobe(f).unwrap();
            if let Some(fast) = mp4::probe_mp4(f) {
                answered += 1;
                assert_eq!(
                    (fast.num_frames, fast.width, fast.height, fast.rotation, &fast.codec),
                    (slow.num_frames, slow.width, slow.height, slow.rotation, &slow.codec),
                    "{}",
                    f.display()
                );
                assert!(
                    (fast.fps - slow.fps).abs() / slow.fps < 0.02,
                    "{}: {} vs {}",
                    f.display(),
                    fast.fps,
                    slow.fps
                );
            }
        }
        assert!(answered >= 2, "the native reader answered for only {answered} files");
    }
}
