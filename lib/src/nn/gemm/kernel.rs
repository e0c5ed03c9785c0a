//! The blocked product over packed panels and the AVX-512 micro-kernel, with the epilogue
//! applied while the last K block's tile is in registers (the AVX2 kernel: `kernel_avx2`).

use super::*;

/// The blocked product for output rows `rows` and columns `cols`; with `bf16` the packed panels
/// are rounded to bf16 (a shared A comes rounded), the products accumulated in f32.
///
/// # Safety
/// The CPU must run `isa`; `c` must address the m × n output with leading dimension `ldc`,
/// and no other thread may touch the block (rows × cols) at the same time; `shared_a`, when
/// given, must hold all of A packed as `pack_a_whole` lays it out (from row 0), and `rows.0`
/// then be a multiple of `MR`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn blocked(
    isa: Isa,
    bf16: bool,
    a: MatRef,
    a_cols: Columns,
    b: Rhs,
    cols_map: Columns,
    c: *mut f32,
    ldc: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    accumulate: bool,
    epi: Epilogue,
    shared_a: Option<WholeA>,
) {
    let k = a.cols;
    PACK_B.with_borrow_mut(|pb| {
        PACK_A.with_borrow_mut(|pa| {
            let nc_max = nc();
            let bbuf = pb.get(KC * nc_max);
            // A packed once for all column blocks when there are several and it is small (the
            // early layers of a ResNet: 25 column blocks, A re-packed for each took ~9 % of the
            // product); else one MC × KC block at a time.
            let panel_rows = (rows.1 - rows.0).div_ceil(MR) * MR;
            let whole_a = shared_a.is_some() || ((cols.1 - cols.0) > nc_max && panel_rows * k <= 1 << 20);
            let abuf = pa.get(if shared_a.is_some() {
                0
            } else if whole_a {
                panel_rows * k
            } else {
                KC * MC
            });
            if whole_a && shared_a.is_none() {
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    for ic in (rows.0..rows.1).step_by(MC) {
                        let at = whole_a_at(pc, panel_rows, ic - rows.0, kc);
                        let dst = &mut abuf[at..at + MC.min(rows.1 - ic).div_ceil(MR) * MR * kc];
                        pack_a(&a, &a_cols, ic, MC.min(rows.1 - ic), pc, kc, epi.row_scale, dst);
                        if bf16 {
                            bf16_round_in_place(dst);
                        }
                    }
                }
            }
            let mut tile = [0f32; MR * NR];
            for jc in (cols.0..cols.1).step_by(nc_max) {
                let nc = nc_max.min(cols.1 - jc);
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    let (first, last) = (pc == 0, pc + kc == k);
                    let load = accumulate || !first;
                    match isa {
                        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => pack_b(&b, pc, kc, jc, nc, bbuf),
                        Isa::Avx2 => pack_b_avx2(&b, pc, kc, jc, nc, bbuf),
                    }
                    if bf16 {
                        bf16_round_in_place(&mut bbuf[..nc.div_ceil(NR) * NR * kc]);
                    }
                    for ic in (rows.0..rows.1).step_by(MC) {
                        let mc = MC.min(rows.1 - ic);
                        let a_block = if let Some(shared) = shared_a {
                            // All rows packed, from row 0: a part of the rows reads its own.
                            shared.data.add(whole_a_at(pc, shared.panel_rows, ic, kc))
                        } else if whole_a {
                            abuf.as_ptr().add(whole_a_at(pc, panel_rows, ic - rows.0, kc))
                        } else {
                            pack_a(&a, &a_cols, ic, mc, pc, kc, epi.row_scale, abuf);
                            if bf16 {
                                bf16_round_in_place(&mut abuf[..mc.div_ceil(MR) * MR * kc]);
                            }
                            abuf.as_ptr()
                        };
                        for ir in 0..mc.div_ceil(MR) {
                            let mr = MR.min(mc - ir * MR);
                            let ap = a_block.add(ir * MR * kc);
                            for jr in 0..nc.div_ceil(NR) {
                                let nr = NR.min(nc - jr * NR);
                                let bp = bbuf.as_ptr().add(jr * NR * kc);
                                let row0 = ic + ir * MR;
                                let col0 = jc + jr * NR;
                                let cp = c.add(row0 * ldc + cols_map.c_off(col0));
                                let bias = match (last, epi.row_bias) {
                                    (true, Some(bias)) => bias.as_ptr().add(row0),
                                    _ => std::ptr::null(),
                                };
                                let res = match (last, epi.residual) {
                                    (true, Some(res)) => res.as_ptr().add(row0 * ldc + cols_map.c_off(col0)),
                                    _ => std::ptr::null(),
                                };
                                let relu = last && epi.relu;
                                if load || last {
                                    let res = if last { epi.residual } else { None };
                                    prefetch_block(c, ldc, &cols_map, (row0, col0), (mr, nr), res);
                                }
                                let one_item = cols_map.c_stride == cols_map.per
                                    || col0 / cols_map.per == (col0 + nr - 1) / cols_map.per;
                                if nr == NR && one_item {
                                    match isa {
                                        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                                            by_rows!(mr, kernel(kc, ap, bp, cp, ldc, load, bias, res, relu))
                                        }
                                        Isa::Avx2 => {
                                            kernel_avx2(mr, NR, kc, ap, bp, cp, ldc, load, bias, res, relu)
                                        }
                                    }
                                } else {
                                    // Edge tile: full tile into scratch, then the valid part, a run
                                    // of columns within one item at a time.
                                    let (null, t) = (std::ptr::null(), tile.as_mut_ptr());
                                    match isa {
                                        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                                            kernel::<MR>(kc, ap, bp, t, NR, false, null, null, false)
                                        }
                                        Isa::Avx2 => {
                                            kernel_avx2(MR, nr, kc, ap, bp, t, NR, false, null, null, false)
                                        }
                                    }
                                    let part = TilePart { tile: tile.as_ptr(), rows: mr, cols: nr };
                                    let res = if last { epi.residual } else { None };
                                    store_block(
                                        isa,
                                        part,
                                        c,
                                        ldc,
                                        &cols_map,
                                        (row0, col0),
                                        load,
                                        bias,
                                        res,
                                        relu,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        })
    })
}

/// A scratch tile's part (rows of `NR`) into C at (`at.0`, `at.1`) as the micro-kernel's epilogue
/// would store it (`store_tile_part`), a run of columns within one batch item at a time; `res`
/// laid out as C.
///
/// # Safety
/// The CPU runs `isa`; `c` addresses the m × n output with leading dimension `ldc`, and the
/// part's rows and columns lie inside it (and inside `res`); `bias`, when not null, `rows` floats.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_block(
    isa: Isa,
    part: TilePart,
    c: *mut f32,
    ldc: usize,
    cols_map: &Columns,
    at: (usize, usize),
    load: bool,
    bias: *const f32,
    res: Option<&[f32]>,
    relu: bool,
) {
    if isa != Isa::Avx2 {
        return store_block_act(part, c, ldc, cols_map, at, load, bias, res.map(Res::F32), relu);
    }
    for_runs(&part, ldc, cols_map, at, |run_part, off| {
        let res_at = res.map_or(std::ptr::null(), |r| r.as_ptr().add(off));
        store_tile_part_avx2(run_part, c.add(off), ldc, load, bias, res_at, relu)
    });
}

/// [`store_block`] with AVX-512 into a C of f32 or bf16 (rounded to nearest even), the residual
/// f32 or bf16.
///
/// # Safety
/// As [`store_block`]'s, with AVX-512 F, BW and VL (`has_avx512`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_block_act<O: Act>(
    part: TilePart,
    c: *mut O,
    ldc: usize,
    cols_map: &Columns,
    at: (usize, usize),
    load: bool,
    bias: *const f32,
    res: Option<Res>,
    relu: bool,
) {
    for_runs(&part, ldc, cols_map, at, |run_part, off| match res {
        None => store_tile_part::<O, f32>(run_part, c.add(off), ldc, load, bias, std::ptr::null(), relu),
        Some(Res::F32(r)) => {
            store_tile_part(run_part, c.add(off), ldc, load, bias, r.as_ptr().add(off), relu)
        }
        Some(Res::Bf16(r)) => {
            store_tile_part(run_part, c.add(off), ldc, load, bias, r.as_ptr().add(off), relu)
        }
    });
}

/// Calls `store` with each run of the part's columns that lies in one batch item, and the run's
/// offset in C (laid out by `cols_map` and `ldc`, the part at `at`).
#[inline(always)]
fn for_runs(
    part: &TilePart,
    ldc: usize,
    cols_map: &Columns,
    (row0, col0): (usize, usize),
    mut store: impl FnMut(TilePart, usize),
) {
    let mut j = 0;
    while j < part.cols {
        let col = col0 + j;
        let run = (part.cols - j).min(cols_map.per - col % cols_map.per);
        let off = row0 * ldc + cols_map.c_off(col);
        store(TilePart { tile: part.tile.wrapping_add(j), rows: part.rows, cols: run }, off);
        j += run;
    }
}

/// Asks for the lines of the C block (and of its residual) that the epilogue will store (and
/// read), while the block's product runs: their rows lie `ldc` apart, more streams than the
/// hardware prefetchers follow, and 8 frames' activations miss the caches.
#[inline]
pub(super) fn prefetch_block(
    c: *mut f32,
    ldc: usize,
    cols_map: &Columns,
    (row0, col0): (usize, usize),
    (mr, nr): (usize, usize),
    res: Option<&[f32]>,
) {
    prefetch_rows(c.cast_const(), ldc, cols_map, (row0, col0), (mr, nr));
    if let Some(res) = res {
        prefetch_rows(res.as_ptr(), ldc, cols_map, (row0, col0), (mr, nr));
    }
}

/// [`prefetch_block`]'s lines of one matrix of C's shape, of f32 or bf16 (`act`).
#[inline]
pub(super) fn prefetch_rows<T>(
    m: *const T,
    ldc: usize,
    cols_map: &Columns,
    (row0, col0): (usize, usize),
    (mr, nr): (usize, usize),
) {
    let (first, last) = (cols_map.c_off(col0), cols_map.c_off(col0 + nr - 1));
    for r in row0..row0 + mr {
        for off in [r * ldc + first, r * ldc + last] {
            crate::nn::simd::prefetch(m.wrapping_add(off));
        }
    }
}

/// Part of a scratch tile (rows of `NR`): its first `rows` rows, `cols` ≤ 16·2 columns from
/// `tile` on.
pub(super) struct TilePart {
    pub(super) tile: *const f32,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

/// An edge tile's part into C as the micro-kernel's epilogue would store it: row r =
/// (C's previous values when `load`) + tile row, + (`bias[r]` + the residual row) where either
/// is given, then ReLU when `relu`; masked to `cols` columns. C and the residual are f32 or
/// bf16 (`act`: read widened, C written rounded to nearest even).
///
/// # Safety
/// AVX-512 F, BW and VL available; `c` (and `res` when not null) address `rows` rows of `ldc`
/// with `cols` writable (readable) values each; `bias`, when not null, `rows` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn store_tile_part<O: Act, R: Act>(
    part: TilePart,
    c: *mut O,
    ldc: usize,
    load: bool,
    bias: *const f32,
    res: *const R,
    relu: bool,
) {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    for half in 0..part.cols.div_ceil(16) {
        let n = (part.cols - 16 * half).min(16);
        let m = ((1u32 << n) - 1) as __mmask16;
        for r in 0..part.rows {
            let at = r * ldc + 16 * half;
            let mut v = _mm512_maskz_loadu_ps(m, part.tile.add(r * NR + 16 * half));
            if load {
                v = _mm512_add_ps(O::mask_load(zero, m, c.add(at)), v);
            }
            if !bias.is_null() || !res.is_null() {
                let b = if bias.is_null() { zero } else { _mm512_set1_ps(*bias.add(r)) };
                let extra =
                    if res.is_null() { b } else { _mm512_add_ps(b, R::mask_load(zero, m, res.add(at))) };
                v = _mm512_add_ps(v, extra);
            }
            if relu {
                v = _mm512_max_ps(v, zero);
            }
            O::mask_store(c.add(at), m, v);
        }
    }
}

/// Calls `$kernel::<R>($args)` with R = `$rows` (1..=12): the micro-kernel instance compiled
/// for that many rows, so a short last row panel (M = 8 or 16 in SlowFast's fast pathway) costs
/// its own rows' work, not twelve rows' and a scalar copy.
macro_rules! by_rows {
    ($rows:expr, $kernel:ident $args:tt) => {
        by_rows!(@ $rows, $kernel $args, 1 2 3 4 5 6 7 8 9 10 11 12)
    };
    (@ $rows:expr, $kernel:ident $args:tt, $($r:literal)*) => {
        match $rows {
            $($r => $kernel::<$r> $args,)*
            rows => unreachable!("micro-kernel rows {rows} out of 1..=12"),
        }
    };
}
pub(in crate::nn) use by_rows;

/// The micro-kernel: C tile (R rows × 32) (+)= A panel · B panel over `kc` steps, then the
/// epilogue (`store_rows`). The A panel is always `MR` rows wide; only its first R are read.
///
/// # Safety
/// AVX-512F available; `a` holds `kc·12`, `b` `kc·32` floats; `c` addresses an R × 32 tile
/// with leading dimension `ldc`; `bias`, when not null, R floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel<const R: usize>(
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
    use std::arch::x86_64::*;
    let mut acc = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        fma_rows(a, b, &mut acc);
        a = a.add(MR);
        b = b.add(NR);
    }
    store_rows(acc, c, ldc, NR, load, bias, res, relu);
}

