//! The AVX-512 VNNI int8 micro-kernel. It reads the same panels as the AVX2 kernel (A in panels
//! of `QMR` rows, B in panels of `QNR` columns) but covers `VNNI_MP` A panels × `VNNI_NP` B
//! panels at once: one zmm accumulator per row and B panel. `vpdpbusd` has a latency of 5 and
//! two ports on Ice Lake and Sapphire Rapids, so 10 sums must be in flight to keep both busy; a
//! single 4 × 16 tile (4 accumulators) ran at a quarter of the ports' rate.
//!
//! A k group of a B panel (16 columns × 4 u8) is one 64-byte vector; `vpdpbusd` multiplies its
//! bytes by a row's 4 broadcast s8 weights and adds each column's 4 products into its i32 lane,
//! exactly (no i16 step). The epilogue is `finish_tile`'s in 512-bit vectors, masked for a
//! partial panel: the same operations in the same order, so the same bits.

use super::{TileOut, KG, QMR, QNR};
use std::arch::x86_64::*;

/// A panels (of `QMR` rows) one call covers.
pub(super) const VNNI_MP: usize = 2;
/// B panels (of `QNR` columns) one call covers: with `VNNI_MP`, 2 × 4 × 3 = 24 accumulators,
/// 3 B vectors and a broadcast: 28 of the 32 zmm registers.
pub(super) const VNNI_NP: usize = 3;

/// The product of A panels `a[p]` (each `groups` k groups) and the `np` B panels that start at
/// `b`, `b_stride` bytes apart (their k groups `g_stride` apart), finished into `outs[p]` (its `cols` count from the first B
/// panel; `rows` 0 for an absent A panel, whose pointer may repeat another's).
///
/// # Safety
/// AVX-512F/BW and VNNI available; each `a[p]` holds `groups · QMR · KG` bytes, each B panel
/// `groups` groups of `QNR · KG`; `1 ≤ np ≤ VNNI_NP`; each out's rows × cols lie inside the output and
/// residual buffers, with cols ≤ np · QNR.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn kernel(
    groups: usize,
    a: [*const i8; VNNI_MP],
    b: *const u8,
    b_stride: usize,
    g_stride: usize,
    np: usize,
    outs: &[TileOut; VNNI_MP],
) {
    match np {
        1 => tile::<1>(groups, a, b, [b_stride, g_stride], outs),
        2 => tile::<2>(groups, a, b, [b_stride, g_stride], outs),
        _ => tile::<VNNI_NP>(groups, a, b, [b_stride, g_stride], outs),
    }
}

/// `kernel` for `NP` B panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const NP: usize>(
    groups: usize,
    a: [*const i8; VNNI_MP],
    b: *const u8,
    strides: [usize; 2],
    outs: &[TileOut; VNNI_MP],
) {
    finish_sums::<NP>(products::<NP>(groups, a, b, strides), outs)
}

/// The epilogue of a tile's sums `acc` ([p][r][j]: row r of A panel p times B panel j) into
/// `outs[p]`: `kernel`'s, for sums another kernel made (the AMX one's).
///
/// # Safety
/// As `kernel`: AVX-512F/BW and VNNI available; each out's rows × cols lie inside the output and
/// residual buffers, with cols ≤ NP · QNR.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn finish_sums<const NP: usize>(
    acc: [[[__m512i; NP]; QMR]; VNNI_MP],
    outs: &[TileOut; VNNI_MP],
) {
    if outs[0].cs != 1 {
        for j in 0..NP {
            let cols = outs[0].cols.saturating_sub(j * QNR).min(QNR);
            if cols == 0 {
                break;
            }
            // A loop, not a closure: a closure does not get `tile`'s features, so `finish` would
            // be called rather than inlined.
            let mut v = [_mm512_setzero_ps(); VNNI_MP * QMR];
            for (i, v) in v.iter_mut().enumerate() {
                let (p, r) = (i / QMR, i % QMR);
                *v = finish(&outs[p], r, acc[p][r][j]);
            }
            store_transposed(outs, j, cols, &v);
        }
        return;
    }
    for (p, out) in outs.iter().enumerate() {
        if out.rows == 0 {
            continue;
        }
        // One epilogue per kind of output and residual, so that no test is left in its loops.
        match (!out.c.is_null(), !out.cq.is_null(), !out.res.is_null(), !out.res_q.is_null()) {
            (true, false, false, false) => finish_panels::<NP, true, false, false, false>(out, &acc[p]),
            (true, false, true, false) => finish_panels::<NP, true, false, true, false>(out, &acc[p]),
            (true, false, false, true) => finish_panels::<NP, true, false, false, true>(out, &acc[p]),
            (false, true, false, false) => finish_panels::<NP, false, true, false, false>(out, &acc[p]),
            (false, true, true, false) => finish_panels::<NP, false, true, true, false>(out, &acc[p]),
            (false, true, false, true) => finish_panels::<NP, false, true, false, true>(out, &acc[p]),
            (true, true, false, false) => finish_panels::<NP, true, true, false, false>(out, &acc[p]),
            (true, true, true, false) => finish_panels::<NP, true, true, true, false>(out, &acc[p]),
            (true, true, false, true) => finish_panels::<NP, true, true, false, true>(out, &acc[p]),
            _ => finish_panels::<NP, false, false, false, false>(out, &acc[p]),
        }
    }
}

