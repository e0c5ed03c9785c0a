//! Packing: A into MR-row panels (with BN's row scale), B into NR-column panels — from a
//! matrix or from shifted frame rows (a convolution's input: `pack_conv`).

use super::*;

/// A 64-byte aligned scratch buffer per thread (packing), kept between calls.
pub(super) struct Scratch {
    buf: Vec<f32>,
}

impl Scratch {
    pub(super) const fn new() -> Self {
        Self { buf: Vec::new() }
    }

    pub(super) fn get(&mut self, len: usize) -> &mut [f32] {
        if self.buf.len() < len + 16 {
            self.buf = vec![0.0; len + 16];
        }
        let off = self.buf.as_ptr().align_offset(64).min(15);
        &mut self.buf[off..off + len]
    }
}

thread_local! {
    pub(super) static PACK_A: RefCell<Scratch> = const { RefCell::new(Scratch { buf: Vec::new() }) };
    pub(super) static PACK_B: RefCell<Scratch> = const { RefCell::new(Scratch { buf: Vec::new() }) };
}

/// Packs rows `i0..i0+mc`, columns `p0..p0+kc` of A into `MR`-row panels, k-major inside a panel
/// (`MR` values per k), zero rows past the end; each row times `scale[row]` when given. A's
/// columns are laid out by `a_cols` (`Columns::single` for a plain matrix; batched when K runs
/// over images, as a weight gradient's positions do). Written in order, reading the panel's rows
/// side by side (row by row, the writes at a 48-byte stride took 4 % of a SlowFast forward).
#[allow(clippy::too_many_arguments)]
pub(in crate::nn) fn pack_a(
    a: &MatRef,
    a_cols: &Columns,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
    scale: Option<&[f32]>,
    out: &mut [f32],
) {
    for (panel, dst) in out.chunks_exact_mut(MR * kc).take(mc.div_ceil(MR)).enumerate() {
        let r0 = panel * MR;
        let rows = MR.min(mc - r0);
        let mut base = [0usize; MR];
        let mut s = [0f32; MR];
        for r in 0..rows {
            base[r] = (i0 + r0 + r) * a.rs;
            s[r] = scale.map_or(1.0, |s| s[i0 + r0 + r]);
        }
        if rows < MR {
            dst.fill(0.0);
        }
        let cs = a.cs;
        // Runs of columns inside one batch item (one run for a plain matrix).
        let mut kk = 0;
        while kk < kc {
            let col = p0 + kk;
            let run = (kc - kk).min(a_cols.per - col % a_cols.per);
            let start = a_cols.b_off(col, cs);
            // The run's last value of every row lies inside A; then unchecked reads (a bounds
            // check per value cost more than the copy).
            let last = start + (run - 1) * cs;
            assert!(base[..rows].iter().all(|&b| b + last < a.data.len()), "A block past its buffer");
            let run_dst = &mut dst[kk * MR..(kk + run) * MR];
            #[cfg(target_arch = "x86_64")]
            if cs == 1 && has_avx512() {
                // SAFETY: AVX-512 checked; each row's run lies inside A (asserted above).
                unsafe { pack_a_run_wide(a.data, &base, rows, start, &s, run_dst) };
                kk += run;
                continue;
            }
            if a.rs == 1 {
                // A transposed row-major matrix (attention's values): each column's rows are
                // contiguous, a copy per column.
                for (q, d) in run_dst.chunks_exact_mut(MR).enumerate() {
                    let at = base[0] + start + q * cs;
                    let x = &a.data[at..at + rows];
                    if rows == MR {
                        // A whole panel column: fixed-size, so it compiles to vector moves.
                        let (d, x): (&mut [f32; MR], &[f32; MR]) =
                            (d.try_into().expect("a panel column"), x.try_into().expect("MR rows"));
                        match scale {
                            None => *d = *x,
                            Some(_) => *d = std::array::from_fn(|r| x[r] * s[r]),
                        }
                    } else {
                        // A partial panel: its other rows were zeroed.
                        for ((d, x), s) in d.iter_mut().zip(x).zip(&s) {
                            *d = x * s;
                        }
                    }
                }
                kk += run;
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if cs == 1 && Isa::Avx2.supported() {
                // SAFETY: AVX2 and FMA checked; each row's run lies inside A (asserted above).
                unsafe { pack_a_run_avx2(a.data, &base, rows, start, &s, run_dst) };
                kk += run;
                continue;
            }
            pack_a_run(a.data, &base, rows, start, cs, &s, run_dst);
            kk += run;
        }
    }
}

/// One run of `pack_a`: `dst` (k-major, `MR` values per k) row r, column q = A value at
/// `base[r] + start + q·cs`, times `s[r]`, for the first `rows` rows.
#[inline(always)]
pub(super) fn pack_a_run(
    a: &[f32],
    base: &[usize; MR],
    rows: usize,
    start: usize,
    cs: usize,
    s: &[f32; MR],
    dst: &mut [f32],
) {
    let src = a.as_ptr();
    let run = dst.len() / MR;
    assert!(
        run == 0 || base[..rows].iter().all(|&b| b + start + (run - 1) * cs < a.len()),
        "A run past its buffer"
    );
    for (q, d) in dst.chunks_exact_mut(MR).enumerate() {
        let at = start.wrapping_add(q.wrapping_mul(cs));
        for r in 0..rows {
            // SAFETY: base[r] + at ≤ the run's last value of row r, inside A (asserted above).
            d[r] = unsafe { *src.add(base[r].wrapping_add(at)) } * s[r];
        }
    }
}

/// How far ahead (values) the transposing packers prefetch each row they stream.
pub(super) const PREFETCH_AHEAD: usize = 64;

/// `pack_a_run` for rows contiguous along k (cs = 1), 16 columns at a time: one masked load per
/// row, a 16 × 16 transpose, one masked store of the rows per column (the scalar gather was ~3.5 % of a
/// ResNet training step, mostly the weight gradients' output-gradient panels).
///
/// # Safety
/// AVX-512F available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_a_run_wide(
    a: &[f32],
    base: &[usize; MR],
    rows: usize,
    start: usize,
    s: &[f32; MR],
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    const { assert!(MR <= 16, "a panel's rows fit one transpose") };
    let run = dst.len() / MR;
    assert!(run == 0 || base[..rows].iter().all(|&b| b + start + run <= a.len()), "A run past its buffer");
    let (src, out) = (a.as_ptr(), dst.as_mut_ptr());
    let row_mask = ((1u32 << rows) - 1) as __mmask16;
    let mut q0 = 0;
    while q0 < run {
        let n = (run - q0).min(16);
        let mask = ((1u32 << n) - 1) as __mmask16;
        let mut v = [_mm512_setzero_ps(); 16];
        for r in 0..rows {
            _mm_prefetch::<_MM_HINT_T0>(src.wrapping_add(base[r] + start + q0 + PREFETCH_AHEAD) as *const i8);
            // SAFETY: n values from base[r] + start + q0, inside the run (asserted above).
            let x = _mm512_maskz_loadu_ps(mask, src.add(base[r] + start + q0));
            v[r] = _mm512_mul_ps(x, _mm512_set1_ps(s[r]));
        }
        for (q, col) in transpose16(v).iter().enumerate().take(n) {
            // SAFETY: column q0 + q < run of `dst`, its first `rows` values.
            _mm512_mask_storeu_ps(out.add((q0 + q) * MR), row_mask, *col);
        }
        q0 += 16;
    }
}

