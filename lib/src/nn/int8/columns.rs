//! A convolution's column panels for the int8 kernels, packed straight from its input in channel
//! groups of 4 ([C/4, T, H, W, 4] u8, as a convolution's epilogue writes it for the next one):
//! k group (c/4, tap) of output column j is the 4 bytes at one input position, so a panel is
//! u32 copies from the (padded) volume, with no column matrix and no interleaving pass. The
//! weights' columns then run in that order (`QuantizedMatrix::grouped_taps`).

#[cfg(test)]
use crate::nn::qgemm::PackedB;
use crate::nn::qgemm::{KG, QNR};
use crate::nn::simd::DisjointMut;
use crate::nn::vol2col::Geometry3d;

/// One image's grouped input `x` ([C/4, T, H, W] of u32) into the start of `out` [C/4,
/// T + 2·pad_t, H + 2·pad_h, W + 2·pad_w] with the quantized zero `zero` in all 4 bytes of the
/// border, so that every window of the geometry lies inside (`out` may stay longer).
pub(super) fn pad_grouped(x: &[u8], g: &Geometry3d, zero: u8, out: &mut Vec<u32>) {
    let [t, h, w] = g.input;
    let [tp, hp, wp] = padded_extent(g);
    let groups = g.c.div_ceil(KG);
    let volume = tp * hp * wp;
    let fill = u32::from_ne_bytes([zero; KG]);
    // Every value is written below (a border once, the inside once): the old contents (and
    // length: longer is fine, every reader takes its groups' volumes) are kept only to skip a
    // fill of the whole volume, which wrote it twice.
    if out.len() < groups * volume {
        out.resize(groups * volume, fill);
    }
    assert!(x.len() >= groups * t * h * w * KG, "grouped input too short");
    let dst = DisjointMut(out.as_mut_ptr());
    let [pt, py, px] = g.pad;
    // Channel groups in parallel (one clip's convolution runs alone on the pool).
    crate::nn::simd::par_for(groups, |c| {
        // SAFETY: group c's padded volume, which no other task writes, inside `out`.
        let plane = unsafe { std::slice::from_raw_parts_mut(dst.at(c * volume), volume) };
        let src = &x[c * t * h * w * KG..][..t * h * w * KG];
        for (r, row) in plane.chunks_exact_mut(wp).enumerate() {
            let (it, iy) = (r / hp, r % hp);
            if !(pt..pt + t).contains(&it) || !(py..py + h).contains(&iy) {
                row.fill(fill);
                continue;
            }
            row[..px].fill(fill);
            row[px + w..].fill(fill);
            let src_row = &src[((it - pt) * h + iy - py) * w * KG..][..w * KG];
            for (d, s) in row[px..px + w].iter_mut().zip(src_row.chunks_exact(KG)) {
                *d = u32::from_ne_bytes(s.try_into().expect("4 bytes"));
            }
        }
    });
}

