//! `vtrain` refuses bad input with one-line errors naming what is wrong, before training.

mod common;
use common::*;

const VTRAIN: &str = env!("CARGO_BIN_EXE_vtrain");

#[test]
fn bad_arguments_and_lists_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(&p.join("a.mp4"), "32x32", 25, 20, &[]);
    std::fs::write(p.join("ok.list"), "a.mp4 0\na.mp4 1\n").unwrap();
    std::fs::write(p.join("bad.list"), "a.mp4 0\na.mp4 one\n").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--arch", "tsm_r7", "--train-list", "ok.list", "--out", "o"], "unknown architecture \"tsm_r7\""),
        (
            &["--arch", "tsm_r18", "--train-list", "missing.list", "--out", "o"],
            "missing.list: cannot read list file",
        ),
        (&["--arch", "tsm_r18", "--train-list", "bad.list", "--out", "o"], "bad.list: line 2"),
        (
            &["--arch", "tsm_r18", "--train-list", "ok.list", "--out", "o", "-o", "num_classes=1"],
            "has label [1], outside 0..1",
        ),
        (
            &["--arch", "tsm_r18", "--train-list", "ok.list", "--out", "o", "-o", "epochs"],
            "override \"epochs\" is not key=value",
        ),
    ];
    for (args, want) in cases {
        let o = run(VTRAIN, args, p);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert!(!p.join("o/last.safetensors").exists());
}

/// DML: a peer (here a wider TSM) trains alongside; both models are written and both learn
/// (their training loss falls), and a run stopped after 2 epochs and resumed for 2 more ends
/// with the same main and peer weights, bit for bit, as 4 straight epochs (the checkpoint holds
/// the peer and its optimiser), with the heads in fc_lr5's parameter groups.
#[test]
fn dml_trains_a_peer_alongside_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let o = run(
        env!("CARGO_BIN_EXE_vsynth"),
        &[
            "--out",
            "syn",
            "--classes",
            "left,right,up,down",
            "--per-class",
            "4",
            "--size",
            "32x32",
            "--seed",
            "4",
            "-q",
        ],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let args = |out: &'static str, epochs: &'static str, lr: &'static str, fc_lr5: &'static str| {
        let mut a = vec![
            "--arch",
            "tsm_r18",
            "--train-list",
            "syn/train.list",
            "--val-list",
            "syn/val.list",
            "--out",
            out,
            "-q",
            "-j",
            "1",
        ];
        a.extend(TINY_2D);
        a.extend([
            "-o",
            epochs,
            "-o",
            r#"dml={"arch":"tsm_r18","weight":1.0,"model":{"base_width":16}}"#,
            "-o",
            lr,
            "-o",
            fc_lr5,
        ]);
        a
    };
    let o = run(VTRAIN, &args("dml", "epochs=3", "optimizer.lr=0.01", "optimizer.fc_lr5=false"), p);
    assert!(o.status.success(), "{}", stderr(&o));
    let main = vidkit::model::read_config(&p.join("dml/last.safetensors")).unwrap();
    let peer = vidkit::model::read_config(&p.join("dml/peer_last.safetensors")).unwrap();
    assert_eq!((main.base_width, peer.base_width), (8, 16));
    let log = std::fs::read_to_string(p.join("dml/log.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "epoch")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 3);
    assert!(losses[2] < losses[0], "the joint loss should fall: {losses:?}");

    // Resuming, with the head at fc_lr5's rates (a gentler base LR keeps 5× and 10× stable).
    let args = |out| args(out, "epochs=4", "optimizer.lr=0.001", "optimizer.fc_lr5=true");
    let o = run(VTRAIN, &args("straight"), p);
    assert!(o.status.success(), "{}", stderr(&o));

    let mut first = args("split");
    first.extend(["--stop-after", "2"]);
    let o = run(VTRAIN, &first, p);
    assert!(o.status.success(), "{}", stderr(&o));
    // Resuming without the peer would half-restore the run: refused.
    let mut no_peer = args("split");
    let at = no_peer.iter().position(|a| a.starts_with("dml=")).unwrap();
    no_peer.drain(at - 1..=at);
    no_peer.push("--resume");
    let o = run(VTRAIN, &no_peer, p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("the checkpoint holds a DML peer"), "{}", stderr(&o));
    let mut second = args("split");
    second.push("--resume");
    let o = run(VTRAIN, &second, p);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tensors(&p.join("straight/last.safetensors"), &p.join("split/last.safetensors"));
    assert_same_tensors(&p.join("straight/peer_last.safetensors"), &p.join("split/peer_last.safetensors"));
}
