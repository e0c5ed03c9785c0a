//! ColorJitter as torchvision computes it on uint8 image tensors
//! (`torchvision/transforms/_functional_tensor.py`: `adjust_brightness`, `adjust_contrast`,
//! `adjust_saturation`, `adjust_hue`; `transforms.ColorJitter`'s ranges and random order),
//! with one draw per clip so every frame of a clip gets the same jitter (MMAction2 applies its
//! `ColorJitter` to a clip's frames alike). Arithmetic in float32 as torch does it, results
//! truncated to uint8 (`.to(torch.uint8)`); contrast takes each frame's own grey mean, as
//! torchvision's mean over the image's last three dimensions does.

use crate::rng::Rng;
use anyhow::{bail, Result};
use ndarray::{ArrayViewMut3, ArrayViewMut4, Axis};
use serde::{Deserialize, Serialize};

/// torchvision's `ColorJitter(brightness, contrast, saturation, hue)`: factors drawn uniformly
/// from [max(0, 1 − x), 1 + x] (hue from [−h, h], h ≤ 0.5); 0 leaves that adjustment out.
/// `style` picks whose pixel arithmetic applies the draw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ColorJitter {
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
    #[serde(default)]
    pub style: JitterStyle,
}

/// Whose arithmetic a colour jitter uses: torchvision's on uint8 tensors (what MMAction2's
/// `ColorJitter` runs), or PaddleVideo's, paddle.vision's on PIL images ([`super::color_pil`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JitterStyle {
    #[default]
    Torchvision,
    Paddlevideo,
}

impl std::str::FromStr for JitterStyle {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "torchvision" => Ok(Self::Torchvision),
            "paddlevideo" => Ok(Self::Paddlevideo),
            _ => bail!("unknown colour jitter style {s:?} (torchvision, paddlevideo)"),
        }
    }
}

/// One clip's jitter: the order of the four adjustments (0 brightness, 1 contrast,
/// 2 saturation, 3 hue: `torch.randperm(4)`) and each factor (`None`: not applied).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitterDraw {
    pub order: [usize; 4],
    pub factors: [Option<f64>; 4],
}

impl ColorJitter {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in
            [("brightness", self.brightness), ("contrast", self.contrast), ("saturation", self.saturation)]
        {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("color jitter {name} {v} must be a non-negative number");
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            bail!("color jitter hue {} must lie in [0, 0.5]", self.hue);
        }
        Ok(())
    }

    pub fn is_identity(&self) -> bool {
        self.brightness == 0.0 && self.contrast == 0.0 && self.saturation == 0.0 && self.hue == 0.0
    }

    /// Applies one clip's draw to every frame, with the arithmetic of `style`.
    pub fn apply(&self, clip: ArrayViewMut4<u8>, draw: &JitterDraw) -> Result<()> {
        match self.style {
            JitterStyle::Torchvision => color_jitter(clip, draw),
            JitterStyle::Paddlevideo => super::color_pil::color_jitter_pil(clip, draw),
        }
    }

    /// `ColorJitter.get_params`: a random order, then each factor in turn.
    pub fn draw(&self, rng: &mut Rng) -> JitterDraw {
        let mut order = [0, 1, 2, 3];
        for i in (1..4).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut factor = |x: f64, hue: bool| -> Option<f64> {
            if x == 0.0 {
                return None;
            }
            let (lo, hi) = if hue { (-x, x) } else { ((1.0 - x).max(0.0), 1.0 + x) };
            Some(rng.uniform_range(lo, hi))
        };
        let factors = [
            factor(self.brightness, false),
            factor(self.contrast, false),
            factor(self.saturation, false),
            factor(self.hue, true),
        ];
        JitterDraw { order, factors }
    }
}

/// `_blend`: `(ratio · a + (1 − ratio) · b).clamp(0, 255)` truncated to uint8, in float32.
pub(crate) fn blend(a: u8, b: f32, ratio: f32, one_minus: f32) -> u8 {
    (ratio * a as f32 + one_minus * b).clamp(0.0, 255.0) as u8
}

/// `rgb_to_grayscale` on uint8: `(0.2989 r + 0.587 g + 0.114 b)` in float32, truncated.
fn grey(p: &[u8]) -> u8 {
    (0.2989f32 * p[0] as f32 + 0.587f32 * p[1] as f32 + 0.114f32 * p[2] as f32) as u8
}

pub(crate) fn adjust_brightness(mut frame: ArrayViewMut3<u8>, factor: f64) {
    let (r, o) = (factor as f32, (1.0 - factor) as f32);
    frame.mapv_inplace(|v| blend(v, 0.0, r, o));
}

pub(crate) fn adjust_contrast(mut frame: ArrayViewMut3<u8>, factor: f64) {
    let (h, w, _) = frame.dim();
    let mut sum = 0f64;
    for px in frame.rows() {
        sum += grey(px.as_slice().expect("contiguous pixel")) as f64;
    }
    let mean = (sum / (h * w) as f64) as f32;
    let (r, o) = (factor as f32, (1.0 - factor) as f32);
    frame.mapv_inplace(|v| blend(v, mean, r, o));
}

pub(crate) fn adjust_saturation(mut frame: ArrayViewMut3<u8>, factor: f64) {
    let (r, o) = (factor as f32, (1.0 - factor) as f32);
    for mut px in frame.rows_mut() {
        let g = grey(px.as_slice().expect("contiguous pixel")) as f32;
        px.mapv_inplace(|v| blend(v, g, r, o));
    }
}

