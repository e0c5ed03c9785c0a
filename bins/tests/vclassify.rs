//! Whole-tool behaviour of `vclassify`: per-video aggregation over clips × views, per-clip
//! output, class names, and clear errors for streams that do not fit the model.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use vidkit::model::{build, save_model, ModelConfig};

const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");
const VCLASSIFY: &str = env!("CARGO_BIN_EXE_vclassify");
const VCONVERT: &str = env!("CARGO_BIN_EXE_vconvert");

/// A small random TSM saved as a model file.
fn small_model(path: &Path, frames: usize) {
    let mut cfg = ModelConfig::defaults("tsm_r18");
    cfg.num_classes = 3;
    cfg.frames = frames;
    cfg.base_width = 8;
    cfg.labels = Some(vec!["a".into(), "b".into(), "c".into()]);
    let varmap = candle_nn::VarMap::new();
    build(
        &cfg,
        candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu),
    )
    .unwrap();
    vidkit::model::init_weights(&varmap, 7).unwrap();
    save_model(&varmap, &cfg, path).unwrap();
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn averages_clips_and_views_per_video_and_names_classes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    small_model(&p.join("m.safetensors"), 4);
    testsrc(&p.join("a.mp4"), "64x48", 25, 40, &[]);
    testsrc(&p.join("b.mp4"), "64x48", 25, 30, &[]);
    std::fs::write(p.join("v.list"), "a.mp4 1\nb.mp4 2\n").unwrap();
    let o = run(
        VSAMPLE,
        &[
            "--list",
            "v.list",
            "--frames",
            "4",
            "--clips",
            "2",
            "--crop",
            "three",
            "--size",
            "32",
            "--crop-size",
            "32",
            "-q",
            "-o",
            "v.vks",
        ],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let per_video = run(VCLASSIFY, &["--model", "m.safetensors", "--topk", "2", "v.vks"], p);
    assert!(per_video.status.success(), "{}", stderr(&per_video));
    let preds = lines(&per_video.stdout);
    assert_eq!(preds.len(), 2);
    assert_eq!(preds[0]["video"], "a.mp4");
    assert_eq!(preds[0]["label"], 1);
    assert_eq!(preds[0]["records"], 6, "2 clips × 3 views");
    let scores: Vec<f64> =
        preds[0]["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-4, "averaged probabilities sum to 1");
    assert_eq!(preds[0]["top"].as_array().unwrap().len(), 2);
    assert!(["a", "b", "c"].contains(&preds[0]["top"][0]["name"].as_str().unwrap()));
    // Per clip: 6 + 6 lines whose mean is the per-video score.
    let per_clip = run(VCLASSIFY, &["--model", "m.safetensors", "--per-clip", "v.vks"], p);
    let clips = lines(&per_clip.stdout);
    assert_eq!(clips.len(), 12);
    // each line says where its clip lies (a.mp4: 40 frames at 25 fps)
    for c in &clips {
        let (t0, t1) = (c["t0"].as_f64().unwrap(), c["t1"].as_f64().unwrap());
        assert!(0.0 <= t0 && t0 < t1 && t1 <= 1.6 + 1e-9, "{c}");
    }
    for c in 0..3 {
        let mean: f64 = clips[..6].iter().map(|l| l["scores"][c].as_f64().unwrap()).sum::<f64>() / 6.0;
        assert!((mean - scores[c]).abs() < 1e-5);
    }
    // From stdin, through the pipe.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!("{VSAMPLE} a.mp4 --frames 4 --size 32 --crop-size 32 -q | {VCLASSIFY} --model m.safetensors --avg logits"))
        .current_dir(p)
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert_eq!(lines(&piped.stdout).len(), 1);
}

#[test]
fn streams_that_do_not_fit_the_model_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    small_model(&p.join("m.safetensors"), 4);
    testsrc(&p.join("a.mp4"), "64x48", 25, 40, &[]);
    let o = run(
        VSAMPLE,
        &["a.mp4", "--frames", "8", "--size", "32", "--crop-size", "32", "-q", "-o", "eight.vks"],
        p,
    );
    assert!(o.status.success());
    let o = run(VCLASSIFY, &["--model", "m.safetensors", "eight.vks", "-o", "out.jsonl"], p);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("eight.vks: record 0") && err.contains("8 frames, the model takes 4"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!p.join("out.jsonl").exists(), "no partial output");
    // Not a model file.
    std::fs::write(p.join("junk.safetensors"), b"nonsense").unwrap();
    let o = run(VCLASSIFY, &["--model", "junk.safetensors", "eight.vks"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("junk.safetensors"), "{}", stderr(&o));
    // Wrong number of class names.
    std::fs::write(p.join("names.txt"), "x\ny\n").unwrap();
    let o = run(VCLASSIFY, &["--model", "m.safetensors", "--labels", "names.txt", "eight.vks"], p);
    assert!(stderr(&o).contains("names.txt: 2 class names for a model of 3 classes"), "{}", stderr(&o));
    // A GPU this build or machine cannot give: one line, naming the device.
    let o = run(VCLASSIFY, &["--model", "m.safetensors", "--device", "cuda:7", "eight.vks"], p);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    let why =
        if cfg!(feature = "cuda") { "cannot open CUDA device 7" } else { "this build has no CUDA support" };
    assert!(err.contains("--device cuda:7") && err.contains(why), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `--window W --stride S` over a long video's frames at a fixed rate: one line per complete
/// window in time order, with its span; a window's scores are those of classifying the same
/// frames (the model's sampler over the window's frames) as one clip.
#[test]
fn windows_over_a_long_video_classify_the_frames_inside_them() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    small_model(&p.join("m.safetensors"), 4);
    // 24 fps, 20 s: --fps 4 takes every 6th frame, so frame i of the stream is at i / 4 s.
    testsrc(&p.join("long.mp4"), "64x48", 24, 480, &[]);
    let sample = format!("{VSAMPLE} long.mp4 --fps 4 --chunk 8 --size 32 --crop-size 32 -q");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("{sample} | {VCLASSIFY} --model m.safetensors --window 4 --stride 2"))
        .current_dir(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = lines(&o.stdout);
    // windows [0, 4), [2, 6), ..., [16, 20)
    assert_eq!(got.len(), 9);
    for (j, w) in got.iter().enumerate() {
        assert_eq!(w["video"], "long.mp4");
        assert_eq!(w["window"], j);
        assert_eq!((w["t0"].as_f64(), w["t1"].as_f64()), (Some(2.0 * j as f64), Some(2.0 * j as f64 + 4.0)));
        assert_eq!(w["scores"].as_array().unwrap().len(), 3);
    }
    // Window 3 holds stream frames 24..=39; PaddleVideo segment sampling of 16 into 4 takes
    // positions 1, 5, 9, 13: source frames (24 + those) * 6.
    let picks: Vec<String> = [1, 5, 9, 13].iter().map(|k| ((24 + k) * 6).to_string()).collect();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{VSAMPLE} long.mp4 --indices {} --size 32 --crop-size 32 -q | {VCLASSIFY} --model m.safetensors",
            picks.join(",")
        ))
        .current_dir(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let one = &lines(&o.stdout)[0];
    let (a, b) = (one["scores"].as_array().unwrap(), got[3]["scores"].as_array().unwrap());
    for (x, y) in a.iter().zip(b) {
        assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5, "{a:?} vs {b:?}");
    }
    // Records without fps/indices cannot be windowed: a one-line error, exit 2.
    let o = run(
        VSAMPLE,
        &["long.mp4", "--frames", "4", "--size", "32", "--crop-size", "32", "-q", "-o", "c.vks"],
        p,
    );
    assert!(o.status.success());
    let o = run(VCLASSIFY, &["--model", "m.safetensors", "--window", "4", "--stride", "0", "c.vks"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--stride must be a positive"), "{}", stderr(&o));
}

/// StNet runs from its own input spec: `vsample --spec-from` takes the zoo reader's sampler
/// (segments of consecutive frames: 40 frames, 4 segments of 2, average_dur 10, test offset
/// (10 − 2) // 2 = 4) and its 4:3 resize from the model file, `vclassify` scores the clip.
#[test]
fn stnet_classifies_from_its_own_input_spec() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut cfg = ModelConfig::defaults("stnet_r50");
    let o: Vec<String> = [
        "stage_depths=[1,1,1,1]",
        "base_width=4",
        "frames=8",
        "seglen=2",
        "crop_size=32",
        "short_side=32",
        "num_classes=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cfg.apply_overrides(&o).unwrap();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
    build(&cfg, vb).unwrap();
    vidkit::model::init_weights(&varmap, 7).unwrap();
    save_model(&varmap, &cfg, &p.join("m.safetensors")).unwrap();
    testsrc(&p.join("a.mp4"), "64x48", 25, 40, &[]);
    let o = run(VSAMPLE, &["a.mp4", "--spec-from", "m.safetensors", "-q", "-o", "a.vks"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = read_stream(&p.join("a.vks"));
    assert_eq!(recs[0].array.shape(), &[8, 32, 32, 3]);
    assert_eq!(recs[0].header.indices.as_deref(), Some(&[4i64, 5, 14, 15, 24, 25, 34, 35][..]));
    let o = run(VCLASSIFY, &["--model", "m.safetensors", "a.vks"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    let preds = lines(&o.stdout);
    let sum: f64 = preds[0]["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
}

/// A video transformer runs in the same pipe: `vsample --spec-from` takes PP-TimeSformer's own
/// protocol from the model file (linspace sampling, short side and crop), `vclassify` averages
/// its softmax; a stream of another crop is refused in one line naming the patch grid.
#[test]
fn a_timesformer_classifies_from_its_own_input_spec() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut cfg = ModelConfig::defaults("pptimesformer_vit_b");
    let o: Vec<String> = [
        "embed_dim=24",
        "num_heads=2",
        "depth=1",
        "patch_size=8",
        "crop_size=32",
        "short_side=32",
        "frames=4",
        "num_classes=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cfg.apply_overrides(&o).unwrap();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
    build(&cfg, vb).unwrap();
    vidkit::model::init_weights_for(&varmap, "pptimesformer_vit_b", 7).unwrap();
    save_model(&varmap, &cfg, &p.join("m.safetensors")).unwrap();
    testsrc(&p.join("a.mp4"), "64x48", 25, 40, &[]);
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{VSAMPLE} a.mp4 --spec-from m.safetensors --clips 2 -q | {VCLASSIFY} --model m.safetensors"
        ))
        .current_dir(p)
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    let preds = lines(&piped.stdout);
    assert_eq!((preds.len(), preds[0]["records"].as_u64()), (1, Some(2)));
    let sum: f64 = preds[0]["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    let wrong = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{VSAMPLE} a.mp4 --frames 4 --size 40 --crop-size 40 -q | {VCLASSIFY} --model m.safetensors"
        ))
        .env_remove("RUST_BACKTRACE")
        .current_dir(p)
        .output()
        .unwrap();
    let err = stderr(&wrong);
    assert!(!wrong.status.success() && err.contains("5×5 patches"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// Every clip's logits from `vclassify --per-clip --avg logits STREAM EXTRA...` run in `dir`.
fn per_clip_logits(dir: &Path, stream: &str, extra: &[&str]) -> Vec<f64> {
    let mut a = vec!["--per-clip", "--avg", "logits", stream];
    a.extend_from_slice(extra);
    let o = run(VCLASSIFY, &a, dir);
    assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
    lines(&o.stdout)
        .iter()
        .flat_map(|l| l["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>())
        .collect()
}

/// `--precision bf16` moves the logits a little off f32's (the products' operands rounded);
/// a model file whose config says `precision: bf16` runs so without the flag, and the flag
/// overrides the config; unknown precisions are refused.
#[test]
fn bf16_precision_from_the_flag_or_the_model_config() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    small_model(&p.join("m.safetensors"), 4);
    let loaded = vidkit::model::load_model(&p.join("m.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut cfg = loaded.model.config().clone();
    cfg.extra.insert("precision".into(), "bf16".into());
    save_model(&loaded.varmap, &cfg, &p.join("m_bf16.safetensors")).unwrap();
    testsrc(&p.join("a.mp4"), "64x48", 25, 40, &[]);
    let args =
        ["a.mp4", "--frames", "4", "--clips", "2", "--size", "32", "--crop-size", "32", "-q", "-o", "v.vks"];
    assert!(run(VSAMPLE, &args, p).status.success());
    let logits = |extra: &[&str]| per_clip_logits(p, "v.vks", extra);
    let f32 = logits(&["--model", "m.safetensors"]);
    let bf16 = logits(&["--model", "m.safetensors", "--precision", "bf16"]);
    let scale = f32.iter().fold(0f64, |m, v| m.max(v.abs()));
    let drift = f32.iter().zip(&bf16).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
    eprintln!("bf16 drift {drift:.2e} of the largest logit ({scale:.3})");
    assert!(drift > 1e-5 && drift < 5e-2, "bf16 drift {drift:e}");
    assert_eq!(logits(&["--model", "m_bf16.safetensors"]), bf16, "the config's precision");
    assert_eq!(logits(&["--model", "m_bf16.safetensors", "--precision", "f32"]), f32, "the flag wins");
    let o = run(VCLASSIFY, &["--model", "m.safetensors", "--precision", "f16", "v.vks"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("f32, bf16 or int8"), "{}", stderr(&o));
    cfg.extra.insert("precision".into(), "int4".into());
    save_model(&loaded.varmap, &cfg, &p.join("m_bad.safetensors")).unwrap();
    let o = run(VCLASSIFY, &["--model", "m_bad.safetensors", "v.vks"], p);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("m_bad.safetensors")
            && err.contains("f32, bf16 or int8")
            && err.trim_end().lines().count() == 1,
        "{err}"
    );
}

/// `vconvert --quantize int8` calibrates on one clip stream and reports on another; the written
/// model classifies in int8 by its config (logits near the f32 ones, not equal), `--precision
/// f32` still wins, and int8 without a calibration or with stdin as a stream is refused.
#[test]
fn int8_from_vconvert_quantize() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    small_model(&p.join("m.safetensors"), 4);
    testsrc(&p.join("a.mp4"), "64x48", 25, 40, &[]);
    testsrc(&p.join("b.mp4"), "64x48", 25, 30, &["-vf", "hue=h=90"]);
    for (video, out) in [("a.mp4", "calib.vks"), ("b.mp4", "val.vks")] {
        let args =
            [video, "--frames", "4", "--clips", "3", "--size", "32", "--crop-size", "32", "-q", "-o", out];
        assert!(run(VSAMPLE, &args, p).status.success());
    }
    let args =
        ["--quantize", "int8", "--calib", "calib.vks", "--val", "val.vks", "m.safetensors", "m8.safetensors"];
    let o = run(VCONVERT, &args, p);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("calibration: 3 clips: top-1 the same on") && err.contains("validation: 3 clips"),
        "{err}"
    );
    let logits =
        |model: &str, extra: &[&str]| per_clip_logits(p, "val.vks", &[&["--model", model], extra].concat());
    let f32 = logits("m.safetensors", &[]);
    let int8 = logits("m8.safetensors", &[]);
    let scale = f32.iter().fold(0f64, |m, v| m.max(v.abs()));
    let drift = f32.iter().zip(&int8).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
    eprintln!("int8 drift {drift:.2e} of the largest logit ({scale:.3})");
    assert!(drift > 1e-5 && drift < 0.1, "int8 drift {drift:e}");
    assert_eq!(logits("m8.safetensors", &["--precision", "f32"]), f32, "the flag wins");
    let o = run(VCLASSIFY, &["--model", "m.safetensors", "--precision", "int8", "val.vks"], p);
    let err = stderr(&o);
    assert!(
        o.status.code() == Some(2) && err.contains("--quantize int8") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    let o = run(VCONVERT, &["--quantize", "int8", "--calib", "-", "m.safetensors", "m9.safetensors"], p);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!p.join("m9.safetensors").exists());
    // The calibration methods: each names itself in the summary and writes ranges of its own
    // (min/max covers at least what the histogram search keeps); a bad one is refused.
    let ranges = |method: &str, out: &str| {
        let args =
            ["--quantize", "int8", "--calib", "calib.vks", "--calibration", method, "m.safetensors", out];
        let o = run(VCONVERT, &args, p);
        assert!(o.status.success() && stderr(&o).contains(&format!("({method})")), "{}", stderr(&o));
        let cfg = vidkit::model::read_config(&p.join(out)).unwrap();
        vidkit::precision::int8_calibration(&cfg.extra).unwrap().unwrap().ranges
    };
    let (minmax, percentile) =
        (ranges("minmax", "mm.safetensors"), ranges("percentile:99", "pc.safetensors"));
    let histogram = ranges("histogram", "h.safetensors");
    assert!(minmax.len() == histogram.len() && minmax != percentile, "{minmax:?} {percentile:?}");
    for ((lo, hi), (hlo, hhi)) in minmax.iter().zip(&histogram) {
        assert!(lo <= hlo && hi >= hhi, "min/max {lo}..{hi} inside the histogram's {hlo}..{hhi}");
    }
    let o = run(
        VCONVERT,
        &[
            "--quantize",
            "int8",
            "--calib",
            "calib.vks",
            "--calibration",
            "kl",
            "m.safetensors",
            "k.safetensors",
        ],
        p,
    );
    assert!(o.status.code() == Some(2) && stderr(&o).contains("not a calibration method"), "{}", stderr(&o));
    assert!(!p.join("k.safetensors").exists());
}
