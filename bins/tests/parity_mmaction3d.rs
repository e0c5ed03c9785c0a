//! Import of mmaction2 3D recognizers through the real `vconvert`, against the eval-mode logits
//! of a plain PyTorch restatement of mmaction2's modules with mmaction2's state-dict names
//! (`scripts/export_mmaction3d_parity.py`; mmaction2 itself needs mmcv, which cannot be
//! installed beside the zoo venv): ResNet3d + I3DHead (I3D-R50 with and without non-local
//! blocks, Slow-only R50), ResNet3dSlowFast + SlowFastHead (SlowFast-R50 4x16 and 8x8), X3D +
//! X3DHead (X3D-S, a narrow X3D-M), ResNet3dCSN + I3DHead (ir-CSN-R50, a narrow ir-CSN-R152),
//! and the refusal of what does not fit (ip-CSN, R(2+1)D, a backbone imported as another
//! family's architecture). Within 1e-4 × max |logit|. Inputs are reduced (2 clips × 16 frames ×
//! 64 × 80 for I3D, whose stem and pools stride 8 in time, and SlowFast; 8 frames for Slow-only,
//! CSN and the narrow X3D-M, 6 for X3D-S).
//!
//! Fixtures are cached under `target/parity_mmaction3d/<hash of the scripts and pins>/`. Run with
//! `-- --nocapture` to see the measured errors.

mod common;

use common::{cached_fixture, logits_error, models_peers_python, run_tool, workspace_root};
use std::path::PathBuf;
use vidkit::model::ModelConfig;

const VCONVERT: &str = env!("CARGO_BIN_EXE_vconvert");
const REL_TOL: f32 = 1e-4;
const FLAGS: &str = "0,0,0;0,1,0,1;0,1,0,1,0,1;0,0,0";

fn fixture(name: &str, args: &[&str]) -> Option<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/export_mmaction3d_parity.py");
    // The script takes randomise_bn from export_zoo_parity.py.
    let keys = [
        script.clone(),
        root.join("scripts/export_zoo_parity.py"),
        root.join("scripts/peers-models-nodeps.txt"),
    ];
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    cached_fixture("parity_mmaction3d", &keys, name, models_peers_python, &script, &args)
}

/// Converts the fixture `name` (script `args`) as `arch` with `overrides`, compares logits;
/// returns the imported model's config (`None` when the fixture could not be made).
fn parity(name: &str, arch: &str, frames: usize, args: &[&str], overrides: &[&str]) -> Option<ModelConfig> {
    let frames_arg = frames.to_string();
    let mut all = vec!["--arch", arch, "--frames", &frames_arg];
    all.extend_from_slice(args);
    let fx = fixture(name, &all)?;
    let work = tempfile::tempdir().unwrap();
    let frames_opt = format!("frames={frames}");
    let mut cli = vec!["--arch", arch, "-o", &frames_opt];
    for o in overrides {
        cli.extend_from_slice(&["-o", o]);
    }
    let pth = fx.join("model.pth");
    cli.extend_from_slice(&[pth.to_str().unwrap(), "m.safetensors"]);
    let r = run_tool(VCONVERT, &cli, work.path(), None);
    assert_eq!(r.code, 0, "vconvert {name}: {}", r.stderr);
    assert!(r.stderr.contains("mmaction2 layout"), "{}", r.stderr);
    let e = logits_error(&work.path().join("m.safetensors"), &fx);
    assert_eq!((e.config.arch.as_str(), e.config.frames), (arch, frames));
    // configs/_base_/models/x3d.py normalises as pytorchvideo (std rounded), the others with
    // ImageNet's mean/std.
    let mean = if arch.starts_with("x3d") { [114.75; 3] } else { [123.675, 116.28, 103.53] };
    assert_eq!(e.config.mean, mean, "mmaction2's normalisation");
    let rel = e.relative();
    eprintln!(
        "parity mmaction2 {name:<22} input {:?}: relative error {rel:.2e} (limit {REL_TOL:.0e}); forward {:.2} s",
        e.input_shape, e.forward_s
    );
    assert!(rel <= REL_TOL, "{name}: logits differ from the mmaction2 restatement by {rel:e} of the largest");
    e.bf16.as_ref().expect("the fixture has PyTorch's bf16 logits").check(&format!("mmaction2 {name}"));
    Some(e.config)
}

