//! The AVX2 int8 micro-kernel: a `QMR × QNR` (4 × 16) tile of i32 sums in 8 ymm accumulators.
//! Per k group, two loads of B (16 columns × 4 u8) and one broadcast of each row's 4 s8 weights;
//! `vpmaddubsw` multiplies bytes and adds pairs into i16 (no saturation: activations are 7-bit),
//! `vpmaddwd` by ones adds those pairs into i32. The epilogue runs on the accumulators, in
//! vectors for every kind of output (f32, u8 with its 4 rows interleaved, both) and residual:
//! a network's convolutions mostly write u8, and that epilogue in scalar code took a quarter of
//! the kernel's time (TSN-R50, perf on a Zen 3 EPYC).

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
    let acc = products(groups, a.as_ptr(), b.as_ptr(), g_stride);
    if out.rows == 0 {
        return;
    }
    if out.cs != 1 {
        // SAFETY: the caller's bounds.
        return finish_scalar(&acc, out);
    }
    // One epilogue per kind of output and residual, so that no test is left in its loops.
    match (!out.c.is_null(), !out.cq.is_null(), !out.res.is_null(), !out.res_q.is_null()) {
        (true, false, false, false) => finish::<true, false, false, false>(&acc, out),
        (true, false, true, false) => finish::<true, false, true, false>(&acc, out),
        (true, false, false, true) => finish::<true, false, false, true>(&acc, out),
        (false, true, false, false) => finish::<false, true, false, false>(&acc, out),
        (false, true, true, false) => finish::<false, true, true, false>(&acc, out),
        (false, true, false, true) => finish::<false, true, false, true>(&acc, out),
        (true, true, false, false) => finish::<true, true, false, false>(&acc, out),
        (true, true, true, false) => finish::<true, true, true, false>(&acc, out),
        (true, true, false, true) => finish::<true, true, false, true>(&acc, out),
        _ => finish_scalar(&acc, out),
    }
}

/// The tile's i32 sums, [row][half of the 16 columns]. Not inlined: the epilogue indexes the
/// accumulators, which would make them live in memory through this loop too.
///
/// # Safety
/// AVX2 available; `a` holds `groups · QMR · KG` bytes and `b` its groups `g_stride` apart.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn products(groups: usize, ap: *const i8, bp: *const u8, g_stride: usize) -> [[__m256i; 2]; QMR] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; QMR];
    for g in 0..groups {
        // SAFETY: group g's QNR × KG bytes of B and QMR × KG of A lie inside the panels
        // (the caller's bounds).
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
    acc
}

/// The epilogue of the tile's sums into an f32 output (`F32`), a u8 one (`U8`, its 4 rows
/// interleaved: column t's 4 bytes together, row r in byte r), with an f32 residual (`RES`) or
/// a u8 one (`RESQ`, laid out as the u8 output): `finish_tile`'s operations in its order, 8
/// columns a vector, masked for a partial half. Rows past `out.rows` get 0 in the u8 output,
/// as there.
///
/// # Safety
/// AVX2 and FMA available; `out.cs` is 1 and `out`'s rows × cols lie inside the output and
/// residual buffers.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn finish<const F32: bool, const U8: bool, const RES: bool, const RESQ: bool>(
    acc: &[[__m256i; 2]; QMR],
    out: &TileOut,
) {
    // The fields read once into locals: a store through an output pointer could alias `out`
    // for all the compiler knows.
    let (c, cq, res, res_q, ldc, rows) = (out.c, out.cq, out.res, out.res_q, out.ldc, out.rows.min(QMR));
    // u8 alone with the zero point 0: requantizing clamps below at 0 as the ReLU would.
    let relu = out.relu && (F32 || out.q_zp != 0.0);
    let (q_inv, q_zp) = (_mm256_set1_ps(out.q_inv), _mm256_set1_ps(out.q_zp));
    let (res_scale, res_zp) = (_mm256_set1_ps(out.res_scale), _mm256_set1_epi32(out.res_zp));
    let (zero, top) = (_mm256_setzero_ps(), _mm256_set1_ps(127.0));
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for h in 0..2 {
        let cols = out.cols.saturating_sub(h * 8).min(8);
        if cols == 0 {
            break;
        }
        let full = cols == 8;
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32), lanes);
        // SAFETY (every access below): the first `cols` columns of this half lie inside the
        // buffers (the caller's bounds); a partial half is masked.
        let res_q8 = match RESQ {
            true => {
                let p = res_q.add(h * 8 * KG) as *const i32;
                if full {
                    _mm256_loadu_si256(p as *const __m256i)
                } else {
                    _mm256_maskload_epi32(p, mask)
                }
            }
            false => _mm256_setzero_si256(),
        };
        let mut grouped = _mm256_setzero_si256();
        for (r, acc) in acc.iter().enumerate().take(rows) {
            // (sums − shift) · scale + bias in one fused multiply-add.
            let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[h], _mm256_set1_epi32(out.shift[r])));
            let mut v = _mm256_fmadd_ps(v, _mm256_set1_ps(out.scale[r]), _mm256_set1_ps(out.bias[r]));
            let at = r * ldc + h * 8;
            if RES {
                let p = res.add(at);
                v = _mm256_add_ps(v, if full { _mm256_loadu_ps(p) } else { _mm256_maskload_ps(p, mask) });
            }
            if RESQ {
                // Byte r of each column's 4, alone: one shuffle within the 128-bit lanes
                // (dword i's bytes are 4i.. in its lane); its zero point off, times its scale.
                let pick = _mm256_set1_epi32((0x8080_8000u32 | r as u32) as i32);
                let pick = _mm256_add_epi32(pick, _mm256_setr_epi32(0, 4, 8, 12, 0, 4, 8, 12));
                let q = _mm256_shuffle_epi8(res_q8, pick);
                v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, res_zp)), res_scale, v);
            }
            if relu {
                v = _mm256_max_ps(v, zero);
            }
            if F32 {
                let p = c.add(at);
                if full {
                    _mm256_storeu_ps(p, v)
                } else {
                    _mm256_maskstore_ps(p, mask, v)
                }
            }
            if U8 {
                // `quantize_one`: round(v · q_inv) (ties to even) + q_zp, clamped to 0..=127
                // (max first: a NaN gives 0).
                let v = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
                    v, q_inv,
                ));
                let q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, q_zp), zero), top));
                grouped = _mm256_or_si256(grouped, _mm256_sllv_epi32(q, _mm256_set1_epi32(8 * r as i32)));
            }
        }
        if U8 {
            let p = cq.add(h * 8 * KG) as *mut i32;
            if full {
                _mm256_storeu_si256(p as *mut __m256i, grouped)
            } else {
                _mm256_maskstore_epi32(p, mask, grouped)
            }
        }
    }
}

/// The sums stored as a tile and finished value by value (`finish_tile_fma`): for the outputs
/// `finish` does not cover (a transposed one, both residuals at once).
///
/// # Safety
/// AVX2 and FMA available; as `finish_tile`.
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_scalar(acc: &[[__m256i; 2]; QMR], out: &TileOut) {
    let mut tile = [0i32; QMR * QNR];
    for (r, [lo, hi]) in acc.iter().enumerate() {
        _mm256_storeu_si256(tile.as_mut_ptr().add(r * QNR) as *mut __m256i, *lo);
        _mm256_storeu_si256(tile.as_mut_ptr().add(r * QNR + 8) as *mut __m256i, *hi);
    }
    finish_tile_fma(&tile, out)
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
