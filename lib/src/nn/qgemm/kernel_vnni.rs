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
/// `b`, `b_stride` bytes apart, finished into `outs[p]` (its `cols` count from the first B
/// panel; `rows` 0 for an absent A panel, whose pointer may repeat another's).
///
/// # Safety
/// AVX-512F/BW and VNNI available; each `a[p]` holds `groups · QMR · KG` bytes, each B panel
/// `groups · QNR · KG`; `1 ≤ np ≤ VNNI_NP`; each out's rows × cols lie inside the output and
/// residual buffers, with cols ≤ np · QNR.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn kernel(
    groups: usize,
    a: [*const i8; VNNI_MP],
    b: *const u8,
    b_stride: usize,
    np: usize,
    outs: &[TileOut; VNNI_MP],
) {
    match np {
        1 => tile::<1>(groups, a, b, b_stride, outs),
        2 => tile::<2>(groups, a, b, b_stride, outs),
        _ => tile::<VNNI_NP>(groups, a, b, b_stride, outs),
    }
}

/// `kernel` for `NP` B panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const NP: usize>(
    groups: usize,
    a: [*const i8; VNNI_MP],
    b: *const u8,
    b_stride: usize,
    outs: &[TileOut; VNNI_MP],
) {
    let mut acc = [[[_mm512_setzero_si512(); NP]; QMR]; VNNI_MP];
    for g in 0..groups {
        // SAFETY: group g of every panel lies inside it (the caller's bounds).
        let bv: [__m512i; NP] =
            std::array::from_fn(|j| _mm512_loadu_si512(b.add(j * b_stride + g * QNR * KG) as *const _));
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
    let zero = _mm512_setzero_ps();
    // By reference: moving the accumulator arrays out would copy them through memory.
    for (out, acc) in outs.iter().zip(&acc) {
        for (r, sums) in acc.iter().enumerate().take(out.rows) {
            let (shift, scale, bias) =
                (_mm512_set1_epi32(out.shift[r]), _mm512_set1_ps(out.scale[r]), _mm512_set1_ps(out.bias[r]));
            for (j, &sums) in sums.iter().enumerate() {
                let cols = out.cols.saturating_sub(j * QNR).min(QNR);
                if cols == 0 {
                    break;
                }
                let mask: __mmask16 = if cols == QNR { !0 } else { (1 << cols) - 1 };
                let at = r * out.ldc + j * QNR;
                let mut v = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums, shift));
                v = _mm512_add_ps(_mm512_mul_ps(v, scale), bias);
                if !out.res.is_null() {
                    // SAFETY: the masked columns of row r lie inside the residual.
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, out.res.add(at)));
                }
                if out.relu {
                    v = _mm512_max_ps(v, zero);
                }
                // SAFETY: and inside the output.
                _mm512_mask_storeu_ps(out.c.add(at), mask, v);
            }
        }
    }
}
