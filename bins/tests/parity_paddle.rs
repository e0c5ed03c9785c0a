//! Numerical parity of vidkit's PaddleVideo models against Paddle, through the real import path:
//! `scripts/export_paddle_parity.py` (paddle tier of `scripts/peers.sh`: PaddlePaddle's CPU wheel
//! with ppvideo's own model classes) builds PP-TSM or PP-TSMv2 (with and without its temporal
//! attention) from `paddle.seed` with randomised BatchNorm,
//! saves its state dict with `paddle.save`, an input and the eval-mode logits; the `vconvert`
//! binary imports the `.pdparams`; `vidkit::model::load_model` loads the result and its logits
//! must match: max |diff| ≤ 1e-4 × max |logit| (issue 3). Input: 2 clips × 8 frames × 3 × 64 × 80
//! (non-square, to catch a transposed layout; both pool globally, so any size works; 80 px
//! reaches odd sizes in the last stages).
//!
//! The `.pdparams` reader is also checked on files Paddle writes with pickle protocols 2, 3 and 4
//! (every dtype a state dict may hold, Fortran-order and big-endian arrays, the split layout of
//! big arrays), and on a hand-made malicious pickle (testdata/malicious.pdparams) that it must
//! refuse without running.
//!
//! Fixtures are cached under `target/parity_paddle/<hash of the script and the pins>/`. Run with
//! `-- --nocapture` to see the measured errors.

mod common;

use common::{cached_fixture, logits_error, paddle_peers_python, run, stderr, testsrc, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

const VCONVERT: &str = env!("CARGO_BIN_EXE_vconvert");
const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");
const VCLASSIFY: &str = env!("CARGO_BIN_EXE_vclassify");
const SEED: u64 = 0;
const SIZE: &str = "64x80";
const CLASSES: usize = 17;
const FRAMES: usize = 8;
const REL_TOL: f32 = 1e-4;

/// `export_paddle_parity.py --what WHAT ARGS` cached as `name`; `None` when the venv cannot be built.
fn fixture(name: &str, what: &str, args: &[&str]) -> Option<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/export_paddle_parity.py");
    let keys: Vec<PathBuf> = ["export_paddle_parity.py", "peers-paddle.txt", "peers-paddle-nodeps.txt"]
        .iter()
        .map(|f| root.join("scripts").join(f))
        .collect();
    let args: Vec<String> = ["--what", what].iter().chain(args).map(|s| s.to_string()).collect();
    cached_fixture("parity_paddle", &keys, name, paddle_peers_python, &script, &args)
}

/// `arch`'s fixture; `extra`: more script arguments (`--temporal-attention`), named in the cache.
fn model_fixture(arch: &str, extra: &[&str]) -> Option<PathBuf> {
    let (frames, classes, seed) = (FRAMES.to_string(), CLASSES.to_string(), SEED.to_string());
    let mut args =
        vec!["--arch", arch, "--frames", &frames, "--size", SIZE, "--classes", &classes, "--seed", &seed];
    args.extend_from_slice(extra);
    let suffix: String = extra.iter().map(|e| format!("-{}", e.trim_start_matches('-'))).collect();
    fixture(&format!("{arch}-t{FRAMES}-{SIZE}-c{CLASSES}-s{SEED}{suffix}"), "model", &args)
}

fn vconvert(args: &[&str]) -> std::process::Output {
    Command::new(VCONVERT).args(args).output().expect("vconvert runs")
}

