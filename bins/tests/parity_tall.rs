//! TALL against the 2019 PaddlePaddle video zoo's fluid code (PaddlePaddle/models release/1.8
//! `PaddleCV/video/models/tall/tall_net.py`), through scripts/export_tall_parity.py's PyTorch
//! restatement (fluid does not run on Paddle 3) in the models peers tier: `vconvert --arch tall`
//! imports the four parameters under fluid's names and layouts, `TALLNET.net`'s [3, B, B] outputs
//! match (sentence i × clip j), and one training step's loss (`TALLNET.loss`: alignment over the
//! B × B matrix + 0.01 × L1 on the diagonal's offsets) and its gradient for every parameter too.

mod common;
use common::*;

fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    diff / want.iter().map(|b| b.abs()).fold(0f32, f32::max)
}

#[test]
fn tall_imports_scores_and_trains_as_the_paddle_zoo() {
    check(
        "b5",
        &[],
        Some("tall (the 2019 Paddle zoo), snippet features 10 wide, sentences 20, semantic 16, hidden 12"),
        1e-4,
    );
}

/// `make bench`: configs/tall.yaml's sizes (clip + contexts 12288, skip-thought 4800, semantic
/// 1024, hidden 1000) and its batch of 56. The gradients are ill-conditioned at this size: the
/// restatement's own float32 gradients differ from its float64 ones by 1.2e-4 (v2s), 2.3e-4
/// (s2s), 1.1e-3 (mid) and 1.3e-6 (sim) relative (measured 2026-12-05), ours from its float32
/// by about as much, so the bound here is 2e-3.
#[test]
#[ignore]
fn tall_full_size_matches_the_paddle_zoo() {
    let args = [
        "--batch",
        "56",
        "--visual",
        "12288",
        "--sentence",
        "4800",
        "--semantic",
        "1024",
        "--hidden",
        "1000",
    ];
    check("full", &args, None, 2e-3);
}

/// Imports the fixture `name` (export_tall_parity.py with `args`) and checks the outputs, one
/// training step's loss and every parameter's gradient (within `grad_tol` relative);
/// `summary`: vconvert's line to expect.
fn check(name: &str, args: &[&str], summary: Option<&str>, grad_tol: f32) {
    let script = workspace_root().join("scripts/export_tall_parity.py");
    let keys = [script.clone(), workspace_root().join("scripts/tall_ref.py")];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let Some(fx) = cached_fixture("tall-parity", &keys, name, models_peers_python, &script, &args) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let pd = fx.join("tall.pdparams");
    let o =
        run(env!("CARGO_BIN_EXE_vconvert"), &["--arch", "tall", pd.to_str().unwrap(), "tall.safetensors"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    if let Some(summary) = summary {
        assert!(stderr(&o).contains(summary), "{}", stderr(&o));
    }
    let model = vidkit::model::load_tall(&p.join("tall.safetensors")).unwrap();
    let tensor = |name: &str| {
        let (shape, v) = read_npy_f32(&fx.join(format!("{name}.npy")));
        candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap()
    };
    // Ours is [Ns, Nv, 3]; fluid's sim_score_mat [3, Ns, Nv].
    let out = model.forward(&tensor("visual"), &tensor("sentences")).unwrap();
    let got = out.permute((2, 0, 1)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (_, want) = read_npy_f32(&fx.join("out.npy"));
    let e = max_rel(&got, &want);
    eprintln!("tall outputs: relative error {e:.2e}");
    assert!(e < 1e-5, "outputs: {e}");
    // One training step: the loss and every parameter's gradient, through trainable variables.
    let varmap = candle_nn::VarMap::new();
    let spec = model.spec.clone();
    let trainable = vidkit::model::Tall::new(
        model.config.clone(),
        spec,
        candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu),
    )
    .unwrap();
    let saved =
        candle_core::safetensors::load(p.join("tall.safetensors"), &candle_core::Device::Cpu).unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        var.set(&saved[name]).unwrap();
    }
    let out = trainable.forward(&tensor("visual"), &tensor("sentences")).unwrap();
    let (loss, align, reg) = vidkit::model::tall_loss(&out, &tensor("offsets")).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("loss.json")).unwrap()).unwrap();
    let l = loss.to_scalar::<f32>().unwrap() as f64;
    eprintln!(
        "tall loss {l} vs {}, align {align} vs {}, reg {reg} vs {}",
        want["loss"], want["align"], want["reg"]
    );
    for (g, w) in [(l, &want["loss"]), (align as f64, &want["align"]), (reg as f64, &want["reg"])] {
        let w = w.as_f64().unwrap();
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
    }
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    // Our layouts: linear [out, in] where fluid's fc is [in, out]; 1×1 kernels flattened.
    for (ours, fluid, transpose) in [
        ("v2s.weight", "v2s_lt_weights", true),
        ("s2s.weight", "s2s_lt_weights", true),
        ("mid.weight", "mid_out_weights", false),
        ("sim.weight", "sim_mat_weights", false),
    ] {
        let g = grads.get(data[ours].as_tensor()).unwrap();
        let g = if transpose { g.t().unwrap() } else { g.clone() };
        let got = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (_, want) = read_npy_f32(&fx.join(format!("grad_{fluid}.npy")));
        let e = max_rel(&got, &want);
        eprintln!("tall gradient {fluid}: relative error {e:.2e}");
        assert!(e < grad_tol, "{fluid}: {e}");
    }
}
