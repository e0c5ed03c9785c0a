//! BSN against MMAction2 (`mmaction/models/localizers/bsn.py`, `localizers/utils/bsn_utils.py`,
//! `proposal_utils.py`), through scripts/export_bsn_parity.py's restatement (mmcv does not
//! install here) in the models peers tier: `vconvert` imports the TEM and PEM checkpoints into
//! one model file; the TEM's curves, the PGM's candidates (equal, in order), the BSP features,
//! the PEM's scores and `vpropose`'s proposals match MMAction2's at its ActivityNet sizes
//! (T = 100, 400-d features, 1000 candidates).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use vidkit::proposals::bsn::{bsn_candidates, bsp_features, BsnCandidate};

fn fixture() -> Option<PathBuf> {
    let script = workspace_root().join("scripts/export_bsn_parity.py");
    let keys = [script.clone(), workspace_root().join("scripts/mmaction2_bsn_ref.py")];
    cached_fixture("bsn-parity", &keys, "t100", models_peers_python, &script, &[])
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// The fixture's model, imported with vconvert into `dir`.
fn import(fx: &Path, dir: &Path) -> vidkit::model::Bsn {
    let (tem, pem) = (fx.join("tem.pth"), fx.join("pem.pth"));
    let o = run(
        env!("CARGO_BIN_EXE_vconvert"),
        &["--arch", "bsn", tem.to_str().unwrap(), "--pem", pem.to_str().unwrap(), "bsn.safetensors"],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("bsn (MMAction2 TEM + PEM), features 400 wide, T 100"), "{}", stderr(&o));
    vidkit::model::load_bsn(&dir.join("bsn.safetensors")).unwrap()
}

#[test]
fn bsn_tem_pgm_and_pem_match_mmaction2() {
    let Some(fx) = fixture() else { return };
    let d = tempfile::tempdir().unwrap();
    let model = import(&fx, d.path());
    // The TEM.
    let (shape, input) = read_npy_f32(&fx.join("input.npy"));
    let x = candle_core::Tensor::from_vec(input.clone(), shape.clone(), &candle_core::Device::Cpu).unwrap();
    let ours: Vec<f32> = model.tem(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let (_, want) = read_npy_f32(&fx.join("tem.npy"));
    let e = max_abs(&ours, &want);
    eprintln!("bsn tem: max abs error {e}");
    assert!(e < 1e-5, "tem: {e}");
    // The PGM on the reference's curves of video 0: every candidate, in order, equal.
    let t = 100;
    let (action, start, end) = (&want[..t], &want[t..2 * t], &want[2 * t..3 * t]);
    let cands = bsn_candidates(start, end, 0.5, usize::MAX);
    let (cshape, cwant) = read_npy_f32(&fx.join("candidates.npy"));
    assert_eq!(cands.len(), cshape[0]);
    for (i, c) in cands.iter().enumerate() {
        let w = &cwant[i * 7..i * 7 + 4];
        assert_eq!([c.tmin, c.tmax, c.tmin_score, c.tmax_score], [w[0], w[1], w[2], w[3]], "candidate {i}");
    }
    // The BSP features of the best 1000 and the PEM's scores.
    let top: Vec<BsnCandidate> = cands[..1000].to_vec();
    let feats = bsp_features(action, &top, &model.spec.sampling());
    let (_, fwant) = read_npy_f32(&fx.join("bsp.npy"));
    let e = max_abs(&feats, &fwant);
    eprintln!("bsn bsp features: {} candidates, max abs error {e}", top.len());
    assert!(e < 1e-6, "bsp: {e}");
    let scores = model.score_candidates(action, &top).unwrap();
    let (_, swant) = read_npy_f32(&fx.join("pem.npy"));
    let e = max_abs(&scores, &swant);
    eprintln!("bsn pem: max abs error {e}");
    assert!(e < 1e-6, "pem: {e}");
}

/// `vpropose` on video 0 as a [T, C] `.npy` with MMAction2's per-video durations gives
/// `post_processing`'s proposals (soft-NMS 0.75/0.65/0.9, times over the whole 16-frame
/// snippets); `--raw` writes the TEM's curves and the scored candidates.
#[test]
fn bsn_proposes_as_mmaction2() {
    let Some(fx) = fixture() else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    import(&fx, p);
    let (_, x) = read_npy_f32(&fx.join("input.npy"));
    let rows = ndarray::Array2::from_shape_fn((100, 400), |(t, c)| x[c * 100 + t]);
    ndarray_npy::write_npy(p.join("v_a.npy"), &rows).unwrap();
    std::fs::write(p.join("anno.json"), r#"{"v_a": {"duration_second": 123.4, "duration_frame": 3000}}"#)
        .unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_vpropose"),
        &["--model", "bsn.safetensors", "v_a.npy", "--durations", "anno.json", "-q"],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("proposals.json")).unwrap()).unwrap();
    let (got, want) = (line["segments"].as_array().unwrap(), want["proposals"].as_array().unwrap());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        for i in 0..2 {
            let (a, b) = (g["segment"][i].as_f64().unwrap(), w["segment"][i].as_f64().unwrap());
            assert!((a - b).abs() < 1e-4, "{g} vs {w}");
        }
        let (a, b) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * b.abs(), "{g} vs {w}");
    }
    eprintln!("bsn: {} proposals equal to post_processing's", got.len());
    let o = run(env!("CARGO_BIN_EXE_vpropose"), &["--model", "bsn.safetensors", "v_a.npy", "--raw", "-q"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut reader = vidkit::stream::StreamReader::new(std::io::Cursor::new(o.stdout), "raw");
    let mut names = Vec::new();
    while let Some(rec) = reader.next_record().unwrap() {
        names.push((rec.header.extra["output"].as_str().unwrap().to_string(), rec.array.shape().to_vec()));
    }
    let want: Vec<(String, Vec<usize>)> =
        [("action", vec![100]), ("start", vec![100]), ("end", vec![100]), ("candidates", vec![1000, 6])]
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect();
    assert_eq!(names, want);
}

/// Checkpoints that are not BSN's two parts are refused in one line, nothing written.
#[test]
fn bsn_imports_that_do_not_fit_are_refused() {
    let Some(fx) = fixture() else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (tem, pem) = (fx.join("tem.pth"), fx.join("pem.pth"));
    let (tem, pem) = (tem.to_str().unwrap(), pem.to_str().unwrap());
    let cases: [(&[&str], &str); 4] = [
        (
            &["--arch", "bsn", tem, "out.safetensors"],
            "bsn needs MMAction2's PEM checkpoint too: --pem PEM.pth",
        ),
        (
            &["--arch", "bsn", pem, "--pem", tem, "out.safetensors"],
            "a PEM checkpoint? the TEM is IN, the PEM --pem",
        ),
        (
            &["--arch", "bsn", tem, "--pem", pem, "out.safetensors", "-o", "num_sample_action=8"],
            "the PEM takes features 32 wide; the BSP sampling gives 24",
        ),
        (
            &["--arch", "bsn", tem, "--pem", pem, "out.safetensors", "-o", "tscale=50"],
            "bsn has no option \"tscale\"",
        ),
    ];
    for (args, want) in cases {
        let o = run(env!("CARGO_BIN_EXE_vconvert"), args, p);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!p.join("out.safetensors").exists());
    }
}

