//! `veval --grounding` against the two references (TALL's compute_IoU_recall_top_n_forreg and
//! MMAction2's RecallatTopK, restated with numpy in scripts/grounding_ref.py) on 300 random
//! queries with ties, IoUs at thresholds, empty and short candidate lists; ground truth from a
//! --gt file; bad files are one-line errors that write nothing.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const VEVAL: &str = env!("CARGO_BIN_EXE_veval");

fn fixture() -> Option<PathBuf> {
    let script = workspace_root().join("scripts/grounding_ref.py");
    cached_fixture(
        "grounding-ref",
        std::slice::from_ref(&script),
        "random",
        || peers_python("captions", "grounding reference checks"),
        &script,
        &[],
    )
}

fn assert_recall(got: &Value, want: &Value, what: &str) {
    for k in ["1", "5", "10"] {
        for m in ["0.1", "0.3", "0.5", "0.7"] {
            let (g, w) = (got["r_at"][k][m].as_f64().unwrap(), want[k][m].as_f64().unwrap());
            assert_eq!(g, w, "{what}: R@{k} IoU={m}");
        }
    }
}

#[test]
fn recall_equals_both_references_on_random_queries() {
    let Some(fx) = fixture() else { return };
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("expected.json")).unwrap()).unwrap();
    let pred = fx.join("pred.jsonl");
    let pred = pred.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tall = run_tool(VEVAL, &["--grounding", "--pred", pred, "-q"], dir.path(), None).json();
    assert_eq!(tall["queries"], 300);
    assert_eq!(tall["protocol"], "tall");
    assert_recall(&tall, &want["tall"], "tall");
    let mm = run_tool(
        VEVAL,
        &["--grounding", "--grounding-protocol", "mmaction2", "--pred", pred, "-q"],
        dir.path(),
        None,
    )
    .json();
    assert_recall(&mm, &want["mmaction2"], "mmaction2");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).unwrap();
    name.to_string()
}

#[test]
fn ground_truth_from_a_query_file_and_hand_worked_edges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // q0: IoU exactly 0.5 ([0, 5] in [0, 10]); q1: tied scores, the hit listed first; q2: no
    // candidates; q3: one candidate (fewer than k), IoU 0.75.
    let pred = write(
        d,
        "pred.jsonl",
        r#"{"query_id": "q0", "video": "a", "candidates": [[0, 5, 0.9]]}
{"query_id": "q1", "video": "a", "candidates": [[0, 5, 0.5], [20, 30, 0.5]]}
{"query_id": 2, "video": "b", "candidates": []}
{"query_id": "q3", "video": "b", "candidates": [[0, 6, 1.0]]}
"#,
    );
    let gt = write(
        d,
        "gt.jsonl",
        r#"{"query_id": "q0", "video": "a", "gt": [0, 10]}
{"query_id": "q1", "video": "a", "gt": [0, 5]}
{"query_id": "2", "video": "b", "gt": [0, 8]}
{"query_id": "q3", "video": "b", "gt": [0, 8]}
"#,
    );
    let r = run_tool(VEVAL, &["--grounding", "--pred", &pred, "--gt", &gt], d, None);
    assert!(r.stderr.contains("1 queries without candidates"), "{}", r.stderr);
    let tall = r.json();
    // TALL: q0 hits at m <= 0.5 (>=); q1 misses at R@1 (the later tie ranks first), hits at R@5;
    // q3 hits everywhere (0.75 >= 0.7).
    assert_eq!(tall["r_at"]["1"]["0.5"], 0.5);
    assert_eq!(tall["r_at"]["1"]["0.7"], 0.25);
    assert_eq!(tall["r_at"]["5"]["0.5"], 0.75);
    assert_eq!(tall["r_at"]["10"]["0.7"], 0.5);
    let mm = run_tool(
        VEVAL,
        &["--grounding", "--grounding-protocol", "mmaction2", "--pred", &pred, "--gt", &gt, "-q"],
        d,
        None,
    )
    .json();
    // MMAction2: q0 misses at 0.5 (> is strict); q1 hits at R@1 (listed order).
    assert_eq!(mm["r_at"]["1"]["0.5"], 0.5);
    assert_eq!(mm["r_at"]["1"]["0.3"], 0.75);
    assert_eq!(mm["r_at"]["10"]["0.7"], 0.5);
}

#[test]
fn bad_files_are_one_line_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (r#"{"query_id": 1, "video": "a", "candidates": [[0, 5]], "gt": [0, 5]}"#, "candidate 0 must be [t0, t1, score]"),
        (r#"{"query_id": 1, "video": "a", "candidates": [[0, 5, 1]], "gt": [5, 5]}"#, "t0 < t1"),
        (r#"{"query_id": 1, "video": "a", "candidates": [[0, 5, 1]]}"#, "no \"gt\" and no --gt file"),
        (r#"{"video": "a", "candidates": [], "gt": [0, 1]}"#, "no \"query_id\""),
        ("{\"query_id\": 1, \"video\": \"a\", \"candidates\": [], \"gt\": [0, 1]}\n{\"query_id\": \"1\", \"video\": \"a\", \"candidates\": [], \"gt\": [0, 1]}", "line 2: query \"1\" of video \"a\" again"),
        ("not json", "line 1: not a JSON object"),
        ("", "no predictions"),
    ];
    for (text, msg) in cases {
        let pred = write(d, "p.jsonl", text);
        let r = run_tool(VEVAL, &["--grounding", "--pred", &pred, "-o", "out.json"], d, None);
        let line = r.fatal();
        assert!(line.contains("p.jsonl") && line.contains(msg), "{text}: {line}");
        assert!(!d.join("out.json").exists());
    }
    // Unknown and unpredicted queries against --gt; --allow-missing scores the rest.
    let pred = write(d, "p.jsonl", "{\"query_id\": 1, \"video\": \"a\", \"candidates\": [[0, 5, 1]]}\n{\"query_id\": 9, \"video\": \"z\", \"candidates\": []}\n");
    let gt = write(d, "g.jsonl", "{\"query_id\": 1, \"video\": \"a\", \"gt\": [0, 5]}\n{\"query_id\": 2, \"video\": \"a\", \"gt\": [0, 5]}\n");
    let line = run_tool(VEVAL, &["--grounding", "--pred", &pred, "--gt", &gt], d, None).fatal().to_string();
    assert!(
        line.contains("p.jsonl: line 2: no ground truth for query \"9\" of video \"z\" in g.jsonl"),
        "{line}"
    );
    let pred2 = write(d, "p2.jsonl", "{\"query_id\": 1, \"video\": \"a\", \"candidates\": [[0, 5, 1]]}\n");
    let line = run_tool(VEVAL, &["--grounding", "--pred", &pred2, "--gt", &gt], d, None).fatal().to_string();
    assert!(line.contains("g.jsonl: line 2: no prediction for query \"2\" of video \"a\""), "{line}");
    let ok =
        run_tool(VEVAL, &["--grounding", "--pred", &pred, "--gt", &gt, "--allow-missing", "-q"], d, None)
            .json();
    assert_eq!(ok["queries"], 1);
    assert_eq!(ok["r_at"]["1"]["0.7"], 1.0);
}