/// Packs columns `j0..j0+nc` of a K block (`kc` rows) of B into `NR`-column panels, k-major
/// inside a panel (`NR` values per k), zero columns past the end. Columns go in runs: `run_at(col,
/// left)` says how many columns from `col` on (at most `left`) one `copy(kk, at, dst)` fills
/// (`dst.len()` of them) for row `kk`, and where they are (`at`, decoded from `col` once per
/// block: the divisions cost more than the copy when done per row). Rows are the outer loop so
/// the reads stream along B's rows (a run of columns is contiguous in memory, the next row is far
/// away).
#[inline(always)]
pub(super) fn pack_panels<At: Copy>(
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut [f32],
    run_at: impl Fn(usize, usize) -> (usize, At),
    copy: impl Fn(usize, At, &mut [f32]),
) {
    let panels = nc.div_ceil(NR);
    for panel in 0..panels {
        if NR.min(j0 + nc - (j0 + panel * NR)) < NR {
            out[panel * NR * kc..(panel + 1) * NR * kc].fill(0.0);
        }
    }
    // (offset of the run in its panel's first row, where its columns are, length)
    let runs: Vec<(usize, At, usize)> = panel_runs(j0, nc, run_at)
        .into_iter()
        .map(|(col, at, run)| ((col / NR) * NR * kc + col % NR, at, run))
        .collect();
    for kk in 0..kc {
        for &(offset, at, run) in &runs {
            let start = offset + kk * NR;
            copy(kk, at, &mut out[start..start + run]);
        }
    }
}

/// The runs of columns `j0..j0+nc` (none crossing a panel): (column counted from `j0`, where its
/// values are as `run_at` says, length).
#[inline(always)]
pub(super) fn panel_runs<At: Copy>(
    j0: usize,
    nc: usize,
    run_at: impl Fn(usize, usize) -> (usize, At),
) -> Vec<(usize, At, usize)> {
    let panels = nc.div_ceil(NR);
    let mut runs = Vec::with_capacity(panels * 2);
    for panel in 0..panels {
        let c0 = j0 + panel * NR;
        let cols = NR.min(j0 + nc - c0);
        let mut j = 0;
        while j < cols {
            let (run, at) = run_at(c0 + j, cols - j);
            runs.push((panel * NR + j, at, run));
            j += run;
        }
    }
    runs
}

