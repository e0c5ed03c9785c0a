//! Whole-tool behaviour of `vsample`: output shape and headers, determinism, parallel order,
//! bad inputs (each a one-line error naming the file), no partial outputs, broken pipes.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use vidkit::stream::StreamReader;

const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");

#[test]
fn list_input_gives_one_record_per_clip_and_view_in_order() {
    let d = tempfile::tempdir().unwrap();
    for (name, n) in [("a.mp4", 30), ("b.mp4", 50), ("c.mp4", 20)] {
        testsrc(&d.path().join(name), "96x64", 25, n, &[]);
    }
    std::fs::write(d.path().join("val.list"), "a.mp4 0\nb.mp4 2\nc.mp4 1\n").unwrap();
    let o = run(
        VSAMPLE,
        &[
            "--list",
            "val.list",
            "--root",
            ".",
            "--frames",
            "4",
            "--size",
            "64",
            "--crop",
            "three",
            "--crop-size",
            "64",
            "-j",
            "2",
            "-o",
            "out.vks",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = read_stream(&d.path().join("out.vks"));
    assert_eq!(recs.len(), 9);
    let order: Vec<(String, usize)> =
        recs.iter().map(|r| (r.header.video.clone().unwrap(), r.header.view.unwrap())).collect();
    assert_eq!(order[0], ("a.mp4".into(), 0));
    assert_eq!(order[3], ("b.mp4".into(), 0));
    assert_eq!(order[8], ("c.mp4".into(), 2));
    assert_eq!(recs[3].header.label, Some(vidkit::stream::Label::Single(2)));
    // 96x64 → short side 64 → 96x64; three 64x64 crops
    assert_eq!(recs[0].array.shape(), &[4, 64, 64, 3]);
    // PaddleVideo test indices for 50 frames, 4 segments: avg 12 → 5, 17, 29, 41
    assert_eq!(recs[3].header.indices.as_deref(), Some(&[5i64, 17, 29, 41][..]));
}

#[test]
fn same_seed_same_bytes_and_j_does_not_change_output() {
    let d = tempfile::tempdir().unwrap();
    let mut list = String::new();
    for i in 0..4 {
        testsrc(&d.path().join(format!("v{i}.mp4")), "80x60", 25, 24 + 8 * i, &[]);
        list.push_str(&format!("v{i}.mp4 {i}\n"));
    }
    std::fs::write(d.path().join("train.list"), list).unwrap();
    let args = |out: &'static str, seed: &'static str, j: &'static str| {
        vec![
            "--list",
            "train.list",
            "--train",
            "--crop",
            "random-resized",
            "--size",
            "60",
            "--crop-size",
            "48",
            "--flip",
            "--seed",
            seed,
            "-j",
            j,
            "-o",
            out,
        ]
    };
    for (out, seed, j) in [("a.vks", "7", "1"), ("b.vks", "7", "2"), ("c.vks", "8", "1")] {
        let o = run(VSAMPLE, &args(out, seed, j), d.path());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let a = std::fs::read(d.path().join("a.vks")).unwrap();
    assert_eq!(a, std::fs::read(d.path().join("b.vks")).unwrap(), "-j 2 changed the output");
    assert_ne!(a, std::fs::read(d.path().join("c.vks")).unwrap(), "another seed gave the same output");
}

/// `--color-jitter`: the same seed gives the same jittered bytes; zero strengths change nothing;
/// a clip's frames all get the same draw (a still video's jittered frames stay equal).
/// `--grayscale P`: grey clips with probability P.
#[test]
fn color_jitter_is_one_draw_per_clip_and_seeded() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // A still video: every frame the same.
    let o = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=25:duration=1",
            "-vf",
            "select=eq(n\\,0),loop=24:1:0",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:v", "libx264", "-qp", "0", "still.mp4"])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sample_with = |extra: &[&str], out: &str| {
        let mut a = vec![
            "still.mp4",
            "--train",
            "--frames",
            "4",
            "--size",
            "48",
            "--crop-size",
            "48",
            "--seed",
            "3",
            "-o",
            out,
        ];
        a.extend_from_slice(extra);
        let o = run(VSAMPLE, &a, p);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(p.join(out)).unwrap()
    };
    let sample = |out: &str, jitter: &[&str]| {
        let mut extra = Vec::new();
        if !jitter.is_empty() {
            extra.push("--color-jitter");
            extra.extend_from_slice(jitter);
        }
        sample_with(&extra, out)
    };
    let plain = sample("plain.vks", &[]);
    assert_eq!(plain, sample("zero.vks", &["0", "0", "0", "0"]));
    let j = sample("j1.vks", &["0.4", "0.4", "0.4", "0.1"]);
    assert_eq!(j, sample("j2.vks", &["0.4", "0.4", "0.4", "0.1"]));
    assert_ne!(j, plain);
    let rec = &read_stream(&p.join("j1.vks"))[0];
    let frames = rec.array.to_f32();
    let first = frames.index_axis(ndarray::Axis(0), 0).to_owned();
    let plain_rec = &read_stream(&p.join("plain.vks"))[0];
    let plain_frames = plain_rec.array.to_f32();
    let same_source = (1..4).all(|t| {
        plain_frames.index_axis(ndarray::Axis(0), t) == plain_frames.index_axis(ndarray::Axis(0), 0)
    });
    assert!(same_source, "the still video's frames differ before jitter");
    for t in 1..4 {
        assert_eq!(frames.index_axis(ndarray::Axis(0), t), first.view(), "frame {t} got another jitter");
    }
    // --grayscale 1: every clip grey (r = g = b); 0 changes nothing.
    assert_eq!(plain, sample_with(&["--grayscale", "0"], "g0.vks"));
    sample_with(&["--grayscale", "1"], "g1.vks");
    let grey = read_stream(&p.join("g1.vks"))[0].array.to_f32();
    assert!(grey.lanes(ndarray::Axis(3)).into_iter().all(|px| px[0] == px[1] && px[1] == px[2]));
    let o = run(VSAMPLE, &["still.mp4", "--color-jitter", "0.4", "0.4", "0.4", "0.1", "-o", "x.vks"], p);
    assert_eq!(o.status.code(), Some(2), "--color-jitter without --train: {}", stderr(&o));
}

