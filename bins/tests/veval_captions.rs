//! `veval --captions` against pycocoevalcap 1.2 itself (scripts/captions_ref.py in the captions
//! peers venv, with its Stanford tokenizer and METEOR jars): the native PTB tokenization of a
//! corpus of tricky captions equals the jar's; BLEU-1..4, ROUGE-L and CIDEr-D of 150 videos,
//! corpus and per video, equal the reference's; METEOR equals the jar's when --meteor-jar names
//! it and is left out, with a stderr line, when not; the input forms; bad files.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const VEVAL: &str = env!("CARGO_BIN_EXE_veval");

fn fixture() -> Option<PathBuf> {
    let script = workspace_root().join("scripts/captions_ref.py");
    let keys = [script.clone(), workspace_root().join("scripts/peers-captions-nodeps.txt")];
    cached_fixture(
        "captions-ref",
        &keys,
        "corpus",
        || peers_python("captions", "caption metric checks"),
        &script,
        &[],
    )
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn ptb_tokenization_equals_the_stanford_jar_on_tricky_captions() {
    let Some(fx) = fixture() else { return };
    let pairs: Vec<(String, String)> = serde_json::from_value(json_file(&fx.join("tokens.json"))).unwrap();
    let captions: Vec<&str> = pairs.iter().map(|(c, _)| c.as_str()).collect();
    let ours = vidkit::metric::captions::ptb_tokenize(&captions);
    for ((caption, jar), ours) in pairs.iter().zip(&ours) {
        assert_eq!(ours, jar, "tokens of {caption:?}");
    }
    eprintln!("{} captions tokenized as the jar does", pairs.len());
}

#[test]
fn scores_equal_pycocoevalcap_corpus_and_per_video() {
    let Some(fx) = fixture() else { return };
    let want = json_file(&fx.join("expected.json"));
    let jar = want["meteor_jar"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (pred, gt) = (fx.join("pred.jsonl"), fx.join("gt.json"));
    let mut args = vec![
        "--captions",
        "--pred",
        pred.to_str().unwrap(),
        "--gt",
        gt.to_str().unwrap(),
        "--per-video",
        "-q",
    ];
    let with_meteor =
        std::process::Command::new("java").arg("-version").output().is_ok_and(|o| o.status.success());
    if with_meteor {
        args.extend(["--meteor-jar", &jar]);
    } else {
        skip("no `java`: METEOR through its jar not checked");
    }
    let got = run_tool(VEVAL, &args, dir.path(), None).json();
    let keys = [
        ("bleu1", "Bleu_1"),
        ("bleu2", "Bleu_2"),
        ("bleu3", "Bleu_3"),
        ("bleu4", "Bleu_4"),
        ("meteor", "METEOR"),
        ("rouge_l", "ROUGE_L"),
        ("cider", "CIDEr"),
    ];
    let mut max_diff = 0f64;
    for (ours, theirs) in keys {
        if ours == "meteor" && !with_meteor {
            continue;
        }
        let (g, w) = (got[ours].as_f64().unwrap(), want["corpus"][theirs].as_f64().unwrap());
        max_diff = max_diff.max((g - w).abs());
        assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{ours}: {g} vs pycocoevalcap {w}");
    }
    assert_eq!(got["videos"], 150);
    let rows = got["per_video"].as_array().unwrap();
    assert_eq!(rows.len(), 150);
    for row in rows {
        let v = row["video"].as_str().unwrap();
        for (ours, theirs) in keys {
            if ours == "meteor" && !with_meteor {
                continue;
            }
            let (g, w) = (row[ours].as_f64().unwrap(), want["per_video"][v][theirs].as_f64().unwrap());
            max_diff = max_diff.max((g - w).abs());
            assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{v} {ours}: {g} vs pycocoevalcap {w}");
        }
    }
    eprintln!("largest difference from pycocoevalcap over corpus and per-video scores: {max_diff:e}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).unwrap();
    name.to_string()
}

#[test]
fn input_forms_and_meteor_left_out_without_its_jar() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines = write(d, "c.jsonl", "{\"video\": \"v_a\", \"caption\": \"A man plays a guitar.\", \"beams\": []}\n{\"video\": \"v_b\", \"caption\": \"A dog runs.\"}\n");
    let map = write(d, "c.json", r#"{"v_a": "A man plays a guitar.", "v_b": "A dog runs."}"#);
    let refs = write(
        d,
        "r.json",
        r#"{"v_a": ["a man is playing the guitar", "someone plays guitar"], "v_b": ["a dog is running", "the dog runs fast"]}"#,
    );
    // ActivityNet Captions: the sentences are the references; ids without "v_" still match.
    let anet = write(
        d,
        "anet.json",
        r#"{"v_a": {"duration": 10.0, "timestamps": [[0, 5], [5, 10]], "sentences": ["a man is playing the guitar", " someone plays guitar"]},
           "v_b": {"duration": 4.0, "timestamps": [[0, 4], [1, 3]], "sentences": ["a dog is running", "the dog runs fast"]}}"#,
    );
    let r = run_tool(VEVAL, &["--captions", "--pred", &lines, "--gt", &refs], d, None);
    assert!(r.stderr.contains("meteor left out") && r.stderr.contains("--meteor-jar"), "{}", r.stderr);
    let a = r.json();
    assert!(a.get("meteor").is_none() && a.get("per_video").is_none());
    let b = run_tool(VEVAL, &["--captions", "--pred", &map, "--gt", &anet, "-q"], d, None).json();
    assert_eq!(a, b);
    assert_eq!(a["videos"], 2);
    assert!(a["cider"].as_f64().unwrap() >= 0.0 && a["bleu1"].as_f64().unwrap() > 0.5, "{a}");
}

#[test]
fn bad_files_are_one_line_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let refs = write(d, "r.json", r#"{"a": ["a man"], "b": ["a dog"]}"#);
    let cases: [(&str, &str, &str); 8] = [
        ("{\"video\": \"a\", \"caption\": 3}\n", "r.json", "line 1: \"caption\" must be a string"),
        (r#"{"a": ["a man"], "b": "a dog"}"#, "r.json", "the caption of \"a\" must be a string"),
        (
            "{\"video\": \"a\", \"caption\": \"x\"}\n{\"video\": \"a\", \"caption\": \"y\"}\n",
            "r.json",
            "line 2: video \"a\" again",
        ),
        ("{\"video\": \"zz\", \"caption\": \"x\"}\n", "r.json", "no references for \"zz\""),
        ("{\"video\": \"a\", \"caption\": \"x\"}\n", "r.json", "no caption for \"b\""),
        ("{\"video\": \"a\", \"caption\": \"x\"}\n", "empty.json", "\"a\" has no reference captions"),
        ("{\"video\": \"a\", \"caption\": \"x\"}\n", "nonstring.json", "\"a\": reference 1 must be a string"),
        ("", "r.json", "no captions to evaluate"),
    ];
    write(d, "empty.json", r#"{"a": []}"#);
    write(d, "nonstring.json", r#"{"a": ["ok", 5]}"#);
    for (pred, gt, msg) in cases {
        let p = write(d, "p.jsonl", pred);
        let r = run_tool(VEVAL, &["--captions", "--pred", &p, "--gt", gt, "-o", "out.json"], d, None);
        let line = r.fatal();
        assert!(
            line.contains(msg) && (line.contains("p.jsonl") || line.contains(gt)),
            "{pred} / {gt}: {line}"
        );
        assert!(!d.join("out.json").exists());
    }
    let _ = refs;
    let p = write(d, "p.jsonl", "{\"video\": \"a\", \"caption\": \"a man\"}\n");
    let line = run_tool(
        VEVAL,
        &["--captions", "--pred", &p, "--gt", "r.json", "--allow-missing", "--meteor-jar", "nope.jar"],
        d,
        None,
    )
    .fatal()
    .to_string();
    assert!(line.contains("nope.jar: --meteor-jar: no such file"), "{line}");
}
