//! Crash-safe training (issue 23, point 4): `vtrain` killed with SIGKILL at 20 random moments —
//! inside an epoch, during validation, while a checkpoint or model file is being written — and
//! resumed with the same command each time. Every resume succeeds (the first ones, killed before
//! any checkpoint existed, start from the beginning and say so), every checkpoint left behind
//! loads (they are written under a temporary name, synced and renamed), and the final weights
//! are byte for byte those of an uninterrupted run with the same seed. And `vfeat -o store.h5`
//! killed mid-write never leaves a store behind (it writes under a temporary name and renames at
//! the end): the next run starts over and writes the whole store.
//!
//! One test function on purpose: a child spawned while another test writes an HDF5 store would
//! inherit that file's locked descriptor (HDF5 opens without close-on-exec) and hold the lock.

mod common;
use common::*;
use ndarray::Array2;
use std::path::Path;
use std::time::Instant;
use vidkit::featstore::{StoreOptions, StoreWriter, VideoFeatures};
use vidkit::rng::Rng;
use vidkit::stream::Label;

/// A store of `n` noisy 16-d sequences of 4 classes, each class a bump in one direction.
fn store(path: &Path, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut w = StoreWriter::create(path, StoreOptions::default()).unwrap();
    for i in 0..n {
        let class = i % 4;
        let len = 8 + rng.below(8);
        let a = Array2::from_shape_fn((len, 16), |(_, c)| {
            (rng.uniform() as f32 - 0.5) + if c % 4 == class { 1.0 } else { 0.0 }
        });
        let v = VideoFeatures {
            id: format!("v{i:03}"),
            label: Some(Label::Single(class as i64)),
            fps: Some(1.0),
            duration: Some(len as f64),
            source: None,
            modalities: vec![("rgb".into(), a)],
            times: None,
        };
        w.write(&v).unwrap();
    }
    w.finish().unwrap();
}

fn args(out: &str) -> Vec<String> {
    [
        "--arch",
        "attention_lstm",
        "--train-list",
        "train.h5",
        "--val-list",
        "val.h5",
        "--out",
        out,
        "--resume",
        "-o",
        "sequence.embedding_size=16",
        "-o",
        "sequence.lstm_size=16",
        "-o",
        "sequence.hidden_sizes=[32,16]",
        "-o",
        "epochs=40",
        "-o",
        "batch_size=8",
        "-o",
        r#"optimizer={"name":"adamw","lr":0.003}"#,
        "--seed",
        "4",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn training_killed_twenty_times_ends_where_an_uninterrupted_run_does() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    store(&p.join("train.h5"), 96, 1);
    store(&p.join("val.h5"), 24, 2);
    let vtrain = env!("CARGO_BIN_EXE_vtrain");
    // Uninterrupted (its --resume has nothing to resume: it starts from the beginning and says so).
    let started = Instant::now();
    let mut whole_args = args("whole");
    whole_args.retain(|a| a != "-q");
    let o = std::process::Command::new(vtrain).args(whole_args).current_dir(p).output().unwrap();
    let whole = started.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no checkpoint") && err.contains("starting from the beginning"), "{err}");
    let want = std::fs::read(p.join("whole/last.safetensors")).unwrap();
    let ckpt = vidkit::train::trainer::last_checkpoint(&p.join("killed"));
    let mut rng = Rng::new(17);
    let (mut kills, mut finished_early) = (0, 0);
    while kills < 20 {
        let mut child = std::process::Command::new(vtrain)
            .args(args("killed"))
            .current_dir(p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A life of 1-8 % of a whole run: most get an epoch or two further, some none.
        let wait = whole.mul_f64(0.01 + 0.07 * rng.uniform());
        std::thread::sleep(wait);
        match child.try_wait().unwrap() {
            Some(status) => {
                // It finished first: the run is complete; the remaining kills have nothing to hit.
                let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
                assert!(status.success(), "a resumed run failed: {err}");
                finished_early += 1;
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        if ckpt.exists() {
            vidkit::train::load_checkpoint(&ckpt, &candle_core::Device::Cpu)
                .unwrap_or_else(|e| panic!("after kill {kills}: torn checkpoint: {e:#}"));
        }
    }
    eprintln!(
        "uninterrupted run {:.2} s; {kills} kills, finished before a kill: {finished_early}",
        whole.as_secs_f64()
    );
    assert!(kills >= 10, "the run finished after only {kills} kills: kills must land inside it");
    // The last life runs to the end.
    let o = std::process::Command::new(vtrain).args(args("killed")).current_dir(p).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = std::fs::read(p.join("killed/last.safetensors")).unwrap();
    assert!(got == want, "the killed-and-resumed run's weights differ from the uninterrupted run's");

    // vfeat killed while writing a store.
    synth(p, "left,right", "24", "32x32", "3");
    let o = run(
        env!("CARGO_BIN_EXE_vsample"),
        &[
            "--list",
            "syn/train.list",
            "--root",
            "syn",
            "--frames",
            "8",
            "--size",
            "32",
            "--crop-size",
            "32",
            "-q",
            "-o",
            "frames.vks",
        ],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    write_random_tsn(&p.join("tsn.safetensors"), 16, 1);
    let vfeat = |out: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vfeat"))
            .args(["--model", "tsn.safetensors", "frames.vks", "-q", "-o", out])
            .current_dir(p)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let started = Instant::now();
    let o = vfeat("whole.h5").wait_with_output().unwrap();
    let whole = started.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |f: &str| vidkit::featstore::read_features(&p.join(f)).unwrap();
    let mut store_kills = 0;
    for _ in 0..5 {
        let mut child = vfeat("killed.h5");
        std::thread::sleep(whole.mul_f64(0.2 + 0.6 * rng.uniform()));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            if p.join("killed.h5").exists() {
                // The kill came after vfeat had moved its finished store into place (while the
                // process was exiting): a whole store, never a part of one.
                assert_eq!(read("killed.h5"), read("whole.h5"), "a killed vfeat left a partial store behind");
                std::fs::remove_file(p.join("killed.h5")).unwrap();
            } else {
                store_kills += 1;
            }
        }
    }
    assert!(store_kills >= 3, "vfeat finished before {} of 5 kills", 5 - store_kills);
    let o = vfeat("killed.h5").wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read("killed.h5"), read("whole.h5"));
    eprintln!("vfeat {:.2} s, killed {store_kills} times", whole.as_secs_f64());
}