#[test]
fn bad_inputs_get_one_line_errors_and_the_batch_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(&p.join("good.mp4"), "64x48", 25, 40, &[]);
    testsrc(
        &p.join("fs.mp4"),
        "64x48",
        25,
        100,
        &["-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    );
    std::fs::write(p.join("empty.mp4"), b"").unwrap();
    std::fs::write(p.join("notes.txt"), b"this is not a video at all\n").unwrap();
    let full = std::fs::read(p.join("fs.mp4")).unwrap();
    std::fs::write(p.join("cut.mp4"), &full[..full.len() / 2]).unwrap();
    // Corrupt: overwrite bytes throughout the coded data, keeping the container readable.
    let mut bad = full.clone();
    for i in (2000..bad.len()).step_by(97) {
        bad[i] = bad[i].wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(p.join("corrupt.mp4"), bad).unwrap();
    std::fs::write(
        p.join("in.list"),
        "good.mp4 0\nmissing.mp4 1\nempty.mp4 1\nnotes.txt 1\ncut.mp4 1\ncorrupt.mp4 1\ngood.mp4 not-a-label\n",
    )
    .unwrap();
    for decoder in ["libav", "cli"] {
        let o = run(
            VSAMPLE,
            &[
                "--list",
                "in.list",
                "--size",
                "48",
                "--crop-size",
                "48",
                "--frames",
                "4",
                "--decoder",
                decoder,
                "-o",
                "out.vks",
            ],
            p,
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "partial failure exits 1: {err}");
        for (name, what) in [
            ("missing.mp4", "no such file"),
            ("empty.mp4", "empty file (0 bytes)"),
            ("notes.txt", "not a readable video"),
            ("cut.mp4", "truncated video"),
            ("corrupt.mp4", "corrupt"),
            ("in.list", "line 7: label \"not-a-label\""),
        ] {
            let line = err.lines().find(|l| l.contains(name) && l.contains(what));
            assert!(line.is_some(), "no one-line error naming {name} with {what:?} in:\n{err}");
        }
        assert!(err.contains("6 of 7 inputs failed"), "{err}");
        // The good video still made it, whole.
        let recs = read_stream(&p.join("out.vks"));
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].header.video.as_deref(), Some("good.mp4"));
    }
}

