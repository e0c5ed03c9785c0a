//! `vtrain --arch bmn` as a tool: PaddleVideo's data layout (a directory of per-video `.npy`
//! features [T, C] and its per-video annotation JSON with `duration_second` and `subset`), the
//! run's files, `--resume` continuing exactly where a run stopped, and bad input.

mod common;
use common::*;
use std::path::Path;
use vidkit::rng::Rng;

const T: usize = 16;
const C: usize = 8;

/// Six videos of noise features with one segment each, a bump in the features where it lies;
/// v_4 and v_5 are the validation subset. Another `.npy` of the wrong width when `bad` is set.
fn dataset(p: &Path, bad: bool) {
    std::fs::create_dir_all(p.join("feats")).unwrap();
    let mut rng = Rng::new(5);
    let mut ann = serde_json::Map::new();
    for i in 0..6 {
        let (a, b) = (2 + i, 7 + i);
        let rows = ndarray::Array2::from_shape_fn((T, C), |(t, c)| {
            let inside = (a..b).contains(&t) as u8 as f32;
            (rng.uniform() as f32 - 0.5) * 0.2 + inside * (c % 2) as f32
        });
        ndarray_npy::write_npy(p.join(format!("feats/v_{i}.npy")), &rows).unwrap();
        let dur = 32.0;
        ann.insert(
            format!("v_{i}"),
            serde_json::json!({"duration_second": dur, "subset": if i < 4 {"training"} else {"validation"},
                "annotations": [{"segment": [a as f64 * 2.0, b as f64 * 2.0], "label": "act"}]}),
        );
    }
    // Features of a video the annotations do not know: reported and skipped.
    ndarray_npy::write_npy(p.join("feats/v_unknown.npy"), &ndarray::Array2::<f32>::zeros((T, C))).unwrap();
    if bad {
        ndarray_npy::write_npy(p.join("feats/v_0.npy"), &ndarray::Array2::<f32>::zeros((T, C + 4))).unwrap();
    }
    std::fs::write(p.join("anno.json"), serde_json::Value::Object(ann).to_string()).unwrap();
}

fn train(p: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--arch",
        "bmn",
        "--train-list",
        "feats",
        "--gt",
        "anno.json",
        "--val-subset",
        "validation",
        "--out",
        out,
        "-o",
        "tscale=16",
        "-o",
        "dscale=16",
        "-o",
        "num_sample=4",
        "-o",
        "hidden_1d=16",
        "-o",
        "hidden_2d=8",
        "-o",
        "hidden_3d=16",
        "-o",
        "batch_size=2",
        "-o",
        "epochs=3",
    ];
    args.extend_from_slice(extra);
    run(env!("CARGO_BIN_EXE_vtrain"), &args, p)
}

