//! Helpers shared by the whole-tool tests: generated videos, paths, the pinned Python peers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `../shared/realvideo` beside the checkout, or `None` (tests then skip with a message).
pub fn realvideo_dir() -> Option<PathBuf> {
    let d = workspace_root().join("../shared/realvideo");
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("SKIP: {} is absent; real-video checks skipped", d.display());
        None
    }
}

/// Encodes `frames` frames of ffmpeg's testsrc2 at `size` ("WxH") and `fps` into `path`, with
/// extra output arguments (codec etc.; default h264 yuv420p).
pub fn testsrc(path: &Path, size: &str, fps: u32, frames: usize, codec_args: &[&str]) {
    let dur = frames as f64 / fps as f64;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate={fps}:duration={dur}"));
    if codec_args.is_empty() {
        cmd.args(["-c:v", "libx264", "-pix_fmt", "yuv420p"]);
    } else {
        cmd.args(codec_args);
    }
    let st = cmd.arg(path).status().expect("ffmpeg runs");
    assert!(st.success(), "ffmpeg could not make {}", path.display());
}

pub fn run(bin: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(bin).args(args).current_dir(dir).output().expect("binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The Python of the pinned decode-tier peers venv (numpy, PyAV, decord, OpenCV), built on
/// first use by `scripts/peers.sh`; `None` when it cannot be built (no network), with a message.
pub fn decode_peers_python() -> Option<PathBuf> {
    let root = workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let peers = if target.is_absolute() { target.join("peers") } else { root.join(target).join("peers") };
    let st = Command::new("bash").arg(root.join("scripts/peers.sh")).arg(&peers).arg("decode").status();
    match st {
        Ok(s) if s.success() => Some(peers.join("decode/bin/python")),
        _ => {
            eprintln!(
                "SKIP: the peers venv ({}) could not be built; Python interop checks skipped",
                peers.display()
            );
            None
        }
    }
}

/// The Python of the pinned models-tier peers venv (numpy, torch, torchvision, safetensors),
/// built on first use by `scripts/peers.sh` (about 3 GB of wheels: PyPI's torch needs its CUDA
/// libraries even on CPU); `None` when it cannot be built (no network), with a message.
pub fn models_peers_python() -> Option<PathBuf> {
    let peers = target_dir().join("peers");
    let st = Command::new("bash")
        .arg(workspace_root().join("scripts/peers.sh"))
        .arg(&peers)
        .arg("models")
        .status();
    match st {
        Ok(s) if s.success() => Some(peers.join("models/bin/python")),
        _ => {
            eprintln!(
                "SKIP: the models peers venv ({}) could not be built; model parity checks skipped",
                peers.display()
            );
            None
        }
    }
}

/// Cargo's target directory (absolute), where cached fixtures and the peers venvs live.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    if target.is_absolute() {
        target
    } else {
        root.join(target)
    }
}
