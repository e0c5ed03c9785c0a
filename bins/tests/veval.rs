//! Whole-tool tests: the real `veval` binary on files in a temp dir.
//!
//! The small case (six videos, six classes) and its expected numbers, worked by hand from
//! mmaction2's `top_k_accuracy` / `mean_class_accuracy` / `confusion_matrix`:
//!
//! | video | label | scores                              | argmax | rank of label | top1 | top5 |
//! |-------|-------|-------------------------------------|--------|---------------|------|------|
//! | v0    | 0     | .50 .10 .10 .10 .10 .10             | 0      | 1             | hit  | hit  |
//! | v1    | 1     | .30 .25 .15 .10 .10 .10             | 0      | 2             |      | hit  |
//! | v2    | 2     | .10 .10 .10 .10 .10 .50             | 5      | 4 (5, 0, 1)   |      | hit  |
//! | v3    | 5     | .20 .20 .20 .20 .19 .01             | 0      | 6             |      |      |
//! | v4    | 4     | .10 .10 .10 .10 .10 .10 (all tied)  | 0      | 5 (0..3 lower)|      | hit  |
//! | v5    | 1     | .00 .90 .10 .00 .00 .00             | 1      | 1             | hit  | hit  |
//!
//! top1 = 2/6, top5 = 5/6. Classes in labels ∪ argmax: {0, 1, 2, 4, 5} (3 in neither). Per class:
//! 0: 1/1, 1: 1/2, 2: 0/1, 4: 0/1, 5: 0/1 -> mean_class_acc = 1.5 / 5 = 0.3.
//! Confusion (rows true, columns predicted, over [0, 1, 2, 4, 5]):
//! 0: [1,0,0,0,0]  1: [1,1,0,0,0]  2: [0,0,0,0,1]  4: [1,0,0,0,0]  5: [1,0,0,0,0].
//! (Checked once against the reference functions under numpy 2.4.)

mod common;

use common::ToolRun;
use serde_json::{json, Value};
use std::path::Path;

const CASE: [(&str, i64, [f32; 6]); 6] = [
    ("v0", 0, [0.50, 0.10, 0.10, 0.10, 0.10, 0.10]),
    ("v1", 1, [0.30, 0.25, 0.15, 0.10, 0.10, 0.10]),
    ("v2", 2, [0.10, 0.10, 0.10, 0.10, 0.10, 0.50]),
    ("v3", 5, [0.20, 0.20, 0.20, 0.20, 0.19, 0.01]),
    ("v4", 4, [0.10, 0.10, 0.10, 0.10, 0.10, 0.10]),
    ("v5", 1, [0.00, 0.90, 0.10, 0.00, 0.00, 0.00]),
];

fn veval(dir: &Path, args: &[&str], stdin: Option<&str>) -> ToolRun {
    common::run_tool(env!("CARGO_BIN_EXE_veval"), args, dir, stdin)
}

