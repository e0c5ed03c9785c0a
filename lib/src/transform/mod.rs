//! Spatial transforms on clips of uint8 frames laid out [T, H, W, C] (DESIGN.md §3). The crop
//! box is chosen once per clip, so every frame of a clip gets the same crop (as mmaction2 and
//! PaddleVideo do). Short-side resizing happens earlier, inside ffmpeg (`video::decode_frames`).

mod augment;
mod augment_ops;
mod augmix;
mod color;
mod color_pil;
mod crop;
mod rand_augment;
mod resize;

pub use augment::{
    beta, dirichlet, gamma, normal, sample_level, LevelFn, OpSpec, Sampling, SamplingDataType,
    SamplingHparas, SamplingType, TransformHparas, MAX_LEVEL,
};
pub use augment_ops::{apply_op, AugmentOp, OpKind};
pub use augmix::{augmix, AugMix, AugMixDraw, AUGMIX_OPS, AUGMIX_SAMPLING};
pub(crate) use color::hsv_to_rgb;
pub use color::{color_jitter, grayscale, ColorJitter, JitterDraw, JitterStyle};
pub use color_pil::color_jitter_pil;
pub use crop::{
    center_crop_box, multi_scale_crop_box, random_resized_crop_box, ten_crop_boxes, three_crop_boxes,
    uniform_crop_boxes, CropBox,
};
pub use rand_augment::{rand_augment, RandAugment, RANDAUG_OPS, RANDAUG_SAMPLING};
pub use resize::resize_bilinear;

use crate::rng::Rng;
use anyhow::{bail, Result};
use ndarray::{s, Array4, ArrayView4, Axis};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CropMode {
    Center,
    Three,
    /// PySlowFast's `uniform_crop` (TimeSformer): three crops, other offsets than `Three`.
    Uniform,
    Ten,
    RandomResized,
    MultiScale,
    None,
}

impl std::str::FromStr for CropMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "center" => Self::Center,
            "three" => Self::Three,
            "uniform" => Self::Uniform,
            "ten" => Self::Ten,
            "random-resized" => Self::RandomResized,
            "multiscale" => Self::MultiScale,
            "none" => Self::None,
            _ => bail!("unknown crop {s:?} (center, three, uniform, ten, random-resized, multiscale, none)"),
        })
    }
}

impl CropMode {
    /// Spatial views each clip yields.
    pub fn num_views(self) -> usize {
        match self {
            CropMode::Three | CropMode::Uniform => 3,
            CropMode::Ten => 10,
            _ => 1,
        }
    }
}

pub fn crop(clip: ArrayView4<u8>, b: CropBox) -> Array4<u8> {
    clip.slice(s![.., b.y..b.y + b.h, b.x..b.x + b.w, ..]).to_owned()
}

pub fn flip_horizontal(clip: ArrayView4<u8>) -> Array4<u8> {
    clip.slice(s![.., .., ..;-1, ..]).to_owned()
}

/// `(x - mean) / std` per channel, mean/std on the 0–255 scale as mmaction2 writes them.
pub fn normalize(clip: ArrayView4<u8>, mean: &[f32; 3], std: &[f32; 3]) -> Array4<f32> {
    let mut out = clip.mapv(f32::from);
    for (c, mut plane) in out.axis_iter_mut(Axis(3)).enumerate() {
        let (m, inv) = (mean[c], 1.0 / std[c]);
        plane.mapv_inplace(|v| (v - m) * inv);
    }
    out
}

