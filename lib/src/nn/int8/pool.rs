//! Max pooling between int8 convolutions (a ResNet stem's): quantizing is monotone, so the max of
//! the quantized values is the quantized max, and the pool runs on the u8 bytes the stem hands
//! over, in channel groups of 4, without an f32 pass.

use crate::nn::qgemm::KG;

/// The max pool of `x`: `planes` planes ([N · C/4] channel groups) of `input` [T, H, W]
/// positions of 4 bytes (each at most 127), windows `kernel` / `stride` / `padding` per axis
/// (padding ignored, as torch's; floor mode). Returns the pooled planes and their extent.
pub(super) fn max_pool_grouped(
    x: &[u8],
    planes: usize,
    input: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> candle_core::Result<(Vec<u8>, [usize; 3])> {
    let mut out_extent = [0; 3];
    for a in 0..3 {
        if kernel[a] == 0
            || stride[a] == 0
            || 2 * padding[a] > kernel[a]
            || input[a] + 2 * padding[a] < kernel[a]
        {
            candle_core::bail!(
                "int8 max pool: window {kernel:?} (stride {stride:?}, padding {padding:?}) on {input:?}"
            )
        }
        out_extent[a] = (input[a] + 2 * padding[a] - kernel[a]) / stride[a] + 1;
    }
    let [t, h, w] = input;
    let [ot, oh, ow] = out_extent;
    let (plane_in, plane_out) = (t * h * w * KG, ot * oh * ow * KG);
    if x.len() != planes * plane_in {
        candle_core::bail!("int8 max pool: {} bytes are not {planes} planes of {input:?}", x.len())
    }
    // The input positions window o covers on an axis (padding clipped away).
    let window = |a: usize, o: usize| {
        let lo = (o * stride[a]).saturating_sub(padding[a]);
        let hi = (o * stride[a] + kernel[a]).saturating_sub(padding[a]).min(input[a]);
        lo..hi
    };
    let mut out = vec![0u8; planes * plane_out];
    let dst = crate::nn::simd::DisjointMut(out.as_mut_ptr());
    crate::nn::simd::par_for(planes, |p| {
        let src = &x[p * plane_in..][..plane_in];
        // SAFETY: plane p of the output, which no other task writes.
        let dst = unsafe { std::slice::from_raw_parts_mut(dst.at(p * plane_out), plane_out) };
        let mut row = vec![0u8; w * KG];
        for (o, dst_row) in dst.chunks_exact_mut(ow * KG).enumerate() {
            let (o_t, o_y) = (o / oh, o % oh);
            // The window's rows, bytewise max (vectors), then the max along each row's window.
            row.fill(0);
            for it in window(0, o_t) {
                for iy in window(1, o_y) {
                    let r = &src[(it * h + iy) * w * KG..][..w * KG];
                    row.iter_mut().zip(r).for_each(|(m, &v)| *m = (*m).max(v));
                }
            }
            // Along the row: the outputs whose windows lie inside it 16 at a time in vectors
            // (a stem pool's 3-wide, stride-2 windows were a scalar loop's 5 % of C2D-R50's
            // forward), the others one at a time.
            let inside =
                |ox: usize| ox * stride[2] >= padding[2] && ox * stride[2] + kernel[2] <= w + padding[2];
            let mut ox = 0;
            while ox < ow {
                #[cfg(target_arch = "x86_64")]
                if ox + 16 <= ow
                    && inside(ox)
                    && inside(ox + 15)
                    && stride[2] <= 2
                    && std::arch::is_x86_feature_detected!("avx512bw")
                {
                    // SAFETY: AVX-512BW available; the 16 windows lie inside the row, and so do
                    // their strided loads (checked in the call).
                    unsafe {
                        max_along_row(
                            &row,
                            &mut dst_row[ox * KG..][..16 * KG],
                            ox * stride[2] - padding[2],
                            kernel[2],
                            stride[2],
                        )
                    };
                    ox += 16;
                    continue;
                }
                let mut m = 0u32;
                for ix in window(2, ox) {
                    m = max_bytes(m, u32::from_ne_bytes(row[ix * KG..][..KG].try_into().expect("4 bytes")));
                }
                dst_row[ox * KG..][..KG].copy_from_slice(&m.to_ne_bytes());
                ox += 1;
            }
        }
    });
    Ok((out, out_extent))
}

/// 16 outputs along a row of 4-byte positions: output l is the bytewise max of positions
/// `start + l · stride + d`, d < `kernel` (stride 1 or 2).
///
/// # Safety
/// AVX-512BW available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn max_along_row(row: &[u8], dst: &mut [u8], start: usize, kernel: usize, stride: usize) {
    use std::arch::x86_64::*;
    assert!(dst.len() >= 16 * KG && (start + 15 * stride + kernel) * KG <= row.len() && stride <= 2);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let positions = row.len() / KG;
    let mut m = _mm512_setzero_si512();
    for d in 0..kernel {
        let at = row.as_ptr().add((start + d) * KG) as *const i32;
        let v = match stride {
            1 => _mm512_loadu_si512(at as *const _),
            _ => {
                // Positions at, at + 2, …: the even lanes of 32 from `at` (the second load
                // masked to what lies inside the row).
                let rest = positions - (start + d) - 16;
                let mask = if rest >= 16 { !0 } else { ((1u32 << rest) - 1) as __mmask16 };
                let hi = _mm512_maskz_loadu_epi32(mask, at.add(16));
                _mm512_permutex2var_epi32(_mm512_loadu_si512(at as *const _), even, hi)
            }
        };
        m = _mm512_max_epu8(m, v);
    }
    _mm512_storeu_si512(dst.as_mut_ptr() as *mut _, m);
}

