//! Numerical parity of vidkit's TSN/TSM against PyTorch, through the real import path:
//! `scripts/export_torch_parity.py` (pinned models tier of `scripts/peers.sh`) builds torchvision's
//! ResNet with random weights and randomised BatchNorm, wraps it as mmaction2's TSN or TSM, and
//! writes the checkpoint, an input and the logits; the `vconvert` binary imports the checkpoint;
//! `vidkit::model::load_model` loads the result and its eval-mode logits must match:
//! max |diff| ≤ 1e-4 × max |logit| (issue 3).
//!
//! Checkpoint layouts: TSN models come as mmaction2 writes a TSN with a torchvision backbone
//! (`backbone.conv1.weight`, `cls_head.fc_cls.*`, a plain state dict); TSM models as mmaction2's
//! ResNetTSM writes them (ConvModule names, shifted convs as `conv1.conv.net.weight`, nested under
//! `state_dict` beside `meta`); a plain torchvision ResNet-18 state dict imports as both TSN and
//! TSM. Input: 2 clips × T frames × 3 × 64 × 80 (non-square, to catch a transposed layout).
//!
//! Fixtures are cached under `target/parity_torch/<hash of the script and the pins>/`, so only the
//! first run pays for Python. Run with `-- --nocapture` to see the measured errors.

mod common;

