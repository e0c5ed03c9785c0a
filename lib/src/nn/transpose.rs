//! Matrix transposes: an 8 × 8 in-register transpose of AVX vectors (for packers) and a whole
//! row-major transpose built on it, with a scalar path for other CPUs and the edges.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows `r[0..8]` (8 values each) to columns: lane j of output i is lane i of input j.
///
/// # Safety
/// AVX available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(super) unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves exchanged.
    let t: [__m256; 8] = std::array::from_fn(|i| match i % 2 {
        0 => _mm256_unpacklo_ps(r[i], r[i + 1]),
        _ => _mm256_unpackhi_ps(r[i - 1], r[i]),
    });
    let s = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    std::array::from_fn(|i| match i < 4 {
        true => _mm256_permute2f128_ps::<0x20>(s[i], s[i + 4]),
        false => _mm256_permute2f128_ps::<0x31>(s[i - 4], s[i]),
    })
}

/// `dst` [cols, rows] = `src` [rows, cols]ᵀ.
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "transpose: buffers too small");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX checked; the buffers hold rows · cols values (asserted).
        unsafe { transpose_avx(src, rows, cols, dst) };
        return;
    }
    transpose_block(src, rows, cols, dst, (0, rows), (0, cols));
}

/// The part rows r0..r1 × columns c0..c1 of `transpose`, in 16 × 16 blocks so that reads and
/// writes both stay in cache lines.
fn transpose_block(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    r: (usize, usize),
    c: (usize, usize),
) {
    const B: usize = 16;
    for r0 in (r.0..r.1).step_by(B) {
        for c0 in (c.0..c.1).step_by(B) {
            for cc in c0..(c0 + B).min(c.1) {
                for rr in r0..(r0 + B).min(r.1) {
                    dst[cc * rows + rr] = src[rr * cols + cc];
                }
            }
        }
    }
}

/// `transpose` in 8 × 8 register blocks, the edges (rows or columns past a multiple of 8) by
/// `transpose_block`.
///
/// # Safety
/// AVX available; `src` and `dst` hold `rows · cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_avx(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for r0 in (0..r8).step_by(8) {
        for c0 in (0..c8).step_by(8) {
            // SAFETY: rows r0..r0 + 8 ≤ rows, columns c0..c0 + 8 ≤ cols: inside both buffers.
            let v: [__m256; 8] =
                std::array::from_fn(|i| unsafe { _mm256_loadu_ps(s.add((r0 + i) * cols + c0)) });
            for (j, col) in transpose8(v).into_iter().enumerate() {
                _mm256_storeu_ps(d.add((c0 + j) * rows + r0), col);
            }
        }
    }
    transpose_block(src, rows, cols, dst, (0, r8), (c8, cols));
    transpose_block(src, rows, cols, dst, (r8, rows), (0, cols));
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_moves_every_value_for_every_edge() {
        for (rows, cols) in [(1, 1), (8, 8), (13, 21), (16, 7), (64, 197), (3, 40)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            super::transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows}×{cols} at {r}, {c}");
                }
            }
        }
    }
}
