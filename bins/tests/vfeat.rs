//! Whole-tool behaviour of `vfeat` (and `vsample --fps/--shard` feeding it): features equal the
//! model's own `features_t` on the same clips, stream and HDF5 outputs agree, shards merge to the
//! unsharded store, h5py reads and writes the store, bad inputs are one-line errors.

mod common;
use common::*;
use ndarray::{concatenate, Array2, Axis};
use std::path::Path;
use std::process::Command;
use vidkit::featstore::{read_features, VideoFeatures};
use vidkit::model::{build, load_model, save_model, ModelConfig};
use vidkit::stream::{Label, Record};

const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");
const VFEAT: &str = env!("CARGO_BIN_EXE_vfeat");

/// A small random model file (ResNet-18 layout, base width 8).
fn small_model(path: &Path, arch: &str, frames: usize) {
    let mut cfg = ModelConfig::defaults(arch);
    cfg.num_classes = 3;
    cfg.frames = frames;
    cfg.base_width = 8;
    let varmap = candle_nn::VarMap::new();
    build(
        &cfg,
        candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu),
    )
    .unwrap();
    vidkit::model::init_weights(&varmap, 11).unwrap();
    save_model(&varmap, &cfg, path).unwrap();
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), stderr(o));
}

fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// What vfeat must produce for one video, from the model's own API: `Model::features_t` on each
/// record (a clip x view), views averaged, clips concatenated in clip order.
fn expected_features(model_path: &Path, records: &[Record]) -> Array2<f32> {
    let loaded = load_model(model_path, &candle_core::Device::Cpu).unwrap();
    let cfg = loaded.model.config().clone();
    let mut clips: std::collections::BTreeMap<usize, Vec<Array2<f32>>> = Default::default();
    for rec in records {
        let x = vidkit::infer::clip_tensor(rec, &cfg.mean, &cfg.std, &candle_core::Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let y = loaded.model.features_t(&x, false).unwrap().squeeze(0).unwrap();
        let (t, c) = y.dims2().unwrap();
        let a = Array2::from_shape_vec((t, c), y.flatten_all().unwrap().to_vec1().unwrap()).unwrap();
        clips.entry(rec.header.clip.unwrap()).or_default().push(a);
    }
    let means: Vec<Array2<f32>> = clips
        .values()
        .map(|views| views.iter().fold(Array2::zeros(views[0].dim()), |s, v| s + v) / views.len() as f32)
        .collect();
    concatenate(Axis(0), &means.iter().map(|m| m.view()).collect::<Vec<_>>()).unwrap()
}

fn sample(p: &Path, args: &[&str], out: &str) {
    let mut all = args.to_vec();
    all.extend(["--size", "32", "--crop-size", "32", "-q", "-o", out]);
    ok(&run(VSAMPLE, &all, p));
}

#[test]
fn features_equal_the_models_own_and_stream_and_store_agree() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(&p.join("a.mp4"), "64x48", 25, 40, &[]);
    testsrc(&p.join("b.mp4"), "64x48", 25, 30, &[]);
    std::fs::create_dir(p.join("sub")).unwrap();
    std::fs::rename(p.join("b.mp4"), p.join("sub/b.mp4")).unwrap();
    std::fs::write(p.join("v.list"), "a.mp4 1\nsub/b.mp4 2\n").unwrap();
    sample(p, &["--list", "v.list", "--frames", "4", "--clips", "2", "--crop", "three"], "v.vks");
    let records = read_stream(&p.join("v.vks"));
    for arch in ["tsn_r18", "tsm_r18"] {
        small_model(&p.join("m.safetensors"), arch, 4);
        // --batch 3 splits TSN clips across passes; TSM rounds it up to one whole clip.
        ok(&run(VFEAT, &["--model", "m.safetensors", "--batch", "3", "-q", "v.vks", "-o", "f.vks"], p));
        ok(&run(VFEAT, &["--model", "m.safetensors", "-q", "v.vks", "-o", "f.h5"], p));
        let stream = read_features(&p.join("f.vks")).unwrap();
        let store = read_features(&p.join("f.h5")).unwrap();
        assert_eq!(stream.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["a.mp4", "sub/b.mp4"]);
        for (video, label) in [("a.mp4", 1), ("sub/b.mp4", 2)] {
            let recs: Vec<Record> =
                records.iter().filter(|r| r.header.video.as_deref() == Some(video)).cloned().collect();
            assert_eq!(recs.len(), 6, "2 clips x 3 views");
            let want = expected_features(&p.join("m.safetensors"), &recs);
            assert_eq!(want.dim(), (8, 64), "2 clips x 4 frames, ResNet-18 width 8 x 8");
            let s = stream.iter().find(|v| v.id == video).unwrap();
            let h = store.iter().find(|v| v.id == video).unwrap();
            let got = s.modality("rgb").unwrap();
            assert!(max_diff(got, &want) < 1e-4, "{arch} {video}: {}", max_diff(got, &want));
            // Same bytes in both outputs, same attributes.
            assert_eq!(s, h, "{arch} {video}");
            assert_eq!(h.label, Some(Label::Single(label)));
            assert_eq!(h.fps, Some(25.0));
        }
        let header = &read_stream(&p.join("f.vks"))[0].header;
        assert_eq!((header.kind.as_str(), header.layout.as_deref()), ("features", Some("TC")));
        assert_eq!(header.indices.as_ref().map(Vec::len), Some(8));
    }
    // float16: the float32 features rounded to half precision.
    ok(&run(VFEAT, &["--model", "m.safetensors", "--f16", "-q", "v.vks", "-o", "h.h5"], p));
    let f32s = read_features(&p.join("f.h5")).unwrap();
    for (a, b) in read_features(&p.join("h.h5")).unwrap().iter().zip(&f32s) {
        let want = b.modality("rgb").unwrap().mapv(|x| half::f16::from_f32(x).to_f32());
        assert_eq!(a.modality("rgb").unwrap(), &want);
    }
    // An earlier stage: ResNet-18 layer2 has 2 x 8 channels.
    let o = run(VFEAT, &["--model", "m.safetensors", "--layer", "layer2", "-q", "v.vks", "-o", "l2.vks"], p);
    ok(&o);
    assert_eq!(read_features(&p.join("l2.vks")).unwrap()[0].modality("rgb").unwrap().dim(), (8, 16));
    // From stdin, through a pipe, at a fixed rate (40 frames at 25 fps, 2/s: 3 frames; TSN
    // takes any number of frames).
    small_model(&p.join("tsn.safetensors"), "tsn_r18", 4);
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{VSAMPLE} a.mp4 --fps 2 --size 32 --crop-size 32 -q | {VFEAT} --model tsn.safetensors -q > fps.vks"
        ))
        .current_dir(p)
        .output()
        .unwrap();
    ok(&piped);
    assert_eq!(read_features(&p.join("fps.vks")).unwrap()[0].modality("rgb").unwrap().nrows(), 3);
}

