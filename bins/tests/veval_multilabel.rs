//! Whole-tool tests of `veval --multilabel`: the real binary on files in a temp dir.
//!
//! The small case (three videos, four classes), worked by hand from youtube-8m `eval_util.py`
//! (`calculate_gap`, `calculate_hit_at_one`, `calculate_precision_at_equal_recall_rate`) and
//! mmaction2 `mmaction/evaluation/functional/accuracy.py` (`mean_average_precision`):
//!
//! | video | scores (c0 c1 c2 c3) | positives | argmax | PERR                  |
//! |-------|----------------------|-----------|--------|-----------------------|
//! | v0    | .90 .10 .60 .30      | 0, 3      | 0 (+)  | top 2 = c0+, c2-: 1/2 |
//! | v1    | .20 .80 .40 .70      | 1         | 1 (+)  | top 1 = c1+: 1        |
//! | v2    | .50 .05 .35 .45      | none      | 0 (-)  | 0                     |
//!
//! hit1 = 2/3, perr = 1.5/3 = 0.5. GAP@2 pools .9+ .8+ .7- .6- .5- .45- over 3 positives:
//! (1/1 + 2/2) / 3 = 2/3. GAP@20 (k capped at 4 classes) adds .4- .35- .3+ ...: the third
//! positive is at rank 9: (1 + 1 + 3/9) / 3 = 7/9. mAP: c0 1, c1 1, c2 skipped (no positives),
//! c3 (.7- .45- .3+) 1/3: 7/9. (Checked against scripts/multilabel_ref.py.)
//!
//! The randomized cross-check runs the same predictions through `veval` and through
//! scripts/multilabel_ref.py (the reference formulas restated in numpy, decode peers venv).

mod common;

use common::ToolRun;
use serde_json::{json, Value};
use std::path::Path;
use vidkit::rng::Rng;

const CASE: [(&str, &[usize], [f32; 4]); 3] = [
    ("v0", &[0, 3], [0.90, 0.10, 0.60, 0.30]),
    ("v1", &[1], [0.20, 0.80, 0.40, 0.70]),
    ("v2", &[], [0.50, 0.05, 0.35, 0.45]),
];

fn veval(dir: &Path, args: &[&str]) -> ToolRun {
    common::run_tool(env!("CARGO_BIN_EXE_veval"), args, dir, None)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn close(m: &Value, key: &str, want: f64) {
    let got = m[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {m}"));
    assert!((got - want).abs() < 1e-12, "{key}: got {got}, want {want} ({m})");
}

/// The case as prediction lines, ground truth written by `truth(positives)` into each record.
fn case_lines(truth: impl Fn(&[usize]) -> Option<(&'static str, Value)>) -> String {
    CASE.iter()
        .map(|(v, positives, scores)| {
            let mut r = json!({"video": format!("{v}.mp4"), "scores": scores, "top": []});
            if let Some((key, value)) = truth(positives) {
                r[key] = value;
            }
            format!("{r}\n")
        })
        .collect()
}

fn assert_case(m: &Value, gap: f64, top_k: u32) {
    close(m, "gap", gap);
    close(m, "hit1", 2.0 / 3.0);
    close(m, "perr", 0.5);
    close(m, "map", 7.0 / 9.0);
    assert_eq!((&m["top_k"], &m["videos"], &m["classes"]), (&json!(top_k), &json!(3), &json!(4)), "{m}");
}

#[test]
fn gt_list_with_comma_separated_labels_gives_the_hand_derived_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // Record labels are wrong on purpose: the list must win. v2's line has no labels: no positives.
    write(dir.path(), "p.jsonl", &case_lines(|_| Some(("labels", json!([2])))));
    write(dir.path(), "val.list", "# multi-label\nv0.mp4 0,3\nv1.mp4 1\nv2.mp4\n");
    let run = veval(dir.path(), &["--multilabel", "--pred", "p.jsonl", "--gt", "val.list"]);
    assert_case(&run.json(), 7.0 / 9.0, 20);
    assert!(
        run.stderr.contains("gap@20") && run.stderr.contains("over 3 classes with positives"),
        "{}",
        run.stderr
    );

    let run =
        veval(dir.path(), &["--multilabel", "--top-k", "2", "-q", "--pred", "p.jsonl", "--gt", "val.list"]);
    assert_case(&run.json(), 2.0 / 3.0, 2);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn record_ground_truth_from_labels_or_a_label_list_or_int() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.jsonl", &case_lines(|p| Some(("labels", json!(p)))));
    assert_case(&veval(dir.path(), &["--multilabel", "--pred", "p.jsonl"]).json(), 7.0 / 9.0, 20);

    // "label" as a list; as an int where there is one positive.
    let lines = case_lines(|p| match p {
        [one] => Some(("label", json!(one))),
        _ => Some(("label", json!(p))),
    });
    write(dir.path(), "p.jsonl", &lines);
    let run = veval(dir.path(), &["--multilabel", "--pred", "p.jsonl", "-o", "m.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.json")).unwrap()).unwrap();
    assert_case(&m, 7.0 / 9.0, 20);

    // Single-label mode is unchanged: it reads "label", not "labels".
    write(dir.path(), "p.jsonl", "{\"video\":\"a\",\"label\":1,\"labels\":[0],\"scores\":[0.2,0.8]}\n");
    let m = veval(dir.path(), &["--pred", "p.jsonl"]).json();
    assert_eq!(m["top1"], json!(1.0));
}

#[test]
fn bad_input_fails_with_one_line_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ml = |pred: &str, gt: Option<&str>| {
        let mut args = vec!["--multilabel", "--pred", pred];
        if let Some(gt) = gt {
            args.extend(["--gt", gt]);
        }
        veval(dir.path(), &args).fatal().to_string()
    };
    write(dir.path(), "p.jsonl", &case_lines(|p| Some(("labels", json!(p)))));

    write(dir.path(), "val.list", "v0.mp4 0,3\nv1.mp4 1\n");
    let err = ml("p.jsonl", Some("val.list"));
    assert!(err.contains("p.jsonl: line 3: no ground truth for \"v2.mp4\" in val.list"), "{err}");

    write(dir.path(), "val.list", "v0.mp4 0,3\nv1.mp4 1,4\nv2.mp4\n");
    let err = ml("p.jsonl", Some("val.list"));
    assert!(
        err.contains("val.list: line 2: \"v1.mp4\": label 4 is out of range for 4 classes (0..=3)"),
        "{err}"
    );

    let mut lines: Vec<String> =
        case_lines(|p| Some(("labels", json!(p)))).lines().map(String::from).collect();
    lines[1] = r#"{"video":"v1.mp4","labels":[1,7],"scores":[0.2,0.8,0.4,0.7]}"#.into();
    write(dir.path(), "range.jsonl", &lines.join("\n"));
    let err = ml("range.jsonl", None);
    assert!(err.contains("range.jsonl: line 2: label 7 is out of range for 4 classes"), "{err}");

    lines[1] = r#"{"video":"v1.mp4","labels":"1,3","scores":[0.2,0.8,0.4,0.7]}"#.into();
    write(dir.path(), "kind.jsonl", &lines.join("\n"));
    let err = ml("kind.jsonl", None);
    assert!(err.contains("kind.jsonl: line 2: \"labels\" must be a list of class ids"), "{err}");

    lines[1] = "v1.mp4 1,3".into();
    write(dir.path(), "text.jsonl", &lines.join("\n"));
    let err = ml("text.jsonl", None);
    assert!(err.contains("text.jsonl: line 2: malformed prediction"), "{err}");

    lines[1] = r#"{"video":"v1.mp4","scores":[0.2,0.8,0.4,0.7]}"#.into();
    write(dir.path(), "none.jsonl", &lines.join("\n"));
    let err = ml("none.jsonl", None);
    assert!(err.contains("none.jsonl: line 2") && err.contains("no \"label\""), "{err}");
}