/// The case as prediction lines; `video` names each record, `with_label` adds the label field.
fn pred_lines(video: impl Fn(usize) -> String, with_label: bool) -> String {
    CASE.iter()
        .enumerate()
        .map(|(i, (_, label, scores))| {
            let mut v = json!({"video": video(i), "scores": scores, "top": [], "clip": 0});
            if with_label {
                v["label"] = json!(label);
            }
            format!("{v}\n")
        })
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn assert_case_metrics(m: &Value) {
    assert_eq!(m["count"], json!(6));
    assert_eq!(m["top1"].as_f64().unwrap(), 2.0 / 6.0);
    assert_eq!(m["top5"].as_f64().unwrap(), 5.0 / 6.0);
    assert!((m["mean_class_acc"].as_f64().unwrap() - 0.3).abs() < 1e-12, "{m}");
}

#[test]
fn labels_in_records_give_the_hand_derived_metrics() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.jsonl", &pred_lines(|i| format!("v{i}.mp4"), true));
    let run = veval(dir.path(), &["--pred", "p.jsonl"], None);
    let m = run.json();
    assert_case_metrics(&m);
    assert!(m.get("confusion").is_none());
    assert!(run.stderr.contains("top1") && run.stderr.contains("mean_class_acc"), "{}", run.stderr);

    // The same from stdin, without the table.
    let run = veval(dir.path(), &["--pred", "-", "-q"], Some(&pred_lines(|i| format!("v{i}"), true)));
    assert_case_metrics(&run.json());
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn gt_list_is_matched_by_path_then_root_then_file_name_and_overrides_record_labels() {
    let dir = tempfile::tempdir().unwrap();
    let list: String = CASE.iter().map(|(v, l, _)| format!("cls{l}/{v}.mp4 {l}\n")).collect();
    write(dir.path(), "val.list", &format!("# split 1\n{list}"));
    // v0, v1 as written in the list; v2, v3 resolved under --root; v4, v5 only by file name.
    let video = |i: usize| {
        let (v, l, _) = CASE[i];
        match i {
            0 | 1 => format!("cls{l}/{v}.mp4"),
            2 | 3 => format!("/data/./cls{l}/{v}.mp4"),
            _ => format!("/elsewhere/{v}.mp4"),
        }
    };
    // Record labels are all wrong: the list must win.
    let preds = pred_lines(video, false).replace("\"clip\":0", "\"clip\":0,\"label\":3");
    write(dir.path(), "p.jsonl", &preds);
    assert_case_metrics(
        &veval(dir.path(), &["--pred", "p.jsonl", "--gt", "val.list", "--root", "/data"], None).json(),
    );

    // Without --root, v2 and v3 still match by file name.
    assert_case_metrics(&veval(dir.path(), &["--pred", "p.jsonl", "--gt", "val.list"], None).json());
}

#[test]
fn confusion_matrix_with_names_goes_to_the_output_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.jsonl", &pred_lines(|i| format!("v{i}"), true));
    write(dir.path(), "labels.txt", "zero\none\ntwo\nthree\nfour\nfive\n");
    let run = veval(
        dir.path(),
        &["--pred", "p.jsonl", "--confusion", "--labels", "labels.txt", "-o", "m.json"],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "-o moves the JSON off stdout: {}", run.stdout);
    let text = std::fs::read_to_string(dir.path().join("m.json")).unwrap();
    let m: Value = serde_json::from_str(&text).unwrap();
    assert_case_metrics(&m);
    assert_eq!(
        m["confusion"],
        json!({
            "classes": [0, 1, 2, 4, 5],
            "names": ["zero", "one", "two", "four", "five"],
            "matrix": [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 1], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]],
        })
    );
    // The per-class table names the classes; class 3 occurs nowhere and is not listed.
    assert!(run.stderr.contains("five") && !run.stderr.contains("three"), "{}", run.stderr);

    // Without --labels: no names.
    let m = veval(dir.path(), &["--pred", "p.jsonl", "--confusion"], None).json();
    assert_eq!(m["confusion"]["classes"], json!([0, 1, 2, 4, 5]));
    assert!(m["confusion"].get("names").is_none());
}

