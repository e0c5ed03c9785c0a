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
    cached_fixture("bmn-parity", std::slice::from_ref(&script), name, paddle_peers_python, &script, &args)
}

fn tensor(path: &Path) -> candle_core::Tensor {
    let (shape, data) = read_npy_f32(path);
    candle_core::Tensor::from_vec(data, shape, &candle_core::Device::Cpu).unwrap()
}

/// Equal lists of `{"segment", "score"}`: segments to 1e-6 s, scores to 1e-4 relative.
fn assert_same_proposals(got: &[serde_json::Value], want: &[serde_json::Value]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        for i in 0..2 {
            let (a, b) = (g["segment"][i].as_f64().unwrap(), w["segment"][i].as_f64().unwrap());
            assert!((a - b).abs() < 1e-6, "{g} vs {w}");
        }
        let (a, b) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * b.abs(), "{g} vs {w}");
    }
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

/// bmn_metric.py's candidates and proposals (scripts/bmn_post_ref.py) for video 0 of a fixture.
fn reference_proposals(py: &Path, dir: &Path, duration: f64) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ref.json");
    let o = std::process::Command::new(py)
        .arg(workspace_root().join("scripts/bmn_post_ref.py"))
        .args([dir.join("bm.npy"), dir.join("start.npy"), dir.join("end.npy")])
        .arg(duration.to_string())
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// Proposals from BMN's outputs equal PaddleVideo's bmn_metric.py (its boundary_choose and
/// soft_nms, scripts/bmn_post_ref.py) on the full-size fixture's outputs: the candidates, then
/// the best 100 after soft-NMS, scaled to a duration.
#[test]
fn bmn_proposals_match_paddlevideos_post_processing() {
    let Some(dir) = fixture("t100", &["--tscale", "100", "--dscale", "100"]) else { return };
    let Some(py) = paddle_peers_python() else { return };
    let want = reference_proposals(&py, &dir, 123.4);
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

/// The whole tool chain on PaddleVideo's own checkpoint format: `vconvert --arch bmn` imports the
/// reference's `.pdparams`, `vpropose` on per-video `.npy` features gives the proposals of
/// bmn_metric.py (in seconds from --durations), writes the ActivityNet result JSON that `veval
/// --proposals` scores, and refuses features of the wrong length with the fix named.
#[test]
fn vconvert_and_vpropose_give_paddlevideos_proposals() {
    let Some(dir) = fixture("t100", &["--tscale", "100", "--dscale", "100"]) else { return };
    let Some(py) = paddle_peers_python() else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let o = run(
        env!("CARGO_BIN_EXE_vconvert"),
        &["--arch", "bmn", dir.join("model.pdparams").to_str().unwrap(), "bmn.safetensors"],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Video 0 and 1 of the fixture as PaddleVideo's per-video files: [T, C], rows are time.
    let (_, x) = read_npy_f32(&dir.join("input.npy"));
    std::fs::create_dir(p.join("feats")).unwrap();
    for (k, name) in ["v_a", "v_b"].iter().enumerate() {
        let video = &x[k * 400 * 100..(k + 1) * 400 * 100];
        let rows = ndarray::Array2::from_shape_fn((100, 400), |(t, c)| video[c * 100 + t]);
        ndarray_npy::write_npy(p.join(format!("feats/{name}.npy")), &rows).unwrap();
    }
    std::fs::write(
        p.join("durations.json"),
        r#"{"v_a": {"duration_second": 123.4}, "v_b": {"duration_second": 50.0}}"#,
    )
    .unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_vpropose"),
        &["--model", "bmn.safetensors", "feats", "--durations", "durations.json", "-q"],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["video"].as_str(), lines[0]["duration"].as_f64()), (Some("v_a"), Some(123.4)));
    let want = reference_proposals(&py, &dir, 123.4);
    let (got, want) = (lines[0]["segments"].as_array().unwrap(), want["proposals"].as_array().unwrap());
    assert_same_proposals(got, want);
    // --raw: the reference's own outputs for video 0 as three stream records.
    let o = run(
        env!("CARGO_BIN_EXE_vpropose"),
        &["--model", "bmn.safetensors", "feats/v_a.npy", "--durations", "durations.json", "--raw", "-q"],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut reader = vidkit::stream::StreamReader::new(std::io::Cursor::new(o.stdout), "raw");
    for (name, file, len) in
        [("start", "start.npy", 100), ("end", "end.npy", 100), ("bm", "bm.npy", 2 * 100 * 100)]
    {
        let rec = reader.next_record().unwrap().unwrap();
        assert_eq!(rec.header.extra["output"], name);
        assert_eq!(rec.header.extra["duration"], 123.4);
        assert_eq!(rec.header.video.as_deref(), Some("v_a"));
        let got: Vec<f32> = rec.array.to_f32().iter().copied().collect();
        let (_, want) = read_npy_f32(&dir.join(file));
        let diff = got.iter().zip(&want[..len]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(got.len() == len && diff < 1e-4, "{name}: {diff}");
    }
    assert!(reader.next_record().unwrap().is_none());
    // The ActivityNet result JSON, scored by veval.
    let o = run(
        env!("CARGO_BIN_EXE_vpropose"),
        &[
            "--model",
            "bmn.safetensors",
            "feats",
            "--durations",
            "durations.json",
            "--format",
            "activitynet",
            "-o",
            "props.json",
            "-q",
        ],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let gt = r#"{"database": {"v_a": {"subset": "validation", "duration": 123.4, "annotations": [{"segment": [10.0, 40.0], "label": "x"}]},
                               "v_b": {"subset": "validation", "duration": 50.0, "annotations": [{"segment": [5.0, 20.0], "label": "x"}]}}}"#;
    std::fs::write(p.join("gt.json"), gt).unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_veval"),
        &["--proposals", "--pred", "props.json", "--gt", "gt.json", "-q"],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(m["auc"].as_f64().unwrap() >= 0.0 && m["videos"] == 2);
    // Features of the wrong length: the video is refused, naming the fix; the other goes on.
    ndarray_npy::write_npy(p.join("feats/v_c.npy"), &ndarray::Array2::<f32>::zeros((50, 400))).unwrap();
    let o = run(env!("CARGO_BIN_EXE_vpropose"), &["--model", "bmn.safetensors", "feats"], p);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("v_c") && stderr(&o).contains("--rescale 100"), "{}", stderr(&o));
    let normalized: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(normalized["normalized"], true);
    // A recognizer is not a localizer.
    let o = run(
        env!("CARGO_BIN_EXE_vconvert"),
        &["--arch", "bmn", dir.join("input.npy").to_str().unwrap(), "x.safetensors"],
        p,
    );
    assert_eq!(o.status.code(), Some(2));
}