/// Imports the fixture's `model.pdparams` as `arch` into `out` with vconvert.
fn import(fx: &Path, arch: &str, out: &Path) {
    let pd = fx.join("model.pdparams");
    let o = vconvert(&["--arch", arch, pd.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(o.status.success(), "vconvert: {}", String::from_utf8_lossy(&o.stderr));
    eprintln!("{}", String::from_utf8_lossy(&o.stderr).trim_end());
}

fn parity(arch: &str, extra: &[&str]) {
    let Some(fx) = model_fixture(arch, extra) else { return };
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    import(&fx, arch, &out);

    let e = logits_error(&out, &fx);
    assert_eq!((e.config.arch.as_str(), e.config.num_classes, e.config.frames), (arch, CLASSES, FRAMES));
    let (xs, max_diff, max_logit, forward_s, rel) =
        (&e.input_shape, e.max_diff, e.max_logit, e.forward_s, e.relative());
    eprintln!(
        "parity {arch} {extra:?} (input {xs:?}): max|diff| {max_diff:.3e}, max|logit| {max_logit:.3}, relative \
         {rel:.2e} (limit {REL_TOL:.0e}); forward {forward_s:.2} s"
    );
    assert!(rel <= REL_TOL, "{arch}: relative error {rel:.3e} > {REL_TOL:e} (max diff {max_diff:e})");
    // --precision bf16 against the same network with its products' operands rounded to bf16 in
    // Paddle (the export script's logits_bf16.npy): common::precision's bound.
    e.bf16.expect("the fixture has the bf16 reference logits").check(&format!("{arch} {extra:?}"));
}

#[test]
fn pptsm_r50vd_matches_paddle() {
    parity("pptsm_r50vd", &[]);
}

#[test]
fn pptsmv2_lcnetv2_matches_paddle() {
    parity("pptsmv2_lcnetv2", &[]);
}

/// PP-TSMv2 with its temporal attention (LTA), which vconvert switches on from the weights.
#[test]
fn pptsmv2_lcnetv2_with_temporal_attention_matches_paddle() {
    parity("pptsmv2_lcnetv2", &["--temporal-attention"]);
}

/// Every array of the format fixtures holds arange(n) in C order: check names, shapes, dtypes
/// and values as read back.
#[test]
fn pdparams_written_by_paddle_read_back_exactly() {
    use candle_core::DType;
    let Some(fx) = fixture("formats", "formats", &[]) else { return };
    let state: [(&str, &[usize], DType); 7] = [
        ("a.bool", &[2], DType::U8),
        ("a.f16", &[3, 2], DType::F16),
        ("a.f32", &[2, 3, 4], DType::F32),
        ("a.f64", &[5], DType::F64),
        ("a.i32", &[2, 2], DType::I64),
        ("a.i64", &[4], DType::I64),
        ("a.u8", &[6], DType::U8),
    ];
    let mixed: [(&str, &[usize], DType); 4] = [
        ("a.big", &[2, 5], DType::F32),
        ("a.f32", &[2, 3, 4], DType::F32),
        ("a.fortran", &[3, 4], DType::F32),
        ("a.i64", &[4], DType::I64),
    ];
    let check = |file: &str, want: &[(&str, &[usize], DType)]| {
        let tensors = vidkit::model::read_pdparams(&fx.join(file)).unwrap();
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        let want_names: Vec<&str> = want.iter().map(|w| w.0).collect();
        assert_eq!(names, want_names, "{file}: names, sorted, without StructuredToParameterName@@");
        for ((name, t), (_, shape, dtype)) in tensors.iter().zip(want) {
            assert_eq!((t.dims(), t.dtype()), (*shape, *dtype), "{file}: {name}");
            let values = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let n = values.len();
            let expect: Vec<f64> =
                if *name == "a.bool" { vec![0., 1.] } else { (0..n).map(|i| i as f64).collect() };
            assert_eq!(values, expect, "{file}: {name}");
        }
    };
    for protocol in [2, 3, 4] {
        check(&format!("state-p{protocol}.pdparams"), &state);
        check(&format!("mixed-p{protocol}.pdparams"), &mixed);
    }
    check("split-p2.pdparams", &[("a.split", &[4, 6], DType::F32)]);
}

/// A pickle that would run a shell command under Python's pickle is refused: exit 2, one line
/// naming the file and the global, nothing written, nothing run.
#[test]
fn malicious_pdparams_is_refused_without_running_it() {
    let evil = workspace_root().join("testdata/malicious.pdparams");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let o = vconvert(&["--arch", "pptsm_r50vd", evil.to_str().unwrap(), out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("malicious.pdparams") && err.contains("posix.system"), "{err}");
    assert!(!err.contains("ran code"), "the payload ran: {err}");
    assert!(!out.exists());
}

/// Paddle and PyTorch checkpoints go only to architectures of their own framework, and weights
/// that do not fit are refused with the first difference named.
#[test]
fn mismatched_paddle_imports_are_refused() {
    let Some(fx) = model_fixture("pptsm_r50vd", &[]) else { return };
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let (pd, o) = (fx.join("model.pdparams"), out.to_str().unwrap());
    let pd = pd.to_str().unwrap();
    for (args, want) in [
        (vec!["--arch", "tsm_r50", pd, o], vec![pd, "pptsm_r50vd", "not tsm_r50"]),
        (vec!["--arch", "pptsm_r50vd", "-o", "num_classes=5", pd, o], vec![pd, "head.fc", "shape"]),
    ] {
        let r = vconvert(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(want.iter().all(|w| err.contains(w)), "{args:?}: {err}");
        assert!(!out.exists());
    }
    let pth = work.path().join("model.pth");
    std::fs::write(&pth, b"PK\x03\x04 a zip").unwrap();
    let r = vconvert(&["--arch", "pptsm_r50vd", pth.to_str().unwrap(), o]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.code() == Some(2) && err.contains("PyTorch checkpoint"), "{err}");
}

/// The imported PP-TSM classifies a sampled video with vclassify: one prediction of 17
/// probabilities.
#[test]
fn vclassify_runs_an_imported_pptsm() {
    let Some(fx) = model_fixture("pptsm_r50vd", &[]) else { return };
    let work = tempfile::tempdir().unwrap();
    let p = work.path();
    import(&fx, "pptsm_r50vd", &p.join("m.safetensors"));
    testsrc(&p.join("a.mp4"), "96x72", 25, 40, &[]);
    let frames = FRAMES.to_string();
    let args = ["a.mp4", "--frames", &frames, "--size", "64", "--crop-size", "64", "-q", "-o", "a.vks"];
    let o = run(VSAMPLE, &args, p);
    assert!(o.status.success(), "vsample: {}", stderr(&o));
    let o = run(VCLASSIFY, &["--model", "m.safetensors", "a.vks"], p);
    assert!(o.status.success(), "vclassify: {}", stderr(&o));
    let pred: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let scores = pred["scores"].as_array().unwrap();
    assert_eq!(scores.len(), CLASSES);
    let sum: f64 = scores.iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
}