/// The epilogue of one A panel's rows over the tile's `NP` B panels (`acc[r][j]`), for an f32
/// output (`F32`), a u8 one (`U8`, its 4 rows interleaved: column t's 4 bytes are lane t's, row r
/// in byte r), an f32 residual (`RES`) or a u8 one (`RESQ`, laid out as the u8 output). The
/// fields are read once into locals: a store through an output pointer could alias `out` for
/// all the compiler knows, which reloaded them after every store.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn finish_panels<
    const NP: usize,
    const F32: bool,
    const U8: bool,
    const RES: bool,
    const RESQ: bool,
>(
    out: &TileOut,
    acc: &[[__m512i; NP]; QMR],
) {
    let (c, cq, res, res_q, ldc, rows) = (out.c, out.cq, out.res, out.res_q, out.ldc, out.rows.min(QMR));
    // u8 alone with the zero point 0: requantizing clamps below at 0 as the ReLU would.
    let relu = out.relu && (F32 || out.q_zp != 0.0);
    let shift: [__m512i; QMR] = std::array::from_fn(|r| _mm512_set1_epi32(out.shift[r]));
    let scale: [__m512; QMR] = std::array::from_fn(|r| _mm512_set1_ps(out.scale[r]));
    let bias: [__m512; QMR] = std::array::from_fn(|r| _mm512_set1_ps(out.bias[r]));
    let (q_inv, q_zp) = (_mm512_set1_ps(out.q_inv), _mm512_set1_ps(out.q_zp));
    let (res_scale, res_zp) = (_mm512_set1_ps(out.res_scale), _mm512_set1_epi32(out.res_zp));
    let (zero, top) = (_mm512_setzero_ps(), _mm512_set1_ps(127.0));
    for j in 0..NP {
        let cols = out.cols.saturating_sub(j * QNR).min(QNR);
        if cols == 0 {
            break;
        }
        let mask = mask_of(cols);
        let mut grouped = _mm512_setzero_si512();
        // SAFETY: the masked columns' 4 bytes each lie inside the u8 residual.
        let res_q = match RESQ {
            true => _mm512_maskz_loadu_epi32(mask, res_q.add(j * QNR * KG) as *const i32),
            false => _mm512_setzero_si512(),
        };
        for r in 0..QMR {
            if r == rows {
                break;
            }
            // (sums − shift) · scale + bias in one fused multiply-add.
            let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][j], shift[r]));
            let mut v = _mm512_fmadd_ps(v, scale[r], bias[r]);
            if RES {
                // SAFETY: the masked columns of row r lie inside the residual.
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, res.add(r * ldc + j * QNR)));
            }
            if RESQ {
                // Byte r of each lane, alone: one shuffle within the 128-bit lanes (dword i's
                // bytes are 4i.. in its lane); its zero point off, times its scale, added.
                let pick: [i32; QNR] =
                    std::array::from_fn(|l| (0x8080_8000u32 | (4 * (l % 4) + r) as u32) as i32);
                let q = _mm512_shuffle_epi8(res_q, _mm512_loadu_si512(pick.as_ptr() as *const _));
                v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, res_zp)), res_scale, v);
            }
            if relu {
                v = _mm512_max_ps(v, zero);
            }
            if F32 {
                // SAFETY: the masked columns of row r lie inside the output.
                _mm512_mask_storeu_ps(c.add(r * ldc + j * QNR), mask, v);
            }
            if U8 {
                // `quantize_one`: round(v · q_inv) (ties to even) + q_zp, clamped to 0..=127
                // (max first: a NaN gives 0).
                let v = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm512_mul_ps(v, q_inv),
                );
                let q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, q_zp), zero), top));
                let q = match r {
                    0 => q,
                    1 => _mm512_slli_epi32::<8>(q),
                    2 => _mm512_slli_epi32::<16>(q),
                    _ => _mm512_slli_epi32::<24>(q),
                };
                grouped = _mm512_or_si512(grouped, q);
            }
        }
        if U8 {
            // SAFETY: the masked columns' 4 bytes each lie inside the u8 output.
            _mm512_mask_storeu_epi32(cq.add(j * QNR * KG) as *mut i32, mask, grouped);
        }
    }
}

