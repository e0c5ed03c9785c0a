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

/// `--device cpu-portable` (the GPU's code) trains ETS as the CPU does: the same losses.
#[test]
fn ets_trains_on_the_candle_only_path() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tiny_model(p);
    let opts =
        ["epochs=2", "fc_dim=8", "gru_hidden_dim=8", "decoder_size=8", "word_emb_dim=4", "min_count=1"];
    let mut extra: Vec<&str> = opts.iter().flat_map(|o| ["-o", o]).collect();
    extra.extend(["-o", "log_every=1", "-o", "batch_size=2", "--device"]);
    for device in ["cpu", "cpu-portable"] {
        let o = vtrain(p, "caps.json", device, &[&extra[..], &[device]].concat());
        assert!(o.status.success(), "{device}: {}", stderr(&o));
    }
    assert_trains_alike(&p.join("cpu"), &p.join("cpu-portable"), "ets");
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

/// The reference's per-video files: numpy arrays pickled by Python 2 (protocol 0), no extension.
#[test]
fn the_references_pickled_feature_files_are_captioned() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tiny_model(p);
    std::fs::create_dir(p.join("feat_data")).unwrap();
    for (name, rows) in [("v_one", 4usize), ("v_two", 7)] {
        let data: Vec<u8> = (0..rows * 6).flat_map(|i| ((i as f32 * 0.37).sin()).to_le_bytes()).collect();
        let escaped: String = data.iter().map(|b| format!("\\x{b:02x}")).collect();
        let pickle = format!(
            "cnumpy.core.multiarray\n_reconstruct\np0\n(cnumpy\nndarray\np1\n(I0\ntp2\nS'b'\np3\ntp4\nRp5\n(I1\n(I{rows}\nI6\ntp6\ncnumpy\ndtype\np7\n(S'f4'\np8\nI0\nI1\ntp9\nRp10\n(I3\nS'<'\np11\nNNNI-1\nI-1\nI0\ntp12\nbI00\nS'{escaped}'\np13\ntp14\nb."
        );
        std::fs::write(p.join("feat_data").join(name), pickle).unwrap();
    }
    let o = run(env!("CARGO_BIN_EXE_vcaption"), &["--model", "run/best.safetensors", "feat_data", "-q"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let ids: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["video"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["v_one", "v_two"]);
}

/// `vtrain --arch ets --resume` continues exactly: one epoch, then two more resumed, gives the
/// weights of three in one go (the shuffle, Adam's moments and Noam's step carry over).
#[test]
fn ets_training_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tiny_model(p);
    let opts = [
        "epochs=3",
        "batch_size=2",
        "fc_dim=8",
        "gru_hidden_dim=8",
        "decoder_size=8",
        "word_emb_dim=4",
        "min_count=1",
    ];
    let extra: Vec<&str> = opts.iter().flat_map(|o| ["-o", o]).collect();
    let o = vtrain(p, "caps.json", "full", &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vtrain(p, "caps.json", "split", &[&extra[..], &["--stop-after", "1"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vtrain(p, "caps.json", "split", &[&extra[..], &["--resume"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(resumed["epochs_run"], 2);
    let a = std::fs::read(p.join("full/last.safetensors")).unwrap();
    let b = std::fs::read(p.join("split/last.safetensors")).unwrap();
    assert!(a == b, "a resumed run differs from an uninterrupted one");
}

#[test]
fn sharded_runs_merge_into_the_unsharded_output() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tiny_model(p);
    let bin = env!("CARGO_BIN_EXE_vcaption");
    let args = ["--model", "run/best.safetensors", "f", "--beams"];
    assert_eq!(assert_shards_merge(bin, &args, 3, p), [2, 1, 1]);
    // More shards than videos: the last is empty, and merges as such.
    assert_eq!(assert_shards_merge(bin, &args, 5, p), [1, 1, 1, 1, 0]);
}