/// The one pipe of issue 19 on a generated untrimmed video: snippets streamed by `vsample
/// --sampler untrimmed`, features resampled by `vfeat --rescale`, proposals by `vpropose`, in
/// seconds from the features' own duration (a random BMN the width of the extractor's features).
#[test]
fn one_pipe_from_an_untrimmed_video_to_proposals() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    synth_untrimmed(p, "1", "12-14", "0");
    // A small TSN extractor (64-d features) and a BMN over 32 steps of them.
    write_random_tsn(&p.join("tsn.safetensors"), 16, 3);
    let spec = BmnSpec { feat_dim: 128, tscale: 32, dscale: 32, ..Default::default() };
    let varmap = candle_nn::VarMap::new();
    let cfg = vidkit::model::bmn_config(&spec).unwrap();
    Bmn::new(
        cfg.clone(),
        spec,
        candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu),
    )
    .unwrap();
    vidkit::model::save_model(&varmap, &cfg, &p.join("bmn.safetensors")).unwrap();
    let pipe = format!(
        "{} u/videos/v_0000.mp4 --sampler untrimmed --frames 1 --interval 8 --size 64 --crop-size 48 -q \
         | {} --model tsn.safetensors --rescale 32 -q | {} --model bmn.safetensors --top 10 -q",
        env!("CARGO_BIN_EXE_vsample"),
        env!("CARGO_BIN_EXE_vfeat"),
        env!("CARGO_BIN_EXE_vpropose")
    );
    let o = std::process::Command::new("sh").arg("-c").arg(&pipe).current_dir(p).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let gt = vidkit::data::read_segment_ground_truth(&p.join("u/activity_net.json"), "training").unwrap();
    let duration = line["duration"].as_f64().unwrap();
    let db: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("u/activity_net.json")).unwrap()).unwrap();
    assert!((duration - db["database"]["v_0000"]["duration"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(gt.videos[0].0, "v_0000");
    let segs = line["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 10);
    for s in segs {
        let (a, b) = (s["segment"][0].as_f64().unwrap(), s["segment"][1].as_f64().unwrap());
        assert!(0.0 <= a && a < b && b <= duration + 1e-9, "{s}");
    }
}

/// BMN's training targets and loss against PaddleVideo's `GetMatchMap`/`GetVideoLabel` and
/// `BMNLoss` (scripts/export_bmn_loss_parity.py): targets to float32 rounding, the loss and its
/// three terms within 1e-5 relative, and its gradients with respect to the three outputs within
/// 1e-4, on three videos of random segments (some past the video's end) at T = D = 16.
#[test]
fn bmn_targets_and_loss_match_paddlevideo() {
    let script = workspace_root().join("scripts/export_bmn_loss_parity.py");
    let args: Vec<String> = ["--tscale", "16", "--batch", "3"].iter().map(|s| s.to_string()).collect();
    let Some(dir) = cached_fixture(
        "bmn-loss-parity",
        std::slice::from_ref(&script),
        "t16",
        paddle_peers_python,
        &script,
        &args,
    ) else {
        return;
    };
    let (tn, dn) = (16, 16);
    let videos: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("videos.json")).unwrap()).unwrap();
    let (_, gt_iou) = read_npy_f32(&dir.join("gt_iou_map.npy"));
    let (_, gt_start) = read_npy_f32(&dir.join("gt_start.npy"));
    let (_, gt_end) = read_npy_f32(&dir.join("gt_end.npy"));
    let mut targets = Vec::new();
    for (b, v) in videos.as_array().unwrap().iter().enumerate() {
        let segs: Vec<(f64, f64)> = v["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s[0].as_f64().unwrap(), s[1].as_f64().unwrap()))
            .collect();
        let g = vidkit::train::bmn::bmn_targets(&segs, v["duration"].as_f64().unwrap(), tn, dn).unwrap();
        let close = |ours: &[f32], want: &[f32], what: &str| {
            let e = ours.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(e <= 1e-6, "video {b} {what}: {e}");
        };
        close(&g.iou_map, &gt_iou[b * dn * tn..(b + 1) * dn * tn], "iou map");
        close(&g.start, &gt_start[b * tn..(b + 1) * tn], "start");
        close(&g.end, &gt_end[b * tn..(b + 1) * tn], "end");
        targets.push(g);
    }
    assert!(gt_iou.iter().any(|&x| x > 0.9) && gt_start.iter().any(|&x| x > 0.5), "trivial targets");
    let var = |name: &str| candle_core::Var::from_tensor(&tensor(&dir.join(format!("{name}.npy")))).unwrap();
    let (bm, start, end) = (var("pred_bm"), var("pred_start"), var("pred_end"));
    let out = vidkit::model::BmnOutput {
        bm: bm.as_tensor().clone(),
        start: start.as_tensor().clone(),
        end: end.as_tensor().clone(),
    };
    let (_, u_mid) = read_npy_f32(&dir.join("uniform_mid.npy"));
    let (_, u_low) = read_npy_f32(&dir.join("uniform_low.npy"));
    let loss = vidkit::train::bmn::bmn_loss(&out, &targets, &u_mid, &u_low).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("loss.json")).unwrap()).unwrap();
    let total: f32 = loss.total.to_scalar().unwrap();
    let rel = |ours: f32, key: &str| {
        let w = want[key].as_f64().unwrap() as f32;
        (ours - w).abs() / w.abs()
    };
    let errs = [
        ("total", rel(total, "total")),
        ("tem", rel(loss.tem, "tem")),
        ("pem_reg", rel(loss.pem_reg, "pem_reg")),
        ("pem_cls", rel(loss.pem_cls, "pem_cls")),
    ];
    eprintln!("bmn loss {total}: relative errors {errs:?}");
    for (what, e) in errs {
        assert!(e < 1e-5, "{what}: {e}");
    }
    let grads = loss.total.backward().unwrap();
    for (name, v) in [("bm", &bm), ("start", &start), ("end", &end)] {
        let g = grads.get(v.as_tensor()).unwrap();
        let e = max_rel(g, &tensor(&dir.join(format!("grad_{name}.npy"))));
        eprintln!("gradient {name}: relative error {e}");
        assert!(e < 1e-4, "gradient {name}: {e}");
    }
}

