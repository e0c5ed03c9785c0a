//! Numerical parity of vidkit's video transformers against their references, through the real
//! import path. PP-TimeSformer: `scripts/export_pptimesformer_parity.py` (paddle tier of
//! `scripts/peers.sh`) builds ppvideo's own `VisionTransformer` (divided space-time attention)
//! and `ppTimeSformerHead` at ViT-B width with fewer blocks and a 64-pixel input (full size runs
//! in `make bench`), every parameter random, and saves its state dict with `paddle.save`, an
//! input and the eval-mode logits; `vconvert` imports the `.pdparams` (sizes read off the
//! shapes) and the loaded model's logits must match: max |diff| ≤ 1e-4 × max |logit|.
//! TimeSformer: `scripts/export_timesformer_parity.py` (models tier: torch, transformers) does
//! the same with Hugging Face's `TimesformerForVideoClassification` (the port of
//! facebookresearch's module), saved with `save_pretrained` and, renamed, as facebookresearch's
//! `.pyth`; both import and must match.
//!
//! Fixtures are cached under `target/parity_transformer_{paddle,torch}/<hash of the script and
//! the pins>/` (one kind per script: a kind keeps only its latest hash).
//! Run with `-- --nocapture` to see the measured errors.

mod common;

use common::{cached_fixture, logits_error, models_peers_python, paddle_peers_python, workspace_root};
use std::path::PathBuf;
use std::process::Command;

const VCONVERT: &str = env!("CARGO_BIN_EXE_vconvert");
const REL_TOL: f32 = 1e-4;

/// `export_pptimesformer_parity.py ARGS` cached as `name`; `None` when the venv cannot be built.
fn paddle_fixture(name: &str, args: &[&str]) -> Option<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/export_pptimesformer_parity.py");
    let keys: Vec<PathBuf> = [
        "export_pptimesformer_parity.py",
        "export_paddle_parity.py",
        "peers-paddle.txt",
        "peers-paddle-nodeps.txt",
    ]
    .iter()
    .map(|f| root.join("scripts").join(f))
    .collect();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cached_fixture("parity_transformer_paddle", &keys, name, paddle_peers_python, &script, &args)
}

/// `export_timesformer_parity.py ARGS` cached as `name`; `None` when the venv cannot be built.
fn torch_fixture(name: &str, args: &[&str]) -> Option<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/export_timesformer_parity.py");
    let keys: Vec<PathBuf> = ["export_timesformer_parity.py", "peers-models.txt", "peers-models-nodeps.txt"]
        .iter()
        .map(|f| root.join("scripts").join(f))
        .collect();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cached_fixture("parity_transformer_torch", &keys, name, models_peers_python, &script, &args)
}

/// `export_mvit_parity.py ARGS` cached as `name`; `None` when the venv cannot be built.
fn mvit_fixture(name: &str, args: &[&str]) -> Option<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/export_mvit_parity.py");
    let keys: Vec<PathBuf> = ["export_mvit_parity.py", "peers-models.txt", "peers-models-nodeps.txt"]
        .iter()
        .map(|f| root.join("scripts").join(f))
        .collect();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cached_fixture("parity_transformer_mvit", &keys, name, models_peers_python, &script, &args)
}

/// Imports `fixture/<checkpoint>` as `arch` and compares logits; returns the relative error.
fn parity(fixture: &std::path::Path, checkpoint: &str, arch: &str, overrides: &[&str], frames: usize) -> f32 {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let pd = fixture.join(checkpoint);
    let mut args = vec!["--arch", arch];
    for o in overrides {
        args.extend(["-o", o]);
    }
    args.extend([pd.to_str().unwrap(), out.to_str().unwrap()]);
    let o = Command::new(VCONVERT).args(&args).output().expect("vconvert runs");
    assert!(o.status.success(), "vconvert: {}", String::from_utf8_lossy(&o.stderr));
    let e = logits_error(&out, fixture);
    assert_eq!((e.config.arch.as_str(), e.config.frames), (arch, frames));
    let rel = e.relative();
    eprintln!(
        "parity {arch} from {checkpoint} (input {:?}): max|diff| {:.3e}, max|logit| {:.3}, relative {rel:.2e} (limit {REL_TOL:.0e}); forward {:.2} s",
        e.input_shape, e.max_diff, e.max_logit, e.forward_s
    );
    assert!(rel <= REL_TOL, "{arch}: relative error {rel:.3e} > {REL_TOL:e}");
    // Fixtures with the reference's bf16 logits (not the resized-reference ones): the drift bound.
    if fixture.join("logits_bf16.npy").exists() {
        e.bf16.as_ref().expect("bf16 logits read").check(&format!("{arch} from {checkpoint}"));
    }
    rel
}