/// Where a convolution's packed B goes: `pack_panels`' f32 panels (a `[f32]`), or anything else
/// that takes its runs row by row (the AMX path's bf16 tile pairs).
pub(super) trait PanelSink {
    /// Rows `0..kc` of the block, columns `j0..j0+nc`, their runs found by `run_at` and filled
    /// by `copy` (as `pack_panels`).
    fn fill<At: Copy>(
        &mut self,
        kc: usize,
        j0: usize,
        nc: usize,
        run_at: impl Fn(usize, usize) -> (usize, At),
        copy: impl Fn(usize, At, &mut [f32]),
    );
}

impl PanelSink for [f32] {
    #[inline(always)]
    fn fill<At: Copy>(
        &mut self,
        kc: usize,
        j0: usize,
        nc: usize,
        run_at: impl Fn(usize, usize) -> (usize, At),
        copy: impl Fn(usize, At, &mut [f32]),
    ) {
        pack_panels(kc, j0, nc, self, run_at, copy)
    }
}

/// `pack_panels` for a strided matrix: runs of columns inside one batch item, contiguous in B when
/// cs = 1.
#[inline(always)]
pub(super) fn pack_b_mat(
    b: &MatRef,
    cols_map: &Columns,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut [f32],
) {
    let run_at =
        |col: usize, left: usize| (left.min(cols_map.per - col % cols_map.per), cols_map.b_off(col, b.cs));
    pack_panels(kc, j0, nc, out, run_at, |kk, col_off, dst| {
        let base = (p0 + kk) * b.rs + col_off;
        if b.cs == 1 {
            copy_run(dst, &b.data[base..base + dst.len()]);
        } else {
            for (q, v) in dst.iter_mut().enumerate() {
                *v = b.data[base + q * b.cs];
            }
        }
    });
}

/// `pack_b_mat` for `Rhs::ShiftedMat`: a run of columns lies in one batch item, so each of its
/// rows is one run of the item `delta` away, or zeros when that item is outside the clip.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b_shifted(
    b: &MatRef,
    cols: &Columns,
    rows: &FrameRows,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut [f32],
) {
    let run_at = |col: usize, left: usize| {
        (left.min(cols.per - col % cols.per), (cols.b_off(col, 1), (col / cols.per) % rows.segments))
    };
    pack_panels(kc, j0, nc, out, run_at, |kk, (col_off, t), dst| {
        let delta = rows.delta[p0 + kk] as isize;
        let from = t as isize + delta;
        if from < 0 || from >= rows.segments as isize {
            return dst.fill(0.0);
        }
        // Inside the clip, so inside B (items are whole clips).
        let base = ((p0 + kk) * b.rs + col_off).wrapping_add_signed(delta * cols.b_stride as isize);
        copy_run(dst, &b.data[base..base + dst.len()]);
    });
}

/// `dst.copy_from_slice(src)` for a run of at most a panel row, inlined as vector moves: a
/// `memmove` call per run cost more than the copy (whole rows, and the short runs where a
/// panel spans two images: P = 49 or 196 in LCNetV2's 1×1 layers).
#[inline(always)]
pub(super) fn copy_run(dst: &mut [f32], src: &[f32]) {
    assert!(dst.len() == src.len() && dst.len() <= NR, "a run is at most a panel row");
    if let (Ok(d), Ok(s)) = (<&mut [f32; NR]>::try_from(&mut *dst), <&[f32; NR]>::try_from(src)) {
        *d = *s;
        return;
    }
    // Constant-size pieces of 16, 8, 4, 2 and 1 (a loop would be turned back into a memmove call).
    let mut at = 0;
    macro_rules! piece {
        ($n:literal) => {
            if (dst.len() - at) & $n != 0 {
                if let (Ok(d), Ok(s)) = (
                    <&mut [f32; $n]>::try_from(&mut dst[at..at + $n]),
                    <&[f32; $n]>::try_from(&src[at..at + $n]),
                ) {
                    *d = *s;
                }
                at += $n;
            }
        };
    }
    piece!(16);
    piece!(8);
    piece!(4);
    piece!(2);
    if dst.len() > at {
        dst[at] = src[at];
    }
}

/// # Safety
/// AVX-512 F, BW and VL available (`has_avx512`: the packers are inlined here to use their moves).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn pack_b(b: &Rhs, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    match b {
        Rhs::Mat(m, cols) => pack_b_mat(m, cols, p0, kc, j0, nc, out),
        Rhs::ShiftedMat(m, cols, rows) => pack_b_shifted(m, cols, rows, p0, kc, j0, nc, out),
        Rhs::Conv(x, phased) => pack_b_conv(x, *phased, true, p0, kc, j0, nc, out),
        Rhs::ConvT(x) => pack_b_conv_t(x, true, p0, kc, j0, nc, out),
        Rhs::MatBf16(..) | Rhs::ConvBf16(..) => unreachable!("a bf16 B outside the bf16 tile paths"),
    }
}
