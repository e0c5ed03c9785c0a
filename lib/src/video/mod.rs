//! Video probing and decoding through the system ffmpeg (never a downloaded one).
//!
//! One `ffprobe` per video learns the stream's size, rate, rotation and exact frame count; one
//! `ffmpeg` per video decodes only the wanted frames, with selection, rotation and scaling done
//! inside ffmpeg so only the sampled, resized frames cross the pipe (DESIGN.md §4, §6).

mod decode;
mod probe;

pub use decode::{decode_frames, DecodedFrames};
pub use probe::{probe, VideoInfo};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_side_rounds_like_mmcv() {
        assert_eq!(short_side_size(340, 256, 256), (340, 256));
        assert_eq!(short_side_size(1280, 720, 256), (455, 256)); // 455.11
        assert_eq!(short_side_size(320, 240, 128), (171, 128)); // 170.67
        assert_eq!(short_side_size(240, 320, 112), (112, 149)); // 149.33
    }
}