#[test]
fn pptimesformer_matches_paddlevideo() {
    let Some(fx) =
        paddle_fixture("pptimesformer-d2-t4-s64", &["--depth", "2", "--frames", "4", "--size", "64"])
    else {
        return;
    };
    // Its export rounds the products' operands to bf16 in Paddle too: the bf16 check runs.
    assert!(fx.join("logits_bf16.npy").exists(), "the PP-TimeSformer fixture has bf16 logits");
    parity(&fx, "model.pdparams", "pptimesformer_vit_b", &[], 4);
}

/// A 2-block TimeSformer at 4 frames × 64², with its run at 8 frames × 80² (embeddings resized).
fn timesformer_fixture() -> Option<PathBuf> {
    let args =
        ["--depth", "2", "--frames", "4", "--size", "64", "--resize-frames", "8", "--resize-size", "80"];
    torch_fixture("timesformer-d2-t4-s64-r8-80", &args)
}

/// Importing a 4-frame, 64-pixel checkpoint at 8 frames and 80 pixels resizes the time embedding
/// (nearest, along time) and the position embedding (bilinear, over the 4×4 → 5×5 patch grid)
/// once; the result matches the reference run with embeddings resized the same way.
#[test]
fn timesformer_at_other_frames_and_size_matches_resized_reference() {
    let Some(fx) = timesformer_fixture() else { return };
    parity(
        &fx.join("resized"),
        "../hf/model.safetensors",
        "timesformer_vit_b",
        &["frames=8", "crop_size=80"],
        8,
    );
}

