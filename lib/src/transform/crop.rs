//! Crop boxes, each following its reference (mmaction2 `mmaction/datasets/transforms/processing.py`).

use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

fn cb(x: u32, y: u32, w: u32, h: u32) -> CropBox {
    CropBox { x: x as usize, y: y as usize, w: w as usize, h: h as usize }
}

/// mmaction2 `CenterCrop`: `left = (img_w - crop_w) // 2`, `top = (img_h - crop_h) // 2`.
pub fn center_crop_box(img_w: u32, img_h: u32, crop_w: u32, crop_h: u32) -> CropBox {
    cb((img_w - crop_w) / 2, (img_h - crop_h) / 2, crop_w, crop_h)
}

/// mmaction2 `ThreeCrop`, in its order: first end, far end, centre along the long side; the same
/// boxes as PaddleVideo's `UniformCrop` (PP-TimeSformer's test crops). The references require one
/// side to equal the crop; vidkit centres the short side when it is larger.
pub fn three_crop_boxes(img_w: u32, img_h: u32, crop_w: u32, crop_h: u32) -> Vec<CropBox> {
    if img_w - crop_w >= img_h - crop_h {
        let w_step = (img_w - crop_w) / 2;
        let y = (img_h - crop_h) / 2;
        vec![cb(0, y, crop_w, crop_h), cb(2 * w_step, y, crop_w, crop_h), cb(w_step, y, crop_w, crop_h)]
    } else {
        let h_step = (img_h - crop_h) / 2;
        let x = (img_w - crop_w) / 2;
        vec![cb(x, 0, crop_w, crop_h), cb(x, 2 * h_step, crop_w, crop_h), cb(x, h_step, crop_w, crop_h)]
    }
}

/// PySlowFast's and pytorchvideo's `uniform_crop` (TimeSformer's three test crops), for
/// `spatial_idx` 0, 1, 2: along the longer side (width on a tie) offsets 0, ⌈margin/2⌉ and the
/// margin, in that order; the other side centred at ⌈margin/2⌉. Unlike `ThreeCrop` (and
/// PaddleVideo's `UniformCrop`, the same boxes: 0, 2⌊margin/2⌋, ⌊margin/2⌋), whose far crop stops a
/// pixel short and whose centre lies a pixel left when the margin is odd.
pub fn uniform_crop_boxes(img_w: u32, img_h: u32, crop_w: u32, crop_h: u32) -> Vec<CropBox> {
    let (mw, mh) = (img_w - crop_w, img_h - crop_h);
    let (cx, cy) = (mw.div_ceil(2), mh.div_ceil(2));
    if img_h > img_w {
        [0, cy, mh].into_iter().map(|y| cb(cx, y, crop_w, crop_h)).collect()
    } else {
        [0, cx, mw].into_iter().map(|x| cb(x, cy, crop_w, crop_h)).collect()
    }
}

