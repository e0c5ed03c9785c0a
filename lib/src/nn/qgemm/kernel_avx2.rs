//! The AVX2 int8 micro-kernel: a `QMR × QNR` (4 × 16) tile of i32 sums in 8 ymm accumulators.
//! Per k group, two loads of B (16 columns × 4 u8) and one broadcast of each row's 4 s8 weights;
//! `vpmaddubsw` multiplies bytes and adds pairs into i16 (no saturation: activations are 7-bit),
//! `vpmaddwd` by ones adds those pairs into i32.

use super::{KG, QMR, QNR};
use std::arch::x86_64::*;

/// `tile` = the panels' product over `groups` k groups (as `kernel_portable`).
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn kernel(groups: usize, a: &[i8], b: &[u8], tile: &mut [i32; QMR * QNR]) {
    assert!(a.len() >= groups * QMR * KG && b.len() >= groups * QNR * KG, "int8 panels too short");
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; QMR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for g in 0..groups {
        // SAFETY: group g's QNR × KG bytes of B and QMR × KG of A lie inside the panels
        // (asserted above).
        let b0 = _mm256_loadu_si256(bp.add(g * QNR * KG) as *const __m256i);
        let b1 = _mm256_loadu_si256(bp.add(g * QNR * KG + 32) as *const __m256i);
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = (ap.add((g * QMR + r) * KG) as *const i32).read_unaligned();
            let av = _mm256_set1_epi32(w);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(b0, av), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(b1, av), ones);
            acc[0] = _mm256_add_epi32(acc[0], p0);
            acc[1] = _mm256_add_epi32(acc[1], p1);
        }
    }
    let out = tile.as_mut_ptr();
    for (r, [lo, hi]) in acc.into_iter().enumerate() {
        // SAFETY: row r's QNR values of the tile.
        _mm256_storeu_si256(out.add(r * QNR) as *mut __m256i, lo);
        _mm256_storeu_si256(out.add(r * QNR + 8) as *mut __m256i, hi);
    }
}
