//! The AVX2 int8 micro-kernel: a `QMR × QNR` (4 × 16) tile of i32 sums in 8 ymm accumulators.
//! Per k group, two loads of B (16 columns × 4 u8) and one broadcast of each row's 4 s8 weights;
//! `vpmaddubsw` multiplies bytes and adds pairs into i16 (no saturation: activations are 7-bit),
//! `vpmaddwd` by ones adds those pairs into i32. The epilogue runs on the accumulators.

use super::{finish_tile_body, TileOut, KG, QMR, QNR};
use std::arch::x86_64::*;

/// The panels' product over `groups` k groups (B's `g_stride` bytes apart; as
/// `kernel_portable`), finished into `out` (as `finish_tile`: the same operations in the same
/// order, so the same bits).
///
/// # Safety
/// AVX2 available; `out`'s rows × cols lie inside the output and residual buffers.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn kernel(groups: usize, a: &[i8], b: &[u8], g_stride: usize, out: &TileOut) {
    assert!(
        a.len() >= groups * QMR * KG && (groups == 0 || b.len() >= (groups - 1) * g_stride + QNR * KG),
        "int8 panels too short"
    );
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; QMR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for g in 0..groups {
        // SAFETY: group g's QNR × KG bytes of B and QMR × KG of A lie inside the panels
        // (asserted above).
        let b0 = _mm256_loadu_si256(bp.add(g * g_stride) as *const __m256i);
        let b1 = _mm256_loadu_si256(bp.add(g * g_stride + 32) as *const __m256i);
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = (ap.add((g * QMR + r) * KG) as *const i32).read_unaligned();
            let av = _mm256_set1_epi32(w);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(b0, av), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(b1, av), ones);
            acc[0] = _mm256_add_epi32(acc[0], p0);
            acc[1] = _mm256_add_epi32(acc[1], p1);
        }
    }
    if out.cols < QNR || out.cs != 1 || !out.cq.is_null() || !out.res_q.is_null() {
        let mut tile = [0i32; QMR * QNR];
        for (r, [lo, hi]) in acc.into_iter().enumerate() {
            _mm256_storeu_si256(tile.as_mut_ptr().add(r * QNR) as *mut __m256i, lo);
            _mm256_storeu_si256(tile.as_mut_ptr().add(r * QNR + 8) as *mut __m256i, hi);
        }
        // SAFETY: the caller's bounds.
        return finish_tile_fma(&tile, out);
    }
    let zero = _mm256_setzero_ps();
    for (r, halves) in acc.into_iter().enumerate().take(out.rows) {
        let (shift, scale, bias) =
            (_mm256_set1_epi32(out.shift[r]), _mm256_set1_ps(out.scale[r]), _mm256_set1_ps(out.bias[r]));
        for (h, sums) in halves.into_iter().enumerate() {
            let at = r * out.ldc + h * 8;
            let mut v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sums, shift)), scale, bias);
            if !out.res.is_null() {
                // SAFETY: the tile's 16 columns of row r lie inside the residual.
                v = _mm256_add_ps(v, _mm256_loadu_ps(out.res.add(at)));
            }
            if out.relu {
                v = _mm256_max_ps(v, zero);
            }
            // SAFETY: and inside the output.
            _mm256_storeu_ps(out.c.add(at), v);
        }
    }
}

/// `finish_tile` with its multiply-adds in FMA instructions (the portable build calls libm's
/// `fmaf`, which rounds the same).
///
/// # Safety
/// AVX2 and FMA available; as `finish_tile`.
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_tile_fma(tile: &[i32; QMR * QNR], out: &TileOut) {
    finish_tile_body(tile, out)
}

/// `quantize_run_body`: out[i] = clamp(round_ties_even(x[i] · inv) + zp, 0, 127), 32 at a time
/// (a NaN gives 0, as the scalar cast).
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize(x: &[f32], inv: f32, zp: f32, out: &mut [u8]) {
    let n = x.len().min(out.len());
    let (vinv, vzp, lo, hi) =
        (_mm256_set1_ps(inv), _mm256_set1_ps(zp), _mm256_setzero_ps(), _mm256_set1_ps(127.0));
    // packs work within 128-bit lanes: this puts the 8 dwords back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let step = |p: *const f32| {
        let v = _mm256_mul_ps(_mm256_loadu_ps(p), vinv);
        let v = _mm256_add_ps(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v), vzp);
        // max first: a NaN becomes 0.
        _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi))
    };
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: x[i..i + 32] and out[i..i + 32] lie inside the slices.
        let p = x.as_ptr().add(i);
        let (a, b, c, d) = (step(p), step(p.add(8)), step(p.add(16)), step(p.add(24)));
        let bytes = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        _mm256_storeu_si256(
            out.as_mut_ptr().add(i) as *mut __m256i,
            _mm256_permutevar8x32_epi32(bytes, order),
        );
        i += 32;
    }
    super::quantize_run_body(&x[i..n], inv, zp, &mut out[i..n]);
}