#[test]
fn missing_ground_truth_or_prediction_is_an_error_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let list: String = CASE.iter().map(|(v, l, _)| format!("{v}.mp4 {l}\n")).collect();
    write(dir.path(), "val.list", &format!("{list}extra.mp4 3\n"));
    write(dir.path(), "p.jsonl", &pred_lines(|i| format!("v{i}.mp4"), false));
    let run = veval(dir.path(), &["--pred", "p.jsonl", "--gt", "val.list"], None);
    let err = run.fatal();
    assert!(err.contains("val.list: line 7") && err.contains("extra.mp4"), "{err}");

    let mut preds = pred_lines(|i| format!("v{i}.mp4"), false);
    preds += "{\"video\":\"stray.mp4\",\"scores\":[1,0,0,0,0,0]}\n";
    write(dir.path(), "p.jsonl", &preds);
    let run = veval(dir.path(), &["--pred", "p.jsonl", "--gt", "val.list"], None);
    let err = run.fatal();
    assert!(err.contains("p.jsonl: line 7") && err.contains("stray.mp4"), "{err}");

    // Allowed: the stray prediction and the unpredicted entry are skipped and counted.
    let run = veval(dir.path(), &["--pred", "p.jsonl", "--gt", "val.list", "--allow-missing"], None);
    assert_case_metrics(&run.json());
    assert!(
        run.stderr.contains("skipped 1 predictions without ground truth and 1 list entries"),
        "{}",
        run.stderr
    );

    // Records without a label and no --gt.
    let run = veval(dir.path(), &["--pred", "p.jsonl"], None);
    let err = run.fatal();
    assert!(err.contains("p.jsonl: line 1") && err.contains("no \"label\""), "{err}");
}

#[test]
fn bad_input_fails_with_one_line_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = pred_lines(|i| format!("v{i}"), true);
    let mut lines: Vec<&str> = good.lines().collect();

    let err = veval(dir.path(), &["--pred", "absent.jsonl"], None).fatal().to_string();
    assert!(err.starts_with("veval: error: absent.jsonl: cannot open"), "{err}");

    lines[1] = "{\"video\": \"v1\", \"scores\": [0.1, ";
    write(dir.path(), "broken.jsonl", &lines.join("\n"));
    let err = veval(dir.path(), &["--pred", "broken.jsonl"], None).fatal().to_string();
    assert!(err.contains("broken.jsonl: line 2: malformed prediction"), "{err}");

    lines[1] = "{\"video\": \"v1\", \"label\": 6, \"scores\": [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]}";
    write(dir.path(), "range.jsonl", &lines.join("\n"));
    let err = veval(dir.path(), &["--pred", "range.jsonl"], None).fatal().to_string();
    assert!(err.contains("range.jsonl: line 2: label 6 is out of range for 6 classes"), "{err}");

    lines[1] = "{\"video\": \"v1\", \"label\": 1, \"scores\": [0.1, 0.9]}";
    write(dir.path(), "ragged.jsonl", &lines.join("\n"));
    let err = veval(dir.path(), &["--pred", "ragged.jsonl"], None).fatal().to_string();
    assert!(err.contains("ragged.jsonl: line 2: 2 scores, but line 1 has 6"), "{err}");

    write(dir.path(), "p.jsonl", &good);
    write(dir.path(), "val.list", "v0 0\nv1 1\nv2 2\nv3 9\nv4 4\nv5 1\n");
    let err = veval(dir.path(), &["--pred", "p.jsonl", "--gt", "val.list"], None).fatal().to_string();
    assert!(err.contains("val.list: line 4") && err.contains("label 9 is out of range"), "{err}");

    write(dir.path(), "val.list", "v0 0\nv1 one\n");
    let err = veval(dir.path(), &["--pred", "p.jsonl", "--gt", "val.list"], None).fatal().to_string();
    assert!(err.contains("val.list") && err.contains("line 2"), "{err}");

    write(dir.path(), "labels.txt", "a\nb\n");
    let err = veval(dir.path(), &["--pred", "p.jsonl", "--labels", "labels.txt"], None).fatal().to_string();
    assert!(err.contains("labels.txt: 2 class names") && err.contains("6 scores"), "{err}");

    write(dir.path(), "empty.jsonl", "\n");
    let err = veval(dir.path(), &["--pred", "empty.jsonl"], None).fatal().to_string();
    assert!(err.contains("empty.jsonl: no predictions"), "{err}");
}

#[test]
fn help_has_examples() {
    let run = veval(Path::new("."), &["--help"], None);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("Examples:") && run.stdout.contains("veval --pred preds.jsonl --gt"),
        "{}",
        run.stdout
    );
}