/// `_rgb2hsv`, the hue shift `(h + factor) % 1` (Python's modulo), `_hsv2rgb`, back to uint8
/// as `convert_image_dtype` does (`x · 255.999` truncated).
fn adjust_hue(mut frame: ArrayViewMut3<u8>, factor: f64) {
    let shift = factor as f32;
    for mut px in frame.rows_mut() {
        let [r, g, b] = [px[0] as f32 / 255.0, px[1] as f32 / 255.0, px[2] as f32 / 255.0];
        let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
        let eqc = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eqc { 1.0 } else { maxc };
        let div = if eqc { 1.0 } else { cr };
        let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
        let hr = if maxc == r { bc - gc } else { 0.0 };
        let hg = if maxc == g && maxc != r { 2.0 + rc - bc } else { 0.0 };
        let hb = if maxc != g && maxc != r { 4.0 + gc - rc } else { 0.0 };
        // torch.fmod((h / 6 + 1), 1): the sign of the dividend (positive here).
        let h = ((hr + hg + hb) / 6.0 + 1.0) % 1.0;
        let h = (h + shift).rem_euclid(1.0);
        for (c, x) in hsv_to_rgb(h, s, maxc).into_iter().enumerate() {
            px[c] = (x * (255.0 + 1.0 - 1e-3)) as u8;
        }
    }
}

/// torchvision's `rgb_to_grayscale(img, num_output_channels=3)` on every frame of a clip
/// [T, H, W, 3] (what `RandomGrayscale` applies): each pixel's grey value in all three channels.
pub fn grayscale(mut clip: ArrayViewMut4<u8>) -> Result<()> {
    if clip.dim().3 != 3 || !clip.is_standard_layout() {
        bail!("grayscale needs contiguous RGB frames, got {:?}", clip.dim());
    }
    for mut frame in clip.axis_iter_mut(Axis(0)) {
        for mut px in frame.rows_mut() {
            let g = grey(px.as_slice().expect("contiguous pixel"));
            px.fill(g);
        }
    }
    Ok(())
}

/// `_hsv2rgb` for one pixel, h in [0, 1): sector `floor(6h) mod 6`, p, q, t clamped to [0, 1].
pub(crate) fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let i6 = (h * 6.0).floor();
    let f = h * 6.0 - i6;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    hsv_sector((i6 as i32).rem_euclid(6), v, p, q, t)
}

/// RGB from HSV's sector `i` (0–5) and its v, p, q, t values (colorsys's table).
pub(crate) fn hsv_sector<T: Copy>(i: i32, v: T, p: T, q: T, t: T) -> [T; 3] {
    match i {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// One frame adjustment: brightness, contrast, saturation or hue by a factor.
pub(crate) type Adjust = fn(ArrayViewMut3<u8>, f64);

/// Applies a draw's adjustments, in its order, to every frame of an RGB clip [T, H, W, 3];
/// `adjust` holds the four in the draw's numbering (brightness, contrast, saturation, hue).
pub(crate) fn jitter_frames(
    mut clip: ArrayViewMut4<u8>,
    draw: &JitterDraw,
    adjust: [Adjust; 4],
) -> Result<()> {
    if clip.dim().3 != 3 || !clip.is_standard_layout() {
        bail!("color jitter needs contiguous RGB frames, got {:?}", clip.dim());
    }
    for mut frame in clip.axis_iter_mut(Axis(0)) {
        for &op in &draw.order {
            if let Some(f) = draw.factors[op] {
                adjust[op](frame.view_mut(), f);
            }
        }
    }
    Ok(())
}

/// Applies one clip's jitter to every frame of an RGB clip [T, H, W, 3].
pub fn color_jitter(clip: ArrayViewMut4<u8>, draw: &JitterDraw) -> Result<()> {
    jitter_frames(clip, draw, [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn identity_factors_leave_frames_alone_and_draws_respect_the_ranges() {
        let mut clip =
            Array4::from_shape_fn((2, 3, 4, 3), |(t, y, x, c)| (t * 50 + y * 20 + x * 7 + c * 3) as u8);
        let before = clip.clone();
        let draw = JitterDraw { order: [3, 2, 1, 0], factors: [Some(1.0), Some(1.0), Some(1.0), None] };
        color_jitter(clip.view_mut(), &draw).unwrap();
        assert_eq!(clip, before);
        let j =
            ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, ..Default::default() };
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let d = j.draw(&mut rng);
            let mut o = d.order;
            o.sort();
            assert_eq!(o, [0, 1, 2, 3]);
            assert!(d.factors[..3].iter().all(|f| (0.6..=1.4).contains(&f.unwrap())));
            assert!((-0.1..=0.1).contains(&d.factors[3].unwrap()));
        }
        assert!(ColorJitter { hue: 0.6, ..Default::default() }.validate().is_err());
    }

    /// Grey is torchvision's saturation 0 (`_blend(img, grey, 0)`), which the parity test checks
    /// against torchvision.
    #[test]
    fn grayscale_is_saturation_zero() {
        let clip = Array4::from_shape_fn((2, 5, 7, 3), |(t, y, x, c)| {
            ((t * 91 + y * 37 + x * 13 + c * 71) % 256) as u8
        });
        let mut a = clip.clone();
        grayscale(a.view_mut()).unwrap();
        let mut b = clip;
        let draw = JitterDraw { order: [2, 0, 1, 3], factors: [None, None, Some(0.0), None] };
        color_jitter(b.view_mut(), &draw).unwrap();
        assert_eq!(a, b);
    }
}
