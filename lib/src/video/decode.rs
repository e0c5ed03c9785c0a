//! Decoding only the wanted frames: one ffmpeg process per video with `select` (by decoded frame
//! number), autorotation, an optional `scale`, and rgb24 raw frames on its stdout.

use super::probe::stderr_reason;
use super::{FrameSink, VideoInfo, FFMPEG};
use anyhow::{bail, Context, Result};
use ffmpeg_sidecar::command::FfmpegCommand;
use ndarray::{Array4, ArrayView3};
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

/// The distinct frame numbers to decode, sorted, each checked against the frame count.
pub(crate) fn wanted_frames(info: &VideoInfo, indices: &[usize]) -> Result<Vec<usize>> {
    let mut wanted: Vec<usize> = indices.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    match wanted.last() {
        None => bail!("{}: no frames requested", info.path.display()),
        Some(&last) if last >= info.num_frames => {
            bail!(
                "{}: frame {last} requested but the video has {} frames",
                info.path.display(),
                info.num_frames
            )
        }
        Some(_) => Ok(wanted),
    }
}

/// Decodes the frames at `indices` (any order, duplicates allowed) scaled to `size` (W, H)
/// with bilinear swscale, or at the displayed size when `size` is `None`.
pub fn decode_frames(info: &VideoInfo, indices: &[usize], size: Option<(u32, u32)>) -> Result<DecodedFrames> {
    let wanted = wanted_frames(info, indices)?;
    let mut data: Vec<u8> = Vec::new();
    let mut dims: Option<(usize, usize)> = None;
    decode_each_cli(info, &wanted, size, &mut |_, frame| {
        let (h, w, _) = frame.dim();
        dims.get_or_insert((w, h));
        data.extend_from_slice(frame.as_slice().context("a frame not in standard layout")?);
        Ok(())
    })?;
    let (fw, fh) = dims.expect("at least one frame");
    let frames = Array4::from_shape_vec((wanted.len(), fh, fw, 3), data)?;
    Ok(DecodedFrames { indices: wanted, frames })
}

