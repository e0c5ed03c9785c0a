//! Packing B (the activations) for the int8 kernels: panels of `QNR` columns, each k group's
//! `QNR × KG` bytes together, from rows, from a row-major matrix or from its transpose.

use super::{SendU8, ACT_MAX, KG, QNR};
use std::ops::Range;

/// B as the kernels read it: panels of `QNR` columns, each k group's `QNR × KG` bytes together
/// (column-major inside a group); columns and k past the end hold 0. Packed (`pack_b`), a
/// panel's groups follow each other; read in place from activations in channel groups
/// (`grouped_in_place`), panel j of group g lies at `g · group_stride + j · 64`.
#[derive(Clone, Copy)]
pub struct PackedB<'a> {
    pub(super) data: &'a [u8],
    pub(super) k: usize,
    pub(super) n: usize,
    /// Bytes from one panel to the next, and from a panel's k group to its next.
    panel_stride: usize,
    group_stride: usize,
    /// In place: the last panel, partial, packed apart (reading it in place would run past the
    /// data).
    tail: Option<&'a [u8]>,
    /// Packed as the product reaches them: `data` is empty.
    packer: Option<PanelPacker<'a>>,
}

/// Packs B's panels `panels` into `out`, whole panels one after another (`groups · QNR · KG`
/// bytes each), every byte written; called from the product's threads.
pub type PanelPacker<'a> = &'a (dyn Fn(Range<usize>, &mut [u8]) + Sync);

impl<'a> PackedB<'a> {
    /// Packed panels `data` of B [k, n] (whole panels one after another).
    pub(crate) fn from_panels(data: &'a [u8], k: usize, n: usize) -> Self {
        let groups = k.div_ceil(KG);
        assert!(data.len() >= n.div_ceil(QNR) * groups * QNR * KG, "packed B too short");
        Self { data, k, n, panel_stride: groups * QNR * KG, group_stride: QNR * KG, tail: None, packer: None }
    }

    /// B [k, n] whose panels `packer` writes when the product reaches them: each tile of panels
    /// packed into a buffer of the thread that runs it and multiplied by every A panel while it
    /// is in L1 (a convolution's column panels, which packed whole went out to memory and came
    /// back), or packed whole first where several threads share a tile.
    pub fn on_demand(k: usize, n: usize, packer: PanelPacker<'a>) -> Self {
        let groups = k.div_ceil(KG);
        let panel_stride = groups * QNR * KG;
        Self { data: &[], k, n, panel_stride, group_stride: QNR * KG, tail: None, packer: Some(packer) }
    }

