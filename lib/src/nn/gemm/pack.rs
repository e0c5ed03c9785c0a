//! Packing: A into MR-row panels (with BN's row scale), B into NR-column panels — from a
//! matrix, from shifted frame rows, or read from a convolution's input while packing (implicit
//! im2col, and its transpose for weight gradients).

use super::*;

/// A 64-byte aligned scratch buffer per thread (packing), kept between calls.
pub(super) struct Scratch {
    buf: Vec<f32>,
}

impl Scratch {
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
/// AVX-512F must be available (the packers are inlined here to use its moves).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_b(b: &Rhs, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    match b {
        Rhs::Mat(m, cols) => pack_b_mat(m, cols, p0, kc, j0, nc, out),
        Rhs::ShiftedMat(m, cols, rows) => pack_b_shifted(m, cols, rows, p0, kc, j0, nc, out),
        Rhs::Conv(x, phased) => pack_b_conv(x, *phased, true, p0, kc, j0, nc, out),
        Rhs::ConvT(x) => pack_b_conv_t(x, true, p0, kc, j0, nc, out),
    }
}

/// Each input row of `x` ([N, C, T, H, W]) as its `s` = stride-along-w phases one after the
/// other, phase φ holding columns φ, φ + s, … and zero-filled to ⌈W / s⌉: a tap of a w-strided
/// convolution then reads a contiguous run of one phase (vector moves instead of a strided
/// gather, which took most of the packing of strided stems).
pub(super) fn split_w_phases(x: &[f32], g: &crate::nn::vol2col::Geometry3d) -> Vec<f32> {
    let (iw, s) = (g.input[2], g.stride[2]);
    let q = iw.div_ceil(s);
    let rows = g.n * g.c * g.input[0] * g.input[1];
    let mut out = crate::nn::vol2col::zeros_par(rows * s * q);
    crate::nn::vol2col::par_planes(&mut out, s * q, |row, dst| {
        let src = &x[row * iw..][..iw];
        if s == 2 {
            let (even, odd) = dst.split_at_mut(q);
            if iw % 2 == 1 {
                even[iw / 2] = src[iw - 1];
            }
            return crate::nn::simd::deinterleave(src, even, odd);
        }
        for (phase, part) in dst.chunks_exact_mut(q).enumerate() {
            for (d, v) in part.iter_mut().zip(src[phase.min(iw)..].iter().step_by(s)) {
                *d = *v;
            }
        }
    });
    out
}

