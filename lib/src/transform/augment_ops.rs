//! The image ops that pytorchvideo 0.1.5's RandAugment and AugMix draw from
//! (`pytorchvideo/transforms/augmentations.py`), on uint8 clips [T, H, W, 3], each op applied
//! alike to every frame (pytorchvideo hands the whole (T, C, H, W) video to torchvision). The
//! arithmetic is torchvision's on uint8 tensors (`transforms/_functional_tensor.py`): float32,
//! truncation to uint8 where torchvision's `.to(torch.uint8)` truncates, round-half-even where
//! its grid transforms and blur round (`_cast_squeeze_out`).

use super::color::{adjust_brightness, adjust_contrast, adjust_saturation, blend};
use anyhow::{bail, Result};
use ndarray::{ArrayViewMut3, ArrayViewMut4, Axis};

/// pytorchvideo's transform names (`_NAME_TO_TRANSFORM_FUNC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    AdjustBrightness,
    AdjustContrast,
    AdjustSaturation,
    AdjustSharpness,
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
}

impl OpKind {
    pub const ALL: [OpKind; 14] = [
        OpKind::AdjustBrightness,
        OpKind::AdjustContrast,
        OpKind::AdjustSaturation,
        OpKind::AdjustSharpness,
        OpKind::AutoContrast,
        OpKind::Equalize,
        OpKind::Invert,
        OpKind::Rotate,
        OpKind::Posterize,
        OpKind::Solarize,
        OpKind::ShearX,
        OpKind::ShearY,
        OpKind::TranslateX,
        OpKind::TranslateY,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::AdjustBrightness => "AdjustBrightness",
            OpKind::AdjustContrast => "AdjustContrast",
            OpKind::AdjustSaturation => "AdjustSaturation",
            OpKind::AdjustSharpness => "AdjustSharpness",
            OpKind::AutoContrast => "AutoContrast",
            OpKind::Equalize => "Equalize",
            OpKind::Invert => "Invert",
            OpKind::Rotate => "Rotate",
            OpKind::Posterize => "Posterize",
            OpKind::Solarize => "Solarize",
            OpKind::ShearX => "ShearX",
            OpKind::ShearY => "ShearY",
            OpKind::TranslateX => "TranslateX",
            OpKind::TranslateY => "TranslateY",
        }
    }
}

impl std::str::FromStr for OpKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match OpKind::ALL.iter().find(|k| k.name() == s) {
            Some(&k) => Ok(k),
            None => bail!("unknown augmentation op {s:?} (pytorchvideo's names: AutoContrast, Rotate, ...)"),
        }
    }
}

/// One op with its argument as pytorchvideo's level functions give it: a factor for the
/// Adjust* ops, degrees counter-clockwise for Rotate, bits kept for Posterize, a threshold as a
/// fraction of 255 for Solarize (values ≥ int(255 t) are inverted), the shear factor for
/// ShearX/Y, a fraction of the width/height for TranslateX/Y; unused (0) for the others.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentOp {
    pub kind: OpKind,
    pub arg: f64,
}

