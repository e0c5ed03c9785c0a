//! `ffprobe` once per video: size, frame rate, rotation and an exact frame count.

use super::FFPROBE;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    pub path: PathBuf,
    pub codec: String,
    pub container: String,
    /// Displayed size, after the rotation ffmpeg applies when decoding.
    pub width: u32,
    pub height: u32,
    /// Degrees of the display matrix as ffprobe reports them (0, 90, 180, 270).
    pub rotation: i32,
    /// Average frame rate (r_frame_rate where the average is unknown).
    pub fps: f64,
    /// Frames the decoder outputs: counted from the packets, which matched the decoded count on
    /// every file of ../shared/realvideo, including an AVI whose header claims 300 for 295.
    pub num_frames: usize,
    pub duration_s: f64,
}

fn parse_rate(v: Option<&Value>) -> Option<f64> {
    let s = v?.as_str()?;
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (d > 0.0 && n > 0.0).then(|| n / d)
}

fn parse_num<T: std::str::FromStr>(v: Option<&Value>) -> Option<T> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

/// Fills whichever of frame rate and duration is unknown (≤ 0 / None) from the other.
pub(crate) fn rate_and_duration(fps: f64, duration_s: Option<f64>, num_frames: usize) -> (f64, f64) {
    let duration_s = duration_s.unwrap_or(if fps > 0.0 { num_frames as f64 / fps } else { 0.0 });
    let fps = if fps > 0.0 {
        fps
    } else if duration_s > 0.0 {
        num_frames as f64 / duration_s
    } else {
        0.0
    };
    (fps, duration_s)
}

/// Demuxer messages that mean the file was cut short.
const TRUNCATION_SIGNS: [&str; 3] = ["partial file", "ended prematurely", "moov atom not found"];

/// The frame count from the packets counted (or the container header), refusing cut files.
pub(crate) fn checked_frame_count(
    path: &Path,
    container: &str,
    packets: Option<usize>,
    header_frames: Option<usize>,
) -> Result<usize> {
    let num_frames = packets.or(header_frames).unwrap_or(0);
    if num_frames == 0 {
        bail!("{}: video stream has no frames (truncated or corrupt?)", path.display());
    }
    if let (Some(p), Some(h)) = (packets, header_frames) {
        // MP4's sample table is exact, so any shortfall is a cut file. AVI headers can be a few
        // frames off on intact files (a VP9 AVI here claims 300 for 295), so allow 5% there.
        let is_mp4 = container.contains("mp4") || container.contains("mov");
        if (is_mp4 && p < h) || (p as f64) < 0.95 * h as f64 {
            bail!(
                "{}: truncated video: the container lists {h} frames but only {p} are present",
                path.display()
            );
        }
    }
    Ok(num_frames)
}

/// Checks the cheap things first so a missing or empty file gets a precise message.
pub(crate) fn check_file(path: &Path) -> Result<()> {
    if super::is_url(path) {
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("{}: no such file", path.display()),
        _ => anyhow::anyhow!("{}: cannot read: {e}", path.display()),
    })?;
    if meta.is_dir() {
        bail!("{}: is a directory, not a video", path.display());
    }
    if meta.len() == 0 {
        bail!("{}: empty file (0 bytes), not a video", path.display());
    }
    Ok(())
}

/// The most telling line of ffmpeg's stderr (the last one naming the problem).
pub(crate) fn stderr_reason(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // ffmpeg prefixes component lines with "[demuxer @ 0x...]"; strip that and the file name.
    let pick = lines.last().copied().unwrap_or("no diagnostic from ffmpeg");
    let pick = match pick.find("] ") {
        Some(i) if pick.starts_with('[') => &pick[i + 2..],
        _ => pick,
    };
    pick.rsplit_once(": ").map(|(_, r)| r).unwrap_or(pick).to_string()
}

/// Probes a video: natively for plain MP4/MOV files, through `ffprobe` for everything else.
pub fn probe(path: &Path) -> Result<VideoInfo> {
    check_file(path)?;
    if super::is_url(path) {
        return probe_with_ffprobe(path);
    }
    if let Some(info) = super::mp4::probe_mp4(path) {
        return Ok(info);
    }
    probe_with_ffprobe(path)
}

/// Probes through `ffprobe`, counting packets (which only demuxes).
pub fn probe_with_ffprobe(path: &Path) -> Result<VideoInfo> {
    check_file(path)?;
    let out = Command::new(FFPROBE)
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries"])
        .arg(
            "stream=codec_name,width,height,r_frame_rate,avg_frame_rate,nb_frames,nb_read_packets,duration:\
             stream_side_data=rotation:stream_tags=rotate:format=format_name,duration",
        )
        .args(["-of", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("{}: cannot run {FFPROBE} (is ffmpeg installed? `make deps`)", path.display())
        })?;
    if !out.status.success() {
        bail!("{}: not a readable video: {}", path.display(), stderr_reason(&out.stderr));
    }
    let json: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: unreadable ffprobe output", path.display()))?;
    let stream = match json.get("streams").and_then(|s| s.get(0)) {
        Some(s) => s,
        None => bail!("{}: no video stream (not a video file?)", path.display()),
    };
    let codec = stream.get("codec_name").and_then(Value::as_str).unwrap_or("unknown").to_string();
    let container = json.pointer("/format/format_name").and_then(Value::as_str).unwrap_or("").to_string();
    let (cw, ch) = match (parse_num::<u32>(stream.get("width")), parse_num::<u32>(stream.get("height"))) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => bail!("{}: video stream has no frame size (corrupt header?)", path.display()),
    };
    let rotation_raw = stream
        .get("side_data_list")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find_map(|d| parse_num::<f64>(d.get("rotation"))))
        .or_else(|| parse_num::<f64>(stream.pointer("/tags/rotate")))
        .unwrap_or(0.0);
    let rotation = (rotation_raw.round() as i32).rem_euclid(360);
    let (width, height) = if rotation == 90 || rotation == 270 { (ch, cw) } else { (cw, ch) };
    let fps = parse_rate(stream.get("avg_frame_rate"))
        .or_else(|| parse_rate(stream.get("r_frame_rate")))
        .unwrap_or(0.0);
    let demux_log = String::from_utf8_lossy(&out.stderr);
    if let Some(msg) = TRUNCATION_SIGNS.iter().find(|m| demux_log.contains(*m)) {
        bail!("{}: truncated video: the demuxer reports {msg:?}", path.display());
    }
    let packets = parse_num::<usize>(stream.get("nb_read_packets"));
    let header_frames = parse_num::<usize>(stream.get("nb_frames"));
    let num_frames = checked_frame_count(path, &container, packets, header_frames)?;
    let duration = parse_num::<f64>(stream.get("duration"))
        .or_else(|| parse_num::<f64>(json.pointer("/format/duration")));
    let (fps, duration_s) = rate_and_duration(fps, duration, num_frames);
    Ok(VideoInfo {
        path: path.to_path_buf(),
        codec,
        container,
        width,
        height,
        rotation,
        fps,
        num_frames,
        duration_s,
    })
}