/// Channel planes `x` ([images][c][positions] u8) in channel groups of 4 ([images][c/4]
/// [positions][4], or with `frames_inside` [c/4][images][positions][4]: frames as time,
/// `int8::frames_as_time`), the channels past c to a whole group filled with `fill`: an input
/// quantized here laid out as a handed-over one. In parallel over runs of positions.
pub(super) fn group_channels(
    x: &[u8],
    images: usize,
    c: usize,
    positions: usize,
    fill: u8,
    frames_inside: bool,
) -> Vec<u8> {
    assert!(x.len() >= images * c * positions, "channel planes too short");
    let groups = c.div_ceil(KG);
    let mut out = vec![0u8; images * groups * positions * KG];
    let filler = vec![fill; positions];
    const RUN: usize = 1 << 12;
    let runs = positions.div_ceil(RUN);
    let dst = DisjointMut(out.as_mut_ptr());
    crate::nn::simd::par_for(images * groups * runs, |task| {
        let (plane, run) = (task / runs, task % runs);
        let (n, cg) = (plane / groups, plane % groups);
        let span = run * RUN..((run + 1) * RUN).min(positions);
        let src: [&[u8]; KG] = std::array::from_fn(|t| match cg * KG + t < c {
            true => &x[(n * c + cg * KG + t) * positions..][span.clone()],
            false => &filler[span.clone()],
        });
        let to = match frames_inside {
            true => cg * images + n,
            false => plane,
        };
        // SAFETY: group `plane`'s positions `span`, which no other task writes, inside `out`.
        let d = unsafe {
            std::slice::from_raw_parts_mut(dst.at((to * positions + span.start) * KG), span.len() * KG)
        };
        let whole = span.len() / QNR * QNR;
        for (j, d) in d[..whole * KG].chunks_exact_mut(QNR * KG).enumerate() {
            let rows = src.map(|r| <&[u8; QNR]>::try_from(&r[j * QNR..][..QNR]).expect("16 bytes"));
            crate::nn::qgemm::interleave4(rows, d.try_into().expect("64 bytes"));
        }
        for j in whole..span.len() {
            for t in 0..KG {
                d[j * KG + t] = src[t][j];
            }
        }
    });
    out
}

fn padded_extent(g: &Geometry3d) -> [usize; 3] {
    std::array::from_fn(|a| g.input[a] + 2 * g.pad[a])
}

/// The column panels of one image from its padded grouped input (`pad_grouped`): B
/// [C/4 · taps · 4, positions] with k group `c/4 · taps + tap`, packed a range of panels at a
/// time (`PackedB::on_demand`).
pub(super) struct GroupedColumns<'a> {
    xp: &'a [u32],
    g: &'a Geometry3d,
    out: [usize; 3],
    /// Where each tap's window starts, from the window's corner.
    tap_offsets: Vec<usize>,
}

impl<'a> GroupedColumns<'a> {
    /// The columns of output extent `out` from `xp`, padded for geometry `g`.
    pub(super) fn new(xp: &'a [u32], g: &'a Geometry3d, out: [usize; 3]) -> Self {
        let [tp, hp, wp] = padded_extent(g);
        assert!(xp.len() >= g.c.div_ceil(KG) * tp * hp * wp, "padded grouped input too short");
        let [_, kh, kw] = g.kernel;
        let tap_offsets = (0..g.taps())
            .map(|tap| {
                let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
                (dt * g.dilation[0] * hp + dh * g.dilation[1]) * wp + dw * g.dilation[2]
            })
            .collect();
        Self { xp, g, out, tap_offsets }
    }

    /// B's rows and columns.
    pub(super) fn k_n(&self) -> (usize, usize) {
        let [ot, oh, ow] = self.out;
        (self.g.c.div_ceil(KG) * self.g.taps() * KG, ot * oh * ow)
    }