/// MMAction2's BMN (`mmaction/models/localizers/bmn.py`; scripts/export_bmn_mmaction2_parity.py,
/// a PyTorch restatement with its module names, since mmcv does not install here): `vconvert`
/// imports its `.pth` (checking the saved `sample_mask` against the one built here), the forward
/// pass matches within 1e-4 relative, and `vpropose` gives its `forward_test` +
/// `post_processing` proposals (end index one step later, soft-NMS 0.4/0.5/0.9 keeping 101, times
/// over the whole 16-frame snippets of a 3000-frame video).
#[test]
fn mmaction2_bmn_imports_and_proposes_as_mmaction2() {
    let script = workspace_root().join("scripts/export_bmn_mmaction2_parity.py");
    let args: Vec<String> = ["--tscale", "32"].iter().map(|s| s.to_string()).collect();
    let keys = [script.clone(), workspace_root().join("scripts/mmaction2_bmn_ref.py")];
    let Some(dir) = cached_fixture("bmn-mmaction2-parity", &keys, "t32", models_peers_python, &script, &args)
    else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let pth = dir.join("bmn.pth");
    let o =
        run(env!("CARGO_BIN_EXE_vconvert"), &["--arch", "bmn", pth.to_str().unwrap(), "bmn.safetensors"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("bmn (MMAction2)"), "{}", stderr(&o));
    let model = vidkit::model::load_bmn(&p.join("bmn.safetensors")).unwrap();
    assert_eq!(model.spec.variant, vidkit::model::BmnVariant::MMAction2);
    let out = model.forward(&tensor(&dir.join("input.npy"))).unwrap();
    for (name, got) in [("confidence", &out.bm), ("start", &out.start), ("end", &out.end)] {
        let e = max_rel(got, &tensor(&dir.join(format!("{name}.npy"))));
        eprintln!("mmaction2 bmn {name}: relative error {e}");
        assert!(e < 1e-4, "{name}: {e}");
    }
    // Video 0 as an MMAction2-style CSV-free .npy [T, C], its frames and seconds in the durations file.
    let (_, x) = read_npy_f32(&dir.join("input.npy"));
    let rows = ndarray::Array2::from_shape_fn((32, 400), |(t, c)| x[c * 32 + t]);
    ndarray_npy::write_npy(p.join("v_a.npy"), &rows).unwrap();
    std::fs::write(p.join("anno.json"), r#"{"v_a": {"duration_second": 123.4, "duration_frame": 3000}}"#)
        .unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_vpropose"),
        &["--model", "bmn.safetensors", "v_a.npy", "--durations", "anno.json", "-q"],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("proposals.json")).unwrap()).unwrap();
    let (got, want) = (line["segments"].as_array().unwrap(), want["proposals"].as_array().unwrap());
    assert_same_proposals(got, want);
    // A boundary ratio that does not build the saved mask is refused, naming the options.
    let o = run(
        env!("CARGO_BIN_EXE_vconvert"),
        &["--arch", "bmn", pth.to_str().unwrap(), "x.safetensors", "-o", "prop_boundary_ratio=0.4"],
        p,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("differs from the one prop_boundary_ratio 0.4"), "{}", stderr(&o));
    assert!(!p.join("x.safetensors").exists());
}