/// The training targets and losses as MMAction2's (train.json): `TEM.generate_labels`, the TEM
/// loss (binary logistic regression, actionness ×2), the PGM's tIoU with the ground truth of the
/// best 500 candidates, and `PEM.loss` (its plain mean, and the balanced weighting for the same
/// draws).
#[test]
fn bsn_training_targets_and_losses_match_mmaction2() {
    let Some(fx) = fixture() else { return };
    let train: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("train.json")).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let gt: Vec<(f64, f64)> = train["gt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_f64().unwrap(), s[1].as_f64().unwrap()))
        .collect();
    let labels = vidkit::train::bsn::tem_labels(&gt, 100, 0.1);
    let want: Vec<f32> = train["tem_labels"].as_array().unwrap().iter().flat_map(floats).collect();
    assert!(max_abs(&labels, &want) < 1e-6, "labels: {}", max_abs(&labels, &want));
    // The TEM loss of the reference's outputs, every video labelled alike.
    let (shape, tem) = read_npy_f32(&fx.join("tem.npy"));
    let out = candle_core::Tensor::from_vec(tem.clone(), shape.clone(), &candle_core::Device::Cpu).unwrap();
    let all: Vec<f32> = (0..shape[0]).flat_map(|_| labels.iter().copied()).collect();
    let (loss, terms) = vidkit::train::bsn::tem_loss(&out, &all, 0.5, 2.0).unwrap();
    let (got, want) = (loss.to_scalar::<f32>().unwrap() as f64, train["tem_loss"].as_f64().unwrap());
    eprintln!("bsn tem loss {got} vs {want}, terms {terms:?}");
    assert!((got - want).abs() < 1e-5 * want.abs(), "tem loss {got} vs {want}");
    // The PGM's training candidates of video 0 and their tIoU.
    let t = 100;
    let cands = bsn_candidates(&tem[t..2 * t], &tem[2 * t..3 * t], 0.5, 500);
    let iou: Vec<f32> = cands
        .iter()
        .map(|c| {
            let (a0, a1) = c.bounds_f64(t);
            gt.iter().map(|&(s, e)| vidkit::proposals::bsn::temporal_iou(a0, a1, s, e)).fold(0.0, f64::max)
                as f32
        })
        .collect();
    let want_iou = floats(&train["match_iou"]);
    assert_eq!(iou, want_iou);
    // PEM.loss on the reference's PEM outputs.
    let spec = vidkit::model::BsnSpec::default();
    let score =
        candle_core::Tensor::from_vec(floats(&train["pem_output"]), 500, &candle_core::Device::Cpu).unwrap();
    let (u_m, u_l) = (floats(&train["u_m"]), floats(&train["u_l"]));
    for (balanced, key) in [(false, "pem_loss"), (true, "pem_loss_balanced")] {
        let l = vidkit::train::bsn::pem_loss(&score, &iou, &spec, balanced, &u_m, &u_l).unwrap();
        let (got, want) = (l.to_scalar::<f32>().unwrap() as f64, train[key].as_f64().unwrap());
        eprintln!("bsn {key} {got} vs {want}");
        assert!((got - want).abs() < 1e-5 * want.abs(), "{key}: {got} vs {want}");
    }
}
