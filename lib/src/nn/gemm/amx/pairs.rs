//! B's bf16 tile pairs for the AMX product: rounded (`simd::bf16_round`'s ties to even, in
//! vectors) and paired as TDPBF16PS reads them, from f32 panels, straight from a matrix's rows,
//! or from a convolution's implicit im2col two rows at a time; and A's rounded runs.

use super::*;

/// Tile row `row` = 16 columns' (even k, odd k) pairs of bf16: lane j holds `even`'s value j
/// rounded in its low half and `odd`'s in its high half.
///
/// # Safety
/// AVX-512F available; `row` holds 32 writable values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_pairs(row: *mut u16, even: std::arch::x86_64::__m512, odd: std::arch::x86_64::__m512) {
    use std::arch::x86_64::*;
    let low = _mm512_srli_epi32::<16>(round_bits(even));
    let high = _mm512_and_si512(round_bits(odd), _mm512_set1_epi32(0xffff_0000u32 as i32));
    _mm512_storeu_si512(row as *mut _, _mm512_or_si512(low, high));
}

/// Tile row `row` = 16 columns' pairs from two rows' bf16 values (`Act::mask_load_bits`): lane
/// 2j the even row's value j, lane 2j + 1 the odd row's, as [`store_pairs`] lays them.
///
/// # Safety
/// AVX-512 F and BW available; `row` holds 32 writable values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn store_bits_pairs(row: *mut u16, even: std::arch::x86_64::__m256i, odd: std::arch::x86_64::__m256i) {
    use std::arch::x86_64::*;
    let interleave = _mm512_set_epi16(
        47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34,
        2, 33, 1, 32, 0,
    );
    let pairs =
        _mm512_permutex2var_epi16(_mm512_castsi256_si512(even), interleave, _mm512_castsi256_si512(odd));
    _mm512_storeu_si512(row.cast(), pairs);
}

/// # Safety
/// AVX-512F available; `src` and `dst` of one length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn bf16_run_wide(src: &[f32], s: f32, dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let sv = _mm512_set1_ps(s);
    for at in (0..src.len()).step_by(16) {
        let n = (src.len() - at).min(16);
        let m = ((1u32 << n) - 1) as __mmask16;
        let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, src.as_ptr().add(at)), sv);
        let bits = _mm512_srli_epi32::<16>(round_bits(x));
        _mm512_mask_cvtepi32_storeu_epi16(dst.as_mut_ptr().add(at) as *mut _, m, bits);
    }
}

/// The f32 B panels of a piece of a K block (`pack_b`: `NR` = 32 columns, `kc` rows each) as
/// bf16 tile pairs, from step `s0` of a block of `ksteps`: panel p, step s, half h (16
/// columns) is one tile at `((p·ksteps + s)·2 + h)·512`, its row r holding for each column the
/// values of k = 2r and 2r + 1 (zeros past `kc`).
///
/// # Safety
/// AVX-512F available; `f32s` holds `panels · kc · 32` values, `out` `panels · ksteps · 1024`,
/// and `s0 + ⌈kc / 32⌉ ≤ ksteps`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pair_b_panels(
    f32s: &[f32],
    panels: usize,
    kc: usize,
    out: &mut [u16],
    ksteps: usize,
    s0: usize,
) {
    use std::arch::x86_64::*;
    assert!(f32s.len() >= panels * kc * NR && out.len() >= panels * ksteps * 2 * TILE);
    assert!(s0 + kc.div_ceil(KSTEP) <= ksteps);
    let src = f32s.as_ptr();
    let dst = out.as_mut_ptr();
    for p in 0..panels {
        let panel = src.add(p * kc * NR);
        for s in 0..kc.div_ceil(KSTEP) {
            for h in 0..2 {
                let tile = dst.add(((p * ksteps + s0 + s) * 2 + h) * TILE);
                for r in 0..16 {
                    let k = s * KSTEP + 2 * r;
                    let load = |k: usize| {
                        if k < kc {
                            _mm512_loadu_ps(panel.add(k * NR + h * 16))
                        } else {
                            _mm512_setzero_ps()
                        }
                    };
                    store_pairs(tile.add(r * KSTEP), load(k), load(k + 1));
                }
            }
        }
    }
}