/// The lanes of a panel's first `cols` columns.
fn mask_of(cols: usize) -> __mmask16 {
    if cols >= QNR {
        !0
    } else {
        (1 << cols) - 1
    }
}

/// The tile's i32 sums: accumulator [p][r][j] holds row r of A panel p times B panel j. Not
/// inlined: the epilogue indexes the accumulators, which would make them live in memory
/// through this loop too.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn products<const NP: usize>(
    groups: usize,
    a: [*const i8; VNNI_MP],
    b: *const u8,
    [b_stride, g_stride]: [usize; 2],
) -> [[[__m512i; NP]; QMR]; VNNI_MP] {
    let mut acc = [[[_mm512_setzero_si512(); NP]; QMR]; VNNI_MP];
    for g in 0..groups {
        // SAFETY: group g of every panel lies inside it (the caller's bounds).
        let bv: [__m512i; NP] =
            std::array::from_fn(|j| _mm512_loadu_si512(b.add(j * b_stride + g * g_stride) as *const _));
        for (ap, acc) in a.iter().zip(acc.iter_mut()) {
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_epi32((ap.add((g * QMR + r) * KG) as *const i32).read_unaligned());
                for (acc, bv) in acc.iter_mut().zip(&bv) {
                    // u8 operand first (the activations), s8 second (the weights).
                    *acc = _mm512_dpbusd_epi32(*acc, *bv, w);
                }
            }
        }
    }
    acc
}

/// Row r of `out`'s tile from its `sums` for a transposed C (no residual): (sums − shift) ·
/// scale + bias in one fused multiply-add, ReLU. A function with `tile`'s features, so that it
/// is inlined there (a closure is not).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn finish(out: &TileOut, r: usize, sums: __m512i) -> __m512 {
    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums, _mm512_set1_epi32(out.shift[r])));
    let v = _mm512_fmadd_ps(v, _mm512_set1_ps(out.scale[r]), _mm512_set1_ps(out.bias[r]));
    match out.relu {
        true => _mm512_max_ps(v, _mm512_setzero_ps()),
        false => v,
    }
}

/// Stores B panel j of a tile whose C is transposed (columns `cs` apart, rows 1 apart): its
/// values `v` (8 rows × 16 columns, `cols` of them live) turned into 16 runs of 8 in registers
/// (unpacks and shuffles within 128-bit lanes, then one 16-byte store per lane and half), or
/// one value at a time at the tile's edges.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn store_transposed(outs: &[TileOut; VNNI_MP], j: usize, cols: usize, v: &[__m512; 8]) {
    const { assert!(VNNI_MP * QMR == 8, "the transpose is 8 rows wide") };
    let cs = outs[0].cs;
    // Column t of this panel starts at c + (j·16 + t)·cs; row i (p·4 + r) is 1 apart.
    let base = outs[0].c.add(j * QNR * cs);
    if !(outs.iter().all(|o| o.rows == QMR) && cols == QNR) {
        for (i, v) in v.iter().enumerate().filter(|(i, _)| i % QMR < outs[i / QMR].rows) {
            let mut row = [0f32; QNR];
            _mm512_storeu_ps(row.as_mut_ptr(), *v);
            for (t, x) in row.iter().enumerate().take(cols) {
                // SAFETY: row i, column t of the tile lies inside the output.
                *base.add(t * cs + i) = *x;
            }
        }
        return;
    }
    // Within each 128-bit lane L: t[2k], t[2k+1] interleave rows 2k and 2k + 1; u[q] then
    // holds rows 0..4 of column 4L + q, u[4 + q] rows 4..8.
    let t: [__m512; 8] = std::array::from_fn(|i| match i % 2 {
        0 => _mm512_unpacklo_ps(v[i], v[i + 1]),
        _ => _mm512_unpackhi_ps(v[i - 1], v[i]),
    });
    let u: [__m512; 8] = std::array::from_fn(|i| {
        let (h, q) = (i / 4, i % 4);
        let (a, b) = (t[4 * h + q / 2], t[4 * h + 2 + q / 2]);
        match q % 2 {
            0 => _mm512_shuffle_ps::<0x44>(a, b),
            _ => _mm512_shuffle_ps::<0xEE>(a, b),
        }
    });
    macro_rules! lane {
        ($l:literal) => {
            for q in 0..4 {
                let at = base.add((4 * $l + q) * cs);
                // SAFETY: the 8 rows of column 4L + q lie inside the output.
                _mm_storeu_ps(at, _mm512_extractf32x4_ps::<$l>(u[q]));
                _mm_storeu_ps(at.add(4), _mm512_extractf32x4_ps::<$l>(u[4 + q]));
            }
        };
    }
    lane!(0);
    lane!(1);
    lane!(2);
    lane!(3);
}