#[test]
fn total_failure_leaves_no_output_file() {
    let d = tempfile::tempdir().unwrap();
    let o = run(VSAMPLE, &["missing.mp4", "-o", "out.vks"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(!d.path().join("out.vks").exists());
    let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.is_empty(), "left behind: {names:?}");
    let err = stderr(&o);
    assert!(err.lines().next().unwrap().contains("missing.mp4: no such file"), "{err}");
}

#[test]
fn short_video_repeats_frames_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    testsrc(&d.path().join("short.mp4"), "64x48", 25, 5, &[]);
    let o = run(VSAMPLE, &["short.mp4", "--frames", "8", "--crop", "none", "-o", "s.vks"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = read_stream(&d.path().join("s.vks"));
    // PaddleVideo: average_dur 0 → idx = i % 5
    assert_eq!(recs[0].header.indices.as_deref(), Some(&[0i64, 1, 2, 3, 4, 0, 1, 2][..]));
    assert_eq!(recs[0].header.extra.get("frames_repeated"), Some(&serde_json::Value::Bool(true)));
    assert_eq!(recs[0].array.shape(), &[8, 48, 64, 3]);
    // Explicit indices past the end are an error naming the file.
    let o = run(VSAMPLE, &["short.mp4", "--indices", "0,9", "--crop", "none"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("short.mp4: frame 9 asked for, but the video has 5 frames"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn paths_on_stdin_and_a_closed_downstream_pipe() {
    let d = tempfile::tempdir().unwrap();
    testsrc(&d.path().join("v.mp4"), "320x240", 25, 50, &[]);
    // `printf 'v.mp4\nv.mp4\n' | vsample - --crop none | head -c 100`: vsample ends quietly.
    let mut child = Command::new(VSAMPLE)
        .args(["-", "--crop", "none", "--frames", "16"])
        .current_dir(d.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::{Read, Write};
        child.stdin.take().unwrap().write_all(b"v.mp4\nv.mp4 3\nv.mp4\n").unwrap();
        let mut head = [0u8; 100];
        child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
        assert!(head.starts_with(b"{\"kind\":\"frames\""));
        drop(child.stdout.take()); // the consumer goes away
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("error"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn decodes_every_real_video() {
    let Some(dir) = realvideo_dir() else { return };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .collect();
    names.sort();
    assert!(names.len() >= 10);
    let args: Vec<String> = names.iter().map(|p| p.display().to_string()).collect();
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(["--frames", "8", "--size", "128", "--crop-size", "112", "-j", "2", "-o"]);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("real.vks");
    let out_s = out.display().to_string();
    argv.push(&out_s);
    let o = run(VSAMPLE, &argv, out_dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = read_stream(&out);
    assert_eq!(recs.len(), names.len());
    for r in &recs {
        assert_eq!(r.array.shape(), &[8, 112, 112, 3], "{:?}", r.header.video);
        let n = r.header.extra["num_frames"].as_u64().unwrap() as i64;
        assert!(r.header.indices.as_ref().unwrap().iter().all(|&i| i < n));
    }
    // The rotated phone video comes out portrait-shaped before cropping.
    let rot = dir.join("derived_android_phone_rotate90.mp4");
    let o = Command::new(VSAMPLE)
        .arg(&rot)
        .args(["--frames", "1", "--size", "108", "--crop", "none", "-o"])
        .arg(out_dir.path().join("rot.vks"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r = read_stream(&out_dir.path().join("rot.vks"));
    assert_eq!(r[0].array.shape(), &[1, 192, 108, 3]);
}

/// torchvision's `VideoClips` resampling (`compute_clips_for_video` with `frame_rate`), the
/// reference for `--fps`: the indices of every frame kept, for a video of `L` frames at `fps`.
const TORCHVISION_RESAMPLES: &str = r#"
import json, sys, torch
from torchvision.datasets.video_utils import VideoClips
L, fps = int(sys.argv[1]), float(sys.argv[2])
out = []
for rate in map(float, sys.argv[3:]):
    pts = torch.arange(L)
    _, idxs = VideoClips.compute_clips_for_video(pts, 1, 1, fps, rate)
    kept = pts[idxs[0]] if isinstance(idxs[0], slice) else idxs.flatten()
    out.append(kept.tolist())
print(json.dumps(out))
"#;

#[test]
fn fps_sampling_matches_torchvision_videoclips() {
    let Some(py) = models_peers_python() else { return };
    let d = tempfile::tempdir().unwrap();
    // NTSC 30000/1001 fps: fps / rate is never whole, the float32 branch of the reference.
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=48x32:rate=30000/1001"])
        .args(["-frames:v", "97", "-c:v", "libx264", "-pix_fmt", "yuv420p", "ntsc.mp4"])
        .current_dir(d.path())
        .status()
        .unwrap();
    assert!(st.success());
    testsrc(&d.path().join("pal.mp4"), "48x32", 25, 101, &[]);
    let rates = ["1", "2.5", "7", "25", "40"];
    for video in ["ntsc.mp4", "pal.mp4"] {
        let mut ours = Vec::new();
        let mut probed = None;
        for rate in rates {
            let o = run(
                VSAMPLE,
                &[video, "--fps", rate, "--size", "32", "--crop-size", "32", "-o", "o.vks"],
                d.path(),
            );
            assert!(o.status.success(), "{video} --fps {rate}: {}", stderr(&o));
            // Records of at most 32 frames (--chunk's default), in time order.
            let recs = read_stream(&d.path().join("o.vks"));
            let mut indices = Vec::new();
            for (k, r) in recs.iter().enumerate() {
                let h = &r.header;
                assert_eq!((h.clip, h.num_clips), (Some(k), Some(recs.len())));
                assert!(r.array.shape()[0] <= 32 && r.array.shape()[0] == h.indices.as_ref().unwrap().len());
                indices.extend(h.indices.clone().unwrap());
            }
            assert!(recs[..recs.len() - 1].iter().all(|r| r.array.shape()[0] == 32));
            let h = &recs[0].header;
            probed = Some((h.extra["num_frames"].as_u64().unwrap(), h.fps.unwrap()));
            ours.push(indices);
        }
        let (num_frames, fps) = probed.unwrap();
        let out = Command::new(&py)
            .args(["-c", TORCHVISION_RESAMPLES, &num_frames.to_string(), &format!("{fps:.17}")])
            .args(rates)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let want: Vec<Vec<i64>> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ours, want, "{video}: {num_frames} frames at {fps} fps");
    }
}

#[test]
fn shards_split_the_list_and_keep_the_unsharded_seeds() {
    let d = tempfile::tempdir().unwrap();
    let mut list = String::new();
    for i in 0..5 {
        testsrc(&d.path().join(format!("v{i}.mp4")), "64x48", 25, 20 + 4 * i, &[]);
        list.push_str(&format!("v{i}.mp4 {i}\n"));
    }
    std::fs::write(d.path().join("all.list"), list).unwrap();
    let sample = |out: &str, shard: Option<&str>| {
        let mut args = vec![
            "--list",
            "all.list",
            "--train",
            "--crop",
            "random-resized",
            "--size",
            "48",
            "--crop-size",
            "32",
        ];
        args.extend(["--frames", "3", "--seed", "5", "-q", "-o", out]);
        if let Some(s) = shard {
            args.extend(["--shard", s]);
        }
        let o = run(VSAMPLE, &args, d.path());
        assert!(o.status.success(), "{}", stderr(&o));
        read_stream(&d.path().join(out))
    };
    let whole = sample("all.vks", None);
    let mut seen = 0;
    for k in 0..3 {
        let part = sample(&format!("s{k}.vks"), Some(&format!("{k}/3")));
        for rec in &part {
            let i: usize = rec.header.video.as_deref().unwrap()[1..2].parse().unwrap();
            assert_eq!(i % 3, k, "v{i} in shard {k}/3");
            assert_eq!(rec, &whole[i], "v{i}: the same random crop as unsharded");
        }
        seen += part.len();
    }
    assert_eq!(seen, whole.len());
    // More shards than videos: an empty, successful shard.
    let o = run(VSAMPLE, &["--list", "all.list", "--shard", "6/7", "-o", "empty.vks"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(d.path().join("empty.vks")).unwrap().len(), 0);
}

/// `--spec-from` takes the sampler and sizes from a model file: a dense 4 × 3 clip, short side
/// 48, crop 32. Dense test windows as lib/src/sample (PySlowFast `get_start_end_idx`): clip i of
/// K starts at (L − T·τ)·i/K and takes T points of linspace(start, start + T·τ − 1), truncated:
/// L = 60, T·τ = 12, K = 10, i = 3 → start 14.4 → 14.4, 18.07, 21.73, 25.4 → 14, 18, 21, 25.
#[test]
fn spec_from_reads_the_model_input_spec() {
    let d = tempfile::tempdir().unwrap();
    testsrc(&d.path().join("v.mp4"), "96x64", 25, 60, &[]);
    let mut cfg = vidkit::model::ModelConfig::defaults("tsn_r18");
    cfg.base_width = 8;
    cfg.num_classes = 3;
    cfg.frames = 4;
    cfg.interval = Some(3);
    cfg.sampler = "dense".into();
    cfg.short_side = 48;
    cfg.crop_size = 32;
    let vm = candle_nn::VarMap::new();
    vidkit::model::build(
        &cfg,
        candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &candle_core::Device::Cpu),
    )
    .unwrap();
    vidkit::model::save_model(&vm, &cfg, &d.path().join("m.safetensors")).unwrap();
    let o =
        run(VSAMPLE, &["v.mp4", "--spec-from", "m.safetensors", "--clips", "10", "-o", "out.vks"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = read_stream(&d.path().join("out.vks"));
    assert_eq!(recs.len(), 10);
    assert_eq!(recs[0].array.shape(), &[4, 32, 32, 3]);
    assert_eq!(recs[3].header.indices.as_deref(), Some(&[14i64, 18, 21, 25][..]));
    let o = run(VSAMPLE, &["v.mp4", "--spec-from", "m.safetensors", "--frames", "8"], d.path());
    assert!(!o.status.success() && stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

/// `--fixed-ratio` resizes as the 2019 Paddle zoo's `group_scale`: short side 32, long side
/// int(32 · 4/3) = 42, where keeping the aspect of 64×48 gives 43 (42.67 rounded).
#[test]
fn fixed_ratio_resizes_to_four_by_three() {
    let d = tempfile::tempdir().unwrap();
    testsrc(&d.path().join("v.mp4"), "64x48", 25, 20, &[]);
    for (flag, width) in [(true, 42), (false, 43)] {
        let mut args = vec!["v.mp4", "--frames", "2", "--crop", "none", "--size", "32", "-o", "out.vks"];
        if flag {
            args.push("--fixed-ratio");
        }
        let o = run(VSAMPLE, &args, d.path());
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(read_stream(&d.path().join("out.vks"))[0].array.shape(), &[2, 32, width, 3]);
    }
}

/// Runs a tool with its stdout read by `consume` as it arrives; returns the exit status, its
/// stderr, and its peak resident memory in bytes (the kernel's own count, from wait4).
fn run_measuring_memory(
    bin: &str,
    args: &[&str],
    dir: &Path,
    consume: impl FnOnce(&mut dyn std::io::Read),
) -> (i32, String, u64) {
    use std::io::Read;
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = child.stdout.take().unwrap();
    consume(&mut out);
    let _ = std::io::copy(&mut out, &mut std::io::sink());
    let mut status = 0;
    // SAFETY: rusage is plain data; the pid is our child, not yet waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    (code, err_thread.join().unwrap(), usage.ru_maxrss as u64 * 1024)
}

/// --fps over a long video streams: records leave as frames are decoded and vsample's peak
/// memory stays far below the frames it writes, while --chunk 0 (one record for the whole
/// video, as before streaming) holds them all: the measurement can tell the two apart.
#[test]
fn long_videos_stream_in_bounded_memory() {
    let d = tempfile::tempdir().unwrap();
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=60"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "long.mp4"])
        .current_dir(d.path())
        .status()
        .unwrap();
    assert!(st.success());
    let frame_bytes = 320 * 240 * 3u64;
    let total = 1500 * frame_bytes; // 345 MB of frames at native size
    let mut peaks = Vec::new();
    for chunk in ["16", "0"] {
        let mut frames = 0u64;
        let mut clips = Vec::new();
        let (code, err, peak) = run_measuring_memory(
            VSAMPLE,
            &["long.mp4", "--fps", "25", "--crop", "none", "--chunk", chunk],
            d.path(),
            |out| {
                let mut reader = StreamReader::new(std::io::BufReader::new(out), "vsample");
                while let Some(r) = reader.next_record().unwrap() {
                    frames += r.array.shape()[0] as u64;
                    clips.push(r.header.clip.unwrap());
                }
            },
        );
        assert_eq!(code, 0, "--chunk {chunk}: {err}");
        assert_eq!(frames, 1500, "--chunk {chunk}");
        eprintln!(
            "--chunk {chunk}: {} records, peak RSS {} MB for {} MB of frames",
            clips.len(),
            peak >> 20,
            total >> 20
        );
        peaks.push(peak);
    }
    assert!(peaks[0] < total / 4, "streaming peak {} MB for {} MB of frames", peaks[0] >> 20, total >> 20);
    assert!(peaks[1] > total, "one record must hold every frame: {} MB", peaks[1] >> 20);
}

/// MMAction2's UntrimmedSampleFrames over a whole video: one record per snippet, in time order,
/// with its frames and times; a video too short for a single snippet is a one-line error.
#[test]
fn untrimmed_sampler_takes_a_snippet_every_interval() {
    let d = tempfile::tempdir().unwrap();
    testsrc(&d.path().join("v.mp4"), "64x48", 25, 100, &[]);
    testsrc(&d.path().join("short.mp4"), "64x48", 25, 5, &[]);
    let args =
        ["--sampler", "untrimmed", "--frames", "5", "--interval", "16", "--size", "48", "--crop-size", "48"];
    let mut all = vec!["v.mp4"];
    all.extend(args);
    all.extend(["-o", "u.vks"]);
    let o = run(VSAMPLE, &all, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = read_stream(&d.path().join("u.vks"));
    // centres 8, 24, ..., 88; each centre - 2 .. centre + 2
    assert_eq!(recs.len(), 6);
    for (k, r) in recs.iter().enumerate() {
        let c = 8 + 16 * k as i64;
        let h = &r.header;
        assert_eq!(h.indices.as_deref(), Some(&[c - 2, c - 1, c, c + 1, c + 2][..]));
        assert_eq!((h.clip, h.num_clips), (Some(k), Some(6)));
        assert_eq!((h.t0, h.t1), (Some((c - 2) as f64 / 25.0), Some((c + 3) as f64 / 25.0)));
        assert_eq!(r.array.shape(), &[5, 48, 48, 3]);
    }
    let mut all = vec!["short.mp4"];
    all.extend(args);
    let o = run(VSAMPLE, &all, d.path());
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("short.mp4") && e.contains("no snippet"), "{e}");
    assert_eq!(e.trim().lines().count(), 2, "{e}"); // the video's line and the summary
    let o = run(VSAMPLE, &["v.mp4", "--sampler", "untrimmed", "--clips", "3"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--clips"), "{}", stderr(&o));
}

/// A streamed video that breaks part-way: the records before the break stay, an error record
/// follows them, the next video comes out whole, and the exit status is 1.
#[test]
fn a_video_that_breaks_midway_ends_with_an_error_record() {
    let d = tempfile::tempdir().unwrap();
    damaged_in_last_third(d.path(), "cut.mp4", 100);
    testsrc(&d.path().join("full.mp4"), "64x48", 25, 100, &[]);
    let o = run(
        VSAMPLE,
        &[
            "cut.mp4",
            "full.mp4",
            "--fps",
            "25",
            "--chunk",
            "8",
            "--size",
            "48",
            "--crop-size",
            "48",
            "-o",
            "s.vks",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("cut.mp4") && e.contains("error record"), "{e}");
    let recs = read_stream(&d.path().join("s.vks"));
    let kinds: Vec<(String, String)> =
        recs.iter().map(|r| (r.header.video.clone().unwrap(), r.header.kind.clone())).collect();
    let cut_frames = recs.iter().take_while(|r| r.header.kind == "frames").count();
    assert!(cut_frames > 0 && kinds[..cut_frames].iter().all(|(v, _)| v == "cut.mp4"), "{kinds:?}");
    assert_eq!(kinds[cut_frames], ("cut.mp4".to_string(), "error".to_string()));
    assert!(recs[cut_frames].header.extra["error"].as_str().unwrap().contains("corrupt"));
    let full: Vec<_> = recs[cut_frames + 1..].iter().collect();
    assert_eq!(full.len(), 13); // 100 frames in records of 8
    assert!(full.iter().all(|r| r.header.video.as_deref() == Some("full.mp4") && r.header.kind == "frames"));
}

/// An http URL is an input like a file: the same frames through both decoders; a missing URL is
/// a one-line error naming it.
#[test]
fn http_urls_sample_like_local_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(
        &p.join("v.mp4"),
        "96x64",
        25,
        100,
        &["-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    );
    let port = serve(std::fs::read(p.join("v.mp4")).unwrap());
    let url = format!("http://127.0.0.1:{port}/v.mp4");
    let args = ["--frames", "4", "--size", "64", "--crop-size", "64", "-q", "-o"];
    let mut local = vec!["v.mp4"];
    local.extend(args);
    local.push("local.vks");
    assert!(run(VSAMPLE, &local, p).status.success());
    let want = read_stream(&p.join("local.vks"));
    for decoder in ["libav", "cli"] {
        let mut remote = vec![url.as_str(), "--decoder", decoder];
        remote.extend(args);
        remote.push("remote.vks");
        let o = run(VSAMPLE, &remote, p);
        assert!(o.status.success(), "{decoder}: {}", stderr(&o));
        let got = read_stream(&p.join("remote.vks"));
        assert_eq!(got[0].header.video.as_deref(), Some(url.as_str()));
        assert_eq!(got[0].header.indices, want[0].header.indices);
        assert_eq!(got[0].array, want[0].array, "{decoder}");
    }
    let missing = format!("http://127.0.0.1:{}/nothing.mp4", serve(Vec::new()));
    let o = run(VSAMPLE, &[missing.as_str(), "--frames", "4"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nothing.mp4"), "{}", stderr(&o));
}