/// For B read straight from its rows (`Rhs::Mat` with contiguous columns, `Rhs::ShiftedMat`,
/// `Rhs::MatBf16`): rows `p0..p0+kc`, columns `j0..j0+nc` rounded and paired into tiles as
/// `pair_b_panels` lays them out (from step 0 of `ksteps`), without packing f32 panels first (a
/// 1×1 convolution's B is its input). False, with nothing written, for any other B.
///
/// # Safety
/// AVX-512 F, BW and VL available; B's view lies inside its buffer for the block (the callers'
/// checks); `out` holds `⌈nc / 32⌉ · ksteps · 1024` values, `⌈kc / 32⌉ ≤ ksteps`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn pair_b_rows(
    b: &Rhs,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut [u16],
    ksteps: usize,
) -> bool {
    let block = (p0, kc, j0, nc);
    match b {
        Rhs::Mat(m, cols) if m.cs == 1 => pair_rows_of(m, cols, None, block, out, ksteps),
        Rhs::ShiftedMat(m, cols, rows) => pair_rows_of(m, cols, Some(rows), block, out, ksteps),
        Rhs::MatBf16(m, cols, rows) if m.cs == 1 => pair_rows_of(m, cols, rows.as_ref(), block, out, ksteps),
        Rhs::Conv(x, false) if keeps_extent(&x.g) => pair_same_conv(x, block, out, ksteps),
        Rhs::ConvBf16(x, false) if keeps_extent(&x.g) => pair_same_conv(x, block, out, ksteps),
        _ => return false,
    }
    true
}

/// Whether a convolution keeps its input's extent: stride 1, no dilation, odd kernels padded by
/// half on each side (a ResNet's 3×3, a 3×1×1 or 3×3×3 with padding 1). Output position q of an
/// image then reads, at tap (dt, dh, dw), the input position q + a constant per tap when that
/// lies inside the volume: 16 columns of a row of B are one masked load.
fn keeps_extent(g: &crate::nn::vol2col::Geometry3d) -> bool {
    g.stride == [1; 3] && g.dilation == [1; 3] && (0..3).all(|a| g.pad[a] * 2 + 1 == g.kernel[a])
}