/// Applies `op` to every frame of an RGB clip [T, H, W, 3]; `fill` is the value (in the uint8
/// frames' 0–255 units, as torchvision takes it for a uint8 tensor) for pixels that a rotation,
/// shear or translation brings in from outside the frame.
pub fn apply_op(mut clip: ArrayViewMut4<u8>, op: AugmentOp, fill: [f32; 3]) -> Result<()> {
    if clip.dim().3 != 3 || !clip.is_standard_layout() {
        bail!("{} needs contiguous RGB frames, got {:?}", op.kind.name(), clip.dim());
    }
    let (_, h, w, _) = clip.dim();
    let a = op.arg;
    let factor_ok = |what: &str| -> Result<()> {
        if !(a >= 0.0 && a.is_finite()) {
            bail!("{} {what} {a} must be a non-negative number", op.kind.name());
        }
        Ok(())
    };
    match op.kind {
        OpKind::AdjustBrightness => {
            factor_ok("factor")?;
            each_frame(&mut clip, |f| adjust_brightness(f, a));
        }
        OpKind::AdjustContrast => {
            factor_ok("factor")?;
            each_frame(&mut clip, |f| adjust_contrast(f, a));
        }
        OpKind::AdjustSaturation => {
            factor_ok("factor")?;
            each_frame(&mut clip, |f| adjust_saturation(f, a));
        }
        OpKind::AdjustSharpness => {
            factor_ok("factor")?;
            // torchvision leaves frames of 2 pixels or fewer across alone.
            if h > 2 && w > 2 {
                each_frame(&mut clip, |f| adjust_sharpness(f, a));
            }
        }
        OpKind::AutoContrast => each_frame(&mut clip, autocontrast),
        OpKind::Equalize => each_frame(&mut clip, equalize),
        OpKind::Invert => clip.mapv_inplace(|v| 255 - v),
        OpKind::Posterize => {
            // pytorchvideo's _posterize returns the video unchanged for 8 bits or more.
            if a < 8.0 {
                if !(a >= 0.0 && a.fract() == 0.0) {
                    bail!("Posterize keeps {a} bits: a whole number in [0, 8] is needed");
                }
                // torchvision: img & -int(2 ** (8 - bits))
                let mask = (-(1i32 << (8 - a as i32)) & 0xff) as u8;
                clip.mapv_inplace(|v| v & mask);
            }
        }
        OpKind::Solarize => {
            // pytorchvideo: solarize(video, int(factor * 255.0)); torchvision refuses a
            // threshold above 255 and inverts every value ≥ the threshold.
            let threshold = (a * 255.0) as i64;
            if threshold > 255 || !a.is_finite() {
                bail!("Solarize threshold {a} × 255 lies above 255");
            }
            clip.mapv_inplace(|v| if v as i64 >= threshold { 255 - v } else { v });
        }
        OpKind::Rotate => affine(clip, rotation_matrix(a), fill),
        // pytorchvideo's matrices: the shear moves the centre by size · factor / 2.
        OpKind::ShearX => affine(clip, [1.0, a, h as f64 * a / 2.0, 0.0, 1.0, 0.0], fill),
        OpKind::ShearY => affine(clip, [1.0, 0.0, 0.0, a, 1.0, w as f64 * a / 2.0], fill),
        OpKind::TranslateX => affine(clip, [1.0, 0.0, a * w as f64, 0.0, 1.0, 0.0], fill),
        OpKind::TranslateY => affine(clip, [1.0, 0.0, 0.0, 0.0, 1.0, a * h as f64], fill),
    }
    Ok(())
}

fn each_frame(clip: &mut ArrayViewMut4<u8>, f: impl FnMut(ArrayViewMut3<u8>)) {
    clip.axis_iter_mut(Axis(0)).for_each(f);
}

/// torchvision's `rotate(img, angle)` matrix: `_get_inverse_affine_matrix([0, 0], -angle, [0, 0],
/// 1, [0, 0])`, in double as Python computes it (no shear, unit scale: [cos, sin, 0, −sin, cos, 0]
/// of −angle).
fn rotation_matrix(angle_deg: f64) -> [f64; 6] {
    let rot = (-angle_deg).to_radians();
    let (sin, cos) = (rot.sin(), rot.cos());
    [cos, sin, 0.0, -sin, cos, 0.0]
}

/// `autocontrast`: each channel of a frame stretched from [min, max] to [0, 255] in float32
/// (`scale = 255 / (max − min)`, computed as Python's `int / tensor`, i.e. `reciprocal · 255`),
/// truncated; a flat channel stays as it is.
fn autocontrast(mut frame: ArrayViewMut3<u8>) {
    for mut plane in frame.axis_iter_mut(Axis(2)) {
        let (lo, hi) = plane.fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if lo == hi {
            continue;
        }
        let (lo, scale) = (lo as f32, (1.0 / (hi as f32 - lo as f32)) * 255.0);
        plane.mapv_inplace(|v| ((v as f32 - lo) * scale).clamp(0.0, 255.0) as u8);
    }
}

/// `equalize` (`_scale_channel`): per channel, the histogram's cumulative counts mapped through
/// `lut = (cumsum + step // 2) // step` shifted by one bin, `step = (pixels − last nonzero bin's
/// count) // 255`; a channel with step 0 stays as it is.
fn equalize(mut frame: ArrayViewMut3<u8>) {
    for mut plane in frame.axis_iter_mut(Axis(2)) {
        let mut hist = [0i64; 256];
        plane.iter().for_each(|&v| hist[v as usize] += 1);
        let last_nonzero = hist.iter().rev().find(|&&c| c != 0).copied().unwrap_or(0);
        let step = (hist.iter().sum::<i64>() - last_nonzero) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut cum = 0i64;
        for i in 0..255 {
            cum += hist[i];
            lut[i + 1] = ((cum + step / 2) / step).clamp(0, 255) as u8;
        }
        plane.mapv_inplace(|v| lut[v as usize]);
    }
}

