//! int8 matrix products for quantized inference (issue 24): C = A·B with A the weights in s8
//! (symmetric, one scale per output row), B the activations in u8 (one scale and zero point per
//! tensor), products summed exactly in i32, and the epilogue (scales, zero-point correction,
//! bias, ReLU) in f32.
//!
//! Activations take 7 bits (0..=127), as PyTorch's x86 backend observes them with
//! `reduce_range`: AVX2's `vpmaddubsw` sums two u8 × s8 products into an i16 with saturation,
//! and 2 · 127 · 127 fits where 2 · 255 · 127 does not. Weights take -127..=127 (symmetric).
//! Every kernel then computes the same integers, so the paths agree exactly.
//!
//! Kernels: AVX-512 VNNI (`vpdpbusd`), AVX2 (`vpmaddubsw` + `vpmaddwd`) and a portable one,
//! picked at run time; all sum the same integers and finish them with the same f32 operations.
//!
//! Layout: k runs in groups of 4 (one i32 lane of `vpmaddubsw` + `vpmaddwd`, and of VNNI's
//! `vpdpbusd`). A is packed once (`QuantizedMatrix`) in panels of `QMR` rows, each group's
//! `QMR × 4` bytes together (one broadcast per row); B in panels of `QNR` columns, each group's
//! `QNR × 4` bytes together (two vector loads). The kernel runs the whole K for a tile (i32
//! accumulators need no K blocking); a block of B panels stays in L2 while A panels stream past.

#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
#[cfg(target_arch = "x86_64")]
mod kernel_vnni;
mod peak;
#[cfg(test)]
mod tests;

use super::gemm::MatRef;
pub use peak::peak_gmacs;

/// Rows of an A panel (one i32 accumulator pair per row in the AVX2 kernel).
pub const QMR: usize = 4;
/// Columns of a B panel (two vectors of 8 i32 lanes).
pub const QNR: usize = 16;
/// k values per group.
const KG: usize = 4;
/// The most A panels a kernel call covers (the VNNI kernel's `VNNI_MP`).
const MAX_MP: usize = 2;
/// Bytes of packed B one column block holds: the block stays in L2 while A panels pass.
const B_BLOCK_BYTES: usize = 1 << 18;

/// The largest quantized activation (7 bits).
pub const ACT_MAX: u8 = 127;
/// The largest quantized weight magnitude (symmetric s8).
pub const WEIGHT_MAX: i8 = 127;

/// The int8 kernel this CPU runs: `Some` a vector kernel, `None` the portable one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QIsa {
    /// `vpmaddubsw` + `vpmaddwd` on 256-bit vectors.
    Avx2,
    /// `vpdpbusd` on 512-bit vectors (AVX-512 VNNI).
    Avx512Vnni,
}