/// [`pair_b_rows`] for a convolution that keeps its input's extent ([`keeps_extent`]): each
/// half (16 columns) of a row (channel c, tap) is a masked load of the channel's plane at the
/// columns' positions moved by the tap's offset, the lanes whose window reaches into the
/// padding (or past the image's volume) masked off: one load per image a half spans, where
/// the implicit im2col of `pack_conv_pairs` copies a run per output row (14 values at a
/// ResNet's res4) and pays its bookkeeping per run.
///
/// # Safety
/// As [`pair_b_rows`]'s; `keeps_extent(&x.g)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pair_same_conv<E: Act>(
    x: &ConvRhs<E>,
    (p0, kc, j0, nc): (usize, usize, usize, usize),
    out: &mut [u16],
    ksteps: usize,
) {
    use std::arch::x86_64::*;
    let g = &x.g;
    let [kt, kh, kw] = g.kernel;
    let [it, ih, iw] = g.input;
    let (taps, vol) = (kt * kh * kw, it * ih * iw);
    let panels = nc.div_ceil(NR);
    assert!(kc.div_ceil(KSTEP) <= ksteps && out.len() >= panels * ksteps * 2 * TILE);
    assert!(x.x.len() >= g.n * g.c * vol && x.out == g.input, "the input does not fit the geometry");
    // Each tap's offset in a plane, and its (t, h, w) steps.
    let steps: Vec<[isize; 3]> = (0..taps)
        .map(|tap| {
            let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
            [
                dt as isize - g.pad[0] as isize,
                dh as isize - g.pad[1] as isize,
                dw as isize - g.pad[2] as isize,
            ]
        })
        .collect();
    let offsets: Vec<isize> = steps.iter().map(|[t, h, w]| (t * ih as isize + h) * iw as isize + w).collect();
    // Runs of lanes inside one image, per half: (half, the run's first column's offset in x less
    // its first lane), and per tap the lanes whose input lies inside the image.
    let mut runs: Vec<(usize, isize)> = Vec::with_capacity(panels * 2 + 2);
    let mut masks: Vec<u16> = Vec::with_capacity((panels * 2 + 2) * taps);
    for half in 0..panels * 2 {
        let c0 = j0 + half * 16;
        let width = 16.min((j0 + nc).saturating_sub(c0));
        let mut lane = 0;
        while lane < width {
            let col = c0 + lane;
            let (image, q0) = (col / vol, col % vol);
            let run = (width - lane).min(vol - q0);
            runs.push((half, (image * g.c * vol + q0) as isize - lane as isize));
            let at: Vec<[isize; 3]> = (q0..q0 + run)
                .map(|q| [(q / (ih * iw)) as isize, ((q / iw) % ih) as isize, (q % iw) as isize])
                .collect();
            for step in &steps {
                let mut bits = 0u16;
                for (l, at) in at.iter().enumerate() {
                    let inside = (0..3).all(|a| (0..[it, ih, iw][a] as isize).contains(&(at[a] + step[a])));
                    bits |= u16::from(inside) << (lane + l);
                }
                masks.push(bits);
            }
            lane += run;
        }
    }
    let data = x.x.as_ptr();
    let halves = half_ranges(panels, runs.iter().map(|r| r.0));
    // Row k's offset in x and its tap, worked out once a row (not once a half); None past the block.
    let row_at = |k: usize| {
        (k < kc).then(|| {
            let (c, tap) = ((p0 + k) / taps, (p0 + k) % taps);
            ((c * vol) as isize + offsets[tap], tap)
        })
    };
    let dst = out.as_mut_ptr();
    for s in 0..ksteps {
        for r in 0..16 {
            let k = s * KSTEP + 2 * r;
            let (even, odd) = (row_at(k), row_at(k + 1));
            // Entering a channel: each half's line two channels on, which the rows after its
            // taps read (each half's run is a line or two of a plane of its own).
            let c = (p0 + k) / taps;
            let ahead = ((k == 0 || (p0 + k) % taps < 2) && c + 2 < g.c).then_some(((c + 2) * vol) as isize);
            for (half, &(from, to)) in halves.iter().enumerate() {
                if let Some(next) = ahead.filter(|_| from < to) {
                    crate::nn::simd::prefetch(data.wrapping_offset(runs[from].1 + next));
                }
                // The half's 16 values of a row, as bf16: masked, only lanes whose input lies
                // inside the image are read.
                let load = |row: Option<(isize, usize)>| {
                    let mut v = _mm256_setzero_si256();
                    if let Some((off, tap)) = row {
                        for r in from..to {
                            v = E::mask_load_bits(
                                v,
                                masks[r * taps + tap],
                                data.wrapping_offset(runs[r].1 + off),
                            );
                        }
                    }
                    v
                };
                let tile = dst.add(((half / 2 * ksteps + s) * 2 + half % 2) * TILE);
                store_bits_pairs(tile.add(r * KSTEP), load(even), load(odd));
            }
        }
    }
}

/// Each half's runs as a range of the run list, whose runs go in half order (`half_of_run`).
fn half_ranges(panels: usize, half_of_run: impl Iterator<Item = usize> + Clone) -> Vec<(usize, usize)> {
    let mut halves = Vec::with_capacity(panels * 2);
    let mut from = 0;
    for half in 0..panels * 2 {
        let to = from + half_of_run.clone().skip(from).take_while(|&h| h == half).count();
        halves.push((from, to));
        from = to;
    }
    halves
}