#[test]
fn shards_merge_to_the_unsharded_store() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut list = String::new();
    for i in 0..5 {
        testsrc(&p.join(format!("{i}.mp4")), "48x32", 25, 12 + 4 * i, &[]);
        list.push_str(&format!("{i}.mp4 {i}\n"));
    }
    std::fs::write(p.join("all.list"), list).unwrap();
    small_model(&p.join("m.safetensors"), "tsn_r18", 4);
    sample(p, &["--list", "all.list", "--frames", "4"], "all.vks");
    ok(&run(VFEAT, &["--model", "m.safetensors", "-q", "all.vks", "-o", "whole.h5"], p));
    let whole = read_features(&p.join("whole.h5")).unwrap();
    assert_eq!(whole.len(), 5);
    for k in 0..2 {
        let shard = format!("{k}/2");
        // Sharding the list in vsample, or the stream in vfeat, keeps the same videos.
        sample(p, &["--list", "all.list", "--frames", "4", "--shard", &shard], &format!("s{k}.vks"));
        let s = format!("s{k}.vks");
        let part = format!("part{k}.h5");
        ok(&run(VFEAT, &["--model", "m.safetensors", "-q", &s, "-o", &part], p));
        let byvfeat = format!("vpart{k}.h5");
        ok(&run(VFEAT, &["--model", "m.safetensors", "--shard", &shard, "-q", "all.vks", "-o", &byvfeat], p));
        let a = read_features(&p.join(&part)).unwrap();
        assert_eq!(a, read_features(&p.join(&byvfeat)).unwrap());
        let want: Vec<&str> = if k == 0 { vec!["0.mp4", "2.mp4", "4.mp4"] } else { vec!["1.mp4", "3.mp4"] };
        assert_eq!(a.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), want);
    }
    ok(&run(VFEAT, &["--merge", "-q", "-o", "merged.h5", "part0.h5", "part1.h5"], p));
    assert_eq!(read_features(&p.join("merged.h5")).unwrap(), whole);
    // A video in two inputs: an error naming both, and no output.
    let o = run(VFEAT, &["--merge", "-o", "dup.h5", "part0.h5", "whole.h5"], p);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("part0.h5") && err.contains("whole.h5") && err.contains("0.mp4"), "{err}");
    assert!(!p.join("dup.h5").exists());
    let o = run(VFEAT, &["--merge", "-o", "x.vks", "part0.h5"], p);
    assert!(stderr(&o).contains("-o FILE.h5"), "{}", stderr(&o));
}