/// `pack_panels` for a convolution's implicit column matrix: a run of output columns along one
/// output row (same image, t, h) reads, per tap row, a strided run of one input row (contiguous
/// when `phased`: x laid out by `split_w_phases`). `wide`: with AVX-512's masked moves (callers
/// pass a constant, true only inside AVX-512 code).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b_conv(
    x: &ConvRhs,
    phased: bool,
    wide: bool,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut (impl PanelSink + ?Sized),
) {
    let g = &x.g;
    let [ot, oh, ow] = x.out;
    let p = ot * oh * ow;
    let [it, ih, iw_input] = g.input;
    let [kt, kh, kw] = g.kernel;
    let taps = kt * kh * kw;
    let stride_w = g.stride[2];
    // A phased row: `stride_w` phases of `iw` columns each, read at stride 1.
    let (iw, pitch, sw) = if phased {
        let q = iw_input.div_ceil(stride_w);
        (q, stride_w * q, 1isize)
    } else {
        (iw_input, iw_input, stride_w as isize)
    };
    let vol = it * ih * pitch;
    let (dlw, pw) = (g.dilation[2] as isize, g.pad[2] as isize);
    // Taps that only move in t (1×1 in space, stride 1, no spatial padding: the temporal convs of
    // Slow and SlowFast) read whole (h, w) planes: runs then span a plane, not one short row.
    let plane_runs = !phased
        && kh == 1
        && kw == 1
        && g.stride[1] == 1
        && g.stride[2] == 1
        && g.pad[1] == 0
        && g.pad[2] == 0;
    let (ih, iw, pitch) = if plane_runs { (1, ih * iw, ih * iw) } else { (ih, iw, pitch) };
    // Per row of the block: the input plane offset and the tap's (t, h, w) offsets, decoded once.
    let mut rows = [(0usize, 0isize, 0isize, 0isize); KC];
    for (kk, r) in rows.iter_mut().enumerate().take(kc) {
        let (c, tap) = ((p0 + kk) / taps, (p0 + kk) % taps);
        let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
        // The tap's w offset, or its phase (as a plane offset) and its offset inside the phase.
        let dw_off = dw as isize * dlw - pw;
        let (plane, dw_off) = if phased {
            let s = stride_w as isize;
            (c * vol + dw_off.rem_euclid(s) as usize * iw, dw_off.div_euclid(s))
        } else {
            (c * vol, dw_off)
        };
        *r = (
            plane,
            (dt * g.dilation[0]) as isize - g.pad[0] as isize,
            (dh * g.dilation[1]) as isize - g.pad[1] as isize,
            dw_off,
        );
    }
    // A run: its image's offset in x and the input (t, h, w) its first column's window starts at
    // (before the tap's offset).
    let run_at = |col: usize, left: usize| {
        let (n, pos) = (col / p, col % p);
        let (t, rest) = (pos / (oh * ow), pos % (oh * ow));
        if plane_runs {
            return (
                left.min(oh * ow - rest),
                (n * g.c * vol, ((t * g.stride[0]) as isize, 0, rest as isize)),
            );
        }
        let (h, w0) = (rest / ow, rest % ow);
        let origin = ((t * g.stride[0]) as isize, (h * g.stride[1]) as isize, w0 as isize * sw);
        (left.min(ow - w0), (n * g.c * vol, origin))
    };
    out.fill(kc, j0, nc, run_at, |kk, (image, (t0, h0, w0)), d| {
        let (plane, dt, dh, dw) = rows[kk];
        let (ti, hi) = (t0 + dt, h0 + dh);
        if ti < 0 || ti >= it as isize || hi < 0 || hi >= ih as isize {
            // SAFETY: `wide` only where AVX-512 is available; no lane is read.
            #[cfg(target_arch = "x86_64")]
            if wide {
                return unsafe { masked_run(d, std::ptr::null(), 0, 0) };
            }
            return d.fill(0.0);
        }
        let src_row = &x.x[image + plane + (ti as usize * ih + hi as usize) * pitch..][..iw];
        // Input column of output column w: w·sw + dw·dil − pad. Columns q in lo..hi read inside
        // the row, the others are padding.
        let first = w0 + dw;
        let run = d.len();
        if sw == 1 && first >= 0 && first + run as isize <= iw as isize {
            return copy_run(d, &src_row[first as usize..first as usize + run]);
        }
        let floor_div = |q: isize| match sw {
            1 => q,
            2 => q >> 1, // an idiv here took a tenth of the packing
            _ => q.div_euclid(sw),
        };
        let inside = |q: isize| floor_div(q).clamp(0, run as isize) as usize;
        let (lo, hi) = (inside(sw - 1 - first), inside(iw as isize - first + sw - 1));
        let hi = hi.max(lo);
        #[cfg(target_arch = "x86_64")]
        if wide && sw == 1 {
            // SAFETY: as above; lanes lo..hi read input columns first + lo .. first + hi, inside
            // the row.
            return unsafe { masked_run(d, src_row.as_ptr().wrapping_offset(first), lo, hi) };
        }
        d[..lo].fill(0.0);
        d[hi..].fill(0.0);
        if hi > lo {
            let (start, sw) = ((first + lo as isize * sw) as usize, sw as usize);
            let src = &src_row[start..start + (hi - lo - 1) * sw + 1];
            // Wrapping index arithmetic: overflow checks would keep the loop scalar.
            if sw == 2 {
                for (q, v) in d[lo..hi].iter_mut().enumerate() {
                    *v = src[q.wrapping_mul(2)];
                }
            } else {
                for (q, v) in d[lo..hi].iter_mut().enumerate() {
                    *v = src[q.wrapping_mul(sw)];
                }
            }
        }
    });
}

/// `d[q] = src[q]` for q in `lo..hi`, zero elsewhere (d.len() ≤ NR): a row run that starts or
/// ends in the padding, or lies in it (lo = hi), as masked moves instead of fill calls and a
/// per-value copy.
///
/// # Safety
/// AVX-512F available; `src + q` readable for q in `lo..hi` (no other lane is read, so `src`
/// may point outside its row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn masked_run(d: &mut [f32], src: *const f32, lo: usize, hi: usize) {
    use std::arch::x86_64::*;
    assert!(d.len() <= NR && lo <= hi && hi <= d.len(), "a run is at most a panel row");
    let bits = |from: usize, to: usize| (((1u32 << to) - 1) & !((1u32 << from) - 1)) as __mmask16;
    let mut base = 0;
    while base < d.len() {
        let lanes = (d.len() - base).min(16);
        let at = |q: usize| q.clamp(base, base + 16) - base;
        let v = _mm512_maskz_loadu_ps(bits(at(lo), at(hi)), src.wrapping_add(base));
        // SAFETY: `lanes` values from `base` lie inside `d`.
        _mm512_mask_storeu_ps(d.as_mut_ptr().add(base), bits(0, lanes), v);
        base += 16;
    }
}