#[test]
fn trains_from_paddlevideo_npy_features_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    dataset(p, false);
    let o = train(p, "full", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("v_unknown") && err.contains("not in the annotations"), "{err}");
    assert!(err.contains("4 training videos, 2 validation videos"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["epochs_run"], 3);
    let auc = summary["last_val_auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc), "{summary}");
    for f in ["last.safetensors", "best.safetensors", "last.ckpt.safetensors", "log.jsonl"] {
        assert!(p.join("full").join(f).is_file(), "{f}");
    }
    let log = std::fs::read_to_string(p.join("full/log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count(), 3);
    // The model vpropose reads.
    let o = run(
        env!("CARGO_BIN_EXE_vpropose"),
        &["--model", "full/last.safetensors", "feats/v_4.npy", "-q", "--top", "5"],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Sharded and merged: the lines, and the ActivityNet result JSON.
    let bin = env!("CARGO_BIN_EXE_vpropose");
    let args = ["--model", "full/last.safetensors", "feats", "--top", "5"];
    assert_eq!(assert_shards_merge(bin, &args, 3, p), [3, 2, 2]);
    assert_shards_merge(bin, &[&args[..], &["--format", "activitynet"]].concat(), 2, p);
    // Two epochs, then one more with --resume: the same weights as three in one go.
    let o = train(p, "split", &["--stop-after", "2", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(p, "split", &["--resume", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(resumed["epochs_run"], 1);
    let a = std::fs::read(p.join("full/last.safetensors")).unwrap();
    let b = std::fs::read(p.join("split/last.safetensors")).unwrap();
    assert!(a == b, "a resumed run differs from an uninterrupted one");
}

#[test]
fn bad_input_is_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    dataset(p, true);
    // One video of the wrong width: skipped with the reason, the rest trains.
    let o = train(p, "r", &["-o", "epochs=1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("\"v_0\"") && err.contains("features are [16, 12]; the model takes [16, 8]"),
        "{err}"
    );
    // Each tool refuses the other task's models, saying what the model is and who runs it.
    let o = run(env!("CARGO_BIN_EXE_vclassify"), &["--model", "r/last.safetensors", "feats/v_1.npy"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bmn is a temporal localizer, not a recognizer"), "{}", stderr(&o));
    write_random_tsn(&p.join("tsn.safetensors"), 8, 1);
    let o = run(env!("CARGO_BIN_EXE_vpropose"), &["--model", "tsn.safetensors", "feats/v_1.npy"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("tsn_r18 is a recognizer of frames, not a temporal localizer"),
        "{}",
        stderr(&o)
    );
    // Every video of the wrong length: one error naming the source and the first problem.
    let o = train(p, "r2", &["-o", "tscale=20", "-o", "dscale=20"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("feats: none of its") && err.contains("vfeat --rescale 20"), "{err}");
    assert!(!p.join("r2/last.safetensors").exists());
    // No annotations.
    let o = run(env!("CARGO_BIN_EXE_vtrain"), &["--arch", "bmn", "--train-list", "feats", "--out", "r3"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("give --gt FILE"), "{}", stderr(&o));
    // Annotations without durations.
    std::fs::write(p.join("nodur.json"), r#"{"v_1": {"annotations": [{"segment": [1, 2], "label": "a"}]}}"#)
        .unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_vtrain"),
        &["--arch", "bmn", "--train-list", "feats", "--gt", "nodur.json", "--out", "r4"],
        p,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nodur.json: video \"v_1\" has no positive `duration`"), "{}", stderr(&o));
    // --gt for a recognizer.
    let o = run(
        env!("CARGO_BIN_EXE_vtrain"),
        &["--arch", "tsn_r18", "--train-list", "x.list", "--gt", "anno.json", "--out", "r5"],
        p,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--gt is for localizers"), "{}", stderr(&o));
}

fn train_bsn(p: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--arch",
        "bsn",
        "--train-list",
        "feats",
        "--gt",
        "anno.json",
        "--val-subset",
        "validation",
        "--out",
        out,
        "-o",
        "temporal_dim=16",
        "-o",
        "tem_hidden_dim=16",
        "-o",
        "pem_hidden_dim=8",
        "-o",
        "batch_size=2",
        "-o",
        "tem_epochs=2",
        "-o",
        "pem_epochs=2",
    ];
    args.extend_from_slice(extra);
    run(env!("CARGO_BIN_EXE_vtrain"), &args, p)
}

/// `--device cpu-portable` (the GPU's code: every vidkit CPU kernel off) trains BMN, both
/// variants, and BSN as the CPU does: the same losses, to rounding.
#[test]
fn localizers_train_on_the_candle_only_path() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    dataset(p, false);
    for (name, variant) in [("bmn", "paddlevideo"), ("bmn_mm", "mmaction2")] {
        for device in ["cpu", "cpu-portable"] {
            let out = format!("{name}_{device}");
            let extra = ["-o", &format!("variant={variant}"), "-o", "log_every=1", "--device", device, "-q"];
            let o = train(p, &out, &extra);
            assert!(o.status.success(), "{out}: {}", stderr(&o));
        }
        assert_trains_alike(&p.join(format!("{name}_cpu")), &p.join(format!("{name}_cpu-portable")), name);
    }
    for device in ["cpu", "cpu-portable"] {
        let o = train_bsn(p, &format!("bsn_{device}"), &["-o", "log_every=1", "--device", device, "-q"]);
        assert!(o.status.success(), "bsn {device}: {}", stderr(&o));
    }
    assert_trains_alike(&p.join("bsn_cpu"), &p.join("bsn_cpu-portable"), "bsn");
}

/// `vtrain --arch bsn`: the TEM's epochs then the PEM's, validated after each PEM epoch, and
/// `--resume` continuing exactly from a stop at the end of the TEM stage and from one inside the
/// PEM stage.
#[test]
fn bsn_trains_in_two_stages_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    dataset(p, false);
    let o = train_bsn(p, "full", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("4 training videos, 2 validation videos"), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["epochs_run"], 4);
    let log = std::fs::read_to_string(p.join("full/log.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "epoch")
        .collect();
    let stages: Vec<&str> = epochs.iter().map(|v| v["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["tem", "tem", "pem", "pem"]);
    assert!(
        epochs[..2].iter().all(|v| v.get("val_auc").is_none())
            && epochs[2..].iter().all(|v| v["val_auc"].is_f64())
    );
    let o =
        run(env!("CARGO_BIN_EXE_vpropose"), &["--model", "full/best.safetensors", "feats/v_4.npy", "-q"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    for (name, stops) in [("a", &["2"][..]), ("b", &["3"][..]), ("c", &["1", "2"][..])] {
        for s in stops {
            let o = train_bsn(p, name, &["--stop-after", s, "--resume", "-q"]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = train_bsn(p, name, &["--resume", "-q"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let a = std::fs::read(p.join("full/last.safetensors")).unwrap();
        let b = std::fs::read(p.join(name).join("last.safetensors")).unwrap();
        assert!(a == b, "{name}: a resumed run differs from an uninterrupted one");
    }
}

/// `-o variant=mmaction2` trains MMAction2's BMN (its PEM widths, `BMNLoss`, `-o clip_grad=40` as
/// its config) and validates with its post-processing; vpropose runs the result.
#[test]
fn bmn_trains_as_mmaction2() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    dataset(p, false);
    let o = train(
        p,
        "mm",
        &["-o", "variant=mmaction2", "-o", "clip_grad=40", "-o", "feature_extraction_interval=1", "-q"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["epochs_run"], 3);
    let model = vidkit::model::load_bmn(&p.join("mm/best.safetensors")).unwrap();
    assert_eq!(model.spec.variant, vidkit::model::BmnVariant::MMAction2);
    let log = std::fs::read_to_string(p.join("mm/log.jsonl")).unwrap();
    assert!(log.contains("\"clip_grad\":40.0") && log.contains("\"variant\":\"mmaction2\""), "{log}");
    let o =
        run(env!("CARGO_BIN_EXE_vpropose"), &["--model", "mm/best.safetensors", "feats/v_4.npy", "-q"], p);
    assert!(o.status.success(), "{}", stderr(&o));
}
