//! The AVX-512 VNNI int8 micro-kernel: the same `QMR × QNR` (4 × 16) tile and panels as the AVX2
//! kernel, one zmm accumulator per row. A k group of a B panel (16 columns × 4 u8) is one 64-byte
//! vector; `vpdpbusd` multiplies its bytes by a row's 4 broadcast s8 weights and adds each
//! column's 4 products into its i32 lane, exactly (no i16 step). The epilogue is the AVX2
//! kernel's in 512-bit vectors: the same operations in the same order, so the same bits.

use super::{finish_tile, TileOut, KG, QMR, QNR};
use std::arch::x86_64::*;

/// The panels' product over `groups` k groups (as `kernel_portable`), finished into `out` (as
/// `finish_tile`).
///
/// # Safety
/// AVX-512F and AVX-512 VNNI available; `out`'s rows × cols lie inside the output and residual
/// buffers.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn kernel(groups: usize, a: &[i8], b: &[u8], out: &TileOut) {
    assert!(a.len() >= groups * QMR * KG && b.len() >= groups * QNR * KG, "int8 panels too short");
    let mut acc = [_mm512_setzero_si512(); QMR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for g in 0..groups {
        // SAFETY: group g's QNR × KG bytes of B and QMR × KG of A lie inside the panels
        // (asserted above).
        let bv = _mm512_loadu_si512(bp.add(g * QNR * KG) as *const _);
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = (ap.add((g * QMR + r) * KG) as *const i32).read_unaligned();
            // u8 operand first (the activations), s8 second (the weights).
            *acc = _mm512_dpbusd_epi32(*acc, bv, _mm512_set1_epi32(w));
        }
    }
    if out.cols < QNR {
        let mut tile = [0i32; QMR * QNR];
        for (r, sums) in acc.into_iter().enumerate() {
            _mm512_storeu_si512(tile.as_mut_ptr().add(r * QNR) as *mut _, sums);
        }
        // SAFETY: the caller's bounds.
        return finish_tile(&tile, out);
    }
    let zero = _mm512_setzero_ps();
    for (r, sums) in acc.into_iter().enumerate().take(out.rows) {
        let at = r * out.ldc;
        let mut v = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums, _mm512_set1_epi32(out.shift[r])));
        v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(out.scale[r])), _mm512_set1_ps(out.bias[r]));
        if !out.res.is_null() {
            // SAFETY: the tile's 16 columns of row r lie inside the residual.
            v = _mm512_add_ps(v, _mm512_loadu_ps(out.res.add(at)));
        }
        if out.relu {
            v = _mm512_max_ps(v, zero);
        }
        // SAFETY: and inside the output.
        _mm512_storeu_ps(out.c.add(at), v);
    }
}
