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

/// A finished run of a tool, its output as text.
pub struct ToolRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ToolRun {
    /// Success with exactly one JSON object on stdout, which is returned.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "the tool failed: {}", self.stderr);
        assert_eq!(self.stdout.lines().count(), 1, "one JSON object on stdout: {}", self.stdout);
        serde_json::from_str(&self.stdout).expect("stdout is JSON")
    }

    /// A fatal error: exit code 2, nothing on stdout, exactly one line on stderr, which is returned.
    pub fn fatal(&self) -> &str {
        assert_eq!(self.code, 2, "expected exit code 2; stderr: {}", self.stderr);
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
        assert_eq!(self.stderr.lines().count(), 1, "one line on stderr: {:?}", self.stderr);
        self.stderr.trim_end()
    }
}

/// Runs `bin` in `dir`, feeding `stdin` (or nothing) to it.
pub fn run_tool(bin: &str, args: &[&str], dir: &Path, stdin: Option<&str>) -> ToolRun {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tool runs");
    if let Some(text) = stdin {
        child.stdin.take().expect("piped stdin").write_all(text.as_bytes()).expect("stdin written");
    }
    let out = child.wait_with_output().expect("the tool ends");
    ToolRun {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
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