    /// Panels `panels` into `out`, one after another.
    pub(super) fn pack(&self, panels: std::ops::Range<usize>, out: &mut [u8]) {
        let (g, xp) = (self.g, self.xp);
        let (channel_groups, taps) = (g.c.div_ceil(KG), g.taps());
        let n = self.k_n().1;
        let panel_len = channel_groups * taps * QNR * KG;
        let [_, oh, ow] = self.out;
        let [tp, hp, wp] = padded_extent(g);
        let volume = tp * hp * wp;
        for (jp, panel) in panels.zip(out.chunks_exact_mut(panel_len)) {
            // The window corners of the panel's columns (past n: column 0's, never stored).
            let mut corner = [0usize; QNR];
            let j0 = jp * QNR;
            let (mut x, mut y, mut t) = (j0 % ow, (j0 / ow) % oh, j0 / (ow * oh));
            for (jj, c) in corner.iter_mut().enumerate() {
                if j0 + jj >= n {
                    break;
                }
                *c = (t * g.stride[0] * hp + y * g.stride[1]) * wp + x * g.stride[2];
                x += 1;
                if x == ow {
                    (x, y) = (0, y + 1);
                    if y == oh {
                        (y, t) = (0, t + 1);
                    }
                }
            }
            // Runs of columns whose corners rise by the stride (within an output row, or rows
            // that abut): each one masked load per k group, or two and a permutation at stride 2.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                let live = QNR.min(n - j0);
                // Runs whose corners rise by the stride (1 or 2; past that, gathered).
                let step = g.stride[2].clamp(1, 3);
                let mut runs = [Run { lane: 0, len: 0, corner: 0 }; MAX_RUNS];
                let mut count = 0;
                for jj in 0..live {
                    if jj > 0 && corner[jj] == corner[jj - 1] + step {
                        runs[count - 1].len += 1;
                    } else if count < MAX_RUNS {
                        runs[count] = Run { lane: jj, len: 1, corner: corner[jj] };
                        count += 1;
                    } else {
                        count = MAX_RUNS + 1;
                        break;
                    }
                }
                // SAFETY (both): the CPU has AVX-512F; the columns' values lie inside the padded
                // volume (every window does), the panel holds `groups` groups.
                if count <= MAX_RUNS && step <= 2 {
                    unsafe {
                        copy_runs(panel, xp, volume, channel_groups, &self.tap_offsets, &runs[..count], step)
                    };
                } else {
                    // Strided windows (a stem's, a downsampling convolution's): gathered.
                    unsafe {
                        gather_columns(panel, xp, volume, channel_groups, &self.tap_offsets, &corner, live)
                    };
                }
                continue;
            }
            for (cg, src) in xp.chunks_exact(volume).take(channel_groups).enumerate() {
                for (tap, &offset) in self.tap_offsets.iter().enumerate() {
                    let d: &mut [u8; QNR * KG] =
                        (&mut panel[(cg * taps + tap) * QNR * KG..][..QNR * KG]).try_into().expect("a group");
                    let src = &src[offset..];
                    for (jj, &c) in corner.iter().enumerate() {
                        d[jj * KG..][..KG].copy_from_slice(&src[c].to_ne_bytes());
                    }
                }
            }
        }
    }
}

/// `GroupedColumns` packed whole into `out` (reused), panels in parallel.
#[cfg(test)]
pub(super) fn pack_grouped_columns<'a>(
    xp: &[u32],
    g: &Geometry3d,
    out_extent: [usize; 3],
    out: &'a mut Vec<u8>,
) -> PackedB<'a> {
    let columns = GroupedColumns::new(xp, g, out_extent);
    let (k, n) = columns.k_n();
    let packer = |panels, out: &mut [u8]| columns.pack(panels, out);
    crate::nn::qgemm::pack_panels_whole(k, n, &packer, out)
}

/// Runs of a panel copied with masked loads; past that, value by value.
const MAX_RUNS: usize = 4;

/// Lanes `lane..lane + len` of a panel's group, from the window corner `corner` on.
#[derive(Clone, Copy)]
struct Run {
    lane: usize,
    len: usize,
    corner: usize,
}