/// Packs `Rhs::ConvT`: rows `p0..p0+kc` (output positions) and columns `j0..j0+nc` ((c, tap)
/// pairs) into `NR`-column panels. The positions go in runs along an output row (a whole plane
/// for 1×1 taps at stride 1 without spatial padding), decoded once per block; each column then
/// reads, per run, a run of one input row (strided by the w stride) and writes it down its
/// panel column. At w stride 1 or 2 with AVX-512 (`wide`, a constant true only inside AVX-512
/// code) the runs are transposed 16 × 16 in registers.
#[inline(always)]
pub(super) fn pack_b_conv_t(
    x: &ConvRhs,
    wide: bool,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut [f32],
) {
    let t = ConvTBlock::new(x, p0, kc);
    #[cfg(target_arch = "x86_64")]
    if wide && t.sw <= 2 {
        // SAFETY: `wide` only where AVX-512 is available.
        return unsafe { pack_conv_t_wide(&t, kc, j0, nc, out) };
    }
    pack_conv_t_columns(&t, kc, j0, nc, out)
}

/// A K block of `Rhs::ConvT` decoded: the geometry as the packers read it (1×1 taps at stride 1
/// without spatial padding read whole planes as one row) and its runs of output positions along
/// one output row.
pub(super) struct ConvTBlock<'a> {
    x: &'a [f32],
    g: &'a crate::nn::vol2col::Geometry3d,
    taps: usize,
    /// Input extent (t, h, w) and volume per channel, planes flattened for plane runs.
    it: usize,
    ih: usize,
    iw: usize,
    vol: usize,
    sw: isize,
    runs: Vec<PositionRun>,
}

/// Output positions along one output row: (first row in the block, length, image offset, input t
/// and h of the window origin, output w of the first).
pub(super) type PositionRun = (usize, usize, usize, (isize, isize), isize);

impl<'a> ConvTBlock<'a> {
    pub(super) fn new(x: &'a ConvRhs, p0: usize, kc: usize) -> Self {
        let g = &x.g;
        let [ot, oh, ow] = x.out;
        let [it, ih, iw] = g.input;
        let [kt, kh, kw] = g.kernel;
        let (taps, p) = (kt * kh * kw, ot * oh * ow);
        let plane_runs =
            kh == 1 && kw == 1 && g.stride[1] == 1 && g.stride[2] == 1 && g.pad[1] == 0 && g.pad[2] == 0;
        let (ih, iw, oh, ow) = if plane_runs { (1, ih * iw, 1, oh * ow) } else { (ih, iw, oh, ow) };
        let vol = it * ih * iw;
        let mut runs = Vec::with_capacity(kc / ow.max(1) + 2);
        let mut kk = 0;
        while kk < kc {
            let pos = p0 + kk;
            let (n, rest) = (pos / p, pos % p);
            let (t, rest) = (rest / (oh * ow), rest % (oh * ow));
            let (h, w) = (rest / ow, rest % ow);
            let len = (kc - kk).min(ow - w);
            let origin = ((t * g.stride[0]) as isize, (h * g.stride[1]) as isize);
            runs.push((kk, len, n * g.c * vol, origin, w as isize));
            kk += len;
        }
        ConvTBlock { x: x.x, g, taps, it, ih, iw, vol, sw: g.stride[2] as isize, runs }
    }

    /// Column j's (channel plane offset, tap t / h / w offsets of its input position).
    fn column(&self, j: usize) -> (usize, isize, isize, isize) {
        let g = self.g;
        let [_, kh, kw] = g.kernel;
        let (c, tap) = (j / self.taps, j % self.taps);
        let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
        (
            c * self.vol,
            (dt * g.dilation[0]) as isize - g.pad[0] as isize,
            (dh * g.dilation[1]) as isize - g.pad[1] as isize,
            dw as isize * g.dilation[2] as isize - g.pad[2] as isize,
        )
    }