/// Rows of B into tiles as `pair_b_panels` lays them out (from step 0 of `ksteps`), two rows at
/// a time across all the halves: `row_of(k, from, to)` gives row k's 16 values (as bf16) of the
/// half whose runs are `from..to` (`halves`), after `ahead(k, from, to)` asked for lines a later row reads.
///
/// # Safety
/// AVX-512 F and BW available; `out` holds `halves.len() / 2 · ksteps · 1024` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pair_rows_with(
    out: &mut [u16],
    ksteps: usize,
    halves: &[(usize, usize)],
    ahead: impl Fn(usize, usize, usize),
    row_of: impl Fn(usize, usize, usize) -> std::arch::x86_64::__m256i,
) {
    assert!(out.len() >= halves.len() / 2 * ksteps * 2 * TILE, "tiles too short");
    let dst = out.as_mut_ptr();
    for s in 0..ksteps {
        for r in 0..16 {
            let k = s * KSTEP + 2 * r;
            for (half, &(from, to)) in halves.iter().enumerate() {
                ahead(k, from, to);
                let tile = dst.add(((half / 2 * ksteps + s) * 2 + half % 2) * TILE);
                store_bits_pairs(tile.add(r * KSTEP), row_of(k, from, to), row_of(k + 1, from, to));
            }
        }
    }
}

/// [`pair_b_rows`] of a matrix of `E` (rows read shifted by `shift` where given), for the block
/// `(p0, kc, j0, nc)`.
///
/// # Safety
/// As [`pair_b_rows`]'s; `m.cs` = 1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pair_rows_of<E: Act>(
    m: &MatRef<E>,
    cols: &Columns,
    shift: Option<&FrameRows>,
    (p0, kc, j0, nc): (usize, usize, usize, usize),
    out: &mut [u16],
    ksteps: usize,
) {
    use std::arch::x86_64::*;
    let panels = nc.div_ceil(NR);
    assert!(kc.div_ceil(KSTEP) <= ksteps && out.len() >= panels * ksteps * 2 * TILE);
    // Runs of lanes inside one batch item, per 16-column half: (half, lanes, the run's first
    // column's offset in B less its first lane, the item's frame in its clip).
    let mut runs: Vec<(usize, __mmask16, isize, usize)> = Vec::with_capacity(panels * 2);
    for half in 0..panels * 2 {
        let c0 = j0 + half * 16;
        let width = 16.min((j0 + nc).saturating_sub(c0));
        let mut lane = 0;
        while lane < width {
            let col = c0 + lane;
            let run = (width - lane).min(cols.per - col % cols.per);
            let lanes = (((1u32 << run) - 1) << lane) as __mmask16;
            let t = shift.map_or(0, |r| (col / cols.per) % r.segments);
            runs.push((half, lanes, cols.b_off(col, 1) as isize - lane as isize, t));
            lane += run;
        }
    }
    let data = m.data.as_ptr();
    // Row k's 16 values of a half (zeros past the block, in columns past the end, and where a
    // shift reads outside the clip).
    let row_of = |k: usize, from: usize, to: usize| {
        let mut v = _mm256_setzero_si256();
        if k >= kc {
            return v;
        }
        let row = ((p0 + k) * m.rs) as isize;
        for &(_, lanes, off, t) in &runs[from..to] {
            let mut at = row + off;
            if let Some(r) = shift {
                let delta = r.delta[p0 + k] as isize;
                let frame = t as isize + delta;
                if frame < 0 || frame >= r.segments as isize {
                    continue;
                }
                at += delta * cols.b_stride as isize;
            }
            // Masked: only the run's lanes are read, all inside B; as bf16.
            v = E::mask_load_bits(v, lanes, data.wrapping_offset(at));
        }
        v
    };
    let halves = half_ranges(panels, runs.iter().map(|r| r.0));
    // Two rows at a time across all the halves: the reads stream along B's rows (down a column
    // of halves, each row a page or more apart, cost a TLB miss a row). Each half's line two
    // pairs of rows on is asked for: each row's run of a block is a few lines of its own page,
    // too short for the hardware prefetchers to catch up on.
    let ahead = |k: usize, from: usize, to: usize| {
        if let Some(&(_, _, off, _)) = runs.get(from).filter(|_| from < to) {
            for ahead in [k + 4, k + 5].into_iter().filter(|&a| a < kc) {
                let at = ((p0 + ahead) * m.rs) as isize + off;
                crate::nn::simd::prefetch(data.wrapping_offset(at));
            }
        }
    };
    pair_rows_with(out, ksteps, &halves, ahead, row_of);
}

