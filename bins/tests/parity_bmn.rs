//! BMN against PaddleVideo's `bmn.py` on PaddlePaddle's CPU wheel (scripts/export_bmn_parity.py
//! in the paddle peers tier): the sampling mask equal entry for entry, and the forward pass (the
//! boundary-matching map, start and end probabilities) within 1e-4 relative, random weights, at
//! a reduced size (T = D = 32, N = 32, with the mask) and at BMN's own (T = D = 100).

mod common;
use common::*;
use std::collections::HashMap;
use std::path::Path;
use vidkit::model::{Bmn, BmnSpec, ModelConfig, SampleMask};

fn fixture(name: &str, args: &[&str]) -> Option<std::path::PathBuf> {
    let script = workspace_root().join("scripts/export_bmn_parity.py");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cached_fixture("bmn-parity", &[script.clone()], name, paddle_peers_python, &script, &args)
}

fn tensor(path: &Path) -> candle_core::Tensor {
    let (shape, data) = read_npy_f32(path);
    candle_core::Tensor::from_vec(data, shape, &candle_core::Device::Cpu).unwrap()
}

fn max_rel(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    diff / scale
}

fn check(name: &str, tscale: usize) {
    let t = tscale.to_string();
    let Some(dir) = fixture(name, &["--tscale", &t, "--dscale", &t]) else { return };
    let spec = BmnSpec { tscale, dscale: tscale, ..Default::default() };
    // The sampling mask, as the reference builds it (written at reduced sizes only).
    if tscale <= 64 {
        let (shape, want) = read_npy_f32(&dir.join("mask.npy"));
        assert_eq!(shape, [tscale, 32 * tscale * tscale]);
        let ours = SampleMask::new(&spec).dense();
        let differ = ours.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{name}: {differ} mask entries differ");
    }
    // The forward pass.
    let mut tensors = HashMap::new();
    for e in std::fs::read_dir(dir.join("params")).unwrap() {
        let p = e.unwrap().path();
        let key = p.file_stem().unwrap().to_string_lossy().into_owned();
        tensors.insert(key, tensor(&p));
    }
    let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &candle_core::Device::Cpu);
    let model = Bmn::new(ModelConfig::defaults("bmn"), spec, vb).unwrap();
    let input = tensor(&dir.join("input.npy"));
    let started = std::time::Instant::now();
    let out = model.forward(&input).unwrap();
    eprintln!("{name}: forward of {} videos in {:.3} s", input.dims()[0], started.elapsed().as_secs_f64());
    let errs = [
        ("bm", max_rel(&out.bm, &tensor(&dir.join("bm.npy")))),
        ("start", max_rel(&out.start, &tensor(&dir.join("start.npy")))),
        ("end", max_rel(&out.end, &tensor(&dir.join("end.npy")))),
    ];
    eprintln!("{name}: relative error {errs:?}");
    for (what, e) in errs {
        assert!(e < 1e-4, "{name} {what}: {e}");
    }
    // Not a constant map: the check has something to compare.
    let bm = out.bm.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (lo, hi) = bm.iter().fold((1f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(hi - lo > 0.05, "{name}: map values in [{lo}, {hi}]");
}

#[test]
fn bmn_matches_paddlevideo_at_reduced_size() {
    check("t32", 32);
}

#[test]
fn bmn_matches_paddlevideo_at_full_size() {
    check("t100", 100);
}

/// Proposals from BMN's outputs equal PaddleVideo's bmn_metric.py (its boundary_choose and
/// soft_nms, scripts/bmn_post_ref.py) on the full-size fixture's outputs: the candidates, then
/// the best 100 after soft-NMS, scaled to a duration.
#[test]
fn bmn_proposals_match_paddlevideos_post_processing() {
    let Some(dir) = fixture("t100", &["--tscale", "100", "--dscale", "100"]) else { return };
    let Some(py) = paddle_peers_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ref.json");
    let o = std::process::Command::new(&py)
        .arg(workspace_root().join("scripts/bmn_post_ref.py"))
        .args([dir.join("bm.npy"), dir.join("start.npy"), dir.join("end.npy")])
        .arg("123.4")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let (_, bm) = read_npy_f32(&dir.join("bm.npy"));
    let (_, start) = read_npy_f32(&dir.join("start.npy"));
    let (_, end) = read_npy_f32(&dir.join("end.npy"));
    // video 0 of the batch
    let cands =
        vidkit::proposals::bmn_candidates(&bm[..2 * 100 * 100], &start[..100], &end[..100], 100).unwrap();
    let wc = want["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), wc.len());
    for (k, (c, w)) in cands.iter().zip(wc).enumerate() {
        let w: Vec<f64> = w.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        // (serde_json reads decimals to within an ulp, not always exactly)
        assert!(
            (c.xmin - w[0]).abs() < 1e-12 && (c.xmax - w[1]).abs() < 1e-12,
            "candidate {k}: {c:?} vs {w:?}"
        );
        assert!((c.score - w[2]).abs() <= 1e-12 * w[2].abs().max(1e-30), "{} vs {}", c.score, w[2]);
    }
    let ours = vidkit::proposals::bmn_proposals(cands, 123.4, 100);
    let wp = want["proposals"].as_array().unwrap();
    assert_eq!(ours.len(), wp.len());
    for (k, (p, w)) in ours.iter().zip(wp).enumerate() {
        let seg = w["segment"].as_array().unwrap();
        let (a, b, s) = (seg[0].as_f64().unwrap(), seg[1].as_f64().unwrap(), w["score"].as_f64().unwrap());
        assert!((p.xmin - a).abs() < 1e-9 && (p.xmax - b).abs() < 1e-9, "proposal {k}: {p:?} vs {w}");
        assert!((p.score - s).abs() <= 1e-9 * s.abs().max(1e-12), "proposal {k}: {p:?} vs {w}");
    }
    eprintln!("{} candidates, {} proposals equal to bmn_metric.py's", wc.len(), wp.len());
}