/// One panel's groups (channel group major, then tap) from the padded grouped volume `xp`: per
/// group, each run (its values `step` apart, 1 or 2) one masked load at its window position, or
/// two and a permutation of their even lanes, one 64-byte store (lanes past the runs 0).
///
/// # Safety
/// AVX-512F available; each run's values from `corner + tap offset`, `step` apart, lie inside
/// each channel group's `volume`; `panel` holds `channel_groups · taps` groups of 64 bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_runs(
    panel: &mut [u8],
    xp: &[u32],
    volume: usize,
    channel_groups: usize,
    tap_offsets: &[usize],
    runs: &[Run],
    step: usize,
) {
    use std::arch::x86_64::*;
    let taps = tap_offsets.len();
    assert!(
        panel.len() >= channel_groups * taps * QNR * KG && xp.len() >= channel_groups * volume && step <= 2
    );
    let masks: [__mmask16; MAX_RUNS] =
        std::array::from_fn(|r| runs.get(r).map_or(0, |r| (((1u32 << r.len) - 1) << r.lane) as __mmask16));
    // Step 2: run r spans 2·len − 1 values from its corner, loaded as 16 and the rest; lane l
    // takes value 2·(l − lane) of those 32.
    let spans: [(__mmask16, __mmask16, __m512i); MAX_RUNS] = std::array::from_fn(|r| {
        let Some(r) = runs.get(r) else { return (0, 0, _mm512_setzero_si512()) };
        let span = 2 * r.len - 1;
        let lanes = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
        let index: [i32; QNR] = std::array::from_fn(|l| 2 * l.saturating_sub(r.lane) as i32);
        (lanes(span), lanes(span.saturating_sub(16)), _mm512_loadu_si512(index.as_ptr() as *const _))
    });
    for cg in 0..channel_groups {
        let src = xp.as_ptr().add(cg * volume);
        for (tap, &offset) in tap_offsets.iter().enumerate() {
            let base = src.add(offset);
            let mut v = _mm512_setzero_si512();
            for ((r, &mask), &(lo_mask, hi_mask, index)) in runs.iter().zip(&masks).zip(&spans) {
                if step == 1 {
                    // Lane l reads base + corner + (l − lane): only the run's lanes are read.
                    let at = base.wrapping_add(r.corner).wrapping_sub(r.lane);
                    v = _mm512_mask_loadu_epi32(v, mask, at as *const i32);
                } else {
                    let at = base.add(r.corner) as *const i32;
                    let lo = _mm512_maskz_loadu_epi32(lo_mask, at);
                    let hi = _mm512_maskz_loadu_epi32(hi_mask, at.wrapping_add(16));
                    v = _mm512_mask_mov_epi32(v, mask, _mm512_permutex2var_epi32(lo, index, hi));
                }
            }
            _mm512_storeu_si512(panel.as_mut_ptr().add((cg * taps + tap) * QNR * KG) as *mut _, v);
        }
    }
}

/// One panel's groups (channel group major, then tap) from the padded grouped volume `xp`: per
/// group, one gather of the `live` columns' values at their window corners `corner` (+ the
/// tap's offset), the lanes past them 0.
///
/// # Safety
/// AVX-512F available; `corner[..live]` + every tap offset lie inside each channel group's
/// `volume`, below 2³¹; `panel` holds `channel_groups · taps` groups of 64 bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_columns(
    panel: &mut [u8],
    xp: &[u32],
    volume: usize,
    channel_groups: usize,
    tap_offsets: &[usize],
    corner: &[usize; QNR],
    live: usize,
) {
    use std::arch::x86_64::*;
    let taps = tap_offsets.len();
    assert!(panel.len() >= channel_groups * taps * QNR * KG && xp.len() >= channel_groups * volume);
    let index = _mm512_loadu_si512(corner.map(|c| c as i32).as_ptr() as *const _);
    let mask = ((1u32 << live) - 1) as __mmask16;
    for cg in 0..channel_groups {
        let src = xp.as_ptr().add(cg * volume);
        for (tap, &offset) in tap_offsets.iter().enumerate() {
            let v = _mm512_mask_i32gather_epi32::<4>(
                _mm512_setzero_si512(),
                mask,
                index,
                src.add(offset) as *const i32,
            );
            _mm512_storeu_si512(panel.as_mut_ptr().add((cg * taps + tap) * QNR * KG) as *mut _, v);
        }
    }
}

