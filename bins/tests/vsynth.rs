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

/// `--segments`: untrimmed videos whose ActivityNet ground truth reads back (both subsets), whose
/// segments lie inside the video in time order, whose frames show the object inside a segment
/// and only the scene outside it; the same seed gives the same bytes.
#[test]
fn segments_writes_untrimmed_videos_and_their_activitynet_ground_truth() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("u");
    let args = ["--segments", "-o", out.to_str().unwrap(), "--classes", "left,right,grow", "--videos", "8"];
    let args: Vec<&str> =
        args.into_iter().chain(["--duration", "12-24", "--size", "64x48", "--seed", "5", "-q"]).collect();
    ok(&vsynth(&args));
    let gt_path = out.join("activity_net.json");
    let val = vidkit::data::read_segment_ground_truth(&gt_path, "validation").unwrap();
    let train = vidkit::data::read_segment_ground_truth(&gt_path, "training").unwrap();
    assert_eq!((train.videos.len(), val.videos.len()), (6, 2));
    let db: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&gt_path).unwrap()).unwrap();
    let mut actions = 0;
    for (id, segs) in train.videos.iter().chain(&val.videos) {
        let v = &db["database"][id];
        let (duration, fps) = (v["duration"].as_f64().unwrap(), v["fps"].as_f64().unwrap());
        let (w, h, frames) = probe(&out.join(format!("videos/{id}.mp4")));
        assert_eq!((w, h), (64, 48));
        assert!(
            (frames as f64 / fps - duration).abs() < 1e-9,
            "{id}: {frames} frames at {fps} fps, {duration} s"
        );
        assert!((12.0..=25.0).contains(&duration), "{id}: {duration} s");
        let mut end = 0.0;
        for s in segs {
            assert!(s.t0 >= end + 0.99 && s.t1 > s.t0 && s.t1 <= duration - 0.99, "{id}: {segs:?}");
            end = s.t1;
        }
        actions += segs.len();
        // Inside the first action the object is there; before it, only the noisy scene.
        let s = &segs[0];
        let frame = |t: f64| -> Vec<u8> {
            let idx = ((t * fps) as usize).to_string();
            let o = Command::new(env!("CARGO_BIN_EXE_vsample"))
                .args([
                    out.join(format!("videos/{id}.mp4")).to_str().unwrap(),
                    "--indices",
                    &idx,
                    "--crop",
                    "none",
                    "-q",
                ])
                .output()
                .unwrap();
            assert!(o.status.success());
            o.stdout[o.stdout.len() - 64 * 48 * 3..].to_vec()
        };
        // Values far apart: the noise (3-8 levels) never, the object (a colour far from the
        // scene's) over its area.
        let diff = |a: &[u8], b: &[u8]| a.iter().zip(b).filter(|(x, y)| x.abs_diff(**y) > 60).count();
        let (g0, g1, act) = (frame(0.1), frame(0.5), frame((s.t0 + s.t1) / 2.0));
        let (scene, action) = (diff(&g0, &g1), diff(&g0, &act));
        assert!(action >= 8 && scene * 4 < action, "{id}: scene {scene} vs action {action}");
    }
    assert!(actions >= 10, "{actions} actions in 8 videos");
    assert_eq!(std::fs::read_to_string(out.join("videos.list")).unwrap().lines().count(), 8);
    let lines =
        |f: &str| std::fs::read_to_string(out.join(f)).unwrap().lines().map(String::from).collect::<Vec<_>>();
    let (train, val) = (lines("training.list"), lines("validation.list"));
    assert_eq!((train.len(), val.len()), (6, 2));
    assert_eq!([train, val].concat(), lines("videos.list"));
    // Same seed, same bytes.
    let again = d.path().join("again");
    let mut args2 = args.clone();
    args2[2] = again.to_str().unwrap();
    ok(&vsynth(&args2));
    for f in ["activity_net.json", "videos/v_0003.mp4"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap(), "{f}");
    }
    let o = vsynth(&["--segments", "-o", "x", "--duration", "5-8"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--duration"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