/// `adjust_sharpness`: a blend with the frame blurred by [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13
/// (rounded to uint8; the one-pixel border keeps the frame's own values). The blur is exact in
/// integers: n / 13 is never halfway between two integers, so float32 convolution rounds the
/// same way whatever its summation order.
fn adjust_sharpness(mut frame: ArrayViewMut3<u8>, factor: f64) {
    let (h, w, c) = frame.dim();
    let out = frame.as_slice_mut().expect("contiguous frame");
    let src = out.to_vec();
    let (r, o) = (factor as f32, (1.0 - factor) as f32);
    let row = w * c;
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let i = y * row + x * c + ch;
                let v = src[i];
                let degenerate = if y == 0 || x == 0 || y == h - 1 || x == w - 1 {
                    v
                } else {
                    let s: u32 = [i - row, i, i + row]
                        .iter()
                        .map(|&m| src[m - c] as u32 + src[m] as u32 + src[m + c] as u32)
                        .sum::<u32>()
                        + 4 * v as u32;
                    ((2 * s + 13) / 26) as u8
                };
                out[i] = blend(v, degenerate as f32, r, o);
            }
        }
    }
}

/// One output pixel of a bilinear grid sample: the four source offsets (`None` outside the
/// frame, PyTorch's zero padding), their weights, and the sampled ones channel (the share of
/// the frame against the fill), the same for every frame.
struct Tap {
    at: [Option<usize>; 4],
    weight: [f32; 4],
    mask: f32,
}

impl Tap {
    /// nw · v_nw, then the other three corners fused in; a corner outside adds zero.
    fn sample(&self, value: impl Fn(usize) -> f32) -> f32 {
        let v = |k: usize| self.at[k].map_or(0.0, &value);
        (1..4).fold(v(0) * self.weight[0], |acc, k| v(k).mul_add(self.weight[k], acc))
    }

    /// [`Tap::sample`] of an RGB pixel of `src` (a corner outside leaves the sum as it is,
    /// which is what adding its zero does: the sums are never −0).
    #[inline(always)]
    fn sample_rgb(&self, src: &[u8]) -> [f32; 3] {
        let mut acc = [0f32; 3];
        if let Some(i) = self.at[0] {
            acc = [0, 1, 2].map(|ch| src[i + ch] as f32 * self.weight[0]);
        }
        for k in 1..4 {
            if let Some(i) = self.at[k] {
                for ch in 0..3 {
                    acc[ch] = (src[i + ch] as f32).mul_add(self.weight[k], acc[ch]);
                }
            }
        }
        acc
    }
}

/// torchvision's tensor `affine` / `rotate` with bilinear interpolation and a fill colour
/// (`_gen_affine_grid`, `_apply_grid_transform`): output pixel centres in centred coordinates
/// mapped through `matrix` (float32, the `bmm` summed in order), normalised by half the frame
/// size, sampled with `grid_sample(align_corners=False, padding_mode="zeros")` as PyTorch's
/// vectorised CPU kernel computes it, a ones channel sampled alike giving the fill's share
/// (`img · mask + (1 − mask) · fill`), rounded half to even. That kernel is compiled with fused
/// multiply-adds: the unnormalisation `(g + 1) · size / 2 − 0.5` and the sum of the four
/// weighted corners are fused here too (without them a few values in 10⁵ differ by one).
fn affine(mut clip: ArrayViewMut4<u8>, matrix: [f64; 6], fill: [f32; 3]) {
    let (t, h, w, c) = clip.dim();
    let theta = matrix.map(|v| v as f32);
    let (half_w, half_h) = ((0.5 * w as f64) as f32, (0.5 * h as f64) as f32);
    // rescaled_theta = theta.T / [0.5 w, 0.5 h]
    let rx = [theta[0] / half_w, theta[1] / half_w, theta[2] / half_w];
    let ry = [theta[3] / half_h, theta[4] / half_h, theta[5] / half_h];
    let (scale_x, scale_y) = (w as f32 / 2.0, h as f32 / 2.0);
    let mut taps = Vec::with_capacity(h * w);
    for oy in 0..h {
        let by = -(h as f32) * 0.5 + 0.5 + oy as f32;
        for ox in 0..w {
            let bx = -(w as f32) * 0.5 + 0.5 + ox as f32;
            let gx = bx * rx[0] + by * rx[1] + rx[2];
            let gy = bx * ry[0] + by * ry[1] + ry[2];
            let x = (gx + 1.0).mul_add(scale_x, -0.5);
            let y = (gy + 1.0).mul_add(scale_y, -0.5);
            let (x0, y0) = (x.floor(), y.floor());
            let (we, n) = (x - x0, y - y0);
            let (e, s) = (1.0 - we, 1.0 - n);
            let inside = |xx: f32, yy: f32| -> Option<usize> {
                (xx >= 0.0 && xx < w as f32 && yy >= 0.0 && yy < h as f32)
                    .then(|| (yy as usize * w + xx as usize) * c)
            };
            let mut tap = Tap {
                at: [inside(x0, y0), inside(x0 + 1.0, y0), inside(x0, y0 + 1.0), inside(x0 + 1.0, y0 + 1.0)],
                weight: [s * e, s * we, n * e, n * we],
                mask: 0.0,
            };
            tap.mask = tap.sample(|_| 1.0);
            taps.push(tap);
        }
    }
    let fill_share: Vec<[f32; 3]> = taps.iter().map(|tap| fill.map(|f| (1.0 - tap.mask) * f)).collect();
    let mut src = vec![0u8; h * w * c];
    for ti in 0..t {
        let mut frame = clip.index_axis_mut(Axis(0), ti);
        let out = frame.as_slice_mut().expect("contiguous frame");
        src.copy_from_slice(out);
        resample_frame_simd(&taps, &fill_share, &src, out);
    }
}