/// Reads a store with h5py: per video its group name, attributes, dataset dtype, shape and sum.
const H5PY_READS: &str = r#"
import json, sys, h5py, numpy as np
out = {}
with h5py.File(sys.argv[1], "r") as f:
    for name, g in f["videos"].items():
        ds = g["rgb"]
        out[g.attrs["video"]] = {
            "group": name, "label": int(g.attrs["label"]), "fps": float(g.attrs["fps"]),
            "source": g.attrs["source"], "dtype": str(ds.dtype), "shape": list(ds.shape),
            "chunks": list(ds.chunks), "compression": ds.compression, "shuffle": ds.shuffle,
            "sum": float(np.asarray(ds[()], dtype=np.float64).sum()),
        }
    out["layer"] = f.attrs["layer"]
print(json.dumps(out))
"#;

/// Writes a store as another program would with h5py (ids escaped the same way, no `video`
/// attribute, a multi-label, float16 data).
const H5PY_WRITES: &str = r#"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    v = f.create_group("videos")
    g = v.create_group("dir%2Fclip.mp4")
    g.attrs["labels"] = np.array([2, 5], dtype=np.int32)
    g.attrs["fps"] = 30.0
    g.attrs["duration"] = 1.5
    g.attrs["source"] = "raw/dir/clip.mp4"
    g.create_dataset("rgb", data=np.arange(12, dtype=np.float16).reshape(3, 4) / 4, chunks=(2, 4), compression="gzip", shuffle=True)
    g.create_dataset("audio", data=np.ones((2, 3), dtype=np.float32))
    h = v.create_group("plain")
    h.attrs["label"] = 7
    h.create_dataset("rgb", data=np.zeros((1, 4), dtype=np.float32))
"#;