/// One k step of a micro-kernel: R accumulator rows (left and right 16 columns) += the first R
/// values of `a` (broadcast) times the 32 values at `b`.
///
/// # Safety
/// AVX-512F available; `a` holds R floats, `b` 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(in crate::nn) unsafe fn fma_rows<const R: usize>(
    a: *const f32,
    b: *const f32,
    acc: &mut ([std::arch::x86_64::__m512; R], [std::arch::x86_64::__m512; R]),
) {
    use std::arch::x86_64::*;
    let b0 = _mm512_loadu_ps(b);
    let b1 = _mm512_loadu_ps(b.add(16));
    for r in 0..R {
        let av = _mm512_set1_ps(*a.add(r));
        acc.0[r] = _mm512_fmadd_ps(av, b0, acc.0[r]);
        acc.1[r] = _mm512_fmadd_ps(av, b1, acc.1[r]);
    }
}

/// A micro-kernel's epilogue: row r of the tile (first `cols` ≤ 32 columns) = accumulators
/// (+ the previous C when `load`) + `bias[r]` + residual row (laid out as C), then ReLU when
/// `relu`; null pointers for no bias or residual. Columns past `cols` are neither read nor
/// written.
///
/// # Safety
/// AVX-512F available; `c` (and `res` when not null) address R rows of `ldc` with `cols`
/// writable (readable) values each; `bias`, when not null, R floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(in crate::nn) unsafe fn store_rows<const R: usize>(
    // By value: a reference made the accumulators' home a stack array, zeroed by a memset call on
    // every kernel entry (1.5 KB for 12 rows, ~2 % of the kernel's samples).
    acc: ([std::arch::x86_64::__m512; R], [std::arch::x86_64::__m512; R]),
    c: *mut f32,
    ldc: usize,
    cols: usize,
    load: bool,
    bias: *const f32,
    res: *const f32,
    relu: bool,
) {
    use std::arch::x86_64::*;
    let mask = |n: usize| if n >= 16 { 0xffff } else { ((1u32 << n) - 1) as __mmask16 };
    let (mlo, mhi) = (mask(cols), mask(cols.saturating_sub(16)));
    let zero = _mm512_setzero_ps();
    for r in 0..R {
        // wrapping: with `cols` ≤ 16 the right half lies past the tile (masked off).
        let (row_lo, row_hi) = (c.add(r * ldc), c.add(r * ldc).wrapping_add(16));
        let (mut lo, mut hi) = (acc.0[r], acc.1[r]);
        if load {
            lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(mlo, row_lo));
            hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(mhi, row_hi));
        }
        if !bias.is_null() {
            let bv = _mm512_set1_ps(*bias.add(r));
            lo = _mm512_add_ps(lo, bv);
            hi = _mm512_add_ps(hi, bv);
        }
        if !res.is_null() {
            let rrow = res.add(r * ldc);
            lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(mlo, rrow));
            hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(mhi, rrow.wrapping_add(16)));
        }
        if relu {
            lo = _mm512_max_ps(lo, zero);
            hi = _mm512_max_ps(hi, zero);
        }
        _mm512_mask_storeu_ps(row_lo, mlo, lo);
        _mm512_mask_storeu_ps(row_hi, mhi, hi);
    }
}