/// Random multi-label predictions with many ties (scores on a 1/8 grid from -0.5 to 1), some
/// videos without positives and the last two classes never positive. Rows where a tie straddles
/// the `top_k`-th place or the n-th place (n = the video's positives) are drawn again: there
/// the reference's `argpartition` leaves the choice unspecified.
fn random_predictions(seed: u64, videos: usize, classes: usize, top_k: usize) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::new();
    for v in 0..videos {
        let (positives, scores) = loop {
            let mut positives: Vec<usize> = Vec::new();
            if !rng.chance(0.15) {
                for _ in 0..1 + rng.below(4) {
                    let c = rng.below(classes - 2);
                    if !positives.contains(&c) {
                        positives.push(c);
                    }
                }
            }
            let scores: Vec<f32> = (0..classes)
                .map(|c| {
                    let q = if positives.contains(&c) {
                        rng.int_inclusive(4, 12)
                    } else {
                        rng.int_inclusive(0, 10)
                    };
                    q as f32 / 8.0 - 0.5
                })
                .collect();
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
            let splits_a_tie = |n: usize| n > 0 && n < classes && sorted[n - 1] == sorted[n];
            if !splits_a_tie(top_k) && !splits_a_tie(positives.len()) {
                break (positives, scores);
            }
        };
        out += &format!("{}\n", json!({"video": format!("v{v}"), "labels": positives, "scores": scores}));
    }
    out
}

#[test]
fn random_predictions_match_the_reference_formulas() {
    let Some(python) = common::decode_peers_python() else { return };
    let script = common::workspace_root().join("scripts/multilabel_ref.py");
    let dir = tempfile::tempdir().unwrap();
    // 60 videos x 12 classes pool 720 entries at k >= 12: past one MT19937 state (624 draws).
    for (seed, top_k) in [(1u64, 5usize), (2, 20), (3, 1), (4, 11)] {
        let preds = random_predictions(seed, 60, 12, top_k);
        write(dir.path(), "p.jsonl", &preds);
        let k = top_k.to_string();
        let ours = veval(dir.path(), &["--multilabel", "--top-k", &k, "-q", "--pred", "p.jsonl"]).json();
        let out = std::process::Command::new(&python)
            .arg(&script)
            .args(["p.jsonl", "--top-k", &k])
            .current_dir(dir.path())
            .output()
            .expect("python runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let want: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
        for key in ["gap", "hit1", "perr", "map"] {
            close_to(&ours, &want, key, seed, top_k);
        }
        assert_eq!((&ours["videos"], &ours["classes"]), (&want["videos"], &want["classes"]));
    }
}

fn close_to(ours: &Value, want: &Value, key: &str, seed: u64, top_k: usize) {
    let (a, b) = (ours[key].as_f64().unwrap(), want[key].as_f64().unwrap());
    assert!((a - b).abs() < 1e-6, "seed {seed}, top-k {top_k}: {key} is {a}, the reference {b}");
}