/// The bytewise max of two words of 7-bit bytes: a byte of `a | 0x80` minus the same byte of b
/// keeps its top bit where a ≥ b and never borrows from the next byte.
#[inline]
fn max_bytes(a: u32, b: u32) -> u32 {
    let ge = (((a | 0x8080_8080).wrapping_sub(b)) & 0x8080_8080) >> 7;
    let keep_a = ge * 0xFF;
    (a & keep_a) | (b & !keep_a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytewise_max_of_7_bit_bytes() {
        for (a, b) in [(0u8, 127u8), (127, 0), (5, 5), (64, 63), (1, 2)] {
            for shift in [0, 8, 16, 24] {
                let (wa, wb) = ((a as u32) << shift | 0x0102_0304 & !(0xFF << shift), (b as u32) << shift);
                let want =
                    u32::from_ne_bytes(std::array::from_fn(|i| wa.to_ne_bytes()[i].max(wb.to_ne_bytes()[i])));
                assert_eq!(max_bytes(wa, wb), want, "{a} {b} at {shift}");
            }
        }
    }

    /// The grouped pool equals the f32 max pool of the values, quantized (a ResNet stem's 3×3,
    /// stride 2, padding 1; a temporal stride; odd sizes; rows pooled in vectors).
    #[test]
    fn pooling_the_bytes_is_quantizing_the_pooled_values() {
        let dev = candle_core::Device::Cpu;
        let mut rng = crate::rng::Rng::new(2);
        let q = crate::nn::qgemm::ActivationQuant { scale: 0.03, zero_point: 20 };
        for (c, input, kernel, stride, padding) in [
            (8, [1, 9, 11], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
            (4, [4, 7, 6], [1, 3, 3], [2, 2, 2], [0, 1, 1]),
            (4, [3, 5, 5], [3, 2, 2], [1, 1, 1], [1, 0, 0]),
            // Rows long enough for 16 outputs at a time: a stem's pool, a temporal one.
            (4, [2, 5, 71], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
            (8, [4, 3, 40], [2, 1, 1], [2, 1, 1], [0, 0, 0]),
            (4, [1, 4, 50], [1, 3, 3], [1, 1, 1], [0, 1, 1]),
        ] {
            let n = 2;
            let vol: usize = input.iter().product();
            let x: Vec<f32> = (0..n * c * vol).map(|_| rng.uniform() as f32 * 4.0 - 1.0).collect();
            let xt =
                candle_core::Tensor::from_vec(x.clone(), (n, c, input[0], input[1], input[2]), &dev).unwrap();
            let want = crate::nn::max_pool3d(&xt, kernel, stride, padding).unwrap();
            let [ot, oh, ow] = std::array::from_fn(|a| want.dim(a + 2).unwrap());
            let want: Vec<u8> = want
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&v| q.quantize(v))
                .collect();
            let mut grouped = vec![0u8; x.len()];
            for ch in 0..n * c {
                for p in 0..vol {
                    grouped[((ch / 4) * vol + p) * 4 + ch % 4] = q.quantize(x[ch * vol + p]);
                }
            }
            let (got, extent) =
                max_pool_grouped(&grouped, n * c / 4, input, kernel, stride, padding).unwrap();
            assert_eq!(extent, [ot, oh, ow]);
            let out_vol = ot * oh * ow;
            for ch in 0..n * c {
                for p in 0..out_vol {
                    assert_eq!(
                        got[((ch / 4) * out_vol + p) * 4 + ch % 4],
                        want[ch * out_vol + p],
                        "{input:?} {ch} {p}"
                    );
                }
            }
        }
    }
}
