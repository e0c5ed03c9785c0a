//! B read from a convolution's input while packing: implicit im2col (`pack_b_conv`), and its
//! transpose for weight gradients (`pack_b_conv_t`), into the NR-column panels of `pack`.

use super::*;

/// Each input row of `x` ([N, C, T, H, W]) as its `s` = stride-along-w phases one after the
/// other, phase φ holding columns φ, φ + s, … and zero-filled to ⌈W / s⌉: a tap of a w-strided
/// convolution then reads a contiguous run of one phase (vector moves instead of a strided
/// gather, which took most of the packing of strided stems).
pub(super) fn split_w_phases<E: Act>(x: &[E], g: &crate::nn::vol2col::Geometry3d) -> Vec<E> {
    let (iw, s) = (g.input[2], g.stride[2]);
    let q = iw.div_ceil(s);
    let rows = g.n * g.c * g.input[0] * g.input[1];
    let mut out = vec![E::default(); rows * s * q];
    crate::nn::vol2col::par_planes_with(
        &mut out,
        s * q,
        || (),
        |_, row, dst| {
            let src = &x[row * iw..][..iw];
            if s == 2 {
                let (even, odd) = dst.split_at_mut(q);
                if iw % 2 == 1 {
                    even[iw / 2] = src[iw - 1];
                }
                return E::deinterleave(src, even, odd);
            }
            for (phase, part) in dst.chunks_exact_mut(q).enumerate() {
                for (d, v) in part.iter_mut().zip(src[phase.min(iw)..].iter().step_by(s)) {
                    *d = *v;
                }
            }
        },
    );
    out
}

/// `pack_panels` for a convolution's implicit column matrix: a run of output columns along one
/// output row (same image, t, h) reads, per tap row, a strided run of one input row (contiguous
/// when `phased`: x laid out by `split_w_phases`). `wide`: with AVX-512's masked moves (callers
/// pass a constant, true only inside AVX-512 code).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b_conv<E: Act>(
    x: &ConvRhs<E>,
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
                return unsafe { masked_run::<E>(d, std::ptr::null(), 0, 0) };
            }
            return d.fill(0.0);
        }
        let src_row = &x.x[image + plane + (ti as usize * ih + hi as usize) * pitch..][..iw];
        // Input column of output column w: w·sw + dw·dil − pad. Columns q in lo..hi read inside
        // the row, the others are padding.
        let first = w0 + dw;
        let run = d.len();
        // The same run one channel on, which a later row of the block reads.
        let next = src_row.as_ptr().wrapping_add(vol).wrapping_offset(first);
        crate::nn::simd::prefetch(next);
        crate::nn::simd::prefetch(next.wrapping_add(run - 1));
        if sw == 1 && first >= 0 && first + run as isize <= iw as isize {
            return E::copy_run(d, &src_row[first as usize..first as usize + run]);
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
                    *v = src[q.wrapping_mul(2)].to_f32();
                }
            } else {
                for (q, v) in d[lo..hi].iter_mut().enumerate() {
                    *v = src[q.wrapping_mul(sw)].to_f32();
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
/// AVX-512 F, BW and VL available; `src + q` readable for q in `lo..hi` (no other lane is read,
/// so `src` may point outside its row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
pub(super) unsafe fn masked_run<E: Act>(d: &mut [f32], src: *const E, lo: usize, hi: usize) {
    use std::arch::x86_64::*;
    assert!(d.len() <= NR && lo <= hi && hi <= d.len(), "a run is at most a panel row");
    let bits = |from: usize, to: usize| (((1u32 << to) - 1) & !((1u32 << from) - 1)) as __mmask16;
    let mut base = 0;
    while base < d.len() {
        let lanes = (d.len() - base).min(16);
        let at = |q: usize| q.clamp(base, base + 16) - base;
        let v = E::mask_load(_mm512_setzero_ps(), bits(at(lo), at(hi)), src.wrapping_add(base));
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
