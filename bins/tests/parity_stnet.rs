//! StNet against the 2019 PaddlePaddle video zoo's fluid code (PaddlePaddle/models release/1.8
//! `PaddleCV/video/models/stnet/stnet_res_model.py`), through scripts/stnet_ref.py's PyTorch
//! restatement (fluid does not run on Paddle 3) in the models peers tier: `vconvert --arch
//! stnet_r50` imports the parameters under fluid's names (random weights, batch-norm statistics
//! and biases) and the logits match within 1e-4 relative, on the zoo's 7-segment training clips
//! and its 25-segment test clips, at a reduced size (ResNet-50 at width 16, 64×64). The full
//! size (width 64, 224×224) runs in `make bench` (the ignored test below).

mod common;
use candle_core::{Device, Tensor};
use common::*;
use std::path::{Path, PathBuf};

fn fixture_named(name: &str, args: &[&str]) -> Option<PathBuf> {
    let script = workspace_root().join("scripts/export_stnet_parity.py");
    let keys = [script.clone(), workspace_root().join("scripts/stnet_ref.py")];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cached_fixture("stnet-parity", &keys, name, models_peers_python, &script, &args)
}

fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    diff / want.iter().map(|b| b.abs()).fold(0f32, f32::max)
}

/// Imports the fixture's parameters with `frames` per clip; the logits of `input{suffix}.npy`
/// against `logits{suffix}.npy`, as the largest relative error.
fn check(fx: &Path, dir: &Path, frames: usize, suffix: &str) -> f32 {
    let pd = fx.join("stnet.pdparams");
    let out = format!("stnet{suffix}.safetensors");
    let frames_opt = format!("frames={frames}");
    let o = run(
        env!("CARGO_BIN_EXE_vconvert"),
        &["--arch", "stnet_r50", pd.to_str().unwrap(), &out, "-o", &frames_opt],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let model = vidkit::model::load_model(&dir.join(&out), &Device::Cpu).unwrap().model;
    assert_eq!(model.config().seglen(), 5);
    let (shape, input) = read_npy_f32(&fx.join(format!("input{suffix}.npy")));
    let x = Tensor::from_vec(input, shape, &Device::Cpu).unwrap();
    let got: Vec<f32> = model.forward_t(&x, false).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let (_, want) = read_npy_f32(&fx.join(format!("logits{suffix}.npy")));
    max_rel(&got, &want)
}

#[test]
fn stnet_imports_and_matches_the_paddle_zoo() {
    let Some(fx) = fixture_named("w16s64", &[]) else { return };
    let d = tempfile::tempdir().unwrap();
    let e7 = check(&fx, d.path(), 35, "");
    let e25 = check(&fx, d.path(), 125, "25");
    eprintln!("stnet (width 16, 64x64): logits max relative error {e7:.2e} (7 segments), {e25:.2e} (25)");
    assert!(e7 < 1e-4 && e25 < 1e-4, "{e7} {e25}");
}

/// A file that is not StNet's is refused in one line, nothing written.
#[test]
fn stnet_imports_that_do_not_fit_are_refused() {
    let Some(fx) = fixture_named("w16s64", &[]) else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let pd = fx.join("stnet.pdparams");
    let o = run(
        env!("CARGO_BIN_EXE_vconvert"),
        &["--arch", "stnet_r50", pd.to_str().unwrap(), "out.safetensors", "-o", "frames=36"],
        p,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a whole number of segments"), "{}", stderr(&o));
    assert!(!p.join("out.safetensors").exists());
}

/// `make bench`: the zoo's full size (ResNet-50, 224×224, 7 segments of 5 frames).
#[test]
#[ignore]
fn stnet_full_size_matches_the_paddle_zoo() {
    let Some(fx) =
        fixture_named("full", &["--width", "64", "--size", "224", "--classes", "400", "--batch", "1"])
    else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let e7 = check(&fx, d.path(), 35, "");
    let e25 = check(&fx, d.path(), 125, "25");
    eprintln!("stnet full size: logits max relative error {e7:.2e} (7 segments), {e25:.2e} (25)");
    assert!(e7 < 1e-4 && e25 < 1e-4, "{e7} {e25}");
}