impl QIsa {
    /// The widest int8 kernel this CPU has (`VIDKIT_GEMM=portable` picks none, `avx2` the AVX2
    /// one, to compare them on one machine).
    pub fn detected() -> Option<QIsa> {
        // Asked once per layer call: looked up once per process, as `gemm::Isa::detected`.
        static DETECTED: std::sync::OnceLock<Option<QIsa>> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| match std::env::var("VIDKIT_GEMM").as_deref() {
            Ok("portable") => None,
            Ok("avx2") => QIsa::Avx2.supported().then_some(QIsa::Avx2),
            _ => [QIsa::Avx512Vnni, QIsa::Avx2].into_iter().find(|i| i.supported()),
        })
    }

    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                QIsa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
                QIsa::Avx512Vnni => {
                    std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// A weight matrix quantized per row and packed for the int8 kernels.
#[derive(Clone, Debug)]
pub struct QuantizedMatrix {
    /// Panels of `QMR` rows, each k group's `QMR × KG` bytes together; rows and k past the end 0.
    packed: Vec<i8>,
    rows: usize,
    cols: usize,
    /// Row i's value is `scales[i] · q`.
    scales: Vec<f32>,
    /// Σ_k q[i, k]: the zero point's share of each row's sums.
    row_sums: Vec<i32>,
}

impl QuantizedMatrix {
    /// `a` quantized symmetrically per row: scale = max |a_row| / 127 (1 for a zero row),
    /// q = round(a / scale) in -127..=127.
    pub fn quantize(a: MatRef) -> Self {
        let (m, k) = (a.rows, a.cols);
        let mut q = vec![0i8; m * k];
        let mut scales = vec![1f32; m];
        for i in 0..m {
            let amax = (0..k).map(|p| a.data[i * a.rs + p * a.cs].abs()).fold(0f32, f32::max);
            if amax > 0.0 && amax.is_finite() {
                scales[i] = amax / WEIGHT_MAX as f32;
            }
            let inv = 1.0 / scales[i];
            for p in 0..k {
                let x = (a.data[i * a.rs + p * a.cs] * inv).round_ties_even();
                q[i * k + p] = x.clamp(-(WEIGHT_MAX as f32), WEIGHT_MAX as f32) as i8;
            }
        }
        Self::from_quantized(&q, m, k, scales)
    }

    /// Row-major quantized values `q` [rows, cols] with their row scales.
    pub fn from_quantized(q: &[i8], rows: usize, cols: usize, scales: Vec<f32>) -> Self {
        assert!(q.len() == rows * cols && scales.len() == rows, "quantized matrix: sizes differ");
        assert!(q.iter().all(|&v| v >= -WEIGHT_MAX), "quantized weights lie in -127..=127");
        let groups = cols.div_ceil(KG);
        let panels = rows.div_ceil(QMR);
        let mut packed = vec![0i8; panels * groups * QMR * KG];
        for i in 0..rows {
            let (panel, r) = (i / QMR, i % QMR);
            for p in 0..cols {
                let (g, t) = (p / KG, p % KG);
                packed[((panel * groups + g) * QMR + r) * KG + t] = q[i * cols + p];
            }
        }
        let row_sums = q.chunks(cols.max(1)).take(rows).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
        Self { packed, rows, cols, scales, row_sums: if cols == 0 { vec![0; rows] } else { row_sums } }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Quantized value (i, p).
    pub fn value(&self, i: usize, p: usize) -> i8 {
        let groups = self.cols.div_ceil(KG);
        self.packed[(((i / QMR) * groups + p / KG) * QMR + i % QMR) * KG + p % KG]
    }

    fn panel(&self, panel: usize) -> &[i8] {
        let len = self.cols.div_ceil(KG) * QMR * KG;
        &self.packed[panel * len..][..len]
    }
}

/// How activations map to u8: q = clamp(round(x / scale) + zero_point, 0, 127).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationQuant {
    pub scale: f32,
    pub zero_point: u8,
}

impl ActivationQuant {
    /// The affine map whose 0..=127 covers `[min, max]` (widened to hold 0, which stays exact:
    /// padding and ReLU outputs are zeros).
    pub fn from_range(min: f32, max: f32) -> Self {
        let (min, max) = (min.min(0.0), max.max(0.0));
        if max <= min || !(max - min).is_finite() {
            return Self { scale: 1.0, zero_point: 0 };
        }
        let scale = (max - min) / ACT_MAX as f32;
        let zero_point = (-min / scale).round().clamp(0.0, ACT_MAX as f32) as u8;
        Self { scale, zero_point }
    }

    /// round(x · (1 / scale)) (ties to even, as fbgemm's `Quantize`) + zero point, clamped to
    /// 0..=127.
    #[inline]
    pub fn quantize(&self, x: f32) -> u8 {
        quantize_one(x, 1.0 / self.scale, self.zero_point as f32)
    }

    #[inline]
    pub fn dequantize(&self, q: u8) -> f32 {
        (q as i32 - self.zero_point as i32) as f32 * self.scale
    }

    /// Every value of `x` quantized, in vectors, on the pool's threads.
    pub fn quantize_slice(&self, x: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; x.len()];
        let (inv, zp) = (1.0 / self.scale, self.zero_point as f32);
        const CHUNK: usize = 1 << 16;
        let chunks = x.len().div_ceil(CHUNK);
        let out_ptr = SendU8(out.as_mut_ptr());
        super::simd::par_for(chunks, |i| {
            let (lo, hi) = (i * CHUNK, ((i + 1) * CHUNK).min(x.len()));
            let out_ptr = &out_ptr;
            // SAFETY: chunk i writes out[lo..hi] only: disjoint from the other chunks'.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add(lo), hi - lo) };
            quantize_run(&x[lo..hi], inv, zp, o);
        });
        out
    }
}