#[test]
fn h5py_reads_our_store_and_we_read_h5py_stores() {
    let Some(py) = decode_peers_python() else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(&p.join("a.mp4"), "64x48", 25, 20, &[]);
    std::fs::create_dir(p.join("x")).unwrap();
    std::fs::copy(p.join("a.mp4"), p.join("x/b.mp4")).unwrap();
    std::fs::write(p.join("v.list"), "a.mp4 1\nx/b.mp4 0\n").unwrap();
    small_model(&p.join("m.safetensors"), "tsn_r18", 4);
    sample(p, &["--list", "v.list", "--frames", "4"], "v.vks");
    ok(&run(VFEAT, &["--model", "m.safetensors", "-q", "v.vks", "-o", "f.h5"], p));
    let ours = read_features(&p.join("f.h5")).unwrap();
    let out = Command::new(&py).args(["-c", H5PY_READS]).arg(p.join("f.h5")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["layer"], "pool");
    for v in &ours {
        let s = &seen[&v.id];
        let rows = v.modality("rgb").unwrap();
        let sum: f64 = rows.iter().map(|&x| x as f64).sum();
        assert_eq!(s["group"], v.id.replace('/', "%2F"));
        assert_eq!(s["label"], serde_json::json!(v.label.as_ref().unwrap().single().unwrap()));
        assert_eq!((s["fps"].as_f64(), s["source"].as_str()), (Some(25.0), Some(v.id.as_str())));
        assert_eq!((s["dtype"].as_str(), &s["shape"]), (Some("float32"), &serde_json::json!([4, 64])));
        assert_eq!((s["compression"].as_str(), s["shuffle"].as_bool()), (Some("gzip"), Some(true)));
        assert!(s["chunks"][0].as_u64().unwrap() >= 1);
        assert!((s["sum"].as_f64().unwrap() - sum).abs() < 1e-6 * (1.0 + sum.abs()), "{s} vs {sum}");
    }

    let theirs = p.join("theirs.h5");
    let out = Command::new(&py).args(["-c", H5PY_WRITES]).arg(&theirs).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = read_features(&theirs).unwrap();
    let want_rgb = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32 / 4.0);
    let want = vec![
        VideoFeatures {
            id: "dir/clip.mp4".into(),
            label: Some(Label::Multi(vec![2, 5])),
            fps: Some(30.0),
            duration: Some(1.5),
            source: Some("raw/dir/clip.mp4".into()),
            modalities: vec![("audio".into(), Array2::ones((2, 3))), ("rgb".into(), want_rgb)],
            times: None,
        },
        VideoFeatures {
            id: "plain".into(),
            label: Some(Label::Single(7)),
            fps: None,
            duration: None,
            source: None,
            modalities: vec![("rgb".into(), Array2::zeros((1, 4)))],
            times: None,
        },
    ];
    assert_eq!(got, want);
}