/// `vconvert --arch ARCH` of the fixture `name` (script `args`, `--frames 8`: the parity tests'
/// fixtures of that name are the same) must fail with a one-line error naming the file and
/// containing `want`, and write nothing.
fn refused(name: &str, args: &[&str], arch: &str, want: &str) {
    let mut all = vec!["--frames", "8"];
    all.extend_from_slice(args);
    let Some(fx) = fixture(name, &all) else { return };
    let work = tempfile::tempdir().unwrap();
    let pth = fx.join("model.pth");
    let pth = pth.to_str().unwrap();
    let r = run_tool(VCONVERT, &["--arch", arch, pth, "m.safetensors"], work.path(), None);
    let msg = r.fatal();
    assert!(msg.contains(pth) && msg.contains(want), "{name} as {arch}: {msg}");
    assert!(!work.path().join("m.safetensors").exists());
}

#[test]
fn i3d_r50_matches_mmaction2() {
    parity("i3d_r50", "i3d_r50", 16, &[], &[]);
}

/// mmaction2's i3d_imagenet-pretrained-r50-nl-dot-product config.
#[test]
fn i3d_r50_nl_dot_product_matches_mmaction2() {
    let args = ["--non-local", FLAGS, "--nl-mode", "dot_product"];
    parity("i3d_r50-nl-dot", "i3d_r50", 16, &args, &["non_local_cfg.mode=dot_product"]);
}

/// mmaction2's i3d_imagenet-pretrained-r50-nl-embedded-gaussian config.
#[test]
fn i3d_r50_nl_embedded_gaussian_matches_mmaction2() {
    let args = ["--non-local", FLAGS, "--nl-mode", "embedded_gaussian"];
    parity("i3d_r50-nl-gauss", "i3d_r50", 16, &args, &["non_local_cfg.mode=embedded_gaussian"]);
}

#[test]
fn slowonly_r50_matches_mmaction2() {
    parity("slow_r50", "slow_r50", 8, &[], &[]);
}

/// What the weights cannot say must be given; what does not fit is refused, naming the file.
#[test]
fn mmaction2_checkpoints_that_do_not_fit_are_refused() {
    let args = ["--arch", "i3d_r50", "--frames", "16", "--non-local", FLAGS, "--nl-mode", "dot_product"];
    let Some(fx) = fixture("i3d_r50-nl-dot", &args) else { return };
    let work = tempfile::tempdir().unwrap();
    let pth = fx.join("model.pth");
    let pth = pth.to_str().unwrap();
    let r = run_tool(VCONVERT, &["--arch", "i3d_r50", pth, "m.safetensors"], work.path(), None);
    let msg = r.fatal();
    assert!(msg.contains(pth) && msg.contains("-o non_local_cfg.mode="), "{msg}");
    let r = run_tool(VCONVERT, &["--arch", "x3d_m", pth, "m.safetensors"], work.path(), None);
    let msg = r.fatal();
    assert!(msg.contains(pth) && msg.contains("imports only as i3d_r50 or slow_r50"), "{msg}");
    // I3D's weights as Slow-only: the inflated conv1 kernels do not fit.
    let r = run_tool(
        VCONVERT,
        &["--arch", "slow_r50", "-o", "non_local_cfg.mode=dot_product", pth, "m.safetensors"],
        work.path(),
        None,
    );
    let msg = r.fatal();
    assert!(msg.contains(pth) && msg.contains("weights do not fit slow_r50"), "{msg}");
    assert!(!work.path().join("m.safetensors").exists());
}

/// mmaction2's slowfast_r50 4x16x1 configuration (alpha 8, lateral kernel 5): 16 frames, 2 slow.
#[test]
fn slowfast_r50_4x16_matches_mmaction2() {
    parity("slowfast_r50-a8", "slowfast_r50", 16, &["--alpha", "8", "--fusion-kernel", "5"], &[]);
}