    /// For a column and a run: the input row it reads (its offset in x; None when the row lies in
    /// the t/h padding), the input column of the run's first value, and the run values `lo..hi`
    /// that fall inside the row (the others are padding).
    #[inline(always)]
    fn source(
        &self,
        (plane, dt, dh, dw): (usize, isize, isize, isize),
        (len, image, (t0, h0), w0): (usize, usize, (isize, isize), isize),
    ) -> Option<(usize, isize, usize, usize)> {
        let (ti, hi) = (t0 + dt, h0 + dh);
        if ti < 0 || ti >= self.it as isize || hi < 0 || hi >= self.ih as isize {
            return None;
        }
        let row = image + plane + (ti as usize * self.ih + hi as usize) * self.iw;
        // Input column of run element q: (w0 + q)·sw + dw; inside the row for q in lo..hi.
        let (sw, first) = (self.sw, w0 * self.sw + dw);
        let inside = |q: isize| q.clamp(0, len as isize) as usize;
        let lo = inside((-first + sw - 1).div_euclid(sw));
        let hi = inside((self.iw as isize - first + sw - 1).div_euclid(sw)).max(lo);
        Some((row, first, lo, hi))
    }
}

/// `pack_b_conv_t` one panel column at a time, values written down the column (any w stride).
pub(super) fn pack_conv_t_columns(t: &ConvTBlock, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    for (panel, dst) in out.chunks_exact_mut(NR * kc).take(nc.div_ceil(NR)).enumerate() {
        for jj in 0..NR {
            let j = j0 + panel * NR + jj;
            if j >= j0 + nc {
                for kk in 0..kc {
                    dst[kk * NR + jj] = 0.0;
                }
                continue;
            }
            let column = t.column(j);
            for &(k0, len, image, origin, w0) in &t.runs {
                let col = &mut dst[k0 * NR + jj..];
                assert!(len == 0 || (len - 1) * NR < col.len(), "run past its panel");
                // Strided writes down the panel column through a pointer: per-value index
                // arithmetic (overflow-checked in this build) cost more than the copy.
                let mut d = col.as_mut_ptr();
                let zeros = |d: &mut *mut f32, count: usize| {
                    for _ in 0..count {
                        // SAFETY: at most `len` values NR apart from the run's first (asserted).
                        unsafe {
                            **d = 0.0;
                            *d = d.add(NR);
                        }
                    }
                };
                let Some((row, first, lo, hi)) = t.source(column, (len, image, origin, w0)) else {
                    zeros(&mut d, len);
                    continue;
                };
                let row = &t.x[row..][..t.iw];
                zeros(&mut d, lo);
                if hi > lo {
                    let sw = t.sw as usize;
                    let src = &row[(first + lo as isize * t.sw) as usize..];
                    assert!((hi - lo - 1) * sw < src.len(), "run past its input row");
                    let mut v = src.as_ptr();
                    for _ in lo..hi {
                        // SAFETY: `d` as above; `v` stays inside `src` (asserted).
                        unsafe {
                            *d = *v;
                            d = d.add(NR);
                            v = v.add(sw);
                        }
                    }
                }
                zeros(&mut d, len - hi);
            }
        }
    }
}