#[test]
fn bad_inputs_are_one_line_errors_and_the_batch_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(&p.join("a.mp4"), "64x48", 25, 30, &[]);
    small_model(&p.join("m.safetensors"), "tsm_r18", 4);
    sample(p, &["a.mp4", "--frames", "4"], "good.vks");
    sample(p, &["a.mp4", "--frames", "6"], "six.vks");
    std::fs::write(p.join("junk.vks"), "this is not a clip stream\n").unwrap();
    // Alone, each bad input is fatal: exit 2, no output file.
    for (input, says) in [
        ("junk.vks", "junk.vks: record 0: malformed stream"),
        ("six.vks", "6 frames; tsm_r18 shifts across clips of 4 frames"),
    ] {
        let o = run(VFEAT, &["--model", "m.safetensors", input, "-o", "out.h5"], p);
        assert_eq!(o.status.code(), Some(2), "{input}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(says), "{input}: {err}");
        assert!(!p.join("out.h5").exists(), "no partial output");
        assert_eq!(
            std::fs::read_dir(p)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
                .count(),
            0
        );
    }
    // With a good input beside them: the good video is written, the bad ones reported, exit 1.
    let o = run(VFEAT, &["--model", "m.safetensors", "junk.vks", "six.vks", "good.vks", "-o", "out.h5"], p);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("junk.vks") && err.contains("six.vks: video \"a.mp4\""), "{err}");
    assert!(err.contains("2 of 3 inputs failed"), "{err}");
    assert_eq!(read_features(&p.join("out.h5")).unwrap().len(), 1);
    // Features are not frames.
    ok(&run(VFEAT, &["--model", "m.safetensors", "-q", "good.vks", "-o", "f.vks"], p));
    let o = run(VFEAT, &["--model", "m.safetensors", "f.vks"], p);
    assert!(stderr(&o).contains("kind \"features\"; vfeat takes frames"), "{}", stderr(&o));
    // Not a model file; an unknown layer.
    std::fs::write(p.join("junk.safetensors"), b"nonsense").unwrap();
    let o = run(VFEAT, &["--model", "junk.safetensors", "good.vks", "-o", "x.h5"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("junk.safetensors"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(!p.join("x.h5").exists());
    let o = run(VFEAT, &["--model", "m.safetensors", "--layer", "layer7", "good.vks"], p);
    assert!(stderr(&o).contains("layer1 to layer4, not layer7"), "{}", stderr(&o));
    let o = run(VFEAT, &["--model", "m.safetensors", "--shard", "2/2", "good.vks"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("K counts from 0"), "{}", stderr(&o));
}

/// 3D backbones give one row per clip (issue 5: "per clip for 3D ones"): X3D-XS on 2 dense
/// clips × 3 crops of 4 frames → [2, C], each row the views' mean of `Model::features_t`.
#[test]
fn a_3d_backbone_gives_one_row_per_clip() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(&p.join("a.mp4"), "64x48", 25, 40, &[]);
    let mut cfg = ModelConfig::defaults("x3d_xs");
    cfg.num_classes = 3;
    cfg.frames = 4;
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
    build(&cfg, vb).unwrap();
    vidkit::model::init_weights(&varmap, 5).unwrap();
    save_model(&varmap, &cfg, &p.join("x3d.safetensors")).unwrap();
    let args = [
        "a.mp4",
        "--sampler",
        "dense",
        "--frames",
        "4",
        "--interval",
        "2",
        "--clips",
        "2",
        "--crop",
        "three",
    ];
    sample(p, &args, "v.vks");
    ok(&run(VFEAT, &["--model", "x3d.safetensors", "-q", "v.vks", "-o", "f.vks"], p));
    let got = read_features(&p.join("f.vks")).unwrap();
    let want = expected_features(&p.join("x3d.safetensors"), &read_stream(&p.join("v.vks")));
    let rows = got[0].modality("rgb").unwrap();
    assert_eq!(rows.nrows(), 2, "one row per clip");
    // Relative to the largest feature: untrained X3D features grow large (BN running stats 0/1).
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = max_diff(rows, &want) / scale;
    assert!(rel < 1e-5, "relative difference {rel} (largest feature {scale})");
}

/// Streamed records (a long video at a fixed rate, records of 8 frames) give the features of
/// the same frames in one record, for TSN and TSM; t0/t1 span the video.
#[test]
fn streamed_records_give_the_features_of_one_record() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(&p.join("long.mp4"), "64x48", 25, 250, &[]);
    sample(p, &["long.mp4", "--fps", "8", "--chunk", "8"], "chunked.vks");
    sample(p, &["long.mp4", "--fps", "8", "--chunk", "0"], "whole.vks");
    assert_eq!(read_stream(&p.join("chunked.vks")).len(), 10);
    assert_eq!(read_stream(&p.join("whole.vks")).len(), 1);
    for arch in ["tsn_r18", "tsm_r18"] {
        small_model(&p.join("m.safetensors"), arch, 4);
        for input in ["chunked", "whole"] {
            ok(&run(
                VFEAT,
                &[
                    "--model",
                    "m.safetensors",
                    "--batch",
                    "12",
                    "-q",
                    &format!("{input}.vks"),
                    "-o",
                    &format!("{input}.h5"),
                ],
                p,
            ));
        }
        let a = read_features(&p.join("chunked.h5")).unwrap();
        let b = read_features(&p.join("whole.h5")).unwrap();
        assert_eq!(a.len(), 1);
        let (fa, fb) = (a[0].modality("rgb").unwrap(), b[0].modality("rgb").unwrap());
        assert_eq!(fa.nrows(), 80, "{arch}: 250 frames at 25 fps, 8 per second");
        assert!(max_diff(fa, fb) < 1e-4, "{arch}: {}", max_diff(fa, fb));
        assert_eq!((a[0].fps, a[0].duration), (b[0].fps, b[0].duration));
    }
    let header = &read_stream(&p.join("chunked.vks"))[9].header;
    let rows = {
        ok(&run(VFEAT, &["--model", "m.safetensors", "-q", "chunked.vks", "-o", "f.vks"], p));
        read_stream(&p.join("f.vks"))
    };
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].header.t0, rows[0].header.t1), (Some(0.0), header.t1));
    assert_eq!(rows[0].header.indices.as_ref().map(Vec::len), Some(80));
}

