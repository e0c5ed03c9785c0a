//! Pixel parity of `vsample` against the Python decoders users already trust (PyAV and decord,
//! pinned in the decode tier of `scripts/peers.sh`), through `scripts/pixel_parity.py`.
//!
//! Videos: two we generate (testsrc2 as h264 in MP4 and as MPEG-4 Part 2 in AVI) and every file
//! of `../shared/realvideo` (VFR, rotation, VP9-in-AVI at an odd rate, Theora, MPEG-2, VP8...).
//! Each is sampled with `--sampler uniform --frames 8` (first and last frame included, so frame
//! counting is exercised at both ends) twice: at native size and with `--size 112`.
//!
//! What is asserted, per video, only on the frames where PyAV and decord agree with each other
//! (within ±2; when one of them cannot open the file at all, the other alone is the reference):
//! * native size: every channel of every pixel within ±NATIVE_MAX_DIFF of the peers (the run
//!   prints whether it was exact);
//! * resized: within RESIZED_* of the agreed native frame resized by cv2.resize INTER_AREA.
//!
//! Where the peers disagree (decord seeks inexactly in MPEG-PS and cannot open some Matroska and
//! Ogg files; their libswscale versions convert odd-height frames differently) the numbers are
//! printed and nothing is asserted. On our own generated files the peers must agree on every
//! frame. Rotation is handled, not skipped: ffmpeg and decord autorotate, the script rotates
//! PyAV's frames as ffmpeg's transpose filter does. Cropping: a Theora file's picture is 214 wide,
//! libavcodec's aligned cropping leaves 218 (as PyAV and torchcodec return it); the script takes
//! PyAV's default and falls back to unaligned cropping when vsample's frames have the picture size.
//!
//! Run with `cargo test -p vidkit-cli --test pixel_parity -- --nocapture` to see the table.

mod common;

use common::{decode_peers_python, realvideo_dir, testsrc, workspace_root};
use serde_json::Value;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");

/// Native size: the same decoder family (libavcodec) and the same yuv→rgb conversion, so the
/// frames are expected bit-identical; ±2 per channel is the allowance for the rounding of
/// another libswscale version (PyAV bundles FFmpeg 8, decord 4.1, the system has 5.1).
const NATIVE_MAX_DIFF: i64 = 2;

/// Resized frames come from ffmpeg's `scale=W:H:flags=bilinear` (swscale), compared against
/// cv2.resize(INTER_AREA) of the peer's native frame. They are different resamplers: swscale
/// scales the Y, U and V planes (chroma at half resolution, full chroma interpolation only for
/// odd output widths), widens its bilinear kernel when downscaling and rounds in fixed point;
/// OpenCV averages RGB boxes. Measured here at short side 112 (2026-11-21, 14 videos): mean
/// absolute difference 0.50–1.94 per channel value, 99th percentile 5–19, the worst on saturated
/// colour edges (testsrc2, VP8 webm at an even output width). INTER_LINEAR (2 taps, aliasing)
/// is printed for information: mean up to 5.5, p99 up to 44. A wrong frame, a half-pixel shift,
/// swapped channels or a wrong kernel (fast_bilinear measured mean 3–16) falls outside these.
const RESIZED_MEAN_MAX: f64 = 2.5;
const RESIZED_P99_MAX: f64 = 24.0;

/// A video under test, and whether we made it (then the peers must agree on all its frames).
struct Video {
    path: PathBuf,
    generated: bool,
}

fn name(path: &str) -> &str {
    Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or(path)
}