/// A convolution's B block (`pack_b_conv`'s runs) rounded and paired straight into tiles as
/// `pair_b_panels` lays them out, from step `s0` of `ksteps`: each pair of rows goes through a
/// two-row f32 buffer in L1 instead of f32 panels of the whole block (written to L2, read back).
pub(super) struct TilePairs<'a> {
    pub(super) tiles: &'a mut [u16],
    pub(super) ksteps: usize,
    pub(super) s0: usize,
}

impl PanelSink for TilePairs<'_> {
    #[inline(always)]
    fn fill<At: Copy>(
        &mut self,
        kc: usize,
        j0: usize,
        nc: usize,
        run_at: impl Fn(usize, usize) -> (usize, At),
        copy: impl Fn(usize, At, &mut [f32]),
    ) {
        let panels = nc.div_ceil(NR);
        assert!(self.s0 + kc.div_ceil(KSTEP) <= self.ksteps, "K block past the tiles");
        assert!(self.tiles.len() >= panels * self.ksteps * 2 * TILE, "tiles too short");
        let runs = panel_runs(j0, nc, run_at);
        // Two rows of every panel's columns (columns past `nc` zero, as the f32 panels'), then
        // their pairs into the tiles.
        let width = panels * NR;
        let mut rows = vec![0f32; 2 * width];
        for k in (0..kc.div_ceil(KSTEP) * KSTEP).step_by(2) {
            let (even, odd) = rows.split_at_mut(width);
            for (kk, row) in [(k, even), (k + 1, odd)] {
                if kk < kc {
                    for &(col, at, run) in &runs {
                        copy(kk, at, &mut row[col..col + run]);
                    }
                } else {
                    row.fill(0.0);
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AMX paths run only where AVX-512F is (`tiles_granted`); the tiles hold
            // the block (asserted above).
            unsafe {
                pair_rows(&rows, panels, self.tiles, self.ksteps, self.s0 + k / KSTEP, (k % KSTEP) / 2)
            };
        }
    }
}

/// Rows `rows` (an even and an odd row of `panels · 32` values) as row `r` of step `s` of every
/// panel's two tiles.
///
/// # Safety
/// AVX-512F available; `tiles` holds `panels · ksteps` steps, `s < ksteps`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pair_rows(rows: &[f32], panels: usize, tiles: &mut [u16], ksteps: usize, s: usize, r: usize) {
    use std::arch::x86_64::*;
    let width = panels * NR;
    assert!(rows.len() >= 2 * width && tiles.len() >= panels * ksteps * 2 * TILE && s < ksteps && r < 16);
    for half in 0..panels * 2 {
        let (even, odd) = (
            _mm512_loadu_ps(rows.as_ptr().add(half * 16)),
            _mm512_loadu_ps(rows.as_ptr().add(width + half * 16)),
        );
        let tile = tiles.as_mut_ptr().add(((half / 2 * ksteps + s) * 2 + half % 2) * TILE);
        store_pairs(tile.add(r * KSTEP), even, odd);
    }
}