/// A pointer the quantizing tasks share, each writing its own range.
struct SendU8(*mut u8);
// SAFETY: the tasks write disjoint ranges (see `quantize_slice`).
unsafe impl Sync for SendU8 {}

#[inline(always)]
fn quantize_one(x: f32, inv: f32, zp: f32) -> u8 {
    ((x * inv).round_ties_even() + zp).clamp(0.0, ACT_MAX as f32) as u8
}

#[inline(always)]
pub(super) fn quantize_run_body(x: &[f32], inv: f32, zp: f32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize_one(v, inv, zp);
    }
}

/// `quantize_run_body` in AVX2 vectors where the CPU has them (32 values a step: round, clamp,
/// convert, then two saturating packs; the same values).
fn quantize_run(x: &[f32], inv: f32, zp: f32, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { kernel_avx2::quantize(x, inv, zp, out) };
    }
    quantize_run_body(x, inv, zp, out)
}

/// What happens to each i32 sum: · a_scale[i] · b_scale after the zero point's share is
/// removed, `+ bias[i]`, `+ residual`, then `max(0, ·)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct QEpilogue<'a> {
    pub bias: Option<&'a [f32]>,
    /// Added before the ReLU, laid out as C.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
    /// C is written transposed: c[i, j] at `j · ldc + i` (a Linear layer's [rows, out] from
    /// its product [out, rows]); no residual then.
    pub transposed: bool,
}

/// B packed for the kernels: panels of `QNR` columns over all k, each k group's `QNR × KG` bytes
/// together (column-major inside a group); columns and k past the end hold 0.
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a> {
    data: &'a [u8],
    k: usize,
    n: usize,
}

impl<'a> PackedB<'a> {
    fn groups(&self) -> usize {
        self.k.div_ceil(KG)
    }

    /// Bytes of one panel.
    fn panel_len(&self) -> usize {
        self.groups() * QNR * KG
    }

    fn panel(&self, jp: usize) -> &'a [u8] {
        &self.data[jp * self.panel_len()..][..self.panel_len()]
    }
}

/// Bytes past a row that `pack_b_rows`' row writer may scribble on.
pub const ROW_SLACK: usize = 64;

/// Packs B [k, n] given by its rows: `row(p, dst)` writes row p's n values (0..=127; more is
/// clamped) into `dst[..n]`, and may overwrite up to `ROW_SLACK` bytes after them. In parallel
/// over k groups, each filling its 4 rows, in order, into a scratch buffer and interleaving
/// them into every panel; `out` is reused (grown, never zeroed).
pub fn pack_b_rows<'a>(
    k: usize,
    n: usize,
    out: &'a mut Vec<u8>,
    row: impl Fn(usize, &mut [u8]) + Sync,
) -> PackedB<'a> {
    pack_b_groups(k, n, out, |g, pack| {
        PACK_ROWS.with(|rows| {
            let rows = &mut rows.borrow_mut();
            rows.resize(KG * n + ROW_SLACK, 0);
            // Row t's slack is row t + 1's start, written after it.
            for t in 0..KG.min(k - g * KG) {
                row(g * KG + t, &mut rows[t * n..][..n + ROW_SLACK]);
            }
            pack(std::array::from_fn(|t| &rows[(t * n).min(rows.len())..][..n]));
        })
    })
}