    pub(super) fn packer(&self) -> Option<PanelPacker<'a>> {
        self.packer
    }

    /// Panels from `jp` on that lie in one storage (the kernels read them `panel_stride` apart).
    pub(super) fn shared(&self, jp: usize) -> usize {
        let panels = self.n.div_ceil(QNR);
        match self.tail {
            Some(_) if jp + 1 == panels => 1,
            Some(_) => panels - 1 - jp,
            None => panels - jp,
        }
    }

    /// B [k, n] read in place from `x`: u8 values in groups of 4 rows, [k/4][n][4] (row p,
    /// column j at `((p / 4) · n + j) · 4 + p % 4`: a channel-grouped activation, whose group g
    /// of 16 columns is one 64-byte run), the last panel, when partial, copied into `tail`.
    pub fn grouped_in_place(x: &'a [u8], k: usize, n: usize, tail: &'a mut Vec<u8>) -> Self {
        let groups = k.div_ceil(KG);
        assert!(x.len() >= groups * n * KG, "grouped B holds {} bytes, not {groups} groups of {n}", x.len());
        let full = n / QNR;
        let tail = (!n.is_multiple_of(QNR)).then(|| {
            tail.clear();
            tail.resize(groups * QNR * KG, 0);
            let live = (n - full * QNR) * KG;
            for g in 0..groups {
                let src = &x[(g * n + full * QNR) * KG..][..live];
                tail[g * QNR * KG..][..live].copy_from_slice(src);
            }
            &tail[..]
        });
        Self { data: x, k, n, panel_stride: QNR * KG, group_stride: n * KG, tail, packer: None }
    }

    /// Value (p, j) as the kernels read it.
    pub fn value(&self, p: usize, j: usize) -> u8 {
        if let Some(pack) = self.packer {
            let mut panel = vec![0u8; self.panel_stride];
            pack(j / QNR..j / QNR + 1, &mut panel);
            return panel[(p / KG) * self.group_stride + (j % QNR) * KG + p % KG];
        }
        let (panel, _, g_stride) = self.panel(j / QNR);
        panel[(p / KG) * g_stride + (j % QNR) * KG + p % KG]
    }

    pub(super) fn groups(&self) -> usize {
        self.k.div_ceil(KG)
    }

    /// Panel jp's first byte, the bytes from it to the next panel (for the panels after it in
    /// the same storage, `shared`) and between its k groups.
    pub(super) fn panel(&self, jp: usize) -> (&'a [u8], usize, usize) {
        assert!(self.packer.is_none(), "panels packed on demand have no storage");
        let panels = self.n.div_ceil(QNR);
        let span = (self.groups() - 1) * self.group_stride + QNR * KG;
        match self.tail {
            Some(t) if jp + 1 == panels => (t, QNR * KG * self.groups(), QNR * KG),
            _ => (&self.data[jp * self.panel_stride..][..span], self.panel_stride, self.group_stride),
        }
    }
}

/// B [k, n] whose panels `pack` writes (`PackedB::on_demand`), packed whole into `out` (reused),
/// panels in parallel.
pub fn pack_panels_whole<'o>(k: usize, n: usize, pack: PanelPacker, out: &'o mut Vec<u8>) -> PackedB<'o> {
    let (groups, panels, len) = grow_for(k, n, out);
    let panel_len = groups * QNR * KG;
    let dst = SendU8(out.as_mut_ptr());
    const PANELS_PER_TASK: usize = 4;
    crate::nn::simd::par_for(panels.div_ceil(PANELS_PER_TASK), |task| {
        let dst = &dst;
        let jp = task * PANELS_PER_TASK..((task + 1) * PANELS_PER_TASK).min(panels);
        // SAFETY: panels jp, which no other task writes, inside `out` (len bytes).
        let out =
            unsafe { std::slice::from_raw_parts_mut(dst.0.add(jp.start * panel_len), jp.len() * panel_len) };
        pack(jp, out)
    });
    PackedB::from_panels(&out[..len], k, n)
}

/// Bytes past a row that a `WrittenRows` writer may scribble on.
pub const ROW_SLACK: usize = 64;

/// B [k, n] as the packers read it: by k groups of 4 rows, over a range of columns.
pub trait BSource: Sync {
    /// B's rows.
    fn k(&self) -> usize;
    /// Hands `pack` group g's 4 rows over columns `cols` (`cols.len()` values each, 0..=127; more
    /// is clamped; rows past k are ignored).
    fn group(&self, g: usize, cols: Range<usize>, pack: &mut dyn FnMut([&[u8]; KG]));
}

/// B [k, n] whose rows lie `ldb` apart in `b`, read in place.
pub struct MatrixRows<'a> {
    pub b: &'a [u8],
    pub ldb: usize,
    pub k: usize,
}

impl BSource for MatrixRows<'_> {
    fn k(&self) -> usize {
        self.k
    }

    fn group(&self, g: usize, cols: Range<usize>, pack: &mut dyn FnMut([&[u8]; KG])) {
        assert!(cols.end <= self.ldb || self.k <= 1, "B's rows overlap");
        pack(std::array::from_fn(|t| match g * KG + t < self.k {
            true => &self.b[(g * KG + t) * self.ldb..][cols.clone()],
            false => &[][..],
        }))
    }
}

