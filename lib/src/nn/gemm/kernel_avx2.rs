//! The micro-kernel for CPUs with AVX2 + FMA but not AVX-512: the AVX-512 kernel's 12×32 packed
//! panels, computed as four 6×16 sub-tiles. A sub-tile keeps 12 ymm accumulators, two B vectors
//! and one broadcast A value in 15 of the 16 registers (the classic Haswell-class shape: two
//! loads and six broadcasts feed twelve FMAs per k step). Packing, implicit im2col and the fused
//! epilogue are the blocked product's, shared with the AVX-512 path.

use super::*;
use std::arch::x86_64::*;

/// Rows and columns of a sub-tile.
const SUB_ROWS: usize = 6;
const SUB_COLS: usize = 16;

/// C tile (`rows` ≤ 12 × 32) (+)= A panel · B panel over `kc` steps, then the epilogue, as the
/// AVX-512 `kernel` computes it.
///
/// # Safety
/// AVX2 and FMA available; `a` holds `kc·12`, `b` `kc·32` floats; `c` (and `res` when not null)
/// address a `rows` × 32 tile with leading dimension `ldc`; `bias`, when not null, `rows` floats.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel_avx2(
    rows: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    load: bool,
    bias: *const f32,
    res: *const f32,
    relu: bool,
) {
    for r0 in (0..rows.min(MR)).step_by(SUB_ROWS) {
        for c0 in (0..NR).step_by(SUB_COLS) {
            let out = SubTile {
                c: c.add(r0 * ldc + c0),
                ldc,
                load,
                bias: if bias.is_null() { bias } else { bias.add(r0) },
                res: if res.is_null() { res } else { res.add(r0 * ldc + c0) },
                relu,
            };
            let (a, b) = (a.add(r0), b.add(c0));
            match SUB_ROWS.min(rows - r0) {
                1 => sub_tile::<1>(kc, a, b, out),
                2 => sub_tile::<2>(kc, a, b, out),
                3 => sub_tile::<3>(kc, a, b, out),
                4 => sub_tile::<4>(kc, a, b, out),
                5 => sub_tile::<5>(kc, a, b, out),
                _ => sub_tile::<6>(kc, a, b, out),
            }
        }
    }
}

/// Where a sub-tile goes and what its epilogue adds (see `store_rows`).
#[derive(Clone, Copy)]
struct SubTile {
    c: *mut f32,
    ldc: usize,
    load: bool,
    bias: *const f32,
    res: *const f32,
    relu: bool,
}

/// R rows × 16 columns: `a` steps by the panel's `MR` values per k, `b` by `NR`.
///
/// # Safety
/// As `kernel_avx2`, for the sub-tile's rows and columns.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn sub_tile<const R: usize>(kc: usize, a: *const f32, b: *const f32, out: SubTile) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(r));
            acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let zero = _mm256_setzero_ps();
    for (r, [mut lo, mut hi]) in acc.into_iter().enumerate() {
        let row = out.c.add(r * out.ldc);
        if out.load {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(row));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(row.add(8)));
        }
        if !out.bias.is_null() {
            let bv = _mm256_set1_ps(*out.bias.add(r));
            lo = _mm256_add_ps(lo, bv);
            hi = _mm256_add_ps(hi, bv);
        }
        if !out.res.is_null() {
            let rrow = out.res.add(r * out.ldc);
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(rrow));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(rrow.add(8)));
        }
        if out.relu {
            lo = _mm256_max_ps(lo, zero);
            hi = _mm256_max_ps(hi, zero);
        }
        _mm256_storeu_ps(row, lo);
        _mm256_storeu_ps(row.add(8), hi);
    }
}

/// `store_tile_part` without AVX-512: an edge tile's part into C, value by value, in the
/// sub-tile epilogue's order (previous C, bias, residual, ReLU).
///
/// # Safety
/// As `store_tile_part`, without the AVX-512 requirement.
pub(super) unsafe fn store_tile_part_avx2(
    part: TilePart,
    c: *mut f32,
    ldc: usize,
    load: bool,
    bias: *const f32,
    res: *const f32,
    relu: bool,
) {
    for r in 0..part.rows {
        for j in 0..part.cols {
            let at = r * ldc + j;
            let mut v = *part.tile.add(r * NR + j);
            if load {
                v += *c.add(at);
            }
            if !bias.is_null() {
                v += *bias.add(r);
            }
            if !res.is_null() {
                v += *res.add(at);
            }
            *c.add(at) = if relu { v.max(0.0) } else { v };
        }
    }
}

/// # Safety
/// AVX2 and FMA available (the packers are inlined here to use its moves); `b`'s views were
/// bounds-checked by the product's entry point.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_b_avx2(b: &Rhs, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    match b {
        Rhs::Mat(m, cols) => pack_b_mat(m, cols, p0, kc, j0, nc, out),
        Rhs::ShiftedMat(m, cols, rows) => pack_b_shifted(m, cols, rows, p0, kc, j0, nc, out),
        Rhs::Conv(x, phased) => pack_b_conv(x, *phased, false, p0, kc, j0, nc, out),
        Rhs::ConvT(x) => pack_b_conv_t(x, false, p0, kc, j0, nc, out),
    }
}
