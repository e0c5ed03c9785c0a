//! Bilinear resize of uint8 clips with OpenCV's `INTER_LINEAR` sampling geometry (pixel centres:
//! `src = (dst + 0.5) * scale - 0.5`, clamped at the borders), which mmcv's `imresize` uses.
//! Rounding is to nearest in f32; OpenCV's fixed-point path can differ by 1 level.

use ndarray::{Array4, ArrayView4};

struct Taps {
    i0: Vec<usize>,
    i1: Vec<usize>,
    f: Vec<f32>,
}

fn taps(src: usize, dst: usize) -> Taps {
    let scale = src as f64 / dst as f64;
    let mut t = Taps { i0: Vec::with_capacity(dst), i1: Vec::with_capacity(dst), f: Vec::with_capacity(dst) };
    for d in 0..dst {
        let s = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(src - 1);
        let i1 = (i0 + 1).min(src - 1);
        t.i0.push(i0);
        t.i1.push(i1);
        t.f.push((s - i0 as f64).min(1.0) as f32);
    }
    t
}

pub fn resize_bilinear(clip: ArrayView4<u8>, out_w: u32, out_h: u32) -> Array4<u8> {
    let (t, h, w, c) = clip.dim();
    let (ow, oh) = (out_w as usize, out_h as usize);
    if (ow, oh) == (w, h) {
        return clip.to_owned();
    }
    let (tx, ty) = (taps(w, ow), taps(h, oh));
    let src = clip.as_standard_layout();
    let src = src.as_slice().expect("standard layout");
    let mut out = vec![0u8; t * oh * ow * c];
    let mut row0 = vec![0f32; ow * c];
    let mut row1 = vec![0f32; ow * c];
    let hor = |y: usize, frame: usize, row: &mut [f32]| {
        let base = (frame * h + y) * w * c;
        for x in 0..ow {
            let (a, b, f) = (base + tx.i0[x] * c, base + tx.i1[x] * c, tx.f[x]);
            for ch in 0..c {
                let (pa, pb) = (src[a + ch] as f32, src[b + ch] as f32);
                row[x * c + ch] = pa + (pb - pa) * f;
            }
        }
    };
    for frame in 0..t {
        for y in 0..oh {
            hor(ty.i0[y], frame, &mut row0);
            hor(ty.i1[y], frame, &mut row1);
            let f = ty.f[y];
            let dst = &mut out[((frame * oh + y) * ow) * c..((frame * oh + y + 1) * ow) * c];
            for i in 0..ow * c {
                dst[i] = (row0[i] + (row1[i] - row0[i]) * f + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    Array4::from_shape_vec((t, oh, ow, c), out).expect("resize shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscale_by_two_matches_opencv_geometry() {
        // cv2.resize(np.array([[0, 100]], np.uint8), (4, 1), interpolation=cv2.INTER_LINEAR)
        // → [[0, 25, 75, 100]]
        let src = Array4::from_shape_vec((1, 1, 2, 1), vec![0u8, 100]).unwrap();
        let out = resize_bilinear(src.view(), 4, 1);
        assert_eq!(out.into_raw_vec_and_offset().0, vec![0, 25, 75, 100]);
    }

    #[test]
    fn downscale_by_two_averages_pairs() {
        // dst 0 samples src 0.5 → mean of pixels 0 and 1
        let src = Array4::from_shape_vec((1, 1, 4, 1), vec![10u8, 20, 30, 40]).unwrap();
        assert_eq!(resize_bilinear(src.view(), 2, 1).into_raw_vec_and_offset().0, vec![15, 35]);
    }
}
