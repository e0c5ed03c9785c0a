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
mod kernel_amx;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
#[cfg(target_arch = "x86_64")]
mod kernel_vnni;
mod pack;
mod peak;
mod product;
#[cfg(test)]
mod tests;

use super::gemm::MatRef;
pub(crate) use pack::interleave4;
pub use pack::{
    pack_b, pack_b_matrix, pack_b_transposed, pack_panels_whole, BSource, MatrixRows, PackedB, WrittenRows,
    ROW_SLACK,
};
pub(in crate::nn) use peak::gmacs_on_every_thread;
pub use peak::peak_gmacs;
use product::{finish_tile_body, TileOut};
pub use product::{qgemm, qgemm_packed, qgemm_packed_into, QEpilogue, QOutput, QResidual};

/// Rows of an A panel (one i32 accumulator pair per row in the AVX2 kernel).
pub const QMR: usize = 4;
/// Columns of a B panel (two vectors of 8 i32 lanes).
pub const QNR: usize = 16;
/// k values per group (and rows per group of a u8 output).
pub const KG: usize = 4;
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
    /// AMX tiles (`tdpbsud`), with the VNNI kernel's epilogue.
    Amx,
}

impl QIsa {
    /// The widest int8 kernel this CPU has (`VIDKIT_GEMM=portable` picks none, `avx2` the AVX2
    /// one, `avx512` the VNNI one, to compare them on one machine).
    pub fn detected() -> Option<QIsa> {
        // Asked once per layer call: looked up once per process, as `gemm::Isa::detected`.
        static DETECTED: std::sync::OnceLock<Option<QIsa>> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| match std::env::var("VIDKIT_GEMM").as_deref() {
            Ok("portable") => None,
            Ok("avx2") => QIsa::Avx2.supported().then_some(QIsa::Avx2),
            Ok("avx512") => [QIsa::Avx512Vnni, QIsa::Avx2].into_iter().find(|i| i.supported()),
            _ => [QIsa::Amx, QIsa::Avx512Vnni, QIsa::Avx2].into_iter().find(|i| i.supported()),
        })
    }

    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                QIsa::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
                }
                QIsa::Avx512Vnni => {
                    std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx512vnni")
                }
                // The epilogue is the VNNI kernel's.
                QIsa::Amx => QIsa::Avx512Vnni.supported() && super::gemm::amx_int8_available(),
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
    /// The values in AMX tiles (`kernel_amx::a_tiles`), made on first use.
    amx: std::sync::OnceLock<Vec<i8>>,
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
        let row_sums = if cols == 0 { vec![0; rows] } else { row_sums };
        Self { packed, rows, cols, scales, row_sums, amx: std::sync::OnceLock::new() }
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

    /// The same values with columns (c, tap) — `channels` × `taps`, c major — reordered as
    /// (c / 4, tap, c % 4), the channels padded to a multiple of 4 with zero columns: the k order
    /// of columns packed from a channel-grouped input (`int8::columns`).
    pub fn grouped_taps(&self, channels: usize, taps: usize) -> QuantizedMatrix {
        assert_eq!(
            channels * taps,
            self.cols,
            "{channels} channels × {taps} taps are not {} columns",
            self.cols
        );
        let k = channels.div_ceil(KG) * KG * taps;
        let mut q = vec![0i8; self.rows * k];
        for i in 0..self.rows {
            for c in 0..channels {
                for tap in 0..taps {
                    q[i * k + ((c / KG) * taps + tap) * KG + c % KG] = self.value(i, c * taps + tap);
                }
            }
        }
        Self::from_quantized(&q, self.rows, k, self.scales.clone())
    }

    /// A's 32-row block that holds panel `panel` (a multiple of 8) in AMX tiles.
    #[cfg(target_arch = "x86_64")]
    fn amx_block(&self, panel: usize) -> *const i8 {
        let tiles = self.amx.get_or_init(|| kernel_amx::a_tiles(self));
        let block_len = self.cols.div_ceil(KG).div_ceil(16) * 2048;
        tiles[panel / kernel_amx::AMX_MP * block_len..].as_ptr()
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