/// Bytes in channel groups of 4 ([C/4, P, 4]) back to channel planes ([C, P]), for a layer
/// that reads them so (`c` a multiple of 4).
pub(super) fn ungroup(x: &[u8], c: usize, positions: usize) -> Vec<u8> {
    let mut out = vec![0u8; c * positions];
    for (cg, src) in x.chunks_exact(positions * KG).take(c / KG).enumerate() {
        for (j, v) in src.chunks_exact(KG).enumerate() {
            for (t, &b) in v.iter().enumerate() {
                out[(cg * KG + t) * positions + j] = b;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The panels packed from the grouped input hold what the column matrix of the plain input
    /// holds, k reordered as (c/4, tap, c%4), over strides (runs at stride 1 and 2, gathers),
    /// padding, dilation, a 3D window and 3 channels padded to a group (a stem's).
    #[test]
    fn grouped_columns_are_the_column_matrix_reordered() {
        let mut rng = crate::rng::Rng::new(5);
        // One padded buffer for every case, left over from the last (and garbage at first): every
        // value is written again.
        let mut xp = vec![0xDEAD_BEEFu32; 1 << 12];
        for (c, input, kernel, stride, pad, dilation) in [
            (8, [1, 9, 11], [1, 3, 3], [1, 1, 1], [0, 1, 1], [1, 1, 1]),
            (4, [1, 7, 7], [1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 1, 1]),
            (8, [3, 6, 5], [3, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 1]),
            (12, [2, 10, 9], [1, 3, 3], [1, 1, 1], [0, 2, 2], [1, 2, 2]),
            (4, [1, 8, 8], [1, 1, 1], [1, 2, 2], [0, 0, 0], [1, 1, 1]),
            (3, [3, 12, 13], [3, 7, 7], [1, 2, 2], [1, 3, 3], [1, 1, 1]),
            // More than 4 runs a panel, and stride 3: gathered.
            (4, [2, 6, 6], [1, 1, 1], [1, 2, 2], [0, 0, 0], [1, 1, 1]),
            (4, [1, 10, 10], [1, 3, 3], [1, 3, 3], [0, 1, 1], [1, 1, 1]),
        ] {
            let g = Geometry3d { n: 1, c, input, kernel, stride, pad, dilation };
            let [ot, oh, ow] = g.out().unwrap();
            let (vol, n, taps) = (g.in_volume(), ot * oh * ow, g.taps());
            let plain: Vec<u8> = (0..c * vol).map(|_| (rng.uniform() * 128.0).min(127.0) as u8).collect();
            let zero = 9u8;
            let grouped = group_channels(&plain, 1, c, vol, zero, false);
            for ch in 0..c.div_ceil(4) * 4 {
                for p in 0..vol {
                    let want = if ch < c { plain[ch * vol + p] } else { zero };
                    assert_eq!(
                        grouped[((ch / 4) * vol + p) * 4 + ch % 4],
                        want,
                        "channel {ch}, position {p}"
                    );
                }
            }
            if c % 4 == 0 {
                assert_eq!(ungroup(&grouped, c, vol), plain);
            }
            // The column matrix from the plain input, then packed.
            let matrix = crate::nn::vol2col::vol2col_padded(&plain, &g, zero).unwrap();
            let mut want_buf = vec![];
            let want = crate::nn::qgemm::pack_b_matrix(&matrix, n, c * taps, n, &mut want_buf);
            pad_grouped(&grouped, &g, zero, &mut xp);
            let mut got_buf = vec![];
            let got = pack_grouped_columns(&xp, &g, [ot, oh, ow], &mut got_buf);
            for ch in 0..c.div_ceil(4) * 4 {
                for tap in 0..taps {
                    let (k_plain, k_grouped) = (ch * taps + tap, ((ch / 4) * taps + tap) * 4 + ch % 4);
                    for j in 0..n {
                        let want = if ch < c { want.value(k_plain, j) } else { zero };
                        assert_eq!(
                            got.value(k_grouped, j),
                            want,
                            "{g:?}: channel {ch}, tap {tap}, column {j}"
                        );
                    }
                }
            }
        }
    }
}
