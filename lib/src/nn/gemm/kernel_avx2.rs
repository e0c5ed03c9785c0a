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
/// AVX-512 `kernel` computes it; only the first 16 columns where `cols` ≤ 16.
///
/// # Safety
/// AVX2 and FMA available; `a` holds `kc·12`, `b` `kc·32` floats; `c` (and `res` when not null)
/// address a `rows` × 32 tile with leading dimension `ldc`; `bias`, when not null, `rows` floats.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel_avx2(
    rows: usize,
    cols: usize,
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
    // Column halves outer: both row halves then read the same 16 of B's 32 values per k (half
    // its lines, 16 KB at KC 256), which stay in a 32 KB L1 beside A's panel (Zen 3: TSN-R50,
    // TSM-R50 and Slow-R50 f32 forwards 2–5 % less CPU than rows outer, 6–8 alternating rounds).
    // An edge tile's unused right half is not computed (14² positions: 4 of 32 columns).
    for c0 in (0..cols.min(NR)).step_by(SUB_COLS) {
        for r0 in (0..rows.min(MR)).step_by(SUB_ROWS) {
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
        Rhs::MatBf16(..) | Rhs::ConvBf16(..) => unreachable!("a bf16 B outside the bf16 tile paths"),
    }
}

/// `pack_a_run` for rows contiguous along k (cs = 1), 8 columns at a time: one load per row, an
/// 8 × 8 transpose of rows 0–7 and a 4 × 8 one of rows 8–11; the last columns by `pack_a_run`.
/// (Attention's keys, packed once per group, were ~12 % of TimeSformer's spatial attention
/// through the scalar gather.)
///
/// # Safety
/// AVX2 and FMA available.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_a_run_avx2(
    a: &[f32],
    base: &[usize; MR],
    rows: usize,
    start: usize,
    s: &[f32; MR],
    dst: &mut [f32],
) {
    const { assert!(MR == 12, "a panel is one 8 × 8 and one 4 × 8 transpose") };
    let run = dst.len() / MR;
    assert!(run == 0 || base[..rows].iter().all(|&b| b + start + run <= a.len()), "A run past its buffer");
    let (src, out) = (a.as_ptr(), dst.as_mut_ptr());
    let whole = run / 8 * 8;
    for q0 in (0..whole).step_by(8) {
        let v: [__m256; MR] = std::array::from_fn(|r| match r < rows {
            // SAFETY: 8 values from base[r] + start + q0, inside the run (asserted above).
            true => unsafe {
                _mm256_mul_ps(_mm256_loadu_ps(src.add(base[r] + start + q0)), _mm256_set1_ps(s[r]))
            },
            false => _mm256_setzero_ps(),
        });
        let low = crate::nn::transpose::transpose8(std::array::from_fn(|r| v[r]));
        // Rows 8–11: four-value columns, j and j + 4 in the two halves of one vector.
        let (t0, t1) = (_mm256_unpacklo_ps(v[8], v[9]), _mm256_unpackhi_ps(v[8], v[9]));
        let (t2, t3) = (_mm256_unpacklo_ps(v[10], v[11]), _mm256_unpackhi_ps(v[10], v[11]));
        let high = [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ];
        for (j, col) in low.into_iter().enumerate() {
            let h = match j < 4 {
                true => _mm256_castps256_ps128(high[j]),
                false => _mm256_extractf128_ps::<1>(high[j - 4]),
            };
            // SAFETY: column q0 + j < run of `dst`, its MR values.
            let o = out.add((q0 + j) * MR);
            _mm256_storeu_ps(o, col);
            _mm_storeu_ps(o.add(8), h);
        }
    }
    pack_a_run(a, base, rows, start + whole, 1, s, &mut dst[whole * MR..]);
}
