//! `vsample --train` with pytorchvideo's RandAugment and AugMix and PaddleVideo's colour jitter:
//! one draw per clip (a still video's frames stay equal to each other), seeded, and the flags'
//! mistakes refused with one-line errors (exit 2).

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");

/// A still video: every frame the same, so any difference between frames is a per-frame draw.
fn still_video(dir: &Path) {
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=1"])
        .args(["-vf", "select=eq(n\\,0),loop=24:1:0", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-qp", "0"])
        .arg("still.mp4")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn sample(dir: &Path, extra: &[&str], seed: &str, out: &str) -> Vec<u8> {
    let mut a = vec!["still.mp4", "--train", "--frames", "4", "--size", "48", "--crop-size", "48"];
    a.extend_from_slice(&["--seed", seed, "-o", out]);
    a.extend_from_slice(extra);
    let o = run(VSAMPLE, &a, dir);
    assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
    std::fs::read(dir.join(out)).unwrap()
}

fn frames_all_equal(path: &Path) -> bool {
    let frames = read_stream(path)[0].array.to_f32();
    let first = frames.index_axis(ndarray::Axis(0), 0).to_owned();
    (1..frames.shape()[0]).all(|t| frames.index_axis(ndarray::Axis(0), t) == first.view())
}

#[test]
fn rand_augment_augmix_and_paddlevideo_jitter_are_one_draw_per_clip_and_seeded() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    still_video(p);
    let plain = sample(p, &[], "3", "plain.vks");
    assert!(frames_all_equal(&p.join("plain.vks")), "the still video's frames differ");
    // Every op of the 14, each applied: the clip changes, its frames alike.
    let all_ops = ["--rand-augment", "--rand-augment-num-layers", "14", "--rand-augment-prob", "1"];
    let ra = sample(p, &all_ops, "3", "ra1.vks");
    assert_ne!(ra, plain);
    assert_eq!(ra, sample(p, &all_ops, "3", "ra2.vks"), "the same seed gave other bytes");
    assert!(frames_all_equal(&p.join("ra1.vks")), "RandAugment drew per frame");
    let mut fill = all_ops.to_vec();
    fill.extend_from_slice(&["--augment-fill", "255", "0", "0", "--rand-augment-sampling-type", "uniform"]);
    assert_ne!(sample(p, &fill, "3", "ra_fill.vks"), ra);
    // prob 0: nothing applies.
    let none = ["--rand-augment", "--rand-augment-prob", "0"];
    assert_eq!(sample(p, &none, "3", "ra0.vks"), plain);
    let am = ["--augmix", "--augmix-magnitude", "10", "--augmix-width", "2", "--augmix-depth", "3"];
    let mix = sample(p, &am, "5", "am1.vks");
    assert_ne!(mix, plain);
    assert_eq!(mix, sample(p, &am, "5", "am2.vks"));
    assert_ne!(mix, sample(p, &am, "6", "am3.vks"), "another seed gave the same AugMix");
    assert!(frames_all_equal(&p.join("am1.vks")), "AugMix drew per frame");
    let jitter = ["--color-jitter", "0.4", "0.4", "0.4", "0.1"];
    let tv = sample(p, &jitter, "3", "tv.vks");
    let mut pv_args = jitter.to_vec();
    pv_args.extend_from_slice(&["--color-jitter-style", "paddlevideo"]);
    let pv = sample(p, &pv_args, "3", "pv.vks");
    assert_ne!(tv, pv, "Pillow's arithmetic gave torchvision's bytes");
    assert!(frames_all_equal(&p.join("pv.vks")), "PaddleVideo's jitter drew per frame");
}

#[test]
fn augmentation_flag_mistakes_are_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    still_video(p);
    for (args, says) in [
        (&["--rand-augment"][..], "--train"),
        (&["--train", "--rand-augment", "--augmix"][..], "cannot be used with"),
        (&["--train", "--rand-augment-magnitude", "5"][..], "--rand-augment"),
        (&["--train", "--rand-augment", "--rand-augment-magnitude", "11"][..], "magnitude 11"),
        (&["--train", "--rand-augment", "--rand-augment-num-layers", "0"][..], "num_layers 0"),
        (&["--train", "--augmix", "--augmix-alpha", "0"][..], "alpha 0"),
        (&["--train", "--augmix", "--augmix-depth", "-2"][..], "depth -2"),
        (&["--train", "--augment-fill", "1", "2", "3"][..], "--augment-fill needs"),
        (&["--train", "--rand-augment", "--augment-fill", "1", "2", "300"][..], "fill 300"),
    ] {
        let mut a = vec!["still.mp4", "-o", "x.vks"];
        a.extend_from_slice(args);
        let o = run(VSAMPLE, &a, p);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!p.join("x.vks").exists());
    }
    let help = run(VSAMPLE, &["--help"], p);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--rand-augment-num-layers") && text.contains("--augmix-alpha"), "{text}");
}