thread_local! {
    /// A k group's rows before `pack_b_rows` interleaves them, kept between calls.
    static PACK_ROWS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `pack_b_rows` of a matrix B [k, n] whose rows lie `ldb` apart in `b`, read in place.
pub fn pack_b_matrix<'a>(b: &[u8], ldb: usize, k: usize, n: usize, out: &'a mut Vec<u8>) -> PackedB<'a> {
    assert!(n <= ldb || k <= 1, "B's rows overlap");
    assert!(k == 0 || (k - 1) * ldb + n <= b.len(), "B holds {} values, not {k} × {n}", b.len());
    pack_b_groups(k, n, out, |g, pack| {
        pack(std::array::from_fn(|t| match g * KG + t < k {
            true => &b[(g * KG + t) * ldb..][..n],
            false => &[][..],
        }))
    })
}

/// B packed from its transpose `bt` [n, k] (row-major; B = btᵀ), as a Linear layer's input
/// rows are: a panel's group is 16 runs of 4 bytes, one from each of its rows. Values above 127
/// are clamped; in parallel over panels.
pub fn pack_b_transposed<'a>(bt: &[u8], k: usize, n: usize, out: &'a mut Vec<u8>) -> PackedB<'a> {
    assert!(bt.len() >= k * n, "Bᵀ holds {} values, not {n} × {k}", bt.len());
    let (groups, panels, len) = grow_for(k, n, out);
    let dst = SendU8(out.as_mut_ptr());
    super::simd::par_for(panels, |jp| {
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
    PackedB { data: &out[..len], k, n }
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

/// The packing both entries share: `group(g, pack)` hands `pack` group g's 4 rows (n values
/// each; rows past k are ignored), which are interleaved into every panel, in parallel over
/// groups.
fn pack_b_groups<'a>(
    k: usize,
    n: usize,
    out: &'a mut Vec<u8>,
    group: impl Fn(usize, &mut dyn FnMut([&[u8]; KG])) + Sync,
) -> PackedB<'a> {
    let (groups, panels, len) = grow_for(k, n, out);
    let dst = SendU8(out.as_mut_ptr());
    super::simd::par_for(groups, |g| {
        let dst = &dst;
        let live = KG.min(k - g * KG);
        group(g, &mut |rows| {
            const ZERO: [u8; QNR] = [0; QNR];
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
                // SAFETY: group g of panel jp: 64 bytes that no other group's task writes,
                // inside `out` (len bytes).
                let d = unsafe { &mut *(dst.0.add((jp * groups + g) * QNR * KG) as *mut [u8; QNR * KG]) };
                interleave4(src, d);
            }
        })
    });
    PackedB { data: &out[..len], k, n }
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

