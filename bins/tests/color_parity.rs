//! ColorJitter against torchvision (scripts/colorjitter_ref.py, models tier): its functional
//! adjust_brightness / contrast / saturation / hue on uint8 tensors, in a drawn order with drawn
//! factors, applied to every frame of a clip (noise, gradients, grey pixels). vidkit's uint8
//! results must equal torchvision's, pixel for pixel, for 16 draws (some with an adjustment
//! left out, hue shifts both ways).

mod common;
use common::*;
use ndarray::{Array4, ArrayD};
use vidkit::transform::{color_jitter, JitterDraw};

#[test]
fn color_jitter_matches_torchvision_pixel_for_pixel() {
    let script = workspace_root().join("scripts/colorjitter_ref.py");
    let Some(dir) = cached_fixture(
        "colorjitter",
        std::slice::from_ref(&script),
        "d16",
        models_peers_python,
        &script,
        &[],
    ) else {
        return;
    };
    let clip: ArrayD<u8> = ndarray_npy::read_npy(dir.join("clip.npy")).unwrap();
    let clip: Array4<u8> = clip.into_dimensionality().unwrap();
    let want: ArrayD<u8> = ndarray_npy::read_npy(dir.join("out.npy")).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("draws.json")).unwrap()).unwrap();
    let (mut differ, mut total) = (0usize, 0usize);
    for (k, d) in meta["draws"].as_array().unwrap().iter().enumerate() {
        let order: Vec<usize> =
            d["order"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let factors: Vec<Option<f64>> = d["factors"].as_array().unwrap().iter().map(|v| v.as_f64()).collect();
        let draw = JitterDraw {
            order: [order[0], order[1], order[2], order[3]],
            factors: [factors[0], factors[1], factors[2], factors[3]],
        };
        let mut ours = clip.clone();
        color_jitter(ours.view_mut(), &draw).unwrap();
        let theirs = want.index_axis(ndarray::Axis(0), k);
        let n = ours.iter().zip(theirs.iter()).filter(|(a, b)| a != b).count();
        if n > 0 {
            eprintln!("draw {k} {d}: {n} values differ");
        }
        differ += n;
        total += ours.len();
    }
    assert_eq!(differ, 0, "{differ} of {total} values differ from torchvision's");
}