/// B [k, n] given by its rows: `row(p, cols, dst)` writes row p's values over `cols` into
/// `dst[..cols.len()]`, and may overwrite up to `ROW_SLACK` bytes after them (a group's 4
/// rows are written, in order, into a scratch buffer kept per thread).
pub struct WrittenRows<F> {
    pub k: usize,
    pub row: F,
}

impl<F: Fn(usize, Range<usize>, &mut [u8]) + Sync> BSource for WrittenRows<F> {
    fn k(&self) -> usize {
        self.k
    }

    fn group(&self, g: usize, cols: Range<usize>, pack: &mut dyn FnMut([&[u8]; KG])) {
        let n = cols.len();
        PACK_ROWS.with(|rows| {
            let rows = &mut rows.borrow_mut();
            if rows.len() < KG * n + ROW_SLACK {
                rows.resize(KG * n + ROW_SLACK, 0);
            }
            // Row t's slack is row t + 1's start, written after it.
            for t in 0..KG.min(self.k - g * KG) {
                (self.row)(g * KG + t, cols.clone(), &mut rows[t * n..][..n + ROW_SLACK]);
            }
            pack(std::array::from_fn(|t| &rows[t * n..][..n]));
        })
    }
}

thread_local! {
    /// A k group's rows before `WrittenRows` hands them over, kept between calls.
    static PACK_ROWS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `pack_b` of a matrix B [k, n] whose rows lie `ldb` apart in `b`, read in place.
pub fn pack_b_matrix<'a>(b: &[u8], ldb: usize, k: usize, n: usize, out: &'a mut Vec<u8>) -> PackedB<'a> {
    assert!(n <= ldb || k <= 1, "B's rows overlap");
    assert!(k == 0 || (k - 1) * ldb + n <= b.len(), "B holds {} values, not {k} × {n}", b.len());
    pack_b(&MatrixRows { b, ldb, k }, n, out)
}

/// B packed from its transpose `bt` [n, k] (row-major; B = btᵀ), as a Linear layer's input
/// rows are: a panel's group is 16 runs of 4 bytes, one from each of its rows. Values above 127
/// are clamped; in parallel over panels.
pub fn pack_b_transposed<'a>(bt: &[u8], k: usize, n: usize, out: &'a mut Vec<u8>) -> PackedB<'a> {
    assert!(bt.len() >= k * n, "Bᵀ holds {} values, not {n} × {k}", bt.len());
    let (groups, panels, len) = grow_for(k, n, out);
    let dst = SendU8(out.as_mut_ptr());
    crate::nn::simd::par_for(panels, |jp| {
        let dst = &dst;
        // SAFETY: panel jp's bytes, which no other task writes, inside `out` (len bytes).
        let panel =
            unsafe { std::slice::from_raw_parts_mut(dst.0.add(jp * groups * QNR * KG), groups * QNR * KG) };
        // Column jj's run of group g: row j's bytes 4g..4g + 4, read and written as one u32.
        let (whole, tail) = (k / KG, k % KG);
        for jj in 0..QNR {
            let j = jp * QNR + jj;
            let row = if j < n { &bt[j * k..][..k] } else { &[][..] };
            for g in 0..groups {
                let mut run = [0u8; KG];
                if g < whole && j < n {
                    run.copy_from_slice(&row[g * KG..][..KG]);
                } else if j < n {
                    run[..tail].copy_from_slice(&row[g * KG..][..tail]);
                }
                if u32::from_ne_bytes(run) & 0x8080_8080 != 0 {
                    run = run.map(|v| v.min(ACT_MAX));
                }
                panel[(g * QNR + jj) * KG..][..KG].copy_from_slice(&run);
            }
        }
    });
    PackedB::from_panels(&out[..len], k, n)
}

/// B [k, n]'s k groups, column panels and packed length, with `out` grown to hold it (never
/// zeroed: the packers write every byte).
fn grow_for(k: usize, n: usize, out: &mut Vec<u8>) -> (usize, usize, usize) {
    let (groups, panels) = (k.div_ceil(KG), n.div_ceil(QNR));
    let len = panels * groups * QNR * KG;
    if out.len() < len {
        out.resize(len, 0);
    }
    (groups, panels, len)
}