/// `pack_b_conv` into tile pairs, in AVX-512 (its masked moves), from f32 or bf16 (`act`).
///
/// # Safety
/// AVX-512 F, BW and VL available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn pack_conv_pairs<E: Act>(
    x: &ConvRhs<E>,
    phased: bool,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    pairs: &mut TilePairs,
) {
    pack_b_conv(x, phased, true, p0, kc, j0, nc, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// B paired straight from its rows (f32, and the same rounded to bf16) equals B packed into
    /// f32 panels then paired, for batched columns whose items split halves (7 columns an item, 3 items) and for frame-shifted rows
    /// (a clip of 3 frames, rows moving −1, 0, +1), K past a step and the columns past a panel.
    #[test]
    fn b_paired_from_rows_equals_b_packed_then_paired() {
        if !has_avx512() {
            eprintln!("no AVX-512: B pairing not checked");
            return;
        }
        let mut rng = Rng::new(11);
        let (k, per, items) = (45, 7, 3);
        // [items, k, per]: item i's row kk at i·k·per + kk·per.
        let data: Vec<f32> = (0..items * k * per).map(|_| rng.uniform() as f32 - 0.5).collect();
        let m = MatRef { data: &data, rows: k, cols: items * per, rs: per, cs: 1 };
        let cols = Columns { per, b_stride: k * per, c_stride: 0 };
        let delta: Vec<i8> = (0..k).map(|kk| (kk % 3) as i8 - 1).collect();
        let shifted = FrameRows { segments: 3, delta: &delta };
        // The same values rounded to bf16: paired as they are, they give the f32 values' pairs.
        let data16: Vec<u16> =
            data.iter().map(|&v| (crate::nn::simd::bf16_round(v).to_bits() >> 16) as u16).collect();
        let m16 = MatRef { data: &data16, rows: k, cols: items * per, rs: per, cs: 1 };
        for (rhs, bf16) in [
            (Rhs::Mat(m, cols), None),
            (Rhs::ShiftedMat(m, cols, shifted), Some(Rhs::MatBf16(m16, cols, Some(shifted)))),
        ] {
            let bf16 = bf16.unwrap_or(Rhs::MatBf16(m16, cols, None));
            for (p0, kc, j0, nc) in [(0usize, 45usize, 0usize, 21usize), (3, 40, 2, 19), (0, 45, 5, 1)] {
                let (panels, ksteps) = (nc.div_ceil(NR), kc.div_ceil(KSTEP));
                let mut f32s = vec![0f32; panels * kc * NR];
                let (mut want, mut got) =
                    (vec![1u16; panels * ksteps * 2 * TILE], vec![2u16; panels * ksteps * 2 * TILE]);
                let mut got16 = got.clone();
                // SAFETY: AVX-512 checked; the block lies inside B and the buffers fit it.
                unsafe {
                    pack_b(&rhs, p0, kc, j0, nc, &mut f32s);
                    pair_b_panels(&f32s, panels, kc, &mut want, ksteps, 0);
                    assert!(pair_b_rows(&rhs, p0, kc, j0, nc, &mut got, ksteps));
                    assert!(pair_b_rows(&bf16, p0, kc, j0, nc, &mut got16, ksteps));
                }
                assert!(want == got, "{rhs:?} block {p0} {kc} {j0} {nc}");
                assert!(want == got16, "{rhs:?} from bf16: block {p0} {kc} {j0} {nc}");
            }
        }
    }

    /// A convolution's B packed straight into tile pairs equals B packed into f32 panels then
    /// paired: 3×3 padded, w-strided (phased), 3×1×1 temporal and 3×7×7 stems, K pieces from
    /// a later step, column blocks that split output rows and images.
    #[test]
    fn conv_paired_straight_equals_conv_packed_then_paired() {
        use crate::nn::vol2col::Geometry3d;
        if !has_avx512() {
            eprintln!("no AVX-512: conv pairing not checked");
            return;
        }
        let mut rng = Rng::new(13);
        let geometry = |c, input, kernel, stride, pad| Geometry3d {
            n: 2,
            c,
            input,
            kernel,
            stride,
            pad,
            dilation: [1, 1, 1],
        };
        for g in [
            geometry(5, [1, 9, 11], [1, 3, 3], [1, 1, 1], [0, 1, 1]),
            geometry(3, [1, 15, 13], [1, 7, 7], [1, 2, 2], [0, 3, 3]),
            geometry(6, [4, 5, 7], [3, 1, 1], [1, 1, 1], [1, 0, 0]),
            geometry(3, [3, 11, 9], [3, 3, 3], [1, 2, 2], [1, 1, 1]),
        ] {
            let x: Vec<f32> = (0..g.n * g.c * g.in_volume()).map(|_| rng.uniform() as f32 - 0.5).collect();
            let out = g.out().unwrap();
            let phased = g.stride[2] > 1;
            let xs = if phased { split_w_phases(&x, &g) } else { x.clone() };
            let rhs = ConvRhs { x: &xs, g, out };
            let (k, n) = (g.c * g.taps(), g.n * out.iter().product::<usize>());
            for (p0, kc, j0, nc) in
                [(0, k, 0, n), (k / 3, k - k / 3, 7, n - 9), (1, k.min(40) - 1, n / 2, 33)]
            {
                let ksteps = kc.div_ceil(KSTEP) + 1;
                let panels = nc.div_ceil(NR);
                let mut f32s = vec![0f32; panels * kc * NR];
                let mut want = vec![1u16; panels * ksteps * 2 * TILE];
                let mut got = want.clone();
                // SAFETY: AVX-512 checked; the block lies inside B and the buffers fit it.
                unsafe {
                    pack_b(&Rhs::Conv(rhs, phased), p0, kc, j0, nc, &mut f32s);
                    pair_b_panels(&f32s, panels, kc, &mut want, ksteps, 1);
                    pack_conv_pairs(
                        &rhs,
                        phased,
                        p0,
                        kc,
                        j0,
                        nc,
                        &mut TilePairs { tiles: &mut got, ksteps, s0: 1 },
                    );
                }
                assert!(want == got, "{g:?}: block {p0} {kc} {j0} {nc}");
            }
        }
    }

    /// A convolution that keeps its extent, paired straight from its planes (`pair_same_conv`,
    /// through `pair_b_rows`), equals its B packed into f32 panels then paired, from f32 and
    /// from bf16 (f32 values rounded by the pairing, bf16 read as they are): 3×3, 3×1×1 and
    /// 3×3×3 kernels, halves that span two images (7 × 7 planes), K blocks from inside a
    /// channel, a column block from inside an image.
    #[test]
    fn same_extent_conv_paired_from_planes_equals_conv_packed_then_paired() {
        use crate::nn::vol2col::Geometry3d;
        if !has_avx512() {
            eprintln!("no AVX-512: conv pairing not checked");
            return;
        }
        let mut rng = Rng::new(17);
        let geometry = |c, input, kernel: [usize; 3]| Geometry3d {
            n: 3,
            c,
            input,
            kernel,
            stride: [1; 3],
            pad: kernel.map(|k| k / 2),
            dilation: [1, 1, 1],
        };
        for g in [
            geometry(5, [1, 9, 11], [1, 3, 3]),
            geometry(4, [1, 7, 7], [1, 3, 3]),
            geometry(6, [4, 5, 7], [3, 1, 1]),
            geometry(3, [3, 5, 6], [3, 3, 3]),
        ] {
            // f32 values not yet rounded (the pairs round them), and the same rounded as bf16.
            let x: Vec<f32> = (0..g.n * g.c * g.in_volume()).map(|_| rng.uniform() as f32 - 0.5).collect();
            let x16: Vec<u16> =
                x.iter().map(|&v| (crate::nn::simd::bf16_round(v).to_bits() >> 16) as u16).collect();
            let out = g.out().unwrap();
            assert_eq!(out, g.input);
            let rhs = ConvRhs { x: &x, g, out };
            let rhs16 = ConvRhs { x: &x16, g, out };
            let (k, n) = (g.c * g.taps(), g.n * out.iter().product::<usize>());
            for (p0, kc, j0, nc) in
                [(0, k, 0, n), (k / 3, k - k / 3, 7, n - 9), (1, k.min(40) - 1, n / 2, 33)]
            {
                let ksteps = kc.div_ceil(KSTEP);
                let panels = nc.div_ceil(NR);
                let mut f32s = vec![0f32; panels * kc * NR];
                let mut want = vec![1u16; panels * ksteps * 2 * TILE];
                let (mut got, mut got16) = (want.clone(), want.clone());
                // SAFETY: AVX-512 checked; the block lies inside B and the buffers fit it.
                unsafe {
                    pack_b(&Rhs::Conv(rhs, false), p0, kc, j0, nc, &mut f32s);
                    pair_b_panels(&f32s, panels, kc, &mut want, ksteps, 0);
                    assert!(pair_b_rows(&Rhs::Conv(rhs, false), p0, kc, j0, nc, &mut got, ksteps));
                    assert!(pair_b_rows(&Rhs::ConvBf16(rhs16, false), p0, kc, j0, nc, &mut got16, ksteps));
                }
                assert!(want == got, "{g:?}: block {p0} {kc} {j0} {nc}");
                assert!(want == got16, "{g:?} from bf16: block {p0} {kc} {j0} {nc}");
            }
        }
    }
}
