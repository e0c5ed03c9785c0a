//! Numerical parity of the feature-sequence models (AttentionLSTM, AttentionCluster, NeXtVLAD)
//! with their PaddleVideo references, restated operation for operation in PyTorch by
//! `scripts/export_sequence_parity.py` (the two older models exist only for the retired
//! `paddle.fluid` graph, which Paddle 3 cannot run). Random weights, a padded batch of two
//! modalities; through the real import path (`vconvert` of the script's `.pth`):
//! - eval-mode logits match: max |diff| ≤ 1e-4 × max |logit| (issue 5);
//! - the gradients of sum(logits · r) for every parameter match PyTorch's autograd (1e-4 of
//!   each tensor's largest gradient), which checks our LSTM's backward pass against `nn.LSTM`;
//! - NeXtVLAD in train mode (batch norm on batch statistics of the valid frames) matches too.

mod common;

use candle_core::{Device, Tensor};
use common::{cached_fixture, models_peers_python, workspace_root};
use std::path::PathBuf;
use std::process::Command;

const REL_TOL: f32 = 1e-4;

/// The exported fixture of `arch` (model.pth, fixture.safetensors), cached by script and pins.
fn fixture(arch: &str) -> Option<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/export_sequence_parity.py");
    let keys = [script.clone(), root.join("scripts/peers-models-nodeps.txt")];
    let args = vec!["--arch".to_string(), arch.to_string()];
    cached_fixture("parity_sequence", &keys, arch, models_peers_python, &script, &args)
}

fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.elem_count(), want.elem_count(), "shapes {:?} vs {:?}", got.dims(), want.dims());
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let diff = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    // Relative to the largest value, with a floor: some true gradients are zero (a bias
    // before a softmax over time cancels) and both sides then hold rounding noise.
    let scale = w.iter().map(|v| v.abs()).fold(0f32, f32::max).max(1e-4);
    diff / scale
}

fn parity(arch: &str) {
    let Some(fx) = fixture(arch) else { return };
    let work = tempfile::tempdir().unwrap();
    let model_path = work.path().join("m.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_vconvert"))
        .args(["--arch", arch])
        .arg(fx.join("model.pth"))
        .arg(&model_path)
        .output()
        .unwrap();
    assert!(o.status.success(), "vconvert: {}", String::from_utf8_lossy(&o.stderr));
    let dev = Device::Cpu;
    let loaded = vidkit::model::load_model(&model_path, &dev).unwrap();
    let f = candle_core::safetensors::load(fx.join("fixture.safetensors"), &dev).unwrap();
    let lengths: Vec<usize> =
        f["lengths"].to_vec1::<f32>().unwrap().into_iter().map(|l| l as usize).collect();
    let modalities = loaded.model.config().sequence.as_ref().unwrap().modalities.len();
    let videos: Vec<Vec<Tensor>> = (0..lengths.len())
        .map(|b| {
            (0..modalities)
                .map(|m| f[&format!("x{m}")].get(b).unwrap().narrow(0, 0, lengths[b]).unwrap())
                .collect()
        })
        .collect();
    let batch = vidkit::model::batch_sequences(&videos, modalities).unwrap();
    let logits = loaded.model.forward_seq(&batch, false, None).unwrap();
    let rel = rel_err(&logits, &f["logits"]);
    eprintln!("parity {arch}: logits relative error {rel:.2e} (limit {REL_TOL:e})");
    assert!(rel <= REL_TOL, "{arch}: logits differ by {rel:e} of the largest");

    let grads = (logits * &f["r"]).unwrap().sum_all().unwrap().backward().unwrap();
    let vars = loaded.varmap.data().lock().unwrap();
    let mut worst = (0f32, String::new());
    let mut checked = 0;
    for (name, var) in vars.iter() {
        let Some(want) = f.get(&format!("grad.{name}")) else {
            assert!(vidkit::nn::is_buffer(name), "no reference gradient for {name}");
            continue;
        };
        let got = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        let e = rel_err(got, want);
        if e > worst.0 {
            worst = (e, name.clone());
        }
        checked += 1;
    }
    drop(vars);
    eprintln!(
        "parity {arch}: {checked} parameter gradients, worst relative error {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 <= 1e-4, "{arch}: gradient of {} differs by {:e}", worst.1, worst.0);

    if let Some(want) = f.get("logits_train") {
        let got = loaded.model.forward_seq(&batch, true, None).unwrap();
        let rel = rel_err(&got, want);
        eprintln!("parity {arch}: train-mode logits relative error {rel:.2e}");
        assert!(rel <= REL_TOL, "{arch}: train-mode logits differ by {rel:e}");
    }
}

#[test]
fn attention_lstm_matches_reference() {
    parity("attention_lstm");
}

#[test]
fn attention_cluster_matches_reference() {
    parity("attention_cluster");
}

#[test]
fn nextvlad_matches_reference() {
    parity("nextvlad");
}