/// MMAction2's BMN training (`BMN.generate_labels`, `BMNLoss` with its clipped ratios, eps 1e-5
/// and the low band without IoU 0; scripts/mmaction2_bmn_ref.py): the targets equal, the loss
/// and its terms within 1e-5 relative on the fixture's outputs and draws.
#[test]
fn mmaction2_bmn_targets_and_loss_match_mmaction2() {
    let script = workspace_root().join("scripts/export_bmn_mmaction2_parity.py");
    let args: Vec<String> = ["--tscale", "32"].iter().map(|s| s.to_string()).collect();
    let keys = [script.clone(), workspace_root().join("scripts/mmaction2_bmn_ref.py")];
    let Some(dir) = cached_fixture("bmn-mmaction2-parity", &keys, "t32", models_peers_python, &script, &args)
    else {
        return;
    };
    let train: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("train.json")).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        let mut out = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<f32>) {
            match v {
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                x => out.push(x.as_f64().unwrap() as f32),
            }
        }
        walk(v, &mut out);
        out
    };
    let mut targets = Vec::new();
    for (i, gt) in train["gt"].as_array().unwrap().iter().enumerate() {
        let segs: Vec<(f64, f64)> =
            gt.as_array().unwrap().iter().map(|s| (s[0].as_f64().unwrap(), s[1].as_f64().unwrap())).collect();
        let t = vidkit::train::bmn::bmn_targets(&segs, 1.0, 32, 32).unwrap();
        for (name, ours, want) in [
            ("iou_map", &t.iou_map, floats(&train["iou_map"][i])),
            ("start", &t.start, floats(&train["start"][i])),
            ("end", &t.end, floats(&train["end"][i])),
        ] {
            let e = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(ours.len() == want.len() && e < 1e-6, "video {i} {name}: {e}");
        }
        targets.push(t);
    }
    let out = vidkit::model::BmnOutput {
        bm: tensor(&dir.join("confidence.npy")),
        start: tensor(&dir.join("start.npy")),
        end: tensor(&dir.join("end.npy")),
    };
    let loss = vidkit::train::bmn::bmn_loss_mmaction2(
        &out,
        &targets,
        &floats(&train["u_mid"]),
        &floats(&train["u_low"]),
    )
    .unwrap();
    let want = floats(&train["loss"]);
    let got = [loss.total.to_scalar::<f32>().unwrap(), loss.tem, loss.pem_reg, loss.pem_cls];
    eprintln!("mmaction2 bmn loss {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1e-3), "{got:?} vs {want:?}");
    }
}