/// mmaction2 `TenCrop`: four corners and the centre (`w_step = (img_w - crop_w) // 4`); the
/// caller adds their horizontal mirrors as views 5–9.
pub fn ten_crop_boxes(img_w: u32, img_h: u32, crop_w: u32, crop_h: u32) -> Vec<CropBox> {
    let (ws, hs) = ((img_w - crop_w) / 4, (img_h - crop_h) / 4);
    [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
        .into_iter()
        .map(|(x, y)| cb(x, y, crop_w, crop_h))
        .collect()
}

/// mmaction2 `RandomResizedCrop.get_crop_bbox`: ten attempts of a log-uniform aspect ratio and
/// a uniform area fraction, `round`ed sides; the first that fits wins, at a uniform offset;
/// otherwise a centred square of the short side.
pub fn random_resized_crop_box(
    img_w: u32,
    img_h: u32,
    area_range: (f64, f64),
    aspect_range: (f64, f64),
    rng: &mut Rng,
) -> CropBox {
    const MAX_ATTEMPTS: usize = 10;
    let area = (img_w * img_h) as f64;
    let ratios: Vec<f64> = (0..MAX_ATTEMPTS)
        .map(|_| rng.uniform_range(aspect_range.0.ln(), aspect_range.1.ln()).exp())
        .collect();
    let areas: Vec<f64> =
        (0..MAX_ATTEMPTS).map(|_| rng.uniform_range(area_range.0, area_range.1) * area).collect();
    for i in 0..MAX_ATTEMPTS {
        let cw = (areas[i] * ratios[i]).sqrt().round() as u32;
        let ch = (areas[i] / ratios[i]).sqrt().round() as u32;
        if cw >= 1 && ch >= 1 && cw <= img_w && ch <= img_h {
            let x = rng.int_inclusive(0, (img_w - cw) as i64) as u32;
            let y = rng.int_inclusive(0, (img_h - ch) as i64) as u32;
            return cb(x, y, cw, ch);
        }
    }
    let s = img_w.min(img_h);
    cb((img_w - s) / 2, (img_h - s) / 2, s, s)
}

/// mmaction2 `MultiScaleCrop` (TSN's augmentation) with `max_wh_scale_gap=1`,
/// `random_crop=False`, `num_fixed_crops=5`: crop sides from `int(short_side * scale)` with
/// scale indices at most one apart, snapped to the input size when within 3 px, placed at one of
/// the four corners or the centre.
pub fn multi_scale_crop_box(img_w: u32, img_h: u32, input_px: u32, scales: &[f64], rng: &mut Rng) -> CropBox {
    let base = img_w.min(img_h) as f64;
    let sizes: Vec<u32> = scales.iter().map(|s| (base * s) as u32).collect();
    let mut candidates = Vec::new();
    for (i, &h) in sizes.iter().enumerate() {
        for (j, &w) in sizes.iter().enumerate() {
            if i.abs_diff(j) <= 1 {
                candidates.push((w, h));
            }
        }
    }
    let (mut cw, mut ch) = candidates[rng.below(candidates.len())];
    if cw.abs_diff(input_px) < 3 {
        cw = input_px;
    }
    if ch.abs_diff(input_px) < 3 {
        ch = input_px;
    }
    let (cw, ch) = (cw.min(img_w), ch.min(img_h));
    let (ws, hs) = ((img_w - cw) / 4, (img_h - ch) / 4);
    let offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)];
    let (x, y) = offsets[rng.below(offsets.len())];
    cb(x, y, cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_crop_follows_mmaction_order() {
        // 340x256 → 256 crops: w_step = 42 → x = 0, 84, 42
        let b = three_crop_boxes(340, 256, 256, 256);
        assert_eq!(b.iter().map(|b| b.x).collect::<Vec<_>>(), vec![0, 84, 42]);
        let v = three_crop_boxes(256, 340, 256, 256);
        assert_eq!(v.iter().map(|b| b.y).collect::<Vec<_>>(), vec![0, 84, 42]);
    }

    #[test]
    fn uniform_crop_takes_both_ends_and_rounds_the_centre_up() {
        // 341x256 → 256: margin 85 → x = 0, 43, 85 (ThreeCrop: 0, 84, 42)
        let b = uniform_crop_boxes(341, 256, 256, 256);
        assert_eq!(b.iter().map(|b| (b.x, b.y)).collect::<Vec<_>>(), vec![(0, 0), (43, 0), (85, 0)]);
        // 240x321 → 224: taller, so along y; x centred at ⌈16/2⌉
        let v = uniform_crop_boxes(240, 321, 224, 224);
        assert_eq!(v.iter().map(|b| (b.x, b.y)).collect::<Vec<_>>(), vec![(8, 0), (8, 49), (8, 97)]);
    }

    #[test]
    fn ten_crop_corners_and_centre() {
        // 340x256 → 224: w_step = 29, h_step = 8
        let b = ten_crop_boxes(340, 256, 224, 224);
        let xy: Vec<(usize, usize)> = b.iter().map(|b| (b.x, b.y)).collect();
        assert_eq!(xy, vec![(0, 0), (116, 0), (0, 32), (116, 32), (58, 16)]);
    }

    #[test]
    fn random_boxes_always_fit() {
        let mut r = Rng::new(1);
        for _ in 0..500 {
            let b = random_resized_crop_box(171, 128, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut r);
            assert!(b.x + b.w <= 171 && b.y + b.h <= 128 && b.w > 0 && b.h > 0);
            let m = multi_scale_crop_box(171, 128, 112, &[1.0, 0.875, 0.75, 0.66], &mut r);
            assert!(m.x + m.w <= 171 && m.y + m.h <= 128);
            // sides come from int(128 * scale) → 128, 112, 96, 84
            assert!([128, 112, 96, 84].contains(&m.w) && [128, 112, 96, 84].contains(&m.h), "{m:?}");
        }
    }
}
