//! `vsynth` end to end: the real binary writing real videos into a temporary directory.

use std::path::Path;
use std::process::{Command, Output};

fn vsynth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vsynth")).args(args).output().expect("cannot run vsynth")
}

fn ok(out: &Output) {
    assert!(out.status.success(), "vsynth failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// (width, height, packets) of the first video stream, from `ffprobe -count_packets` (exact,
/// demuxing only).
fn probe(path: &Path) -> (u32, u32, usize) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args([
            "-show_entries",
            "stream=codec_name,pix_fmt,width,height,nb_read_packets",
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()
        .expect("cannot run ffprobe");
    assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |key: &str| {
        let prefix = format!("{key}=");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{}: no {key} in {text}", path.display()))
            .to_string()
    };
    assert_eq!(
        (field("codec_name"), field("pix_fmt")),
        ("h264".into(), "yuv420p".into()),
        "{}",
        path.display()
    );
    (
        field("width").parse().unwrap(),
        field("height").parse().unwrap(),
        field("nb_read_packets").parse().unwrap(),
    )
}

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn writes_decodable_videos_lists_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    let out = vsynth(&[
        "--out",
        dir.to_str().unwrap(),
        "--classes",
        "up,grow,disappear",
        "--per-class",
        "4",
        "--size",
        "64x48",
        "-j",
        "2",
    ]);
    ok(&out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (summary["videos"].as_u64(), summary["train"].as_u64(), summary["val"].as_u64()),
        (Some(12), Some(9), Some(3))
    );

    let labels = vidkit::data::read_label_names(&dir.join("labels.txt")).unwrap();
    assert_eq!(labels, ["up", "grow", "disappear"]);
    let train = vidkit::data::read_list(&dir.join("train.list")).unwrap();
    let val = vidkit::data::read_list(&dir.join("val.list")).unwrap();
    assert_eq!((train.len(), val.len()), (9, 3));
    for (label, name) in labels.iter().enumerate() {
        assert_eq!(train.iter().filter(|e| e.labels == [label as i64]).count(), 3, "{name}");
        assert_eq!(val.iter().filter(|e| e.labels == [label as i64]).count(), 1, "{name}");
    }
    let mut seen = std::collections::HashSet::new();
    for e in train.iter().chain(&val) {
        assert!(Path::new(&e.path).is_relative(), "{}", e.path);
        assert!(
            e.path.starts_with(&format!("{}/", labels[e.labels[0] as usize])),
            "{} in the wrong class",
            e.path
        );
        assert!(seen.insert(e.path.clone()), "{} listed twice", e.path);
        let (w, h, frames) = probe(&e.resolve(Some(&dir)));
        assert_eq!((w, h), (64, 48), "{}", e.path);
        assert!((24..=64).contains(&frames), "{}: {frames} frames", e.path);
    }
    // Nothing but the dataset is left behind (no temporaries).
    let mut top: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["disappear", "grow", "labels.txt", "train.list", "up", "val.list"]);
    assert_eq!(snapshot(&dir).len(), 12 + 3);
}

#[test]
fn same_seed_same_bytes_whatever_the_jobs_other_seed_other_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str, jobs: &str| {
        let dir = tmp.path().join(name);
        let args = [
            "-o",
            dir.to_str().unwrap(),
            "--classes",
            "left,right,appear",
            "--per-class",
            "3",
            "--size",
            "48x32",
            "--seed",
            seed,
            "-j",
            jobs,
            "-q",
        ];
        let out = vsynth(&args);
        ok(&out);
        assert!(out.stderr.is_empty(), "-q printed {}", String::from_utf8_lossy(&out.stderr));
        snapshot(&dir)
    };
    let a = run("a", "5", "1");
    let b = run("b", "5", "2");
    let c = run("c", "6", "2");
    assert_eq!(a.len(), 9 + 3);
    assert!(a == b, "same seed, different bytes");
    let differing = a.iter().zip(&c).filter(|(x, y)| x.0.ends_with(".mp4") && x.1 != y.1).count();
    assert_eq!(differing, 9, "another seed should change every video");
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    let dir = dir.to_str().unwrap();
    for (args, expect) in [
        (vec!["--out", dir, "--classes", "left,sideways"], "sideways"),
        (vec!["--out", dir, "--size", "65x48"], "even"),
        (vec!["--out", dir, "--size", "big"], "WxH"),
        (vec!["--out", dir, "--per-class", "0"], "per-class"),
    ] {
        let out = vsynth(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("vsynth: error: ") && stderr.contains(expect), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    assert!(!Path::new(dir).exists(), "a rejected run created its output directory");
}