/// An error record (a producer that broke part-way through a video) fails that video only:
/// no features for it, the others written, exit status 1; vclassify does the same.
#[test]
fn an_error_record_drops_its_video_and_the_rest_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    damaged_in_last_third(p, "cut.mp4", 96);
    testsrc(&p.join("full.mp4"), "64x48", 25, 96, &[]);
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
            "32",
            "--crop-size",
            "32",
            "-q",
            "-o",
            "s.vks",
        ],
        p,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    small_model(&p.join("m.safetensors"), "tsn_r18", 8);
    let o = run(VFEAT, &["--model", "m.safetensors", "-q", "s.vks", "-o", "f.h5"], p);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("\"cut.mp4\"") && e.contains("producer failed"), "{e}");
    let got = read_features(&p.join("f.h5")).unwrap();
    assert_eq!(got.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["full.mp4"]);
    assert_eq!(got[0].modality("rgb").unwrap().nrows(), 96);
    // vclassify: a TSN of 8 frames takes the 8-frame records (96 frames: 12 whole records); the cut video gets no prediction.
    let o = run(env!("CARGO_BIN_EXE_vclassify"), &["--model", "m.safetensors", "s.vks"], p);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let preds: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(preds.len(), 1, "{preds:?}");
    assert_eq!(preds[0]["video"], "full.mp4");
    assert!(stderr(&o).contains("no prediction"), "{}", stderr(&o));
}

/// `--rescale`'s resampling equals MMAction2's `pool_feature` (activitynet_feature_postprocessing.py,
/// run with scipy by scripts/rescale_ref.py) on random sequences of several lengths.
#[test]
fn rescaling_matches_the_reference_pool_feature() {
    use vidkit::featstore::rescale::{pool_steps, StepPool};
    let Some(py) = decode_peers_python() else { return };
    let d = tempfile::tempdir().unwrap();
    let mut rng = vidkit::rng::Rng::new(5);
    let mut worst = 0f64;
    for (t, steps, pool) in [
        (1, 100, "mean"),
        (2, 100, "mean"),
        (7, 100, "max"),
        (100, 100, "mean"),
        (257, 100, "mean"),
        (1000, 100, "max"),
        (37, 16, "mean"),
    ] {
        let data = Array2::from_shape_fn((t, 6), |_| (rng.uniform_range(-3.0, 3.0)) as f32);
        let src = d.path().join("in.npy");
        let dst = d.path().join("out.npy");
        ndarray_npy::write_npy(&src, &data).unwrap();
        let o = Command::new(&py)
            .arg(workspace_root().join("scripts/rescale_ref.py"))
            .args([src.to_str().unwrap(), dst.to_str().unwrap(), &steps.to_string(), "3", pool])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let want: Array2<f64> = ndarray_npy::read_npy(&dst).unwrap();
        let kind = if pool == "mean" { StepPool::Mean } else { StepPool::Max };
        let got = pool_steps(data.view(), steps, 3, kind).unwrap();
        assert_eq!(got.dim(), want.dim(), "T {t}");
        for (a, b) in got.iter().zip(&want) {
            let err = (*a as f64 - b).abs() / b.abs().max(1.0);
            worst = worst.max(err);
            assert!(err < 1e-6, "T {t} {pool}: {a} vs {b}");
        }
    }
    eprintln!("rescale: worst relative difference from pool_feature {worst:.2e}");
}