/// `pack_b_conv_t` at w stride 1 or 2: per half panel (16 columns) and run, 16 run values of
/// each column are one masked load (two and an even-lane permute at stride 2; lanes in the
/// padding or past the run read as zero) and a 16 × 16 transpose turns the 16 column vectors
/// into 16 panel rows: whole-vector moves instead of one scalar store per value (the scalar
/// packer was ~5 % of a ResNet training step).
///
/// # Safety
/// AVX-512F available; `t.sw` is 1 or 2 and `out` holds ⌈nc / NR⌉ panels of `NR × kc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_conv_t_wide(t: &ConvTBlock, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(t.sw == 1 || t.sw == 2, "the transposing packer reads rows at stride 1 or 2");
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let bits = |from: usize, to: usize| (((1u32 << to) - 1) & !((1u32 << from) - 1)) as __mmask16;
    assert!(out.len() >= nc.div_ceil(NR) * NR * kc, "panel buffer too small");
    let base = t.x.as_ptr();
    for (panel, dst) in out.chunks_exact_mut(NR * kc).take(nc.div_ceil(NR)).enumerate() {
        for half in 0..NR / 16 {
            let j_first = j0 + panel * NR + half * 16;
            let columns: [Option<_>; 16] =
                std::array::from_fn(|jj| (j_first + jj < j0 + nc).then(|| t.column(j_first + jj)));
            for &(k0, len, image, origin, w0) in &t.runs {
                // Per column: the address of run value 0 (wrapping: it may lie before the row when
                // the run starts in the padding; only lanes in lo..hi are read) and lo..hi.
                let mut src = [(base, 0usize, 0usize); 16];
                for (s, column) in src.iter_mut().zip(&columns) {
                    if let Some((row, first, lo, hi)) =
                        column.and_then(|c| t.source(c, (len, image, origin, w0)))
                    {
                        *s = (base.wrapping_add(row).wrapping_offset(first), lo, hi);
                    }
                }
                let mut q0 = 0;
                while q0 < len {
                    let mut v = [_mm512_setzero_ps(); 16];
                    for (v, &(p, lo, hi)) in v.iter_mut().zip(&src) {
                        // Each column is its own stream through memory: ask for a few lines ahead.
                        _mm_prefetch::<_MM_HINT_T0>(
                            p.wrapping_add((q0 + PREFETCH_AHEAD) * t.sw as usize) as *const i8
                        );
                        let (a, b) = (lo.clamp(q0, q0 + 16) - q0, hi.clamp(q0, q0 + 16) - q0);
                        if t.sw == 1 {
                            // SAFETY: the unmasked lanes are run values lo..hi, inside their row.
                            *v = _mm512_maskz_loadu_ps(bits(a, b), p.wrapping_add(q0));
                        } else if b > a {
                            // Run values a..b sit at even offsets 2a..2b−2 from p + 2·q0; the odd
                            // ones between them are inside the row too, so one range per load.
                            let (from, to) = (2 * a, 2 * b - 1);
                            let at = p.wrapping_add(2 * q0);
                            let lo_half = _mm512_maskz_loadu_ps(bits(from.min(16), to.min(16)), at);
                            let hi_half = _mm512_maskz_loadu_ps(
                                bits(from.saturating_sub(16), to.saturating_sub(16)),
                                at.wrapping_add(16),
                            );
                            *v = _mm512_permutex2var_ps(lo_half, even, hi_half);
                        }
                    }
                    let rows = transpose16(v);
                    for (q, row) in rows.iter().enumerate().take(len - q0) {
                        // SAFETY: panel row k0 + q0 + q < kc, 16 values at column half·16.
                        _mm512_storeu_ps(dst.as_mut_ptr().add((k0 + q0 + q) * NR + half * 16), *row);
                    }
                    q0 += 16;
                }
            }
        }
    }
}

/// The 16 × 16 transpose of `v` (row i = v[i]): in-lane unpacks of floats, then of float pairs,
/// then two rounds of 128-bit block shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn transpose16(v: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // r[g][c]: in 128-bit block l, column 4l + c of rows 4g..4g+3.
    let mut r = [[_mm512_setzero_ps(); 4]; 4];
    for (g, r) in r.iter_mut().enumerate() {
        let (a, b, c, d) = (v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]);
        let (ab_lo, ab_hi) = (_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let (cd_lo, cd_hi) = (_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        let pairs = |x: __m512, y: __m512, hi: bool| {
            let (x, y) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
            _mm512_castpd_ps(if hi { _mm512_unpackhi_pd(x, y) } else { _mm512_unpacklo_pd(x, y) })
        };
        *r = [
            pairs(ab_lo, cd_lo, false),
            pairs(ab_lo, cd_lo, true),
            pairs(ab_hi, cd_hi, false),
            pairs(ab_hi, cd_hi, true),
        ];
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        // Blocks (even, odd) of groups 0/1 and 2/3, then block l of every group into row 4l + c.
        let even01 = _mm512_shuffle_f32x4::<0x88>(r[0][c], r[1][c]);
        let odd01 = _mm512_shuffle_f32x4::<0xDD>(r[0][c], r[1][c]);
        let even23 = _mm512_shuffle_f32x4::<0x88>(r[2][c], r[3][c]);
        let odd23 = _mm512_shuffle_f32x4::<0xDD>(r[2][c], r[3][c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(even01, even23);
        out[8 + c] = _mm512_shuffle_f32x4::<0xDD>(even01, even23);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(odd01, odd23);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(odd01, odd23);
    }
    out
}