/// `qgemm` of a B packed beforehand (`pack_b_rows`, `pack_b_matrix`), into a C that need not
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
/// C afterwards).
pub enum QOutput<'a> {
    F32(&'a mut [std::mem::MaybeUninit<f32>]),
    U8(&'a mut [std::mem::MaybeUninit<u8>], ActivationQuant),
    /// Both, laid out alike.
    Both(&'a mut [std::mem::MaybeUninit<f32>], &'a mut [std::mem::MaybeUninit<u8>], ActivationQuant),
}

impl QOutput<'_> {
    fn len(&self) -> usize {
        match self {
            QOutput::F32(c) => c.len(),
            QOutput::U8(c, _) => c.len(),
            QOutput::Both(c, cq, _) => c.len().min(cq.len()),
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
    assert!((outer - 1) * ldc + inner <= c.len(), "output buffer too small");
    assert!(!(epi.transposed && epi.residual.is_some()), "a transposed product takes no residual");
    assert!(!(epi.transposed && !matches!(c, QOutput::F32(..))), "a transposed product is f32");
    assert!(cs <= i32::MAX as usize / QNR, "columns too far apart");
    if let Some(bias) = epi.bias {
        assert!(bias.len() >= m, "bias shorter than the rows");
    }
    if let Some(res) = epi.residual {
        assert!(res.len() >= (m - 1) * ldc + n, "residual too small");
    }
    let groups = k.div_ceil(KG);
    let panels = n.div_ceil(QNR);
    // The kernel's tile in panels: the VNNI kernel covers several A and B panels per call.
    let (mp, np) = match isa {
        #[cfg(target_arch = "x86_64")]
        Some(QIsa::Avx512Vnni) => (kernel_vnni::VNNI_MP, kernel_vnni::VNNI_NP),
        _ => (1, 1),
    };
    // Column blocks of whole tiles near B_BLOCK_BYTES: a block stays in L2 while A panels pass.
    let per_block = (B_BLOCK_BYTES / (groups * QNR * KG * np).max(1)).max(1) * np;
    let blocks = panels.div_ceil(per_block);
    // Tasks are (column block, row part) pairs, handed out as threads free up: at least 4 per
    // thread, so that the last ones leave little idle (5 column blocks split 3 and 2 over 2
    // threads ran the 28² layer at a third of the kernel's rate), the row panels split in whole
    // tiles where there are few column blocks (a convolution's 7² positions).
    let threads = super::simd::pool_threads();
    let row_panels = m.div_ceil(QMR);
    let row_parts = match threads {
        1 => 1,
        _ => (4 * threads).div_ceil(blocks).clamp(1, row_panels.div_ceil(mp)),
    };
    let per_part = row_panels.div_ceil(mp).div_ceil(row_parts) * mp;
    // The outputs written; a pointer not written stays null.
    let requant = |q: &ActivationQuant| (1.0 / q.scale, q.zero_point as f32);
    let (c_ptr, cq_ptr, (q_inv, q_zp)) = match &mut c {
        QOutput::F32(c) => (c.as_mut_ptr() as *mut f32, std::ptr::null_mut(), (1.0, 0.0)),
        QOutput::U8(c, q) => (std::ptr::null_mut(), c.as_mut_ptr() as *mut u8, requant(q)),
        QOutput::Both(c, cq, q) => (c.as_mut_ptr() as *mut f32, cq.as_mut_ptr() as *mut u8, requant(q)),
    };
    let (c_ptr, cq_ptr) = (super::simd::DisjointMut(c_ptr), super::simd::DisjointMut(cq_ptr));
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
    super::simd::par_for_stealing(blocks * row_parts, |task| {
        let (blk, part) = (task / row_parts, task % row_parts);
        let (block_end, part_end) =
            (((blk + 1) * per_block).min(panels), ((part + 1) * per_part).min(row_panels));
        for ip in (part * per_part..part_end).step_by(mp) {
            // The A panels' epilogues (the second one unused by the one-panel kernels).
            let mut outs: [TileOut; MAX_MP] = std::array::from_fn(|p| tile_out((ip + p).min(row_panels)));
            // The block's panels in tiles of at most np, as even as they come (4 panels: 2 + 2,
            // not 3 + 1, whose one-panel tile is too few sums to cover the kernel's latency).
            let (first, len) = (blk * per_block, block_end - blk * per_block);
            let tiles = len.div_ceil(np);
            for t in 0..tiles {
                // Tile t: panels jp..jp + live.
                let jp = first + t * len / tiles;
                let live = first + (t + 1) * len / tiles - jp;
                let jj = jp * QNR;
                for (p, out) in outs.iter_mut().enumerate() {
                    let i0 = (ip + p) * QMR;
                    out.cols = (live * QNR).min(n - jj);
                    // Task (blk, part) owns the rows of its part and the columns of its block:
                    // disjoint from the other tasks' tiles, inside `c` (asserted above).
                    // (An output not written stays null.)
                    if !c_ptr.0.is_null() {
                        out.c = c_ptr.at(i0 * rs + jj * cs);
                    }
                    if !cq_ptr.0.is_null() {
                        out.cq = cq_ptr.at(i0 * rs + jj * cs);
                    }
                    out.res =
                        epi.residual.map_or(std::ptr::null(), |r| r.as_ptr().wrapping_add(i0 * ldc + jj));
                }
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU runs AVX2 (asserted); the panels hold `groups` groups; the
                    // tile's rows and columns lie inside `c` and the residual.
                    Some(QIsa::Avx2) => unsafe {
                        kernel_avx2::kernel(groups, a.panel(ip), b.panel(jp), &outs[0])
                    },
                    #[cfg(target_arch = "x86_64")]
                    Some(QIsa::Avx512Vnni) => {
                        // An absent A panel (rows 0) reads the last one again.
                        let ap = std::array::from_fn(|p| a.panel((ip + p).min(row_panels - 1)).as_ptr());
                        const { assert!(kernel_vnni::VNNI_MP == MAX_MP) };
                        // SAFETY: the CPU runs AVX-512 VNNI (asserted); panels jp..jp + live lie
                        // inside B, `panel_len()` bytes apart; as above.
                        unsafe {
                            kernel_vnni::kernel(groups, ap, b.panel(jp).as_ptr(), b.panel_len(), live, &outs)
                        }
                    }
                    #[allow(unreachable_patterns)]
                    _ => {
                        let mut tile = [0i32; QMR * QNR];
                        kernel_portable(groups, a.panel(ip), b.panel(jp), &mut tile);
                        // SAFETY: as above.
                        unsafe { finish_tile(&tile, &outs[0]) };
                    }
                }
            }
        }
    });
}

/// Where a tile's sums go: `c` (f32) and `cq` (u8, requantized: ·`q_inv`, rounded, +`q_zp`,
/// clamped to 0..=127), either null when not written, and `res` point at its first element (rows `ldc` apart,
/// columns `cs`: 1 but in a transposed product, which has no residual; `res` null without a
/// residual), and what each row's epilogue uses.
pub(super) struct TileOut {
    pub c: *mut f32,
    pub cq: *mut u8,
    pub q_inv: f32,
    pub q_zp: f32,
    pub res: *const f32,
    pub ldc: usize,
    pub cs: usize,
    pub rows: usize,
    pub cols: usize,
    pub shift: [i32; QMR],
    pub scale: [f32; QMR],
    pub bias: [f32; QMR],
    pub relu: bool,
}

/// A tile's outputs: (acc − shift) · scale + bias (+ residual), ReLU, in this order (the vector
/// kernels' epilogues round the same way).
///
/// # Safety
/// `out`'s rows × cols lie inside the output and residual buffers.
pub(super) unsafe fn finish_tile(tile: &[i32; QMR * QNR], out: &TileOut) {
    for r in 0..out.rows {
        for j in 0..out.cols {
            let mut v = (tile[r * QNR + j].wrapping_sub(out.shift[r])) as f32 * out.scale[r] + out.bias[r];
            if !out.res.is_null() {
                v += *out.res.add(r * out.ldc + j);
            }
            let v = if out.relu { v.max(0.0) } else { v };
            if !out.c.is_null() {
                *out.c.add(r * out.ldc + j * out.cs) = v;
            }
            if !out.cq.is_null() {
                *out.cq.add(r * out.ldc + j * out.cs) = quantize_one(v, out.q_inv, out.q_zp);
            }
        }
    }
}

/// dst[j·4 + t] = src[t][j]: four rows of 16 bytes interleaved byte by byte (SSE2, which every
/// x86-64 has): pairs of rows, then pairs of pairs.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn interleave4(src: [&[u8; QNR]; KG], dst: &mut [u8; QNR * KG]) {
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
fn interleave4(src: [&[u8; QNR]; KG], dst: &mut [u8; QNR * KG]) {
    for j in 0..QNR {
        for t in 0..KG {
            dst[j * KG + t] = src[t][j].min(ACT_MAX);
        }
    }
}

/// The product of one A panel and one B panel over `groups` k groups into `tile` [QMR][QNR], in
/// plain integer arithmetic: what the vector kernels compute.
fn kernel_portable(groups: usize, a: &[i8], b: &[u8], tile: &mut [i32; QMR * QNR]) {
    tile.fill(0);
    for g in 0..groups {
        let (ag, bg) = (&a[g * QMR * KG..][..QMR * KG], &b[g * QNR * KG..][..QNR * KG]);
        for r in 0..QMR {
            for j in 0..QNR {
                let s: i32 = (0..KG).map(|t| ag[r * KG + t] as i32 * bg[j * KG + t] as i32).sum();
                tile[r * QNR + j] += s;
            }
        }
    }
}