use common::{cached_fixture, logits_error, models_peers_python, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

const VCONVERT: &str = env!("CARGO_BIN_EXE_vconvert");
const SEED: u64 = 0;
const SIZE: &str = "64x80";
const CLASSES: usize = 17;
const REL_TOL: f32 = 1e-4;

/// The exported fixture for (arch, layout, frames): model.pth, input.npy, logits.npy; `None`
/// (after a SKIP message) when the models venv cannot be built.
fn fixture(arch: &str, layout: &str, frames: usize) -> Option<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/export_torch_parity.py");
    let name = format!("{arch}-{layout}-t{frames}-{SIZE}-c{CLASSES}-s{SEED}");
    let args: Vec<String> = [
        "--arch",
        arch,
        "--layout",
        layout,
        "--size",
        SIZE,
        "--frames",
        &frames.to_string(),
        "--classes",
        &CLASSES.to_string(),
        "--seed",
        &SEED.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let keys = [script.clone(), root.join("scripts/peers-models-nodeps.txt")];
    cached_fixture("parity_torch", &keys, &name, models_peers_python, &script, &args)
}

fn vconvert(args: &[&str]) -> std::process::Output {
    Command::new(VCONVERT).args(args).output().expect("vconvert runs")
}

/// Imports `pth` as `arch` with `vconvert`, runs the model on the fixture's input and compares
/// with `logits.npy` of `expected`; returns the relative error.
fn check_parity(pth: &Path, arch: &str, frames: usize, expected: &Path, extra: &[&str]) -> f32 {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let frames_opt = format!("frames={frames}");
    let mut args = vec!["--arch", arch, "-o", &frames_opt];
    args.extend_from_slice(extra);
    args.push(pth.to_str().unwrap());
    args.push(out.to_str().unwrap());
    let t0 = std::time::Instant::now();
    let o = vconvert(&args);
    let convert_s = t0.elapsed().as_secs_f64();
    assert!(o.status.success(), "vconvert {args:?}: {}", String::from_utf8_lossy(&o.stderr));

    let e = logits_error(&out, expected);
    let cfg = &e.config;
    assert_eq!((cfg.arch.as_str(), cfg.num_classes, cfg.frames), (arch, CLASSES, frames));
    assert_eq!(e.input_shape[1], frames);
    let (xs, max_diff, max_logit, forward_s, rel) =
        (&e.input_shape, e.max_diff, e.max_logit, e.forward_s, e.relative());
    let layout = expected.file_name().unwrap().to_string_lossy().split('-').nth(1).unwrap_or("?").to_string();
    eprintln!(
        "parity {arch:<8} ({layout} checkpoint, input {xs:?}): max|diff| {max_diff:.3e}, max|logit| {max_logit:.3}, \
         relative {rel:.2e} (limit {REL_TOL:.0e}); vconvert {convert_s:.2} s, forward {forward_s:.2} s"
    );
    assert!(rel <= REL_TOL, "{arch}: relative error {rel:.3e} > {REL_TOL:e} (max diff {max_diff:e})");
    e.bf16.as_ref().expect("the fixture has PyTorch's bf16 logits").check(&format!("{arch} ({layout})"));
    rel
}

fn parity(arch: &str, frames: usize) {
    let layout = if arch.starts_with("tsm") { "mmaction2" } else { "wrapped" };
    let Some(fx) = fixture(arch, layout, frames) else { return };
    check_parity(&fx.join("model.pth"), arch, frames, &fx, &[]);
}

#[test]
fn tsn_r18_matches_torch() {
    parity("tsn_r18", 8);
}

#[test]
fn tsn_r34_matches_torch() {
    parity("tsn_r34", 8);
}

#[test]
fn tsn_r50_matches_torch() {
    parity("tsn_r50", 8);
}

#[test]
fn tsn_r101_matches_torch() {
    parity("tsn_r101", 4);
}

#[test]
fn tsm_r18_matches_torch() {
    parity("tsm_r18", 8);
}

#[test]
fn tsm_r34_matches_torch() {
    parity("tsm_r34", 8);
}

#[test]
fn tsm_r50_matches_torch() {
    parity("tsm_r50", 8);
}

#[test]
fn tsm_r101_matches_torch() {
    parity("tsm_r101", 4);
}

/// torchvision's own ResNet-18 state dict (`conv1.weight`, ..., `fc.weight`) imports as TSN and
/// as TSM, each matching the reference built from the same weights; overrides reach the config.
#[test]
fn plain_torchvision_resnet18_imports_as_tsn_and_tsm() {
    let (Some(tsn), Some(tsm)) = (fixture("tsn_r18", "plain", 8), fixture("tsm_r18", "plain", 8)) else {
        return;
    };
    let pth = tsn.join("model.pth");
    check_parity(&pth, "tsn_r18", 8, &tsn, &[]);
    // The same file (same seed, same weights) as TSM against the TSM reference.
    check_parity(&pth, "tsm_r18", 8, &tsm, &["-o", "mean=[1,2,3]", "-o", "aggregate=logits"]);

    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let o = vconvert(&["--arch", "tsm_r18", "-q", "-o", "mean=[1,2,3]", "-o", "precision=bf16", "-o", "labels=[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]", pth.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = vidkit::model::read_config(&out).unwrap();
    assert_eq!(cfg.mean, [1.0, 2.0, 3.0]);
    assert_eq!(cfg.labels.as_ref().map(|l| l.len()), Some(CLASSES));
    assert_eq!(cfg.std, [58.395, 57.12, 57.375], "ImageNet std by default");
    assert_eq!(cfg.precision().unwrap(), Some(vidkit::precision::Precision::Bf16));
}

/// Runs vconvert expecting exit code 2 with a one-line error containing each of `want`, and no
/// output written.
fn refused(args: &[&str], want: &[&str], out: &Path) {
    let o = vconvert(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
    }
    assert!(!out.exists(), "nothing written");
    eprintln!("refused as expected: {}", err.trim_end());
}

/// Checkpoints that do not fit are refused with exit code 2 and one line naming the file; no
/// output is written.
#[test]
fn mismatches_are_refused_with_one_line() {
    let Some(r18) = fixture("tsn_r18", "plain", 8) else { return };
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let pth = r18.join("model.pth");
    let p = pth.to_str().unwrap();
    let o = out.to_str().unwrap();
    refused(&["--arch", "tsn_r50", p, o], &[p, "tsn_r50", "ResNet-18"], &out);
    refused(&["--arch", "tsm_r34", p, o], &[p, "missing", "ResNet-18"], &out);
    // A TSM checkpoint (shifted convs) is not a TSN.
    if let Some(tsm) = fixture("tsm_r18", "mmaction2", 8) {
        let t = tsm.join("model.pth");
        refused(&["--arch", "tsn_r18", t.to_str().unwrap(), o], &[t.to_str().unwrap(), "tsm_r18"], &out);
    }
    // Not a checkpoint at all; an override that breaks the config; an unknown arch (clap).
    let txt = work.path().join("notes.pth");
    std::fs::write(&txt, "hello\n").unwrap();
    refused(
        &["--arch", "tsn_r18", txt.to_str().unwrap(), o],
        &["notes.pth", "not a PyTorch checkpoint"],
        &out,
    );
    refused(&["--arch", "tsn_r18", "-o", "num_classes=5", p, o], &[p, "head.fc"], &out);
    refused(&["--arch", "tsn_r18", "-o", "precision=f16", p, o], &[p, "f32, bf16 or int8"], &out);
    refused(&["--arch", "tsn_r18", "-o", "precision=int8", p, o], &[p, "--quantize int8"], &out);
    let o2 = vconvert(&["--arch", "tsn_r7", p, o]);
    assert_eq!(o2.status.code(), Some(2));
}

#[test]
fn list_archs_names_every_registered_architecture() {
    let o = vconvert(&["--list-archs"]);
    assert!(o.status.success());
    let listed: Vec<String> = String::from_utf8(o.stdout).unwrap().lines().map(str::to_string).collect();
    let registered = vidkit::model::arch_names();
    assert_eq!(listed, registered.map(|s| s.to_string()).collect::<Vec<_>>());
}

/// int8 calibration's `histogram` method against PyTorch's `HistogramObserver` (the x86
/// backend's activation observer) on the same batches (`scripts/observer_ref.py`: normal,
/// long-tailed ReLU, uniform with outliers, growing and shrinking batch ranges, Laplace): the
/// same running min/max and a range within one histogram bin of PyTorch's.
#[test]
fn histogram_calibration_matches_torch_histogram_observer() {
    use vidkit::nn::observer::{RangeMethod, RangeObserver};
    let root = workspace_root();
    let script = root.join("scripts/observer_ref.py");
    let keys = [script.clone(), root.join("scripts/peers-models-nodeps.txt")];
    let Some(dir) = cached_fixture("observer_parity", &keys, "cases", models_peers_python, &script, &[])
    else {
        return;
    };
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected.as_object().unwrap();
    assert!(cases.len() >= 5, "{} cases", cases.len());
    for (name, want) in cases {
        let mut obs = RangeObserver::new(RangeMethod::Histogram);
        let mut minmax = RangeObserver::new(RangeMethod::MinMax);
        for i in 0..want["batches"].as_u64().unwrap() {
            let (_, x) = common::read_npy_f32(&dir.join(format!("{name}_{i}.npy")));
            obs.observe(&x);
            minmax.observe(&x);
        }
        let pair = |v: &serde_json::Value| (v[0].as_f64().unwrap() as f32, v[1].as_f64().unwrap() as f32);
        let (want_lo, want_hi) = pair(&want["range"]);
        let (min, max) = pair(&want["min_max"]);
        assert_eq!(minmax.range().unwrap(), (min, max), "{name}: running min/max");
        let (lo, hi) = obs.range().unwrap();
        let bin = (max - min) / 2048.0;
        println!("{name}: torch {want_lo}..{want_hi}, vidkit {lo}..{hi} (bin {bin})");
        assert!(
            (lo - want_lo).abs() <= bin && (hi - want_hi).abs() <= bin,
            "{name}: torch {want_lo}..{want_hi}, vidkit {lo}..{hi} (bin {bin})"
        );
    }
}
