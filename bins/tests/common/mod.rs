//! Helpers shared by the whole-tool tests: generated videos, paths, the pinned Python peers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod precision;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `../shared/realvideo` beside the checkout, or `None` (tests then skip with a message).
pub fn realvideo_dir() -> Option<PathBuf> {
    let d = workspace_root().join("../shared/realvideo");
    if d.is_dir() {
        Some(d)
    } else {
        skip(&format!("{} is absent; real-video checks skipped", d.display()));
        None
    }
}

/// A check that cannot run here: outside CI it is skipped, loudly; when `CI` is set it fails
/// with the reason, so a suite that could not test something never passes quietly.
pub fn skip(why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("cannot run under CI: {why}");
    }
    eprintln!("SKIP: {why}");
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

/// `frames` frames of testsrc2 (64x48, 25 fps, h264, a keyframe every 10) whose coded data is
/// damaged in its last third: the container stays readable, decoding breaks part-way. Written
/// to `dir/name`.
pub fn damaged_in_last_third(dir: &Path, name: &str, frames: usize) {
    let full = dir.join("undamaged.mp4");
    testsrc(
        &full,
        "64x48",
        25,
        frames,
        &["-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    );
    let mut bad = std::fs::read(&full).unwrap();
    let len = bad.len();
    for i in (len * 2 / 3..len).step_by(97) {
        bad[i] = bad[i].wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(dir.join(name), bad).unwrap();
}

pub fn run(bin: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(bin).args(args).current_dir(dir).output().expect("binary runs")
}

/// A vsynth set in `dir/syn` (train.list, val.list, labels.txt): `classes` comma-separated,
/// `per_class` videos of each at `size` ("WxH").
pub fn synth(dir: &Path, classes: &str, per_class: &str, size: &str, seed: &str) {
    let args = [
        "--out",
        "syn",
        "--classes",
        classes,
        "--per-class",
        per_class,
        "--size",
        size,
        "--seed",
        seed,
        "-q",
    ];
    let o = run(env!("CARGO_BIN_EXE_vsynth"), &args, dir);
    assert!(o.status.success(), "vsynth: {}", stderr(&o));
}

/// The lines of the vsynth set in `dir/syn`: train.list, then val.list.
pub fn synth_lines(dir: &Path) -> Vec<String> {
    ["train.list", "val.list"]
        .iter()
        .flat_map(|l| {
            std::fs::read_to_string(dir.join("syn").join(l))
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs `bin args... -o whole` and `bin args... --shard K/N -o partK` for K = 0..N-1 in `dir`,
/// then `bin --merge part0 .. partN-1`, and asserts the merge is byte for byte the unsharded
/// output (issue 23, point 2). Returns the shards' sizes in lines.
pub fn assert_shards_merge(bin: &str, args: &[&str], n: usize, dir: &Path) -> Vec<usize> {
    let tool = Path::new(bin).file_name().unwrap().to_string_lossy().to_string();
    let o = run(bin, &[args, &["-q", "-o", "whole.out"]].concat(), dir);
    assert!(o.status.success(), "{tool}: {}", stderr(&o));
    let mut parts = Vec::new();
    for k in 0..n {
        let (shard, part) = (format!("{k}/{n}"), format!("part{k}.out"));
        let o = run(bin, &[args, &["--shard", &shard, "-q", "-o", &part]].concat(), dir);
        assert!(o.status.success(), "{tool} --shard {shard}: {}", stderr(&o));
        parts.push(part);
    }
    let mut merge = vec!["--merge"];
    merge.extend(parts.iter().map(String::as_str));
    merge.extend(["-q", "-o", "merged.out"]);
    let o = run(bin, &merge, dir);
    assert!(o.status.success(), "{tool} --merge: {}", stderr(&o));
    let whole = std::fs::read(dir.join("whole.out")).unwrap();
    assert!(
        std::fs::read(dir.join("merged.out")).unwrap() == whole,
        "{tool}: {n} shards merged differ from one run"
    );
    parts.iter().map(|p| std::fs::read_to_string(dir.join(p)).unwrap().lines().count()).collect()
}

/// Runs the real `vtrain` on the vsynth set in `dir/syn` as `arch`, writing to `dir/out`, on one
/// thread (the learning tests' times assume it), and returns its summary (`best_val_top1`, ...).
pub fn vtrain_synth(
    dir: &Path,
    arch: &str,
    out: &str,
    extra: &[impl AsRef<std::ffi::OsStr>],
) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_vtrain"))
        .args(["--arch", arch, "--train-list", "syn/train.list", "--val-list", "syn/val.list"])
        .args(["--out", out, "-q"])
        .args(extra)
        .current_dir(dir)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("vtrain runs");
    assert!(o.status.success(), "vtrain {arch}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("vtrain prints its summary")
}

/// `vtrain` arguments of a learning test on 32 px vsynth videos: centre crops (no flip, which
/// would swap left and right), batches of 16, no dropout, AdamW at `lr` (weight decay 1e-4)
/// with a cosine decay over `epochs`, `--seed seed`; `model` adds the model's own keys
/// (`frames=8`, `base_width=16`, ...).
pub fn learning_args(model: &[&str], epochs: usize, lr: f64, seed: u64) -> Vec<String> {
    let mut keys: Vec<String> = model.iter().map(|k| k.to_string()).collect();
    keys.extend(
        ["short_side=32", "crop_size=32", "train_crop=center", "batch_size=16", "dropout=0"]
            .map(String::from),
    );
    keys.push(format!("epochs={epochs}"));
    keys.push(format!(r#"optimizer={{"name":"adamw","lr":{lr},"weight_decay":0.0001}}"#));
    keys.push(format!(r#"schedule={{"name":"cosine","base_lr":{lr},"epochs":{epochs}}}"#));
    let mut args: Vec<String> = keys.into_iter().flat_map(|k| ["-o".to_string(), k]).collect();
    args.extend(["--seed".to_string(), seed.to_string()]);
    args
}

/// `vtrain` overrides for a tiny, fast 2D model on 32 px vsynth videos: 4 frames, an 8-wide
/// backbone, batches of 4.
pub const TINY_2D: [&str; 10] = [
    "-o",
    "frames=4",
    "-o",
    "base_width=8",
    "-o",
    "short_side=32",
    "-o",
    "crop_size=32",
    "-o",
    "batch_size=4",
];

/// Asserts that two safetensors files hold the same tensors, bit for bit (`--resume` checks).
pub fn assert_same_tensors(a: &Path, b: &Path) {
    let dev = candle_core::Device::Cpu;
    let (a, b) =
        (candle_core::safetensors::load(a, &dev).unwrap(), candle_core::safetensors::load(b, &dev).unwrap());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let bits = |t: &candle_core::Tensor| -> Vec<u32> {
            let t = t.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap();
            t.to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(t), bits(&b[name]), "{name} differs after resuming");
    }
}

/// The training losses a `vtrain` run logged (`log.jsonl`'s "train" lines), in order.
pub fn train_losses(run_dir: &Path) -> Vec<f64> {
    let log = std::fs::read_to_string(run_dir.join("log.jsonl")).unwrap();
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

/// Asserts that the runs in `a` and `b` (the CPU's kernels and `--device cpu-portable`, the
/// GPU's code) logged the same training losses: the first within 1e-5 relative (the same
/// weights and batch, only rounding apart), each later one within 1e-3 (rounding compounds).
pub fn assert_trains_alike(a: &Path, b: &Path, what: &str) {
    assert_trains_alike_for(a, b, what, usize::MAX)
}

/// `assert_trains_alike` over the first `steps` losses only: in a deep network of BatchNorm and
/// ReLU, rounding moves pre-activations across a ReLU's zero and the runs part after a few
/// steps (the ReLU flips `scripts/export_zoo_parity.py` measures; C-TCN's second loss is 9e-4
/// apart, its third 1.7e-2).
pub fn assert_trains_alike_for(a: &Path, b: &Path, what: &str, steps: usize) {
    let (a, b) = (train_losses(a), train_losses(b));
    assert!(!a.is_empty() && a.len() == b.len(), "{what}: {a:?} vs {b:?}");
    for (i, (x, y)) in a.iter().zip(&b).enumerate().take(steps) {
        let tol = if i == 0 { 1e-5 } else { 1e-3 };
        assert!((x - y).abs() <= tol * x.abs().max(1.0), "{what}: loss {i}: {a:?} vs {b:?}");
    }
    eprintln!("{what}: kernels {a:?}, candle-only {b:?}");
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
            skip(&format!(
                "the peers venv ({}) could not be built; Python interop checks skipped",
                peers.display()
            ));
            None
        }
    }
}

/// The Python of the pinned peers venv of `tier` (`scripts/peers.sh`), built on first use;
/// `None` when it cannot be built (no network), after a SKIP message naming `what` is skipped.
pub fn peers_python(tier: &str, what: &str) -> Option<PathBuf> {
    let peers = target_dir().join("peers");
    let st =
        Command::new("bash").arg(workspace_root().join("scripts/peers.sh")).arg(&peers).arg(tier).status();
    match st {
        Ok(s) if s.success() => Some(peers.join(tier).join("bin/python")),
        _ => {
            skip(&format!("the {tier} peers venv ({}) could not be built; {what} skipped", peers.display()));
            None
        }
    }
}

/// The Python of the pinned models-tier peers venv (numpy, torch, torchvision, safetensors,
/// pytorchvideo), built on first use by `scripts/peers.sh` (about 2 GB of wheels, 4.3 GB on
/// disk: PyPI's torch needs its CUDA libraries even on CPU); `None` when it cannot be built (no
/// network), with a message.
pub fn models_peers_python() -> Option<PathBuf> {
    peers_python("models", "model parity checks")
}

/// The Python of the pinned paddle-tier peers venv (PaddlePaddle CPU, ppvideo); `None` when it
/// cannot be built, with a message.
pub fn paddle_peers_python() -> Option<PathBuf> {
    peers_python("paddle", "Paddle parity checks")
}

/// FNV-1a, 64 bit: a cache key stable across Rust versions.
pub fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The fixture `name` made by `python script ARGS --out DIR`, cached as
/// `target/<kind>/<hash of key_files>/<name>/` so only the first run pays for Python; `None`
/// (after a SKIP message) when `python` cannot be had.
pub fn cached_fixture(
    kind: &str,
    key_files: &[PathBuf],
    name: &str,
    python: impl FnOnce() -> Option<PathBuf>,
    script: &Path,
    args: &[String],
) -> Option<PathBuf> {
    let mut key = 0xcbf29ce484222325;
    for f in key_files {
        key = fnv1a(&std::fs::read(f).expect("fixture inputs readable"), key);
    }
    let dir = target_dir().join(kind).join(format!("{key:016x}"));
    let out = dir.join(name);
    if out.is_dir() {
        return Some(out);
    }
    let python = python()?;
    // Fixtures of earlier script versions are dead weight (hundreds of MB): drop them.
    if let Ok(entries) = std::fs::read_dir(dir.parent().unwrap()) {
        for e in entries.flatten() {
            if e.path() != dir {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = tempfile::tempdir_in(&dir).unwrap();
    let st = Command::new(&python)
        .arg(script)
        .args(args)
        .arg("--out")
        .arg(tmp.path())
        .env("OMP_NUM_THREADS", "2")
        .status()
        .expect("python runs");
    assert!(st.success(), "{} failed for {name}", script.display());
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &out).is_err() {
        // Another test process made it meanwhile.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    remove_at_exit_under_ci(&dir);
    Some(out)
}

/// Under CI (a clean clone, run once) a cached fixture is never read again, and the parity
/// fixtures are full-width weights, 3 GB together: the ones this test binary made are removed
/// when it exits (libtest returns from main or calls `exit`; both run `atexit` handlers).
fn remove_at_exit_under_ci(dir: &Path) {
    use std::sync::{Mutex, Once};
    static MADE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static REGISTER: Once = Once::new();
    extern "C" fn remove_made() {
        if let Ok(made) = MADE.lock() {
            for dir in made.iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    if !std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        return;
    }
    MADE.lock().unwrap().push(dir.to_path_buf());
    // SAFETY: registers a plain function with no arguments, as atexit(3) requires.
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_made);
    });
}

/// A little-endian float32 C-order .npy (what the fixture scripts write): shape and data.
pub fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not .npy", path.display());
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"), "{header}");
    let shape_str = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).unwrap();
    let shape: Vec<usize> =
        shape_str.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let data: Vec<f32> =
        bytes[start + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{}: payload size", path.display());
    (shape, data)
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

/// A model file's eval-mode logits against a fixture's (`input.npy` → `logits.npy`).
pub struct LogitsError {
    pub config: vidkit::model::ModelConfig,
    pub input_shape: Vec<usize>,
    pub max_diff: f32,
    pub max_logit: f32,
    pub forward_s: f64,
    /// The bf16 run beside PyTorch's, when the fixture has its bf16 logits.
    pub bf16: Option<precision::Bf16Drift>,
}

impl LogitsError {
    /// max |diff| / max |logit|
    pub fn relative(&self) -> f32 {
        self.max_diff / self.max_logit
    }
}

pub fn logits_error(model: &Path, fixture: &Path) -> LogitsError {
    let device = candle_core::Device::Cpu;
    let loaded = vidkit::model::load_model(model, &device).unwrap();
    let (input_shape, x) = read_npy_f32(&fixture.join("input.npy"));
    let (logits_shape, want) = read_npy_f32(&fixture.join("logits.npy"));
    let x = candle_core::Tensor::from_vec(x, input_shape.as_slice(), &device).unwrap();
    let t0 = std::time::Instant::now();
    let got = loaded.model.forward_t(&x, false).unwrap();
    let forward_s = t0.elapsed().as_secs_f64();
    assert_eq!(got.dims(), logits_shape.as_slice());
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let max_diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let max_logit = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let bf16 = precision::bf16_drift(fixture, &got, || loaded.model.forward_t(&x, false).unwrap());
    LogitsError { config: loaded.model.config().clone(), input_shape, max_diff, max_logit, forward_s, bf16 }
}

/// `vsynth --segments -o u --classes left,grow` in `dir`: `videos` untrimmed videos of
/// `duration` seconds ("MIN-MAX") at 64x48, with their ActivityNet ground truth.
#[allow(dead_code)]
pub fn synth_untrimmed(dir: &Path, videos: &str, duration: &str, seed: &str) {
    let args = [
        "--segments",
        "-o",
        "u",
        "--classes",
        "left,grow",
        "--videos",
        videos,
        "--duration",
        duration,
        "--size",
        "64x48",
        "--seed",
        seed,
        "-q",
    ];
    let o = run(env!("CARGO_BIN_EXE_vsynth"), &args, dir);
    assert!(o.status.success(), "vsynth: {}", stderr(&o));
}

/// A TSN-R18 feature extractor of `base_width` (features 8 × base_width wide) with random
/// weights from `seed`, written to `path`.
#[allow(dead_code)]
pub fn write_random_tsn(path: &Path, base_width: usize, seed: u64) {
    let mut tsn = vidkit::model::ModelConfig::defaults("tsn_r18");
    (tsn.num_classes, tsn.base_width) = (2, base_width);
    let varmap = candle_nn::VarMap::new();
    vidkit::model::build(
        &tsn,
        candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu),
    )
    .unwrap();
    vidkit::model::init_weights(&varmap, seed).unwrap();
    vidkit::model::save_model(&varmap, &tsn, path).unwrap();
}

/// Every record of a clip/feature stream file.
pub fn read_stream(path: &Path) -> Vec<vidkit::stream::Record> {
    let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    vidkit::stream::StreamReader::new(f, path.display().to_string()).collect::<anyhow::Result<_>>().unwrap()
}

/// Serves `body` over HTTP/1.1 on 127.0.0.1 (Range requests answered with 206) until the test
/// ends; returns the port.
pub fn serve(body: Vec<u8>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut start = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                let l = line.to_ascii_lowercase();
                if let Some(r) = l.strip_prefix("range: bytes=") {
                    start =
                        r.trim().trim_end_matches('-').split('-').next().unwrap_or("0").parse().unwrap_or(0);
                }
                line.clear();
            }
            let start = start.min(body.len());
            let part = &body[start..];
            let head = if start > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                    part.len(),
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n", body.len())
            };
            let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(part));
        }
    });
    port
}
