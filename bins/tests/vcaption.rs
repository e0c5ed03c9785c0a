//! vcaption and vtrain --arch ets on bad input (issue 21, "Bad input"): features of the wrong
//! width, a model of another task, captions with non-string entries — one line naming the file
//! and what is wrong, the other videos captioned, no output file when nothing could be.

mod common;
use common::*;
use std::path::Path;

fn npy(p: &Path, name: &str, rows: usize, cols: usize, seed: f32) {
    let a =
        ndarray::Array2::from_shape_fn((rows, cols), |(i, j)| ((i * cols + j) as f32 * 0.37 + seed).sin());
    ndarray_npy::write_npy(p.join(name), &a).unwrap();
}

/// `vtrain --arch ets` on the features in `f` with captions `gt` into `out`, and `extra` options.
fn vtrain(p: &Path, gt: &str, out: &str, extra: &[&str]) -> std::process::Output {
    let args = ["--arch", "ets", "--train-list", "f", "--gt", gt, "--out", out, "-q"];
    run(env!("CARGO_BIN_EXE_vtrain"), &[&args[..], extra].concat(), p)
}

/// A tiny ETS trained for one epoch on four videos of 6-wide features.
fn tiny_model(p: &Path) {
    std::fs::create_dir_all(p.join("f")).unwrap();
    for (i, v) in ["a", "b", "c", "d"].iter().enumerate() {
        npy(&p.join("f"), &format!("{v}.npy"), 5 + i, 6, i as f32);
    }
    std::fs::write(
        p.join("caps.json"),
        r#"{"a": ["a red circle"], "b": ["a blue square"], "c": ["a red square"], "d": ["a blue circle"]}"#,
    )
    .unwrap();
    let opts =
        ["epochs=1", "fc_dim=8", "gru_hidden_dim=8", "decoder_size=8", "word_emb_dim=4", "min_count=1"];
    let extra: Vec<&str> = opts.iter().flat_map(|o| ["-o", o]).collect();
    let o = vtrain(p, "caps.json", "run", &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["words"], 8, "{summary}");
}

#[test]
fn wrong_widths_and_other_tasks_are_reported_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tiny_model(p);
    std::fs::create_dir(p.join("mixed")).unwrap();
    npy(&p.join("mixed"), "good.npy", 4, 6, 0.5);
    npy(&p.join("mixed"), "wide.npy", 4, 7, 0.5);
    let o = run(
        env!("CARGO_BIN_EXE_vcaption"),
        &["--model", "run/best.safetensors", "mixed", "-o", "c.jsonl"],
        p,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("video \"wide\": features are 7 wide; the model takes 6"), "{}", stderr(&o));
    let text = std::fs::read_to_string(p.join("c.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("\"video\":\"good\""), "{text}");

    let o = run(
        env!("CARGO_BIN_EXE_vcaption"),
        &["--model", "run/best.safetensors", "mixed/wide.npy", "-o", "w.jsonl"],
        p,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!p.join("w.jsonl").exists());

    write_random_tsn(&p.join("tsn.safetensors"), 8, 1);
    let o = run(env!("CARGO_BIN_EXE_vcaption"), &["--model", "tsn.safetensors", "mixed/good.npy"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("tsn_r18 is a recognizer of frames, not a video captioner (vclassify"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn captions_with_non_string_entries_are_refused_naming_the_entry() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tiny_model(p);
    std::fs::write(p.join("bad.json"), r#"{"a": ["a red circle", 7]}"#).unwrap();
    let o = vtrain(p, "bad.json", "run2", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.json: \"a\": sentence 1: must be a string, not 7"), "{}", stderr(&o));
    assert!(!p.join("run2/best.safetensors").exists());
    // Features narrower than the width asked for.
    let o = vtrain(p, "caps.json", "run3", &["-o", "feat_size=9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("features are 6 wide; the model takes 9"), "{}", stderr(&o));
}
