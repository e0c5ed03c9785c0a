//! ColorJitter against torchvision (scripts/colorjitter_ref.py, models tier): its functional
//! adjust_brightness / contrast / saturation / hue on uint8 tensors, in a drawn order with drawn
//! factors, applied to every frame of a clip (noise, gradients, grey pixels). vidkit's uint8
//! results must equal torchvision's, pixel for pixel, for 16 draws (some with an adjustment
//! left out, hue shifts both ways). The same for PaddleVideo's ColorJitter against Pillow
//! (`--backend pil`).

mod common;
use common::*;
use ndarray::{Array4, ArrayD};
use vidkit::transform::{color_jitter, color_jitter_pil, JitterDraw};

/// Values of `apply`'s output that differ from scripts/colorjitter_ref.py's with `backend`,
/// over all draws, and the values compared.
fn differing_values(
    backend: &str,
    apply: impl Fn(ndarray::ArrayViewMut4<u8>, &JitterDraw),
) -> Option<(usize, usize)> {
    let script = workspace_root().join("scripts/colorjitter_ref.py");
    let kind = if backend == "tensor" { "colorjitter".to_string() } else { format!("colorjitter_{backend}") };
    let args = ["--backend".to_string(), backend.to_string()];
    let dir =
        cached_fixture(&kind, std::slice::from_ref(&script), "d16", models_peers_python, &script, &args)?;
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
        apply(ours.view_mut(), &draw);
        let theirs = want.index_axis(ndarray::Axis(0), k);
        let n = ours.iter().zip(theirs.iter()).filter(|(a, b)| a != b).count();
        if n > 0 {
            eprintln!("draw {k} {d}: {n} values differ");
        }
        differ += n;
        total += ours.len();
    }
    Some((differ, total))
}

#[test]
fn color_jitter_matches_torchvision_pixel_for_pixel() {
    let apply = |clip: ndarray::ArrayViewMut4<u8>, d: &JitterDraw| color_jitter(clip, d).unwrap();
    let Some((differ, total)) = differing_values("tensor", apply) else {
        return;
    };
    assert_eq!(differ, 0, "{differ} of {total} values differ from torchvision's");
}

/// PaddleVideo's ColorJitter (paddle.vision's on PIL images: Pillow's ImageEnhance and 8-bit
/// HSV, run through torchvision's identical PIL functions by scripts/colorjitter_ref.py
/// --backend pil)
/// with the same draws: pixel for pixel too.
#[test]
fn paddlevideo_color_jitter_matches_pillow_pixel_for_pixel() {
    let apply = |clip: ndarray::ArrayViewMut4<u8>, d: &JitterDraw| color_jitter_pil(clip, d).unwrap();
    let Some((differ, total)) = differing_values("pil", apply) else {
        return;
    };
    assert_eq!(differ, 0, "{differ} of {total} values differ from Pillow's");
}
