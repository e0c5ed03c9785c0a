//! YouTube-8M end to end (issue 22, point 1): TFRecords in the official format, written by the
//! pure-Python `tfrecord` package (`scripts/youtube8m_fixture.py` in the pinned `tfrecord` peers
//! venv, not by vidkit), read by `vconvert --lists youtube8m` into feature stores, and
//! `recipes/youtube8m.mk` run through `lists train eval` on them:
//! - frame level: the features hold per-class bumps, so an AttentionLSTM must reach a GAP@20 far
//!   above what scores carrying no information give (about the positive rate, 2/6); the values
//!   must equal the starter code's `utils.Dequantize` as numpy computes it; a second `make` must
//!   run nothing;
//! - video level (2017's `video_id`), with a file cut short and a file with a flipped byte:
//!   errors name the file and the record, the other files are converted, the summary counts the
//!   skipped records, exit 1; a fatal error leaves no output at all.
//! The framing, CRC and protobuf decoding are also unit-tested in `lib/src/data/` without Python.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin_dir() -> String {
    Path::new(env!("CARGO_BIN_EXE_vconvert")).parent().unwrap().display().to_string()
}

/// The fixture set `name` in `dir` (the Python writer with `args`); `None` after a SKIP (or a
/// panic under CI) when the venv cannot be built.
fn fixture(dir: &Path, name: &str, args: &[&str]) -> Option<PathBuf> {
    let python = peers_python("tfrecord", "the YouTube-8M TFRecord checks")?;
    let out = dir.join(name);
    let o = Command::new(python)
        .arg(workspace_root().join("scripts/youtube8m_fixture.py"))
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "youtube8m_fixture.py: {}", stderr(&o));
    Some(out)
}

fn make(p: &Path, targets: &[&str], extra: &[&str]) -> std::process::Output {
    Command::new("make")
        .args(["-s", "-f", workspace_root().join("recipes/youtube8m.mk").to_str().unwrap()])
        .arg(format!("BIN={}", bin_dir()))
        .args(["DATA=y8m", "OUT=out", "JOBS=2", "BATCH=16"])
        .args(extra)
        .args(targets)
        .current_dir(p)
        .env("RAYON_NUM_THREADS", "2")
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .output()
        .unwrap()
}