/// `decode_frames`, one frame at a time: the distinct frames of `indices` in ascending order,
/// each handed to `sink` as (frame number, [H, W, 3] RGB) as it leaves ffmpeg. An error from
/// `sink` stops ffmpeg and is returned.
pub fn decode_each_cli(
    info: &VideoInfo,
    indices: &[usize],
    size: Option<(u32, u32)>,
    sink: &mut FrameSink,
) -> Result<()> {
    let path = &info.path;
    let wanted = wanted_frames(info, indices)?;
    let mut filters = format!("select={}", select_expr(&wanted));
    if let Some((w, h)) = size {
        filters.push_str(&format!(",scale={w}:{h}:flags=bilinear"));
    }
    let mut cmd = FfmpegCommand::new_with_path(FFMPEG);
    // `-flags unaligned`: crop decoded frames to the exact picture; without it a Theora file
    // here decodes 218 wide (4 black columns) for its 214-wide picture.
    cmd.args(["-loglevel", "error", "-nostdin", "-flags", "unaligned"])
        .input(path.as_os_str().to_str().context("non-UTF-8 path")?)
        .args(["-map", "0:v:0", "-an", "-sn", "-dn"])
        .args(["-vf", &filters])
        .args(["-fps_mode", "passthrough"])
        .args(["-frames:v", &wanted.len().to_string()])
        .args(["-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "pipe:1"]);
    let mut child = cmd.spawn().with_context(|| {
        format!("{}: cannot run {FFMPEG} (is ffmpeg installed? `make deps`)", path.display())
    })?;
    let (mut stdout, err_thread) = frame_pipes(&mut child)?;
    // Frames arrive as PPM images: each carries its own size, which is not always the size the
    // stream header announces (a Theora file here says 214x160 and decodes to 218x160).
    let mut frame: Vec<u8> = Vec::new();
    let mut dims: Option<(usize, usize)> = None;
    let mut got = 0usize;
    let mut read_error = None;
    let mut sink_error = None;
    while got < wanted.len() {
        match read_ppm_header(&mut stdout) {
            Ok(None) => break,
            Ok(Some((fw, fh))) => {
                if *dims.get_or_insert((fw, fh)) != (fw, fh) {
                    read_error = Some(format!("frame size changes mid-stream ({fw}x{fh})"));
                    break;
                }
                frame.resize(fw * fh * 3, 0);
                if let Err(e) = stdout.read_exact(&mut frame) {
                    read_error = Some(e.to_string());
                    break;
                }
                let view = ArrayView3::from_shape((fh, fw, 3), &frame[..])?;
                if let Err(e) = sink(wanted[got], view) {
                    sink_error = Some(e);
                    break;
                }
                got += 1;
            }
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    if let Some(e) = sink_error {
        let _ = child.kill();
        drop(stdout);
        let _ = child.wait();
        let _ = err_thread.join();
        return Err(e);
    }
    // Drain whatever follows so ffmpeg never dies of a closed pipe while finishing.
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    drop(stdout);
    let status = child.wait().with_context(|| format!("{}: waiting for ffmpeg", path.display()))?;
    let stderr = err_thread.join().unwrap_or_default();
    if got < wanted.len() {
        let why = match (read_error, stderr.is_empty()) {
            (_, false) => stderr_reason(&stderr),
            (Some(e), true) => e,
            (None, true) => "stream ends early".to_string(),
        };
        return Err(short_decode(info, got, &wanted, &why));
    }
    if !status.success() {
        bail!("{}: ffmpeg failed while decoding: {}", path.display(), stderr_reason(&stderr));
    }
    // All frames arrived, but the decoder complained (it conceals damage): the data is bad.
    let decoder_errors: Vec<&str> =
        std::str::from_utf8(&stderr).unwrap_or("").lines().filter(|l| is_decoder_line(l)).collect();
    if let Some(first) = decoder_errors.first() {
        bail!(
            "{}: corrupt video: the decoder reported {} error(s), first: {}",
            path.display(),
            decoder_errors.len(),
            first.trim_start_matches("[error] ")
        );
    }
    Ok(())
}

/// The error for a decode that reached only `got` of the `wanted` frames (both decoders).
pub(crate) fn short_decode(info: &VideoInfo, got: usize, wanted: &[usize], why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: truncated or corrupt video: decoded {got} of {} wanted frames (container has {}, last wanted {}): {why}",
        info.path.display(),
        wanted.len(),
        info.num_frames,
        wanted[wanted.len() - 1]
    )
}

/// A line of ffmpeg's log that comes from a video decoder (`[h264 @ 0x...] ...`), not from
/// the demuxer, parser or muxer.
fn is_decoder_line(line: &str) -> bool {
    const DECODERS: [&str; 12] = [
        "h264",
        "hevc",
        "mpeg4",
        "mpeg2video",
        "mpeg1video",
        "vp8",
        "vp9",
        "av1",
        "theora",
        "mjpeg",
        "msmpeg4",
        "libdav1d",
    ];
    let l = line.trim_start_matches("[error] ");
    DECODERS.iter().any(|d| l.starts_with(&format!("[{d} @ ")))
}

/// Reads a binary PPM header (`P6 <w> <h> 255` + one whitespace byte); `None` at a clean EOF.
/// An ffmpeg child's frames and log: its stdout buffered for frames, its stderr read to the end
/// on a thread (so a full pipe never stalls it), its stdin closed (ffmpeg-sidecar insists on a
/// piped stdin; -nostdin ignores it).
pub(crate) fn frame_pipes(
    child: &mut ffmpeg_sidecar::child::FfmpegChild,
) -> Result<(std::io::BufReader<std::process::ChildStdout>, std::thread::JoinHandle<Vec<u8>>)> {
    drop(child.take_stdin());
    let mut stderr = child.take_stderr().context("ffmpeg stderr")?;
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let stdout = std::io::BufReader::with_capacity(1 << 20, child.take_stdout().context("ffmpeg stdout")?);
    Ok((stdout, err_thread))
}

/// One PPM image's header (`P6 W H 255`) from ffmpeg's image2pipe, or None at a clean end.
pub(crate) fn read_ppm_header(r: &mut impl std::io::BufRead) -> std::io::Result<Option<(usize, usize)>> {
    let bad = |what: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad frame header from ffmpeg: {what}"))
    };
    let mut fields: Vec<String> = Vec::with_capacity(4);
    let mut cur = String::new();
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte)? == 0 {
            return if fields.is_empty() && cur.is_empty() { Ok(None) } else { Err(bad("ends early")) };
        }
        let c = byte[0];
        if c.is_ascii_whitespace() {
            if !cur.is_empty() {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == 4 {
                    break;
                }
            }
        } else if cur.len() > 10 {
            return Err(bad("field too long"));
        } else {
            cur.push(c as char);
        }
    }
    if fields[0] != "P6" || fields[3] != "255" {
        return Err(bad(&fields.join(" ")));
    }
    let w: usize = fields[1].parse().map_err(|_| bad("width"))?;
    let h: usize = fields[2].parse().map_err(|_| bad("height"))?;
    Ok(Some((w, h)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ppm_headers_parse_and_eof_is_clean() {
        let mut r = &b"P6\n218 160\n255\nXYZ"[..];
        assert_eq!(super::read_ppm_header(&mut r).unwrap(), Some((218, 160)));
        assert_eq!(r, b"XYZ");
        assert_eq!(super::read_ppm_header(&mut &b""[..]).unwrap(), None);
        assert!(super::read_ppm_header(&mut &b"P5\n2 2\n255\n"[..]).is_err());
    }

    use super::*;

    #[test]
    fn select_expression_merges_runs() {
        assert_eq!(select_expr(&[3]), "eq(n\\,3)");
        assert_eq!(select_expr(&[1, 2, 3, 7, 9, 10]), "between(n\\,1\\,3)+eq(n\\,7)+between(n\\,9\\,10)");
    }
}