/// One RGB frame through the taps. `f32::mul_add` is a libm call on baseline x86-64 and one
/// instruction where FMA is compiled in, hence the dispatch (the same values either way).
#[inline(always)]
fn resample_frame(taps: &[Tap], fill_share: &[[f32; 3]], src: &[u8], out: &mut [u8]) {
    for ((tap, share), px) in taps.iter().zip(fill_share).zip(out.chunks_exact_mut(3)) {
        let v = tap.sample_rgb(src);
        for ch in 0..3 {
            let blended = v[ch] * tap.mask + share[ch];
            px[ch] = blended.round_ties_even().clamp(0.0, 255.0) as u8;
        }
    }
}

crate::nn::simd::dispatch_simd!(
    resample_frame_simd,
    resample_frame,
    (taps: &[Tap], fill_share: &[[f32; 3]], src: &[u8], out: &mut [u8])
);

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn clip() -> Array4<u8> {
        Array4::from_shape_fn((2, 6, 8, 3), |(t, y, x, c)| ((t * 91 + y * 37 + x * 13 + c * 71) % 256) as u8)
    }

    #[test]
    fn identity_arguments_leave_frames_alone() {
        let fill = [0.5; 3];
        for op in [
            AugmentOp { kind: OpKind::Rotate, arg: 0.0 },
            AugmentOp { kind: OpKind::ShearX, arg: 0.0 },
            AugmentOp { kind: OpKind::TranslateY, arg: 0.0 },
            AugmentOp { kind: OpKind::Posterize, arg: 8.0 },
            AugmentOp { kind: OpKind::AdjustSharpness, arg: 1.0 },
            AugmentOp { kind: OpKind::AdjustBrightness, arg: 1.0 },
        ] {
            let mut a = clip();
            apply_op(a.view_mut(), op, fill).unwrap();
            assert_eq!(a, clip(), "{op:?}");
        }
    }

    #[test]
    fn invert_twice_and_whole_frame_translation_fill() {
        let mut a = clip();
        let inv = AugmentOp { kind: OpKind::Invert, arg: 0.0 };
        apply_op(a.view_mut(), inv, [0.0; 3]).unwrap();
        assert_eq!(a[[0, 1, 2, 0]], 255 - clip()[[0, 1, 2, 0]]);
        apply_op(a.view_mut(), inv, [0.0; 3]).unwrap();
        assert_eq!(a, clip());
        // Translated by the whole width: every pixel is the fill colour.
        let far = AugmentOp { kind: OpKind::TranslateX, arg: 1.0 };
        apply_op(a.view_mut(), far, [10.0, 20.0, 30.4]).unwrap();
        assert!(a.outer_iter().all(|f| f.rows().into_iter().all(|p| p.to_vec() == [10, 20, 30])));
        let bad = AugmentOp { kind: OpKind::Solarize, arg: 1.5 };
        assert!(apply_op(clip().view_mut(), bad, [0.0; 3]).is_err());
        assert!("Brightness".parse::<OpKind>().is_err());
        assert_eq!("ShearY".parse::<OpKind>().unwrap(), OpKind::ShearY);
    }
}
