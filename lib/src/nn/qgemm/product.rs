//! The int8 product's driver: tiles of the packed operands handed to the kernel this CPU runs,
//! on the pool's threads, and the epilogue (scales, zero point, bias, residual, ReLU, and a
//! requantized u8 output) that every kernel applies the same way.

use super::pack::{pack_b_matrix, pack_panels_whole, PackedB};
#[cfg(target_arch = "x86_64")]
use super::{kernel_amx, kernel_avx2, kernel_vnni};
use super::{quantize_one, ActivationQuant, QIsa, QuantizedMatrix, B_BLOCK_BYTES, KG, MAX_MP, QMR, QNR};

/// What happens to each i32 sum: · a_scale[i] · b_scale after the zero point's share is
/// removed, `+ bias[i]`, `+ residual`, then `max(0, ·)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct QEpilogue<'a> {
    pub bias: Option<&'a [f32]>,
    /// Added before the ReLU.
    pub residual: Option<QResidual<'a>>,
    pub relu: bool,
    /// C is written transposed: c[i, j] at `j · ldc + i` (a Linear layer's [rows, out] from
    /// its product [out, rows]); no residual then.
    pub transposed: bool,
}

/// A residual added before the ReLU: f32 laid out as C, or u8 laid out as a u8 C (groups of 4
/// rows, `QOutput`) and dequantized with its map, `(q − zero_point) · scale` (a block's input
/// handed over in u8 alone, as PyTorch's quantized ResNets add theirs).
#[derive(Clone, Copy, Debug)]
pub enum QResidual<'a> {
    F32(&'a [f32]),
    U8(&'a [u8], ActivationQuant),
}

/// C (`a.rows() × n` f32, leading dimension `ldc`) = A · dequantized B, then the epilogue:
/// c[i, j] = a_scale[i] · bq.scale · Σ_p a[i, p] (b[p, j] − zero_point) (+ bias[i], ReLU).
/// `b` holds [a.cols(), n] with rows `ldb` apart, values in 0..=127. Runs `isa`'s kernel (`QIsa::detected()`
/// for this CPU's widest; `None`: the portable one) on the rayon pool's threads.
///
/// # Panics
/// When this CPU lacks the kernel's instructions, or the sizes disagree.
#[allow(clippy::too_many_arguments)]
pub fn qgemm(
    isa: Option<QIsa>,
    a: &QuantizedMatrix,
    b: &[u8],
    ldb: usize,
    n: usize,
    bq: ActivationQuant,
    c: &mut [f32],
    ldc: usize,
    epi: QEpilogue,
) {
    if a.rows == 0 || n == 0 {
        return;
    }
    let mut buf = Vec::new();
    let packed = pack_b_matrix(b, ldb, a.cols, n, &mut buf);
    // SAFETY: f32 and MaybeUninit<f32> share their layout; only f32 values are written.
    let c = unsafe { &mut *(c as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
    qgemm_packed(isa, a, packed, bq, c, ldc, epi);
}

/// `qgemm` of a B packed beforehand (`pack_b`, `pack_b_matrix`), into a C that need not
/// be initialised: every c[i·ldc + j], i < a.rows(), j < n, is written (c[j·ldc + i] with
/// `epi.transposed`).
pub fn qgemm_packed(
    isa: Option<QIsa>,
    a: &QuantizedMatrix,
    b: PackedB,
    bq: ActivationQuant,
    c: &mut [std::mem::MaybeUninit<f32>],
    ldc: usize,
    epi: QEpilogue,
) {
    qgemm_packed_into(isa, a, b, bq, QOutput::F32(c), ldc, epi)
}

/// Where a product's C goes: f32 values, or u8 ones requantized in the epilogue for the next
/// layer (`ActivationQuant::quantize` of the f32 value, so the same bytes as quantizing an f32
/// C afterwards), or both. The u8 values lie in groups of 4 rows, the layout the next product
/// reads in place (`PackedB::grouped_in_place`): c[i, j] at `((i / 4) · ldc + j) · 4 + i % 4`,
/// the rows past the last in its group written 0.
pub enum QOutput<'a> {
    F32(&'a mut [std::mem::MaybeUninit<f32>]),
    U8(&'a mut [std::mem::MaybeUninit<u8>], ActivationQuant),
    Both(&'a mut [std::mem::MaybeUninit<f32>], &'a mut [std::mem::MaybeUninit<u8>], ActivationQuant),
}

impl QOutput<'_> {
    /// The f32 and u8 outputs' lengths (usize::MAX where not written).
    fn lens(&self) -> (usize, usize) {
        match self {
            QOutput::F32(c) => (c.len(), usize::MAX),
            QOutput::U8(cq, _) => (usize::MAX, cq.len()),
            QOutput::Both(c, cq, _) => (c.len(), cq.len()),
        }
    }
}

/// `qgemm_packed` into either kind of output (u8 not transposed).
pub fn qgemm_packed_into(
    isa: Option<QIsa>,
    a: &QuantizedMatrix,
    b: PackedB,
    bq: ActivationQuant,
    mut c: QOutput,
    ldc: usize,
    epi: QEpilogue,
) {
    assert!(isa.is_none_or(|i| i.supported()), "this CPU cannot run the {isa:?} int8 kernel");
    let (m, k, n) = (a.rows, a.cols, b.n);
    assert_eq!(b.k, k, "B has {} rows, A {k} columns", b.k);
    if m == 0 || n == 0 {
        return;
    }
    // Element (i, j) of C at i·rs + j·cs.
    let (rs, cs) = if epi.transposed { (1, ldc) } else { (ldc, 1) };
    let (outer, inner) = if epi.transposed { (n, m) } else { (m, n) };
    assert!(inner <= ldc || outer == 1, "rows overlap");
    let (c_len, cq_len) = c.lens();
    assert!((outer - 1) * ldc + inner <= c_len, "output buffer too small");
    assert!((m.div_ceil(QMR) - 1) * ldc * QMR + n * QMR <= cq_len, "u8 output buffer too small");
    assert!(!(epi.transposed && epi.residual.is_some()), "a transposed product takes no residual");
    assert!(!(epi.transposed && !matches!(c, QOutput::F32(..))), "a transposed product is f32");
    assert!(cs <= i32::MAX as usize / QNR, "columns too far apart");
    if let Some(bias) = epi.bias {
        assert!(bias.len() >= m, "bias shorter than the rows");
    }
    match epi.residual {
        Some(QResidual::F32(res)) => assert!(res.len() >= (m - 1) * ldc + n, "residual too small"),
        Some(QResidual::U8(res, _)) => {
            assert!((m.div_ceil(QMR) - 1) * ldc * QMR + n * QMR <= res.len(), "u8 residual too small")
        }
        None => {}
    }
    let (res_scale, res_zp) = match epi.residual {
        Some(QResidual::U8(_, q)) => (q.scale, q.zero_point as i32),
        _ => (0.0, 0),
    };
    let groups = k.div_ceil(KG);
    let panels = n.div_ceil(QNR);
    // The kernel's tile in panels: the VNNI kernel covers several A and B panels per call.
    let (mp, np) = match isa {
        #[cfg(target_arch = "x86_64")]
        Some(QIsa::Avx512Vnni) => (kernel_vnni::VNNI_MP, kernel_vnni::VNNI_NP),
        #[cfg(target_arch = "x86_64")]
        Some(QIsa::Amx) => (kernel_amx::AMX_MP, kernel_amx::AMX_NP),
        _ => (1, 1),
    };
    // Column blocks of whole tiles near B_BLOCK_BYTES: a block stays in L2 while A panels pass.
    let per_block = (B_BLOCK_BYTES / (groups * QNR * KG * np).max(1)).max(1) * np;
    let blocks = panels.div_ceil(per_block);
    // Tasks are (column block, row part) pairs, handed out as threads free up: at least 4 per
    // thread, so that the last ones leave little idle (5 column blocks split 3 and 2 over 2
    // threads ran the 28² layer at a third of the kernel's rate), the row panels split in whole
    // tiles where there are few column blocks (a convolution's 7² positions).
    let threads = crate::nn::simd::pool_threads();
    let row_panels = m.div_ceil(QMR);
    let row_parts = match threads {
        1 => 1,
        _ => (4 * threads).div_ceil(blocks).clamp(1, row_panels.div_ceil(mp)),
    };
    let per_part = row_panels.div_ceil(mp).div_ceil(row_parts) * mp;
    // Panels packed on demand where each tile has one task; where row parts share the tiles,
    // packed whole first (in parallel) rather than once per part.
    let panel_len = groups * QNR * KG;
    let mut whole = Vec::new();
    let (b, packer) = match b.packer() {
        Some(pack) if row_parts > 1 => (pack_panels_whole(k, n, pack, &mut whole), None),
        p => (b, p),
    };
    // The outputs written; a pointer not written stays null.
    let requant = |q: &ActivationQuant| (1.0 / q.scale, q.zero_point as f32);
    let (c_ptr, cq_ptr, (q_inv, q_zp)) = match &mut c {
        QOutput::F32(c) => (c.as_mut_ptr() as *mut f32, std::ptr::null_mut(), (1.0, 0.0)),
        QOutput::U8(c, q) => (std::ptr::null_mut(), c.as_mut_ptr() as *mut u8, requant(q)),
        QOutput::Both(c, cq, q) => (c.as_mut_ptr() as *mut f32, cq.as_mut_ptr() as *mut u8, requant(q)),
    };
    let (c_ptr, cq_ptr) = (crate::nn::simd::DisjointMut(c_ptr), crate::nn::simd::DisjointMut(cq_ptr));
    // Row panel ip's epilogue constants (rows 0 past the last panel).
    let tile_out = |ip: usize| {
        let i0 = ip * QMR;
        let rows = QMR.min(m.saturating_sub(i0));
        TileOut {
            c: std::ptr::null_mut(),
            cq: std::ptr::null_mut(),
            q_inv,
            q_zp,
            res: std::ptr::null(),
            res_q: std::ptr::null(),
            res_scale,
            res_zp,
            ldc: rs,
            cs,
            rows,
            cols: 0,
            shift: std::array::from_fn(
                |r| if r < rows { bq.zero_point as i32 * a.row_sums[i0 + r] } else { 0 },
            ),
            scale: std::array::from_fn(|r| if r < rows { a.scales[i0 + r] * bq.scale } else { 0.0 }),
            bias: std::array::from_fn(|r| match epi.bias {
                Some(b) if r < rows => b[i0 + r],
                _ => 0.0,
            }),
            relu: epi.relu,
        }
    };
    // Points A panels ip..'s epilogues `outs` at their tile of B panels jp.. (`live` of them).
    let aim = |outs: &mut [TileOut], ip: usize, jp: usize, live: usize| {
        let jj = jp * QNR;
        for (p, out) in outs.iter_mut().enumerate() {
            let i0 = (ip + p) * QMR;
            out.cols = (live * QNR).min(n - jj);
            // Task (blk, part) owns the rows of its part and the columns of its
            // block: disjoint from the other tasks' tiles, inside `c` (asserted
            // above). (An output not written stays null.)
            if !c_ptr.0.is_null() {
                out.c = c_ptr.at(i0 * rs + jj * cs);
            }
            if !cq_ptr.0.is_null() {
                // u8 in groups of 4 rows: panel ip + p is group ip + p.
                out.cq = cq_ptr.at(((ip + p) * ldc + jj) * QMR);
            }
            match epi.residual {
                Some(QResidual::F32(r)) => out.res = r.as_ptr().wrapping_add(i0 * ldc + jj),
                // In groups of 4 rows, as the u8 output.
                Some(QResidual::U8(r, _)) => out.res_q = r.as_ptr().wrapping_add(((ip + p) * ldc + jj) * QMR),
                None => {}
            }
        }
    };
    // One kernel call: A panels ip.. (their epilogues `outs`) times B panels jp.. (`live`
    // of them sharing storage `bp`).
    let call = |outs: &mut [TileOut; MAX_MP],
                ip: usize,
                jp: usize,
                live: usize,
                bp: &[u8],
                b_stride: usize,
                g_stride: usize| {
        aim(outs, ip, jp, live);
        for out in &outs[..] {
            prefetch_next_tile(out);
        }
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU runs AVX2 (asserted); the panels hold `groups`
            // groups; the tile's rows and columns lie inside `c` and the residual.
            Some(QIsa::Avx2) => unsafe { kernel_avx2::kernel(groups, a.panel(ip), bp, g_stride, &outs[0]) },
            #[cfg(target_arch = "x86_64")]
            Some(QIsa::Avx512Vnni) => {
                // An absent A panel (rows 0) reads the last one again.
                let ap = std::array::from_fn(|p| a.panel((ip + p).min(row_panels - 1)).as_ptr());
                const { assert!(kernel_vnni::VNNI_MP == MAX_MP) };
                // SAFETY: the CPU runs AVX-512 VNNI (asserted); panels jp..jp +
                // live share bp's storage, `b_stride` bytes apart, their groups
                // `g_stride`; as above.
                unsafe { kernel_vnni::kernel(groups, ap, bp.as_ptr(), b_stride, g_stride, live, outs) }
            }
            #[allow(unreachable_patterns)]
            _ => {
                let mut tile = [0i32; QMR * QNR];
                kernel_portable(groups, a.panel(ip), bp, g_stride, &mut tile);
                // SAFETY: as above.
                unsafe { finish_tile(&tile, &outs[0]) };
            }
        }
    };
    // The column block's panels in tiles of at most np, first split where B's storage changes
    // (an in-place B's last panel, packed apart), then as even as they come (4 panels: 2 + 2,
    // not 3 + 1, whose one-panel tile is too few sums to cover the kernel's latency; 12 in
    // place and a tail: 3 + 3 + 3 + 3 + 1, not 2 + 3 + 2 + 3 + 2 + 1): f(jp, live).
    let tiles_of = |cols: std::ops::Range<usize>, f: &mut dyn FnMut(usize, usize)| {
        let mut first = cols.start;
        while first < cols.end {
            let len = b.shared(first).min(cols.end - first);
            let tiles = len.div_ceil(np);
            for t in 0..tiles {
                let jp = first + t * len / tiles;
                f(jp, first + (t + 1) * len / tiles - jp);
            }
            first += len;
        }
    };
    // Row panels `rows` (whole tiles) times B panels `cols` of C, an A tile at a time over the
    // column block, which stays in L2 meanwhile. Panels packed on demand: the block's, into this
    // thread's buffer, first. (A B tile outer, in L1 while the A tiles pass, ran 5–8 % slower in
    // the models.)
    let run = |cols: std::ops::Range<usize>, rows: std::ops::Range<usize>| {
        let over = |packed: Option<&[u8]>| {
            #[cfg(target_arch = "x86_64")]
            if isa == Some(QIsa::Amx) {
                let amx = || {
                    for ip in rows.clone().step_by(mp) {
                        let mut outs: [TileOut; kernel_amx::AMX_MP] =
                            std::array::from_fn(|p| tile_out((ip + p).min(row_panels)));
                        tiles_of(cols.clone(), &mut |jp, live| {
                            let (bp, b_stride, g_stride) = match packed {
                                Some(block) => (&block[(jp - cols.start) * panel_len..], panel_len, QNR * KG),
                                None => b.panel(jp),
                            };
                            aim(&mut outs, ip, jp, live);
                            let bs = [bp.as_ptr(), bp.as_ptr().wrapping_add(b_stride)];
                            // SAFETY: `Amx` is detected only with the tile state granted and
                            // VNNI (`QIsa::supported`), the tiles configured around this loop;
                            // the panels hold `groups` groups; the tile's rows and columns lie
                            // inside `c` and the residual (as for the VNNI kernel).
                            unsafe { kernel_amx::tile(groups, a.amx_block(ip), bs, g_stride, live, &outs) }
                        });
                    }
                };
                // SAFETY: as above.
                return unsafe { crate::nn::gemm::with_tiles(amx) };
            }
            for ip in rows.clone().step_by(mp) {
                let mut outs: [TileOut; MAX_MP] = std::array::from_fn(|p| tile_out((ip + p).min(row_panels)));
                tiles_of(cols.clone(), &mut |jp, live| {
                    let (bp, b_stride, g_stride) = match packed {
                        Some(block) => (&block[(jp - cols.start) * panel_len..], panel_len, QNR * KG),
                        None => b.panel(jp),
                    };
                    call(&mut outs, ip, jp, live, bp, b_stride, g_stride);
                });
            }
        };
        match packer {
            Some(pack) => TILE_B.with(|buf| {
                let buf = &mut *buf.borrow_mut();
                let len = cols.len() * panel_len;
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                pack(cols.clone(), &mut buf[..len]);
                over(Some(&buf[..len]))
            }),
            None => over(None),
        }
    };
    let block = |blk: usize| blk * per_block..((blk + 1) * per_block).min(panels);
    crate::nn::simd::par_for_stealing(blocks * row_parts, |task| {
        let (blk, part) = (task / row_parts, task % row_parts);
        let part_end = ((part + 1) * per_part).min(row_panels);
        run(block(blk), part * per_part..part_end)
    })
}

thread_local! {
    /// The column block this thread packed on demand, kept between calls.
    static TILE_B: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where a tile's sums go: `c` (f32) and `cq` (u8, requantized: ·`q_inv`, rounded, +`q_zp`,
/// clamped to 0..=127; its 4 rows interleaved, column j's at `cq + 4j`), either null when not
/// written, and `res` point at its first element (rows `ldc` apart, columns `cs`: 1 but in a
/// transposed product, which has no residual; `res` null without a residual; `res_q` a u8
/// residual laid out as `cq`, dequantized with `res_scale` and `res_zp`), and what each row's
/// epilogue uses.
pub(super) struct TileOut {
    pub c: *mut f32,
    pub cq: *mut u8,
    pub q_inv: f32,
    pub q_zp: f32,
    pub res: *const f32,
    pub res_q: *const u8,
    pub res_scale: f32,
    pub res_zp: i32,
    pub ldc: usize,
    pub cs: usize,
    pub rows: usize,
    pub cols: usize,
    pub shift: [i32; QMR],
    pub scale: [f32; QMR],
    pub bias: [f32; QMR],
    pub relu: bool,
}

/// Asks for the lines the next tile along these rows (the next `out.cols` columns, as
/// `tiles_of` goes) stores and reads in its epilogue, while this tile's sums run: its rows lie
/// `ldc` apart, more streams than the hardware prefetchers follow, and a tile's sums over a
/// 1×1 convolution's few k groups take less time than a miss.
#[inline]
fn prefetch_next_tile(out: &TileOut) {
    use crate::nn::simd::prefetch as fetch;
    if out.cs != 1 || out.cols == 0 {
        return;
    }
    let (from, to) = (out.cols, 2 * out.cols - 1);
    for r in 0..out.rows {
        for j in [from, to] {
            if !out.c.is_null() {
                fetch(out.c.wrapping_add(r * out.ldc + j));
            }
            if !out.res.is_null() {
                fetch(out.res.wrapping_add(r * out.ldc + j));
            }
        }
    }
    // u8 in groups of 4 rows: the group's columns are contiguous, 4 bytes each.
    for j in [from, to] {
        if !out.cq.is_null() {
            fetch(out.cq.wrapping_add(j * QMR));
        }
        if !out.res_q.is_null() {
            fetch(out.res_q.wrapping_add(j * QMR));
        }
    }
}

/// A tile's outputs: (acc − shift) · scale + bias (one fused multiply-add; + an f32 residual,
/// or a u8 one's (q − zero point) · scale in another), ReLU, in this order (the vector kernels'
/// epilogues round the same way).
///
/// # Safety
/// `out`'s rows × cols lie inside the output and residual buffers.
pub(super) unsafe fn finish_tile(tile: &[i32; QMR * QNR], out: &TileOut) {
    finish_tile_body(tile, out)
}

/// `finish_tile`'s body, inlined into callers compiled with FMA.
///
/// # Safety
/// As `finish_tile`.
#[inline(always)]
pub(super) unsafe fn finish_tile_body(tile: &[i32; QMR * QNR], out: &TileOut) {
    for r in 0..out.rows {
        for j in 0..out.cols {
            let mut v =
                ((tile[r * QNR + j].wrapping_sub(out.shift[r])) as f32).mul_add(out.scale[r], out.bias[r]);
            if !out.res.is_null() {
                v += *out.res.add(r * out.ldc + j);
            }
            if !out.res_q.is_null() {
                v = ((*out.res_q.add(j * QMR + r) as i32 - out.res_zp) as f32).mul_add(out.res_scale, v);
            }
            let v = if out.relu { v.max(0.0) } else { v };
            if !out.c.is_null() {
                *out.c.add(r * out.ldc + j * out.cs) = v;
            }
            if !out.cq.is_null() {
                *out.cq.add(j * QMR + r) = quantize_one(v, out.q_inv, out.q_zp);
            }
        }
    }
    if !out.cq.is_null() && out.rows > 0 {
        for j in 0..out.cols {
            for r in out.rows..QMR {
                *out.cq.add(j * QMR + r) = 0;
            }
        }
    }
}

/// The product of one A panel and one B panel over `groups` k groups (`g_stride` bytes apart in
/// `b`) into `tile` [QMR][QNR], in plain integer arithmetic: what the vector kernels compute.
fn kernel_portable(groups: usize, a: &[i8], b: &[u8], g_stride: usize, tile: &mut [i32; QMR * QNR]) {
    tile.fill(0);
    for g in 0..groups {
        let (ag, bg) = (&a[g * QMR * KG..][..QMR * KG], &b[g * g_stride..][..QNR * KG]);
        for r in 0..QMR {
            for j in 0..QNR {
                let s: i32 = (0..KG).map(|t| ag[r * KG + t] as i32 * bg[j * KG + t] as i32).sum();
                tile[r * QNR + j] += s;
            }
        }
    }
}