#[test]
fn timesformer_matches_hugging_face_from_every_layout() {
    let Some(fx) = timesformer_fixture() else { return };
    parity(&fx, "hf/model.safetensors", "timesformer_vit_b", &[], 4);
    parity(&fx, "fb/model.pyth", "timesformer_vit_b", &[], 4);
    // MMAction2's names (the fixture's input is already normalised: its mean/std are moot here).
    parity(&fx, "mm/model.pth", "timesformer_vit_b", &[], 4);
    // config.json beside the Hugging Face weights names the classes.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let o = Command::new(VCONVERT)
        .args(["--arch", "timesformer_vit_b"])
        .arg(fx.join("hf/model.safetensors"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let cfg = vidkit::model::read_config(&out).unwrap();
    let want: Vec<String> = (0..7).map(|i| format!("class_{i}")).collect();
    assert_eq!(cfg.labels.as_deref(), Some(&want[..]));
    // MMAction2's checkpoint carries its configs' normalisation (mean and std 127.5).
    let o = Command::new(VCONVERT)
        .args(["--arch", "timesformer_vit_b"])
        .arg(fx.join("mm/model.pth"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let cfg = vidkit::model::read_config(&out).unwrap();
    assert_eq!((cfg.mean, cfg.std), ([127.5; 3], [127.5; 3]));
}

/// A 4-block MViT-B (widths 96 → 384, q pooled at blocks 1 and 3) at 4 frames × 64², with its
/// run at 8 frames × 80² (position embeddings resized).
fn small_mvit_fixture() -> Option<PathBuf> {
    let args =
        ["--depth", "4", "--frames", "4", "--size", "64", "--resize-frames", "8", "--resize-size", "80"];
    mvit_fixture("mvit-d4-t4-s64-r8-80", &args)
}

/// pytorchvideo's MViT from its `.pyth`, and the same weights as torchvision's `mvit_v1_b`
/// holds them, each against its own reference's logits.
#[test]
fn mvit_matches_pytorchvideo_and_torchvision() {
    let Some(fx) = small_mvit_fixture() else { return };
    parity(&fx.join("pv"), "model.pyth", "mvit_base_16x4", &[], 4);
    parity(&fx.join("tv"), "model.pth", "mvit_base_16x4", &[], 4);
}

/// Importing a 4-frame, 64-pixel MViT at 8 frames and 80 pixels resizes its position embeddings
/// (temporal 2 → 4 linearly, spatial 16² → 20² bilinearly) once; pytorchvideo itself cannot run
/// it (pytorchvideo#180), but its model rebuilt with the embeddings resized the same way agrees.
#[test]
fn mvit_at_other_frames_and_size_matches_resized_reference() {
    let Some(fx) = small_mvit_fixture() else { return };
    parity(&fx.join("resized"), "../pv/model.pyth", "mvit_base_16x4", &["frames=8", "crop_size=80"], 8);
}

/// MViT checkpoints that do not fit are refused in one line naming the file.
#[test]
fn mvit_imports_that_do_not_fit_are_refused() {
    let Some(fx) = small_mvit_fixture() else { return };
    let pyth = fx.join("pv/model.pyth");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let cases: [(&str, &[&str], &str); 4] = [
        ("mvit_base_16x4", &["num_heads=5"], "width 96 is not a multiple of 5 heads"),
        ("mvit_base_16x4", &["stage_starts=[1]"], "unexpected tensors"),
        (
            "mvit_base_16x4",
            &["patch_kernel=[3,5,5]"],
            "patch_embed.patch_model.weight has shape [96, 3, 3, 7, 7]",
        ),
        ("timesformer_vit_b", &[], "model.pyth"),
    ];
    for (arch, overrides, want) in cases {
        let mut cmd = Command::new(VCONVERT);
        cmd.env_remove("RUST_BACKTRACE").args(["--arch", arch]);
        for o in overrides {
            cmd.args(["-o", o]);
        }
        let o = cmd.arg(&pyth).arg(&out).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{arch} {overrides:?}: {err}");
        assert!(err.contains("model.pyth") && err.trim_end().lines().count() == 1, "{err}");
        assert!(!out.exists());
    }
}

/// Checkpoints that do not fit are refused in one line naming the file, and nothing is written.
#[test]
fn timesformer_imports_that_do_not_fit_are_refused() {
    let Some(fx) = timesformer_fixture() else { return };
    let hf = fx.join("hf/model.safetensors");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("m.safetensors");
    let cases: [(&str, &[&str], &str); 4] = [
        ("pptimesformer_vit_b", &[], "not a readable Paddle state dict"),
        ("timesformer_vit_b", &["num_heads=5"], "embed_dim 768 is not a multiple of 5 heads"),
        ("timesformer_vit_b", &["crop_size=72"], "crop_size 72 is not a multiple of the 16-pixel patch"),
        ("timesformer_vit_b", &["patch_size=8"], "patch_embed.proj.weight has shape [768, 3, 16, 16]"),
    ];
    for (arch, overrides, want) in cases {
        let mut cmd = Command::new(VCONVERT);
        cmd.env_remove("RUST_BACKTRACE").args(["--arch", arch]);
        for o in overrides {
            cmd.args(["-o", o]);
        }
        let o = cmd.arg(&hf).arg(&out).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{arch} {overrides:?}: {err}");
        assert!(err.contains("model.safetensors") && err.trim_end().lines().count() == 1, "{err}");
        assert!(!out.exists());
    }
}

/// Full size (ViT-B/16, 12 blocks, 8 frames × 224²) against both references. Minutes of export
/// and a 700 MB fixture each: `make bench` runs it (`-- --ignored`).
#[test]
#[ignore = "full-size models, minutes: run by make bench"]
fn transformers_match_their_references_at_full_size() {
    let full = ["--depth", "12", "--frames", "8", "--size", "224", "--batch", "1", "--classes", "400"];
    if let Some(fx) = paddle_fixture("pptimesformer-full", &full) {
        parity(&fx, "model.pdparams", "pptimesformer_vit_b", &[], 8);
    }
    if let Some(fx) = torch_fixture("timesformer-full", &full) {
        parity(&fx, "hf/model.safetensors", "timesformer_vit_b", &[], 8);
    }
    // MViT-B 16×4 and 32×3 (16 blocks, 224²) against pytorchvideo's hub builders; torchvision's
    // mvit_v1_b is the 16×4 network.
    let mvit = ["--depth", "16", "--size", "224", "--batch", "1", "--classes", "400"];
    let args16: Vec<&str> = mvit.iter().copied().chain(["--frames", "16"]).collect();
    if let Some(fx) = mvit_fixture("mvit16x4-full", &args16) {
        parity(&fx.join("pv"), "model.pyth", "mvit_base_16x4", &[], 16);
        parity(&fx.join("tv"), "model.pth", "mvit_base_16x4", &[], 16);
    }
    let args32: Vec<&str> = mvit
        .iter()
        .copied()
        .chain(["--frames", "32", "--arch", "mvit_base_32x3", "--no-torchvision"])
        .collect();
    if let Some(fx) = mvit_fixture("mvit32x3-full", &args32) {
        parity(&fx.join("pv"), "model.pyth", "mvit_base_32x3", &[], 32);
    }
}

/// An ImageNet ViT (timm's names, as its model.safetensors holds them) starts a TimeSformer as
/// PaddleVideo's `pretrain_vit_param_trans` does: head dropped, each block's attention and norm1
/// copied into the temporal ones, time embedding and later temporal_fc 0, a new head; the position
/// embedding resized to the crop's patch grid.
#[test]
fn an_imagenet_vit_initialises_a_timesformer() {
    use candle_core::{Device, Tensor};
    let dev = Device::Cpu;
    let (c, depth, grid) = (24usize, 2usize, 3usize);
    let mut t: std::collections::HashMap<String, Tensor> = std::collections::HashMap::new();
    let mut put = |n: &str, shape: &[usize]| {
        t.insert(n.to_string(), vidkit::rng::randn(0f32, 1., shape, &dev).unwrap());
    };
    put("cls_token", &[1, 1, c]);
    put("pos_embed", &[1, grid * grid + 1, c]);
    put("patch_embed.proj.weight", &[c, 3, 8, 8]);
    put("patch_embed.proj.bias", &[c]);
    for i in 0..depth {
        for (n, s) in [
            ("norm1.weight", vec![c]),
            ("norm1.bias", vec![c]),
            ("attn.qkv.weight", vec![3 * c, c]),
            ("attn.qkv.bias", vec![3 * c]),
            ("attn.proj.weight", vec![c, c]),
            ("attn.proj.bias", vec![c]),
            ("norm2.weight", vec![c]),
            ("norm2.bias", vec![c]),
            ("mlp.fc1.weight", vec![4 * c, c]),
            ("mlp.fc1.bias", vec![4 * c]),
            ("mlp.fc2.weight", vec![c, 4 * c]),
            ("mlp.fc2.bias", vec![c]),
        ] {
            put(&format!("blocks.{i}.{n}"), &s);
        }
    }
    put("norm.weight", &[c]);
    put("norm.bias", &[c]);
    put("head.weight", &[1000, c]);
    put("head.bias", &[1000]);
    let d = tempfile::tempdir().unwrap();
    let vit = d.path().join("model.safetensors");
    candle_core::safetensors::save(&t, &vit).unwrap();
    let out = d.path().join("ts.safetensors");
    let o = Command::new(VCONVERT)
        .args([
            "--arch",
            "timesformer_vit_b",
            "-o",
            "num_heads=2",
            "-o",
            "frames=4",
            "-o",
            "num_classes=5",
            "-o",
            "crop_size=32",
        ])
        .arg(&vit)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = candle_core::safetensors::load(&out, &dev).unwrap();
    let same = |a: &Tensor, b: &Tensor| {
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    for i in 0..depth {
        let b = format!("backbone.blocks.{i}");
        assert!(same(
            &m[&format!("{b}.temporal_attn.qkv.weight")],
            &t[&format!("blocks.{i}.attn.qkv.weight")]
        ));
        assert!(same(&m[&format!("{b}.temporal_norm1.bias")], &t[&format!("blocks.{i}.norm1.bias")]));
        assert!(same(&m[&format!("{b}.attn.proj.weight")], &t[&format!("blocks.{i}.attn.proj.weight")]));
    }
    let zero = |n: &str| m[n].abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() == 0.0;
    assert!(zero("backbone.time_embed") && zero("backbone.blocks.1.temporal_fc.weight"));
    assert!(!zero("backbone.blocks.0.temporal_fc.weight"));
    assert_eq!(m["backbone.time_embed"].dims(), [1, 4, c]);
    assert_eq!(m["backbone.pos_embed"].dims(), [1, 4 * 4 + 1, c], "3×3 grid resized to 32/8 = 4×4");
    assert!(same(
        &m["backbone.pos_embed"].narrow(1, 0, 1).unwrap(),
        &t["pos_embed"].narrow(1, 0, 1).unwrap()
    ));
    assert_eq!(m["head.fc.weight"].dims(), [5, c]);
    let cfg = vidkit::model::read_config(&out).unwrap();
    assert_eq!((cfg.num_classes, cfg.frames, cfg.crop_size), (5, 4, 32));
}