/// B [k, n] (`source`) packed whole, in parallel over k groups; `out` is reused.
pub fn pack_b<'a>(source: &dyn BSource, n: usize, out: &'a mut Vec<u8>) -> PackedB<'a> {
    let k = source.k();
    let (groups, _, len) = grow_for(k, n, out);
    let dst = SendU8(out.as_mut_ptr());
    crate::nn::simd::par_for(groups, |g| {
        let dst = &dst;
        // SAFETY: group g's 64 bytes of every panel, which no other group's task writes, inside
        // `out` (len bytes).
        source.group(g, 0..n, &mut |rows| unsafe { interleave_group(rows, k, g, n, dst.0) })
    });
    PackedB::from_panels(&out[..len], k, n)
}

/// Interleaves group g's rows (`n` columns each; rows past k, and columns past n in the last
/// panel, as zeros) into group g of every panel of the packed B at `dst`.
///
/// # Safety
/// `dst` holds the packed B of k × n (`grow_for`); nothing else writes group g meanwhile.
unsafe fn interleave_group(rows: [&[u8]; KG], k: usize, g: usize, n: usize, dst: *mut u8) {
    const ZERO: [u8; QNR] = [0; QNR];
    let (groups, panels) = (k.div_ceil(KG), n.div_ceil(QNR));
    let live = KG.min(k - g * KG);
    for jp in 0..panels {
        let j0 = jp * QNR;
        // The last panel's columns past n: copies padded with zeros.
        let mut tail = [[0u8; QNR]; KG];
        let full = j0 + QNR <= n;
        if !full {
            for t in 0..live {
                tail[t][..n - j0].copy_from_slice(&rows[t][j0..n]);
            }
        }
        let src: [&[u8; QNR]; KG] = std::array::from_fn(|t| match (t < live, full) {
            (false, _) => &ZERO,
            (true, true) => rows[t][j0..j0 + QNR].try_into().expect("a row"),
            (true, false) => &tail[t],
        });
        let d = &mut *(dst.add((jp * groups + g) * QNR * KG) as *mut [u8; QNR * KG]);
        interleave4(src, d);
    }
}

/// dst[j·4 + t] = src[t][j]: four rows of 16 bytes interleaved byte by byte (SSE2, which every
/// x86-64 has): pairs of rows, then pairs of pairs.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn interleave4(src: [&[u8; QNR]; KG], dst: &mut [u8; QNR * KG]) {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86-64; the loads read 16 bytes of each row, the stores write the
    // 64 bytes of `dst`.
    unsafe {
        // Above 127 `vpmaddubsw` could saturate: clamp (the quantizers never write more).
        let max = _mm_set1_epi8(ACT_MAX as i8);
        let r: [__m128i; KG] =
            std::array::from_fn(|t| _mm_min_epu8(_mm_loadu_si128(src[t].as_ptr() as *const __m128i), max));
        let (a_lo, a_hi) = (_mm_unpacklo_epi8(r[0], r[1]), _mm_unpackhi_epi8(r[0], r[1]));
        let (b_lo, b_hi) = (_mm_unpacklo_epi8(r[2], r[3]), _mm_unpackhi_epi8(r[2], r[3]));
        let out = [
            _mm_unpacklo_epi16(a_lo, b_lo),
            _mm_unpackhi_epi16(a_lo, b_lo),
            _mm_unpacklo_epi16(a_hi, b_hi),
            _mm_unpackhi_epi16(a_hi, b_hi),
        ];
        for (i, v) in out.into_iter().enumerate() {
            _mm_storeu_si128(dst.as_mut_ptr().add(16 * i) as *mut __m128i, v);
        }
    }
}

/// `interleave4` without SSE2.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn interleave4(src: [&[u8; QNR]; KG], dst: &mut [u8; QNR * KG]) {
    for j in 0..QNR {
        for t in 0..KG {
            dst[j * KG + t] = src[t][j].min(ACT_MAX);
        }
    }
}