/// ImageNet statistics on the 0–255 scale (mmaction2's default `img_norm_cfg`).
pub const IMAGENET_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
pub const IMAGENET_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// The views of one clip for a crop mode. Test modes are deterministic; train modes
/// (`random-resized`, `multiscale`, and `flip`) draw from `rng`. Train crops are resized to
/// `crop_px` × `crop_px`, as mmaction2's `Resize(scale=(224, 224), keep_ratio=False)` after them.
pub fn views(
    clip: ArrayView4<u8>,
    mode: CropMode,
    crop_px: u32,
    flip: bool,
    rng: &mut Rng,
) -> Result<Vec<Array4<u8>>> {
    let (h, w) = (clip.shape()[1] as u32, clip.shape()[2] as u32);
    let needs_fit = matches!(mode, CropMode::Center | CropMode::Three | CropMode::Uniform | CropMode::Ten);
    if needs_fit && (crop_px > w || crop_px > h) {
        bail!(
            "crop {crop_px}x{crop_px} is larger than the frames ({w}x{h}); raise --size or lower --crop-size"
        );
    }
    let mut out = match mode {
        CropMode::None => vec![clip.to_owned()],
        CropMode::Center => vec![crop(clip, center_crop_box(w, h, crop_px, crop_px))],
        CropMode::Three => {
            three_crop_boxes(w, h, crop_px, crop_px).into_iter().map(|b| crop(clip, b)).collect()
        }
        CropMode::Uniform => {
            uniform_crop_boxes(w, h, crop_px, crop_px).into_iter().map(|b| crop(clip, b)).collect()
        }
        CropMode::Ten => {
            let boxes = ten_crop_boxes(w, h, crop_px, crop_px);
            let mut v: Vec<Array4<u8>> = boxes.iter().map(|&b| crop(clip, b)).collect();
            let flipped: Vec<Array4<u8>> = v.iter().map(|c| flip_horizontal(c.view())).collect();
            v.extend(flipped);
            v
        }
        CropMode::RandomResized => {
            let b = random_resized_crop_box(w, h, (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0), rng);
            vec![resize_bilinear(crop(clip, b).view(), crop_px, crop_px)]
        }
        CropMode::MultiScale => {
            let b = multi_scale_crop_box(w, h, crop_px, &[1.0, 0.875, 0.75, 0.66], rng);
            vec![resize_bilinear(crop(clip, b).view(), crop_px, crop_px)]
        }
    };
    // mmaction2 Flip(flip_ratio=0.5): one draw per clip.
    if flip && rng.chance(0.5) {
        out = out.iter().map(|v| flip_horizontal(v.view())).collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn ramp(t: usize, h: usize, w: usize) -> Array4<u8> {
        Array4::from_shape_fn((t, h, w, 3), |(ti, y, x, c)| ((ti * 7 + y * 3 + x + c * 50) % 256) as u8)
    }

    #[test]
    fn center_crop_takes_the_middle() {
        let clip = ramp(2, 6, 10);
        let v = views(clip.view(), CropMode::Center, 4, false, &mut Rng::new(0)).unwrap();
        assert_eq!(v[0].shape(), &[2, 4, 4, 3]);
        // mmaction2 CenterCrop: left = (10 - 4) // 2 = 3, top = (6 - 4) // 2 = 1
        assert_eq!(v[0][[1, 0, 0, 2]], clip[[1, 1, 3, 2]]);
    }

    #[test]
    fn ten_crop_is_five_boxes_then_their_mirrors() {
        let clip = ramp(1, 8, 12);
        let v = views(clip.view(), CropMode::Ten, 4, false, &mut Rng::new(0)).unwrap();
        assert_eq!(v.len(), 10);
        for i in 0..5 {
            assert_eq!(v[i + 5], flip_horizontal(v[i].view()));
        }
        // first box is the top-left corner
        assert_eq!(v[0][[0, 0, 0, 0]], clip[[0, 0, 0, 0]]);
    }

    #[test]
    fn oversized_crop_is_a_clear_error() {
        let clip = ramp(1, 8, 12);
        let err = views(clip.view(), CropMode::Center, 10, false, &mut Rng::new(0)).unwrap_err();
        assert!(err.to_string().contains("larger than the frames (12x8)"), "{err}");
    }

    #[test]
    fn train_crops_are_seeded_and_sized() {
        let clip = ramp(3, 40, 60);
        for mode in [CropMode::RandomResized, CropMode::MultiScale] {
            let a = views(clip.view(), mode, 16, true, &mut Rng::new(11)).unwrap();
            let b = views(clip.view(), mode, 16, true, &mut Rng::new(11)).unwrap();
            assert_eq!(a, b);
            assert_eq!(a[0].shape(), &[3, 16, 16, 3]);
        }
    }

    #[test]
    fn normalize_uses_pixel_scale_statistics() {
        let clip = Array4::from_elem((1, 1, 1, 3), 128u8);
        let n = normalize(clip.view(), &IMAGENET_MEAN, &IMAGENET_STD);
        assert!((n[[0, 0, 0, 0]] - (128.0 - 123.675) / 58.395).abs() < 1e-6);
    }
}