/// Snippet features in the store: one row per snippet with its time span, the video's fps and
/// duration; per-frame rows at a fixed rate carry each frame's own span; --rescale gives N rows
/// sharing the span.
#[test]
fn snippet_features_carry_row_times_and_rescale() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(&p.join("v.mp4"), "64x48", 25, 200, &[]);
    small_model(&p.join("m.safetensors"), "tsn_r18", 8);
    sample(p, &["v.mp4", "--sampler", "untrimmed", "--frames", "1", "--interval", "16"], "u.vks");
    ok(&run(VFEAT, &["--model", "m.safetensors", "-q", "u.vks", "-o", "u.h5"], p));
    let v = &read_features(&p.join("u.h5")).unwrap()[0];
    // centres 8, 24, ..., 200 - 8: 12 snippets of one frame
    assert_eq!(v.modality("rgb").unwrap().nrows(), 12);
    let times = v.times.as_ref().expect("row times in the store");
    for k in 0..12 {
        let c = (8 + 16 * k) as f64;
        assert_eq!(times.row(k).to_vec(), vec![c / 25.0, (c + 1.0) / 25.0]);
    }
    assert_eq!((v.fps, v.duration), (Some(25.0), Some(8.0)));
    // The stream carries the same times.
    ok(&run(VFEAT, &["--model", "m.safetensors", "-q", "u.vks", "-o", "u.vks.feat"], p));
    assert_eq!(read_features(&p.join("u.vks.feat")).unwrap()[0].times.as_ref(), Some(times));
    // --rescale 5: five rows, equal shares of [8/25, 185/25]
    ok(&run(VFEAT, &["--model", "m.safetensors", "--rescale", "5", "-q", "u.vks", "-o", "r.h5"], p));
    let r = &read_features(&p.join("r.h5")).unwrap()[0];
    assert_eq!(r.modality("rgb").unwrap().nrows(), 5);
    let rt = r.times.as_ref().unwrap();
    let (a, b) = (8.0 / 25.0, 185.0 / 25.0);
    assert!((rt[[0, 0]] - a).abs() < 1e-12 && (rt[[4, 1]] - b).abs() < 1e-9, "{rt:?}");
    let want = vidkit::featstore::rescale::pool_steps(
        v.modality("rgb").unwrap().view(),
        5,
        3,
        vidkit::featstore::rescale::StepPool::Mean,
    )
    .unwrap();
    assert!(max_diff(r.modality("rgb").unwrap(), &want) < 1e-6);
    // --fps rows: each frame's own 1/fps
    sample(p, &["v.mp4", "--fps", "5", "--chunk", "8"], "f.vks");
    ok(&run(VFEAT, &["--model", "m.safetensors", "-q", "f.vks", "-o", "f.h5"], p));
    let f = &read_features(&p.join("f.h5")).unwrap()[0];
    let ft = f.times.as_ref().unwrap();
    assert_eq!(ft.nrows(), 40);
    assert_eq!(ft.row(3).to_vec(), vec![15.0 / 25.0, 16.0 / 25.0]);
}

/// The per-video files localization users already have join a store through --merge:
/// PaddleVideo's .npy ([100, 400]) and MMAction2's .csv (header, 100 rows), by directory or by
/// file; a bad file is a one-line error naming it and no store is written.
#[test]
fn merge_takes_paddlevideo_npy_and_mmaction_csv_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir(p.join("npy")).unwrap();
    let a = Array2::from_shape_fn((100, 400), |(t, c)| (t as f32 * 0.01) - (c as f32 * 0.001));
    ndarray_npy::write_npy(p.join("npy/v_one.npy"), &a).unwrap();
    ndarray_npy::write_npy(p.join("npy/v_two.npy"), &(a.clone() * 2.0)).unwrap();
    let mut csv = (0..400).map(|i| format!("f{i}")).collect::<Vec<_>>().join(",");
    for row in a.rows() {
        csv.push('\n');
        csv.push_str(&row.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(","));
    }
    std::fs::write(p.join("v_three.csv"), csv).unwrap();
    ok(&run(VFEAT, &["--merge", "-q", "-o", "all.h5", "npy", "v_three.csv"], p));
    let got = read_features(&p.join("all.h5")).unwrap();
    assert_eq!(got.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["v_one", "v_three", "v_two"]);
    assert_eq!(got[0].modality("rgb").unwrap(), &a);
    let three = got[1].modality("rgb").unwrap();
    assert_eq!(three.dim(), (100, 400));
    assert!(max_diff(three, &a) <= 5e-5, "4 decimals in the CSV");
    std::fs::write(p.join("npy/v_bad.csv"), "f0,f1\n1,2\n3,nan\n").unwrap();
    let o = run(VFEAT, &["--merge", "-o", "bad.h5", "npy"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("v_bad.csv: row 1 column 1 is not a finite number"), "{}", stderr(&o));
    assert!(!p.join("bad.h5").exists());
}