/// Runs vsample on one video and appends its records to `sink`; an error message on failure.
fn sample_into(video: &Path, extra: &[&str], sink: &mut File) -> Result<(), String> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let o = Command::new(VSAMPLE)
        .arg(video)
        .args(["--sampler", "uniform", "--frames", "8", "--crop", "none", "-q", "-o"])
        .arg(out.path())
        .args(extra)
        .output()
        .expect("vsample runs");
    if !o.status.success() {
        return Err(format!("vsample {extra:?} failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    sink.write_all(&std::fs::read(out.path()).unwrap()).unwrap();
    Ok(())
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// `max/mean` of a stats object from the script, or `-`.
fn brief(s: &Value) -> String {
    if s.is_null() {
        "-".into()
    } else {
        format!("max {} mean {:.3}", num(s, "max"), num(s, "mean"))
    }
}

/// Checks one video's results; returns the failures (empty when it passes) and prints a line.
fn judge(r: &Value, generated: bool) -> Vec<String> {
    let video = r["video"].as_str().unwrap_or("?");
    let short = name(video);
    let mut fails = Vec::new();
    let total = r["indices"].as_array().map_or(0, Vec::len);
    let agreed = r["peers_agree"].as_array().map_or(0, Vec::len);
    let errors = r["errors"].as_object().cloned().unwrap_or_default();
    if generated && (agreed != total || !errors.is_empty()) {
        fails.push(format!(
            "{short}: the peers should agree on every frame of a file we generated ({agreed}/{total}; errors {errors:?})"
        ));
    }
    let peers_note = match (errors.contains_key("pyav"), errors.contains_key("decord")) {
        (false, false) => "pyav+decord",
        (false, true) => "pyav only (decord cannot read it)",
        (true, false) => "decord only (pyav cannot read it)",
        (true, true) => "no peer (neither can read it)",
    };
    if r["pyav_unaligned_crop"].as_bool() == Some(true) {
        eprintln!("  {short}: vsample's frames have the picture size: PyAV compared with unaligned cropping");
    }
    let native = &r["native"];
    let agreed_native = &native["agreed"];
    if agreed == 0 {
        eprintln!(
            "  {short}: NOT ASSERTED, the peers disagree on all {total} frames (vsample vs pyav {}, vs decord {}; \
             pyav vs decord {})",
            brief(&native["pyav"]),
            brief(&native["decord"]),
            brief(&r["pyav_vs_decord"])
        );
        return fails;
    }
    let mismatch = num(agreed_native, "shape_mismatch");
    if mismatch > 0.0 || agreed_native.is_null() {
        fails.push(format!(
            "{short}: native frames have shape {} but the peers' differ on {mismatch} frames",
            native["shape"]
        ));
    } else {
        let max = num(agreed_native, "max") as i64;
        let verdict = if max == 0 { "exact".to_string() } else { format!("within ±{max}") };
        eprintln!(
            "  {short}: native {verdict} on {agreed}/{total} frames vs {peers_note} (mean {:.4}, {} exact frames){}",
            num(agreed_native, "mean"),
            num(agreed_native, "exact_frames"),
            if agreed < total { format!("; {} frames left out: peers disagree", total - agreed) } else { String::new() }
        );
        if max > NATIVE_MAX_DIFF {
            fails.push(format!(
                "{short}: native frames differ from the agreeing peers by up to {max} (> ±{NATIVE_MAX_DIFF} per channel), mean {:.3}",
                num(agreed_native, "mean")
            ));
        }
    }

    let resized = &r["resized"];
    if !resized.is_null() {
        let area = &resized["cv2_area"];
        let (mean, p99) = (num(area, "mean"), num(area, "p99"));
        eprintln!(
            "  {short}: resized {} vs cv2 INTER_AREA mean {mean:.3} p99 {p99} max {} (INTER_LINEAR mean {:.3} p99 {}; \
             PyAV swscale bilinear mean {:.3} p99 {})",
            resized["shape"],
            num(area, "max"),
            num(&resized["cv2_linear"], "mean"),
            num(&resized["cv2_linear"], "p99"),
            num(&resized["pyav_bilinear"], "mean"),
            num(&resized["pyav_bilinear"], "p99"),
        );
        if !(mean <= RESIZED_MEAN_MAX && p99 <= RESIZED_P99_MAX) {
            fails.push(format!(
                "{short}: resized frames vs cv2 INTER_AREA: mean {mean:.3} (max allowed {RESIZED_MEAN_MAX}), \
                 p99 {p99} (max allowed {RESIZED_P99_MAX})"
            ));
        }
    }
    fails
}

#[test]
fn vsample_frames_match_pyav_and_decord() {
    let Some(python) = decode_peers_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut videos = vec![
        Video { path: dir.path().join("gen_h264.mp4"), generated: true },
        Video { path: dir.path().join("gen_mpeg4.avi"), generated: true },
    ];
    testsrc(&videos[0].path, "320x240", 25, 75, &[]);
    testsrc(&videos[1].path, "340x256", 25, 75, &["-c:v", "mpeg4", "-q:v", "3"]);
    if let Some(real) = realvideo_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&real)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e != "md"))
            .collect();
        names.sort();
        videos.extend(names.into_iter().map(|path| Video { path, generated: false }));
    }

    let native_path = dir.path().join("native.vks");
    let resized_path = dir.path().join("resized.vks");
    let mut native = File::create(&native_path).unwrap();
    let mut resized = File::create(&resized_path).unwrap();
    let mut fails = Vec::new();
    for v in &videos {
        for (extra, sink) in [(&[][..], &mut native), (&["--size", "112"][..], &mut resized)] {
            if let Err(e) = sample_into(&v.path, extra, sink) {
                fails.push(format!("{}: {e}", v.path.display()));
            }
        }
    }
    drop((native, resized));

    let json_path = dir.path().join("parity.json");
    let o = Command::new(&python)
        .arg(workspace_root().join("scripts/pixel_parity.py"))
        .arg("--native")
        .arg(&native_path)
        .arg("--resized")
        .arg(&resized_path)
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("python runs");
    // The script's table (and decoders' chatter) on stderr; shown with --nocapture or on failure.
    eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "scripts/pixel_parity.py failed (exit {:?})", o.status.code());
    let results: Vec<Value> = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();

    eprintln!("verdicts (native: ±{NATIVE_MAX_DIFF}; resized vs INTER_AREA: mean ≤ {RESIZED_MEAN_MAX}, p99 ≤ {RESIZED_P99_MAX}):");
    for v in &videos {
        let shown = v.path.display().to_string();
        match results.iter().find(|r| r["video"].as_str() == Some(shown.as_str())) {
            Some(r) => fails.extend(judge(r, v.generated)),
            None if fails.iter().any(|f| f.starts_with(&shown)) => {}
            None => fails.push(format!("{shown}: no records reached the comparison")),
        }
    }
    assert!(fails.is_empty(), "pixel parity failures:\n  {}", fails.join("\n  "));
}
