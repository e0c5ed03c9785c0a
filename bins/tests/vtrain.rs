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
            "has label Some(1), outside 0..1",
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