/// mmaction2's slowfast_r50 8x8x1 configuration (alpha 4, lateral kernel 7): 16 frames, 4 slow.
#[test]
fn slowfast_r50_8x8_matches_mmaction2() {
    parity("slowfast_r50-a4", "slowfast_r50", 16, &["--alpha", "4", "--fusion-kernel", "7"], &[]);
}

/// mmaction2's x3d_s_13x6x1 configuration (X3D with gamma_w 1, gamma_b 2.25, gamma_d 2.2):
/// full width, 6 frames.
#[test]
fn x3d_s_matches_mmaction2() {
    let Some(c) = parity("x3d_s", "x3d_s", 6, &[], &[]) else { return };
    assert_eq!((c.base_width, c.std), (24, [57.38; 3]));
    assert_eq!(c.extra.get("shortcut_norm_always"), Some(&true.into()));
}

/// X3D-M's backbone (the same as X3D-S's) narrowed by gamma_w 0.5 (stem 16 wide), 8 frames:
/// the width comes from the checkpoint.
#[test]
fn x3d_m_narrow_matches_mmaction2() {
    let Some(c) = parity("x3d_m-w16", "x3d_m", 8, &["--gamma-w", "0.5"], &[]) else { return };
    assert_eq!(c.base_width, 16);
}

/// mmaction2's ircsn_ig65m-pretrained-r50 configuration (ResNet3dCSN depth 50, 'ir', BN eps
/// 1e-3) as csn_r101 with R50's blocks per stage.
#[test]
fn ircsn_r50_matches_mmaction2() {
    let Some(c) = parity("ircsn_r50", "csn_r101", 8, &["--depth", "50"], &[]) else { return };
    assert_eq!(c.stage_depths, Some([3, 4, 6, 3]));
    assert_eq!(c.extra.get("bn_eps"), Some(&1e-3.into()));
    assert_eq!((c.frames, c.interval), (8, Some(2)));
}

/// mmaction2's ircsn_r152 (configs/_base_/models/ircsn_r152.py) at a quarter of the width (base
/// 16), as csn_r101 with R152's blocks per stage.
#[test]
fn ircsn_r152_narrow_matches_mmaction2() {
    let args = ["--depth", "152", "--base-channels", "16"];
    let Some(c) = parity("ircsn_r152-w16", "csn_r101", 8, &args, &[]) else { return };
    assert_eq!((c.stage_depths, c.base_width), (Some([3, 8, 36, 3]), 16));
}

/// Backbones vidkit has no architecture for, and backbones imported as another family's
/// architecture, are refused by name before any weight is compared.
#[test]
fn mmaction2_x3d_csn_and_r2plus1d_that_do_not_fit_are_refused() {
    let x3d = ["--arch", "x3d_m", "--gamma-w", "0.5"];
    refused("x3d_m-w16", &x3d, "csn_r101", "an mmaction2 X3D checkpoint imports only as x3d_xs, x3d_s");
    // X3D-L is deeper (gamma_d 5.0): the names fit, the blocks do not.
    refused("x3d_m-w16", &x3d, "x3d_l", "weights do not fit x3d_l");
    let csn = ["--arch", "csn_r101", "--depth", "50"];
    refused(
        "ircsn_r50",
        &csn,
        "i3d_r50",
        "an mmaction2 ResNet3dCSN (ir-CSN) checkpoint imports only as csn_r101",
    );
    let ipcsn = ["--arch", "csn_r101", "--depth", "50", "--base-channels", "8", "--csn-mode", "ip"];
    refused("ipcsn_r50-w8", &ipcsn, "csn_r101", "ip-CSN checkpoint");
    let r2plus1d = ["--arch", "r2plus1d_r34", "--depth", "18", "--base-channels", "8"];
    refused("r2plus1d_r18-w8", &r2plus1d, "r2plus1d_r50", "an mmaction2 ResNet2Plus1d checkpoint");
    refused("r2plus1d_r18-w8", &r2plus1d, "i3d_r50", "is not supported");
}
