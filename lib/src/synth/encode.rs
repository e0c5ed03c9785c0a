//! Encoding a rendered clip through the system ffmpeg: RGB24 frames go to its stdin as rawvideo,
//! h264 (yuv420p) in MP4 comes out.

use super::render::{ClipSpec, Renderer};
use anyhow::{bail, Context, Result};
use ffmpeg_sidecar::command::FfmpegCommand;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;

/// The system binary, never a downloaded one.
const FFMPEG: &str = "ffmpeg";

/// Per-output encoder settings. x264 is deterministic given its settings; `-threads 1` fixes the
/// one it would otherwise pick from the machine (it is also written into the stream's SEI), and
/// the bitexact flags keep the muxer from writing its version. Same ffmpeg and x264 builds, same
/// bytes.
#[rustfmt::skip]
const OUTPUT_ARGS: &[&str] = &[
    "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
    // The graph converts with swscale's BT.601 limited range; say so in the stream.
    "-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m",
    "-color_range", "tv",
    "-threads", "1", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
    "-movflags", "+faststart",
];

/// The whole command line for a batch of clips of one size. One ffmpeg start costs ~0.1 s of
/// CPU, more than encoding a small clip (DESIGN.md §6), so one process encodes many clips: their
/// frames follow each other on stdin, `split` + `trim` cut the stream back into clips, `settb` +
/// `setpts` give each its own frame rate, and each output has its own encoder. A clip's bytes do
/// not depend on the batch it was encoded in (checked in the tests).
fn batch_args(clips: &[(&ClipSpec, &Path)]) -> Vec<OsString> {
    let (w, h) = (clips[0].0.width, clips[0].0.height);
    let mut graph = format!("[0:v]format=yuv420p,split={}", clips.len());
    for k in 0..clips.len() {
        graph += &format!("[s{k}]");
    }
    let mut start = 0;
    for (k, (spec, _)) in clips.iter().enumerate() {
        let end = start + spec.num_frames();
        graph += &format!(
            ";[s{k}]trim=start_frame={start}:end_frame={end},settb=1/{fps},setpts=N[v{k}]",
            fps = spec.fps
        );
        start = end;
    }
    #[rustfmt::skip]
    let mut args: Vec<OsString> = [
        "-nostdin", "-nostats", "-hide_banner", "-loglevel", "error",
        "-sws_flags", "bicubic+accurate_rnd+bitexact",
        // The input rate is a placeholder: each output gets its own below.
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &format!("{w}x{h}"), "-framerate", "1",
        "-i", "pipe:0", "-filter_complex", &graph,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    for (k, (spec, dest)) in clips.iter().enumerate() {
        args.extend(["-map".into(), format!("[v{k}]").into(), "-r".into(), spec.fps.to_string().into()]);
        args.extend(OUTPUT_ARGS.iter().map(OsString::from));
        args.extend(["-f".into(), "mp4".into(), "-y".into(), dest.as_os_str().to_owned()]);
    }
    args
}

/// Renders `pieces` one after another as one video (the first piece's size and frame rate)
/// into `dest`: an untrimmed video of actions and the scenes between them.
pub fn encode_sequence(pieces: &[&ClipSpec], dest: &Path) -> Result<()> {
    let Some(first) = pieces.first() else { bail!("an empty sequence") };
    if pieces.iter().any(|p| (p.width, p.height, p.fps) != (first.width, first.height, first.fps)) {
        bail!("the pieces of a sequence differ in size or frame rate");
    }
    let (w, h, fps) = (first.width, first.height, first.fps);
    #[rustfmt::skip]
    let mut args: Vec<OsString> = [
        "-nostdin", "-nostats", "-hide_banner", "-loglevel", "error",
        "-sws_flags", "bicubic+accurate_rnd+bitexact",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &format!("{w}x{h}"), "-framerate", &fps.to_string(),
        "-i", "pipe:0", "-vf", "format=yuv420p", "-r", &fps.to_string(),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.extend(OUTPUT_ARGS.iter().map(OsString::from));
    args.extend(["-f".into(), "mp4".into(), "-y".into(), dest.as_os_str().to_owned()]);
    run_encoder(args, pieces)
}

/// Renders `spec` and encodes it into `dest` (which ffmpeg creates).
pub fn encode_clip(spec: &ClipSpec, dest: &Path) -> Result<()> {
    encode_batch(&[(spec, dest)])
}

/// Renders and encodes several clips of the same size in one ffmpeg process, each into its
/// destination (which ffmpeg creates; on failure some may exist, half written).
pub fn encode_batch(clips: &[(&ClipSpec, &Path)]) -> Result<()> {
    let Some((first, _)) = clips.first() else { return Ok(()) };
    if let Some((other, _)) = clips.iter().find(|(c, _)| (c.width, c.height) != (first.width, first.height)) {
        bail!(
            "clips of one batch differ in size ({}x{} and {}x{})",
            first.width,
            first.height,
            other.width,
            other.height
        );
    }
    let specs: Vec<&ClipSpec> = clips.iter().map(|(c, _)| *c).collect();
    run_encoder(batch_args(clips), &specs)
}

/// Starts ffmpeg with `args` and writes the rendered frames of `specs`, in order, to its stdin.
fn run_encoder(args: Vec<OsString>, specs: &[&ClipSpec]) -> Result<()> {
    let mut child = FfmpegCommand::new_with_path(FFMPEG)
        .args(args)
        .spawn()
        .with_context(|| format!("cannot start {FFMPEG}"))?;
    // ffmpeg's messages are drained while we write, or a full stderr pipe would stall it.
    let mut stderr = child.take_stderr().expect("ffmpeg-sidecar pipes stderr");
    let log = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let mut stdin = child.take_stdin().expect("ffmpeg-sidecar pipes stdin");
    let mut written = Ok(());
    'clips: for spec in specs {
        let renderer = Renderer::new(spec);
        let mut frame = vec![0u8; renderer.frame_len()];
        for t in 0..spec.num_frames() {
            renderer.render(t, &mut frame);
            if let Err(e) = stdin.write_all(&frame) {
                written = Err(e);
                break 'clips;
            }
        }
    }
    drop(stdin);
    let status = child.wait().with_context(|| format!("waiting for {FFMPEG}"))?;
    let log = log.join().unwrap_or_default();
    let log = String::from_utf8_lossy(&log);
    // ffmpeg-sidecar asks for `level+` prefixes (`[error] ...`); the level says nothing here.
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let last =
        last.strip_prefix('[').and_then(|l| l.split_once("] ")).map_or(last, |(_, msg)| msg).to_string();
    if !status.success() {
        bail!("{FFMPEG} failed ({status}): {last}");
    }
    written.with_context(|| format!("writing frames to {FFMPEG}: {last}"))?;
    Ok(())
}
