//! Decoding only the wanted frames: one ffmpeg process per video with `select` (by decoded frame
//! number), autorotation, an optional `scale`, and rgb24 raw frames on its stdout.

use super::probe::stderr_reason;
use super::{VideoInfo, FFMPEG};
use anyhow::{bail, Context, Result};
use ffmpeg_sidecar::command::FfmpegCommand;
use ndarray::Array4;
use std::io::Read;

/// Frames decoded for a sorted list of distinct indices: `frames[i]` is source frame `indices[i]`.
#[derive(Debug)]
pub struct DecodedFrames {
    pub indices: Vec<usize>,
    /// [N, H, W, 3] RGB.
    pub frames: Array4<u8>,
}

impl DecodedFrames {
    /// Position of a source frame in `frames`.
    pub fn position(&self, index: usize) -> Option<usize> {
        self.indices.binary_search(&index).ok()
    }
}

/// The `select` expression for a set of frame numbers: runs of consecutive frames become one
/// `between`, so dense clips stay short expressions.
fn select_expr(sorted: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            format!("eq(n\\,{})", sorted[i])
        } else {
            format!("between(n\\,{}\\,{})", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    parts.join("+")
}

/// Decodes the frames at `indices` (any order, duplicates allowed) scaled to `size` (W, H)
/// with bilinear swscale, or at the displayed size when `size` is `None`.
pub fn decode_frames(info: &VideoInfo, indices: &[usize], size: Option<(u32, u32)>) -> Result<DecodedFrames> {
    let path = &info.path;
    let mut wanted: Vec<usize> = indices.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        bail!("{}: no frames requested", path.display());
    }
    if let Some(&last) = wanted.last() {
        if last >= info.num_frames {
            bail!("{}: frame {last} requested but the video has {} frames", path.display(), info.num_frames);
        }
    }
    let (w, h) = size.unwrap_or((info.width, info.height));
    let mut filters = format!("select={}", select_expr(&wanted));
    if size.is_some() {
        filters.push_str(&format!(",scale={w}:{h}:flags=bilinear"));
    }
    let mut cmd = FfmpegCommand::new_with_path(FFMPEG);
    cmd.args(["-loglevel", "error", "-nostdin"])
        .input(path.as_os_str().to_str().context("non-UTF-8 path")?)
        .args(["-map", "0:v:0", "-an", "-sn", "-dn"])
        .args(["-vf", &filters])
        .args(["-fps_mode", "passthrough"])
        .args(["-frames:v", &wanted.len().to_string()])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
    let mut child = cmd.spawn().with_context(|| {
        format!("{}: cannot run {FFMPEG} (is ffmpeg installed? `make deps`)", path.display())
    })?;
    drop(child.take_stdin()); // ffmpeg-sidecar insists on a piped stdin; -nostdin ignores it
    let mut stderr = child.take_stderr().context("ffmpeg stderr")?;
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let mut stdout = child.take_stdout().context("ffmpeg stdout")?;
    let frame_bytes = w as usize * h as usize * 3;
    let mut data = vec![0u8; frame_bytes * wanted.len()];
    let mut filled = 0;
    while filled < data.len() {
        match stdout.read(&mut data[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("{}: reading decoded frames", path.display())),
        }
    }
    drop(stdout);
    let status = child.wait().with_context(|| format!("{}: waiting for ffmpeg", path.display()))?;
    let stderr = err_thread.join().unwrap_or_default();
    let got = filled / frame_bytes;
    if got < wanted.len() {
        let why = if stderr.is_empty() { "stream ends early".to_string() } else { stderr_reason(&stderr) };
        bail!(
            "{}: truncated or corrupt video: decoded {got} of {} wanted frames (container has {}, last wanted {}): {why}",
            path.display(),
            wanted.len(),
            info.num_frames,
            wanted[wanted.len() - 1]
        );
    }
    if !status.success() {
        bail!("{}: ffmpeg failed while decoding: {}", path.display(), stderr_reason(&stderr));
    }
    let frames = Array4::from_shape_vec((wanted.len(), h as usize, w as usize, 3), data)?;
    Ok(DecodedFrames { indices: wanted, frames })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_expression_merges_runs() {
        assert_eq!(select_expr(&[3]), "eq(n\\,3)");
        assert_eq!(select_expr(&[1, 2, 3, 7, 9, 10]), "between(n\\,1\\,3)+eq(n\\,7)+between(n\\,9\\,10)");
    }
}