fn expected(set: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(set.join("expected.json")).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn mtimes(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            out.extend(mtimes(&e.path()));
        } else {
            out.push((e.path(), e.metadata().unwrap().modified().unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn youtube8m_recipe_learns_from_frame_level_tfrecords() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let Some(set) = fixture(p, "y8m", &["--train", "240", "--val", "90", "--classes", "6", "--seed", "3"])
    else {
        return;
    };
    let t0 = std::time::Instant::now();
    // AttentionLSTM at toy sizes; the recipe's own optimiser protocol (RMSProp, x0.1 at epoch 5).
    let sizes = "MODEL_OPTS=-o sequence.embedding_size=32 -o sequence.lstm_size=32 -o sequence.hidden_sizes=[64,32] -o dropout=0";
    let train_opts = "TRAIN_OPTS=-o epochs=8 -o seed=1 -o 'schedule={\"name\":\"multi_step\",\"base_lr\":0.003,\"milestones\":[6],\"gamma\":0.1}' -o 'optimizer={\"name\":\"rmsprop\",\"lr\":0.003,\"centered\":true,\"alpha\":0.95,\"eps\":0.000001,\"weight_decay\":0.0008}'";
    let o = make(p, &["lists", "train", "eval"], &[sizes, train_opts]);
    assert!(o.status.success(), "make: {}", stderr(&o));
    let took = t0.elapsed().as_secs_f64();
    let out = p.join("out");
    let labels = std::fs::read_to_string(out.join("labels.txt")).unwrap();
    assert_eq!(labels.lines().take(3).collect::<Vec<_>>(), ["Car", "Games, Video", "Music"]);
    let train = std::fs::read_to_string(out.join("train.list")).unwrap();
    assert_eq!(train.lines().count(), 240);
    assert_eq!(std::fs::read_to_string(out.join("val.list")).unwrap().lines().count(), 90);
    // The first training video (file train0000's first record) is the list's first line, with its
    // label set, and its values are the starter code's dequantisation, bit for bit.
    let want = expected(&set);
    let id = want["id"].as_str().unwrap();
    let want_labels: Vec<String> = want["labels"].as_array().unwrap().iter().map(|l| l.to_string()).collect();
    assert_eq!(train.lines().next().unwrap(), format!("{id} {}", want_labels.join(",")));
    let store = vidkit::featstore::FeatureStore::open(&out.join("train.h5")).unwrap();
    let videos: Vec<_> = store.iter().unwrap().map(|v| v.unwrap()).collect();
    let v = videos.iter().find(|v| v.id == id).unwrap();
    let (rgb, audio) = (v.modality("rgb").unwrap(), v.modality("audio").unwrap());
    assert_eq!(rgb.dim(), (want["frames"].as_u64().unwrap() as usize, 1024));
    assert_eq!(audio.ncols(), 128);
    assert_eq!(rgb.row(0).to_vec(), floats(&want["rgb0"]));
    assert_eq!(audio.row(0).to_vec(), floats(&want["audio0"]));
    // Learnt: GAP@20 far above uninformative scores (about the share of positives: 2 of 6).
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let (gap, hit1) = (m["gap"].as_f64().unwrap(), m["hit1"].as_f64().unwrap());
    // Chance: seeded random scores for the same videos, scored by the same veval.
    let mut rng = vidkit::rng::Rng::new(7);
    let mut random = String::new();
    for line in std::fs::read_to_string(out.join("val.list")).unwrap().lines() {
        let id = line.split_whitespace().next().unwrap();
        let scores: Vec<f64> = (0..6).map(|_| rng.uniform()).collect();
        random.push_str(&format!("{}\n", serde_json::json!({"video": id, "scores": scores})));
    }
    std::fs::write(p.join("random.jsonl"), random).unwrap();
    let chance = run_tool(
        env!("CARGO_BIN_EXE_veval"),
        &["--multilabel", "--pred", "random.jsonl", "--gt", "out/val.list", "-q"],
        p,
        None,
    )
    .json();
    let chance_gap = chance["gap"].as_f64().unwrap();
    eprintln!(
        "YouTube-8M recipe (AttentionLSTM, 240 training / 90 validation videos, 6 classes): {m}; \
         random scores: {chance}; lists + train + eval {took:.1} s"
    );
    assert!(gap >= 0.8 && gap >= chance_gap + 0.4, "GAP@20 only {gap} (random scores: {chance_gap})");
    assert!(hit1 >= 0.8, "hit@1 only {hit1}");
    // Resumable: every target is a file, so a second run does nothing.
    let before = mtimes(&out);
    let o = make(p, &["lists", "train", "eval"], &[sizes, train_opts]);
    assert!(o.status.success(), "second make: {}", stderr(&o));
    assert_eq!(mtimes(&out), before, "the second make rewrote outputs");
    let dry = Command::new("make")
        .args(["-n", "-f", workspace_root().join("recipes/youtube8m.mk").to_str().unwrap()])
        .args([&format!("BIN={}", bin_dir()), "DATA=y8m", "OUT=out", "lists", "train", "eval"])
        .current_dir(p)
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&dry.stdout);
    assert!(!plan.contains("vconvert") && !plan.contains("vtrain") && !plan.contains("veval"), "{plan}");
}

#[test]
fn youtube8m_video_level_with_damaged_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let Some(set) = fixture(
        p,
        "y8m",
        &["--level", "video", "--id-key", "video_id", "--train", "30", "--val", "10", "--files", "3"],
    ) else {
        return;
    };
    let train = set.join("video/train");
    // File 1 cut inside its 6th record; file 2 with one byte flipped inside its 3rd record's data.
    let whole = std::fs::read(train.join("train0001.tfrecord")).unwrap();
    let record_len = whole.len() / 10;
    std::fs::write(train.join("train0001.tfrecord"), &whole[..5 * record_len + 40]).unwrap();
    let mut flipped = std::fs::read(train.join("train0002.tfrecord")).unwrap();
    flipped[2 * record_len + 100] ^= 0x10;
    std::fs::write(train.join("train0002.tfrecord"), &flipped).unwrap();
    let run = run_tool(
        env!("CARGO_BIN_EXE_vconvert"),
        &["--lists", "youtube8m", "--data", "y8m", "--out", "out"],
        p,
        None,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    eprintln!("{}", run.stderr);
    assert!(
        lines.iter().any(|l| l.contains("train0001.tfrecord: record 6 at byte")
            && l.contains("truncated")
            && l.contains("remaining records skipped")),
        "{}",
        run.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("train0002.tfrecord: record 3 at byte") && l.contains("bad CRC of the data")),
        "{}",
        run.stderr
    );
    // 10 + 5 + 2 training videos kept; the cut record and the flipped one counted.
    assert!(
        run.stderr.contains("(video-level): 17 training videos from 3 files, 10 validation videos"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("; 2 records skipped, 2 damaged files not read to the end -> out"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("vconvert: 2 of 29 inputs failed"), "{}", run.stderr);
    let want = expected(&set);
    let videos = vidkit::featstore::read_features(&p.join("out/train.h5")).unwrap();
    assert_eq!(videos.len(), 17);
    let v = videos.iter().find(|v| v.id == want["id"].as_str().unwrap()).unwrap();
    assert_eq!(v.modality("rgb").unwrap().row(0).to_vec(), floats(&want["mean_rgb"]));
    assert_eq!(v.modality("audio").unwrap().dim(), (1, 128));
    assert_eq!(std::fs::read_to_string(p.join("out/train.list")).unwrap().lines().count(), 17);
    // The zoo's NeXtVLAD input is frame-level: every video-level record is refused, by name.
    let eig = ndarray::Array2::<f32>::ones((2048, 1));
    ndarray_npy::write_npy(p.join("eigenvals.npy"), &eig).unwrap();
    let args =
        ["--lists", "youtube8m", "--data", "y8m", "--out", "out3", "--nextvlad-eigenvals", "eigenvals.npy"];
    let run = run_tool(env!("CARGO_BIN_EXE_vconvert"), &args, p, None);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("the zoo's NeXtVLAD input is for frame-level records; record skipped"),
        "{}",
        run.stderr
    );
    assert!(!p.join("out3/train.h5").exists());
    // A fatal error (no vocabulary) leaves nothing behind, not even temporary files.
    std::fs::remove_file(set.join("vocabulary.csv")).unwrap();
    let run = run_tool(
        env!("CARGO_BIN_EXE_vconvert"),
        &["--lists", "youtube8m", "--data", "y8m", "--out", "out2"],
        p,
        None,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.fatal().contains("vocabulary.csv: not found"), "{}", run.stderr);
    assert!(!p.join("out2").exists() || std::fs::read_dir(p.join("out2")).unwrap().next().is_none());
}
