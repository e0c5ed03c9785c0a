//! Numerical parity of vidkit's video transformers against their references, through the real
//! import path. PP-TimeSformer: `scripts/export_pptimesformer_parity.py` (paddle tier of
//! `scripts/peers.sh`) builds ppvideo's own `VisionTransformer` (divided space-time attention)
//! and `ppTimeSformerHead` at ViT-B width with fewer blocks and a 64-pixel input (full size runs
//! in `make bench`), every parameter random, and saves its state dict with `paddle.save`, an
//! input and the eval-mode logits; `vconvert` imports the `.pdparams` (sizes read off the
//! shapes) and the loaded model's logits must match: max |diff| ≤ 1e-4 × max |logit|.
//! TimeSformer: `scripts/export_timesformer_parity.py` (models tier: torch, transformers) does
//! the same with Hugging Face's `TimesformerForVideoClassification` (the port of
//! facebookresearch's module), saved with `save_pretrained` and, renamed, as facebookresearch's
//! `.pyth`; both import and must match.
//!
//! Fixtures are cached under `target/parity_transformer_{paddle,torch}/<hash of the script and
//! the pins>/` (one kind per script: a kind keeps only its latest hash).
//! Run with `-- --nocapture` to see the measured errors.

mod common;

use common::{cached_fixture, logits_error, models_peers_python, paddle_peers_python, workspace_root};
use std::path::PathBuf;
use std::process::Command;

const VCONVERT: &str = env!("CARGO_BIN_EXE_vconvert");
const REL_TOL: f32 = 1e-4;

/// `export_pptimesformer_parity.py ARGS` cached as `name`; `None` when the venv cannot be built.
fn paddle_fixture(name: &str, args: &[&str]) -> Option<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/export_pptimesformer_parity.py");
    let keys: Vec<PathBuf> =
        ["export_pptimesformer_parity.py", "peers-paddle.txt", "peers-paddle-nodeps.txt"]
            .iter()
            .map(|f| root.join("scripts").join(f))
            .collect();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cached_fixture("parity_transformer_paddle", &keys, name, paddle_peers_python, &script, &args)
}

/// `export_timesformer_parity.py ARGS` cached as `name`; `None` when the venv cannot be built.
fn torch_fixture(name: &str, args: &[&str]) -> Option<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/export_timesformer_parity.py");
    let keys: Vec<PathBuf> = ["export_timesformer_parity.py", "peers-models.txt", "peers-models-nodeps.txt"]
        .iter()
        .map(|f| root.join("scripts").join(f))
        .collect();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cached_fixture("parity_transformer_torch", &keys, name, models_peers_python, &script, &args)
}

/// Imports `fixture/<checkpoint>` as `arch` and compares logits; returns the relative error.
fn parity(fixture: &std::path::Path, checkpoint: &str, arch: &str, overrides: &[&str], frames: usize) -> f32 {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let pd = fixture.join(checkpoint);
    let mut args = vec!["--arch", arch];
    for o in overrides {
        args.extend(["-o", o]);
    }
    args.extend([pd.to_str().unwrap(), out.to_str().unwrap()]);
    let o = Command::new(VCONVERT).args(&args).output().expect("vconvert runs");
    assert!(o.status.success(), "vconvert: {}", String::from_utf8_lossy(&o.stderr));
    let e = logits_error(&out, fixture);
    assert_eq!((e.config.arch.as_str(), e.config.frames), (arch, frames));
    let rel = e.relative();
    eprintln!(
        "parity {arch} from {checkpoint} (input {:?}): max|diff| {:.3e}, max|logit| {:.3}, relative {rel:.2e} (limit {REL_TOL:.0e}); forward {:.2} s",
        e.input_shape, e.max_diff, e.max_logit, e.forward_s
    );
    assert!(rel <= REL_TOL, "{arch}: relative error {rel:.3e} > {REL_TOL:e}");
    rel
}

#[test]
fn pptimesformer_matches_paddlevideo() {
    let Some(fx) =
        paddle_fixture("pptimesformer-d2-t4-s64", &["--depth", "2", "--frames", "4", "--size", "64"])
    else {
        return;
    };
    parity(&fx, "model.pdparams", "pptimesformer_vit_b", &[], 4);
}

/// A 2-block TimeSformer at 4 frames × 64², with its run at 8 frames × 80² (embeddings resized).
fn timesformer_fixture() -> Option<PathBuf> {
    let args =
        ["--depth", "2", "--frames", "4", "--size", "64", "--resize-frames", "8", "--resize-size", "80"];
    torch_fixture("timesformer-d2-t4-s64-r8-80", &args)
}

/// Importing a 4-frame, 64-pixel checkpoint at 8 frames and 80 pixels resizes the time embedding
/// (nearest, along time) and the position embedding (bilinear, over the 4×4 → 5×5 patch grid)
/// once; the result matches the reference run with embeddings resized the same way.
#[test]
fn timesformer_at_other_frames_and_size_matches_resized_reference() {
    let Some(fx) = timesformer_fixture() else { return };
    parity(
        &fx.join("resized"),
        "../hf/model.safetensors",
        "timesformer_vit_b",
        &["frames=8", "crop_size=80"],
        8,
    );
}

#[test]
fn timesformer_matches_hugging_face_from_both_layouts() {
    let Some(fx) = timesformer_fixture() else { return };
    parity(&fx, "hf/model.safetensors", "timesformer_vit_b", &[], 4);
    parity(&fx, "fb/model.pyth", "timesformer_vit_b", &[], 4);
    // config.json beside the Hugging Face weights names the classes.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let o = Command::new(VCONVERT)
        .args(["--arch", "timesformer_vit_b"])
        .arg(fx.join("hf/model.safetensors"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let cfg = vidkit::model::read_config(&out).unwrap();
    let want: Vec<String> = (0..7).map(|i| format!("class_{i}")).collect();
    assert_eq!(cfg.labels.as_deref(), Some(&want[..]));
}

/// Checkpoints that do not fit are refused in one line naming the file, and nothing is written.
#[test]
fn timesformer_imports_that_do_not_fit_are_refused() {
    let Some(fx) = timesformer_fixture() else { return };
    let hf = fx.join("hf/model.safetensors");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let cases: [(&str, &[&str], &str); 4] = [
        ("pptimesformer_vit_b", &[], "not a readable Paddle state dict"),
        ("timesformer_vit_b", &["num_heads=5"], "embed_dim 768 is not a multiple of 5 heads"),
        ("timesformer_vit_b", &["crop_size=72"], "crop_size 72 is not a multiple of the 16-pixel patch"),
        ("timesformer_vit_b", &["patch_size=8"], "patch_embed.proj.weight has shape [768, 3, 16, 16]"),
    ];
    for (arch, overrides, want) in cases {
        let mut cmd = Command::new(VCONVERT);
        cmd.env_remove("RUST_BACKTRACE").args(["--arch", arch]);
        for o in overrides {
            cmd.args(["-o", o]);
        }
        let o = cmd.arg(&hf).arg(&out).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{arch} {overrides:?}: {err}");
        assert!(err.contains("model.safetensors") && err.trim_end().lines().count() == 1, "{err}");
        assert!(!out.exists());
    }
}
