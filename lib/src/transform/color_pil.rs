//! PaddleVideo's colour jitter: its `ColorJitter` pipeline op (and `RandomBrightness`,
//! `RandomSaturation`, `RandomHue`) calls `paddle.vision.transforms.ColorJitter` on PIL images,
//! whose `functional_pil` adjusts with Pillow — `ImageEnhance.Brightness / Contrast / Color`
//! and a hue shift in Pillow's 8-bit HSV — the same calls as torchvision's PIL path. The draw
//! (a random order of the four, factors from the same ranges) is torchvision's, but the pixel
//! arithmetic is not its tensor arithmetic ([`super::color`]):
//! - `Image.blend(degenerate, img, f)`: `degenerate + f · (img − degenerate)` in float32,
//!   truncated (clipped first when f lies outside [0, 1]);
//! - grey is Pillow's `L`: `(19595 r + 38470 g + 7471 b + 0x8000) >> 16` (rounded, where
//!   torchvision truncates `0.2989 r + 0.587 g + 0.114 b`);
//! - contrast blends towards the frame's mean grey rounded to an integer (torchvision: the float
//!   mean);
//! - hue: Pillow's RGB → HSV with H, S, V as bytes, H shifted by `int(h · 255)` modulo 256,
//!   HSV → RGB with rounding (torchvision: float HSV, shift modulo 1).
//!
//! PaddleVideo draws anew for every frame (and its `ColorJitter` op jitters with probability
//! 1 − p, p = 0.5); vidkit draws once per clip and applies that draw to every frame, as for all
//! its clip augmentations, whenever the jitter is asked for. (PaddleVideo's `RandomBrightness` and its
//! siblings hand a PIL image to its own dict-taking `ColorJitter` op, which fails when their
//! coin comes up; paddle.vision's `ColorJitter` is what they evidently mean.) Paddle 3.3.1's
//! `functional_pil` gives the same values as torchvision's PIL functions, which the parity test
//! runs (checked once on that test's 16 draws: all equal).

use super::color::{hsv_sector, jitter_frames, JitterDraw};
use anyhow::Result;
use ndarray::{ArrayViewMut3, ArrayViewMut4};

/// `Image.blend(a, b, alpha)` on one value (Pillow's `ImagingBlend`).
fn pil_blend(a: u8, b: u8, alpha: f32) -> u8 {
    let t = a as f32 + alpha * (b as i32 - a as i32) as f32;
    if (0.0..=1.0).contains(&alpha) {
        t as u8
    } else if t <= 0.0 {
        0
    } else if t >= 255.0 {
        255
    } else {
        t as u8
    }
}

/// Pillow's RGB → L.
fn pil_grey(p: &[u8]) -> u8 {
    ((19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 0x8000) >> 16) as u8
}

fn brightness(mut frame: ArrayViewMut3<u8>, factor: f64) {
    let f = factor as f32;
    frame.mapv_inplace(|v| pil_blend(0, v, f));
}

fn contrast(mut frame: ArrayViewMut3<u8>, factor: f64) {
    let (h, w, _) = frame.dim();
    let sum: u64 =
        frame.rows().into_iter().map(|p| pil_grey(p.as_slice().expect("contiguous pixel")) as u64).sum();
    // ImageStat's mean, then int(mean + 0.5)
    let mean = (sum as f64 / (h * w) as f64 + 0.5) as u8;
    let f = factor as f32;
    frame.mapv_inplace(|v| pil_blend(mean, v, f));
}

fn saturation(mut frame: ArrayViewMut3<u8>, factor: f64) {
    let f = factor as f32;
    for mut px in frame.rows_mut() {
        let g = pil_grey(px.as_slice().expect("contiguous pixel"));
        px.mapv_inplace(|v| pil_blend(g, v, f));
    }
}

/// Pillow's `rgb2hsv_row`: float32 variables, double literals (C's promotions kept).
fn rgb_to_hsv8(r: u8, g: u8, b: u8) -> [u8; 3] {
    let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let rc = (maxc - r) as f32 / cr;
    let gc = (maxc - g) as f32 / cr;
    let bc = (maxc - b) as f32 / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + rc as f64 - bc as f64) as f32
    } else {
        (4.0 + gc as f64 - rc as f64) as f32
    };
    let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
    let clip8 = |v: i32| v.clamp(0, 255) as u8;
    [clip8((h as f64 * 255.0) as i32), clip8((s as f64 * 255.0) as i32), maxc]
}

/// Pillow's `hsv2rgb`.
fn hsv8_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v; 3];
    }
    let h6 = h as f32 as f64 * 6.0 / 255.0;
    let i = h6.floor() as i32;
    let f = (h6 - i as f32 as f64) as f32;
    let fs = (s as f32 as f64 / 255.0) as f32;
    let v64 = v as f32 as f64;
    // C's round(): halves away from zero
    let p = (v64 * (1.0 - fs as f64)).round() as i32;
    let q = (v64 * (1.0 - (fs * f) as f64)).round() as i32;
    let t = (v64 * (1.0 - fs as f64 * (1.0 - f as f64))).round() as i32;
    let (p, q, t) = (p.clamp(0, 255) as u8, q.clamp(0, 255) as u8, t.clamp(0, 255) as u8);
    hsv_sector(i % 6, v, p, q, t)
}

fn hue(mut frame: ArrayViewMut3<u8>, factor: f64) {
    // int(hue_factor * 255) added modulo 256 (Paddle; torchvision's np.int32 cast is the same)
    let shift = (factor * 255.0) as i32 as u8;
    for mut px in frame.rows_mut() {
        let [h, s, v] = rgb_to_hsv8(px[0], px[1], px[2]);
        let rgb = hsv8_to_rgb(h.wrapping_add(shift), s, v);
        px.iter_mut().zip(rgb).for_each(|(o, x)| *o = x);
    }
}

/// Applies one clip's jitter with PaddleVideo's (Pillow's) arithmetic to every frame of an RGB
/// clip [T, H, W, 3].
pub fn color_jitter_pil(clip: ArrayViewMut4<u8>, draw: &JitterDraw) -> Result<()> {
    jitter_frames(clip, draw, [brightness, contrast, saturation, hue])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pillow's HSV round trip: exact for grey and the primaries, lossy elsewhere as Pillow is
    /// (values from Pillow 13's `convert("HSV").convert("RGB")`).
    #[test]
    fn hsv_round_trip_of_simple_colours() {
        for rgb in [[0u8, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [77, 77, 77]] {
            let [h, s, v] = rgb_to_hsv8(rgb[0], rgb[1], rgb[2]);
            assert_eq!(hsv8_to_rgb(h, s, v), rgb, "{rgb:?} -> {:?}", [h, s, v]);
        }
        assert_eq!(rgb_to_hsv8(255, 255, 0), [42, 255, 255]);
        assert_eq!(hsv8_to_rgb(42, 255, 255), [255, 252, 0]);
        assert_eq!(rgb_to_hsv8(12, 200, 77), [99, 239, 200]);
        assert_eq!(hsv8_to_rgb(99, 239, 200), [13, 200, 74]);
        assert_eq!(pil_grey(&[255, 255, 255]), 255);
        assert_eq!(pil_blend(10, 20, 0.5), 15);
        assert_eq!(pil_blend(10, 250, 1.5), 255);
    }
}
