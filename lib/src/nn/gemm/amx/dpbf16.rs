//! The tiles' 32 × 32 block product without tiles: AVX-512 BF16's VDPBF16PS (Cooper Lake, Zen 4
//! and later; also on AMX CPUs, where `VIDKIT_GEMM=avx512bf16` picks it) reads the same packed A
//! (`ATiles`) and paired B (`pairs`) as TDPBF16PS: each instruction multiplies one row's (k even,
//! k odd) pair, broadcast, by 16 columns' pairs and adds both products to 16 f32 sums, twice
//! AVX-512 FMA's multiply-adds an instruction. Everything around the block (packing, pairing,
//! K blocks, epilogue) is the tiles' (`blocked_bf16`).
//!
//! The block runs as four groups of 8 rows × 32 columns (16 accumulators, two B vectors and the
//! broadcast in registers). The loop is written once over [`PairDot`], so a plain-Rust model of
//! the instruction (`Modelled`) tests its indexing on any CPU.

#[cfg(target_arch = "x86_64")]
use super::{BLOCK, KSTEP, TILE};

/// Rows of a group: its 8 × 2 accumulators stay in registers.
const GROUP: usize = 8;

/// 16 f32 sums and the VDPBF16PS step on them.
pub(super) trait PairDot: Copy {
    /// 16 columns' (k even, k odd) bf16 pairs.
    type Pairs: Copy;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn pairs(p: *const u16) -> Self::Pairs;
    /// Lane j plus `a`'s two bf16 (low: k even) times column j's pair.
    unsafe fn dot(self, a: u32, b: Self::Pairs) -> Self;
}

/// The instruction on AVX-512 registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Native(std::arch::x86_64::__m512);

#[cfg(target_arch = "x86_64")]
impl PairDot for Native {
    type Pairs = std::arch::x86_64::__m512bh;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Native(std::arch::x86_64::_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Native(std::arch::x86_64::_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::arch::x86_64::_mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn pairs(p: *const u16) -> Self::Pairs {
        std::mem::transmute(std::arch::x86_64::_mm512_loadu_si512(p.cast()))
    }
    #[inline(always)]
    unsafe fn dot(self, a: u32, b: Self::Pairs) -> Self {
        use std::arch::x86_64::*;
        let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(a as i32));
        Native(_mm512_dpbf16_ps(self.0, a, b))
    }
}

/// The instruction in plain Rust, as Intel's pseudocode gives it (the odd products added first,
/// each sum rounded; a bf16 product is exact in f32); denormals are not flushed.
#[cfg(test)]
#[derive(Clone, Copy)]
pub(super) struct Modelled([f32; 16]);

/// The f32 value of bf16 bits.
#[cfg(test)]
fn widen(bits: u32) -> f32 {
    f32::from_bits((bits & 0xffff) << 16)
}

#[cfg(test)]
impl PairDot for Modelled {
    type Pairs = [u32; 16];
    unsafe fn zero() -> Self {
        Modelled([0.0; 16])
    }
    unsafe fn load(p: *const f32) -> Self {
        Modelled(std::ptr::read_unaligned(p.cast()))
    }
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p.cast(), self.0)
    }
    unsafe fn pairs(p: *const u16) -> Self::Pairs {
        std::ptr::read_unaligned(p.cast())
    }
    unsafe fn dot(self, a: u32, b: Self::Pairs) -> Self {
        let mut out = self.0;
        for (o, &b) in out.iter_mut().zip(&b) {
            *o += widen(a >> 16) * widen(b >> 16);
            *o += widen(a) * widen(b);
        }
        Modelled(out)
    }
}

/// `tile_block`'s contract on VDPBF16PS for the groups of 8 rows that hold the first `rows`: the
/// f32 block zeroed or loaded from `from` (rows `stride` bytes apart), plus packed A block ·
/// paired B panel over `ksteps` steps of 32, stored at `to`; the other groups are neither
/// computed nor stored.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 available; `a`, `b`, `from` and `to` as for `tile_block`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn dot_block(
    rows: usize,
    ksteps: usize,
    a: *const u16,
    b: *const u16,
    from: Option<(*const f32, usize)>,
    to: (*mut f32, usize),
) {
    block::<Native>(rows, ksteps, a, b, from, to)
}

/// The block on `V`'s sums: each group of rows over all k steps, its accumulators in registers.
///
/// # Safety
/// As [`dot_block`]'s, with `V`'s instructions available.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn block<V: PairDot>(
    rows: usize,
    ksteps: usize,
    a: *const u16,
    b: *const u16,
    from: Option<(*const f32, usize)>,
    to: (*mut f32, usize),
) {
    // Row r, column half h of C at `c` with rows `stride` bytes apart.
    let at = |c: *const f32, stride: usize, r: usize, h: usize| {
        c.cast::<u8>().add(r * stride).cast::<f32>().add(16 * h)
    };
    for g in (0..rows.min(BLOCK)).step_by(GROUP) {
        let mut acc = [[V::zero(); 2]; GROUP];
        if let Some((c, stride)) = from {
            for (r, row) in acc.iter_mut().enumerate() {
                for (h, v) in row.iter_mut().enumerate() {
                    *v = V::load(at(c, stride, g + r, h));
                }
            }
        }
        // The group's rows lie in A tile g / 16 of each step, 16 rows of `KSTEP` values.
        let a_rows = a.add((g / 16) * TILE + (g % 16) * KSTEP);
        for s in 0..ksteps {
            let (a_step, b_step) = (a_rows.add(s * 2 * TILE), b.add(s * 2 * TILE));
            for p in 0..KSTEP / 2 {
                // Pair p of the step: tile row p of each column half.
                let b0 = V::pairs(b_step.add(p * KSTEP));
                let b1 = V::pairs(b_step.add(TILE + p * KSTEP));
                for (r, row) in acc.iter_mut().enumerate() {
                    let pair = a_step.add(r * KSTEP + 2 * p).cast::<u32>().read_unaligned();
                    row[0] = row[0].dot(pair, b0);
                    row[1] = row[1].dot(pair, b1);
                }
            }
        }
        let (c, stride) = to;
        for (r, row) in acc.iter().enumerate() {
            for (h, v) in row.iter().enumerate() {
                v.store(at(c, stride, g + r, h) as *mut f32);
            }
        }
    }
}

/// `iters` steps of 16 VDPBF16PS on 16 independent sums: the instruction's rate (called where
/// `Isa::detected()` is Avx512Bf16).
pub(super) fn peak_loop(iters: u64) {
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// AVX-512F and AVX-512 BF16 available.
        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn run(iters: u64) -> f32 {
            use std::arch::x86_64::*;
            // Zeros, hidden from the optimiser: the sums stay finite and the loop stays.
            let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(std::hint::black_box(0)));
            let mut acc = [_mm512_setzero_ps(); 16];
            for _ in 0..iters {
                for v in acc.iter_mut() {
                    *v = _mm512_dpbf16_ps(*v, b, b);
                }
            }
            acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
        }
        assert!(dpbf16_available(), "VDPBF16PS's rate asked on a CPU without it");
        // SAFETY: AVX-512 BF16 checked.
        std::hint::black_box(unsafe { run(iters) });
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = iters;
}

/// Whether this CPU has AVX-512 BF16 (and AVX-512F, which the paths around it use).
pub(in crate::nn) fn dpbf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::super::has_avx512() && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::{a_at, bf16_bits, tile_block, with_tiles, ATiles, BlockKernel};
    use super::*;
    use crate::nn::gemm::{Columns, MatRef};
    use crate::rng::Rng;

    /// Every block kernel this CPU has (the model always; VDPBF16PS and the AMX tiles where
    /// present) against the exact sums of the rounded operands: both row blocks of a 45 × 70 A
    /// (the second partly zero rows, k padded to three steps), zeroed and loaded C.
    #[test]
    fn block_kernels_give_the_sums_of_the_rounded_products() {
        let mut rng = Rng::new(11);
        let (m, k): (usize, usize) = (45, 70);
        let ksteps = k.div_ceil(KSTEP);
        let a: Vec<f32> = (0..m * k).map(|_| rng.uniform() as f32 - 0.5).collect();
        let b: Vec<f32> = (0..k * BLOCK).map(|_| rng.uniform() as f32 - 0.5).collect();
        let tiles = ATiles::pack(&MatRef::row_major(&a, m, k), &Columns::single(k), None, 1);
        assert_eq!(tiles.data[a_at(3, 5, ksteps)], bf16_bits(a[3 * k + 5]));
        // B paired as `pairs` lays a 32-column panel out (checked in `amx::tests`).
        let mut paired = vec![0u16; ksteps * 2 * TILE];
        for kk in 0..k {
            for j in 0..BLOCK {
                let (s, h, p) = (kk / KSTEP, j / 16, (kk % KSTEP) / 2);
                paired[(s * 2 + h) * TILE + p * KSTEP + (j % 16) * 2 + kk % 2] = bf16_bits(b[kk * BLOCK + j]);
            }
        }
        let c0: Vec<f32> = (0..BLOCK * BLOCK).map(|_| rng.uniform() as f32).collect();
        let rounded = |x: f32| f32::from_bits((bf16_bits(x) as u32) << 16) as f64;
        let mut kernels: Vec<(&str, BlockKernel)> = vec![("modelled", block::<Modelled>)];
        if dpbf16_available() {
            kernels.push(("vdpbf16ps", dot_block));
        }
        if super::super::amx_bf16_available() {
            // SAFETY (of the call below): AMX-BF16 granted; the tiles configured around the block.
            kernels.push(("amx tiles", |r, n, a, b, f, t| unsafe {
                with_tiles(|| tile_block(r, n, a, b, f, t))
            }));
        }
        eprintln!("block kernels: {:?}", kernels.iter().map(|k| k.0).collect::<Vec<_>>());
        for (name, kernel) in kernels {
            // Each row block whole, and the last one's 13 rows alone (the groups of 8 past them
            // skipped, except on the tiles, which compute all 32).
            let wanted = [(0, BLOCK), (1, BLOCK), (1, m - BLOCK)];
            for (rb, rows) in wanted {
                for load in [false, true] {
                    let mut c = vec![f32::NAN; BLOCK * BLOCK];
                    let from = load.then_some((c0.as_ptr(), BLOCK * 4));
                    let ap = tiles.data[rb * ksteps * 2 * TILE..].as_ptr();
                    // SAFETY: the kernel's instructions are present (checked above); A's row block,
                    // B's panel and both C blocks hold what the contract asks.
                    unsafe { kernel(rows, ksteps, ap, paired.as_ptr(), from, (c.as_mut_ptr(), BLOCK * 4)) };
                    if name != "amx tiles" {
                        let skipped = &c[rows.div_ceil(GROUP) * GROUP * BLOCK..];
                        assert!(
                            skipped.iter().all(|v| v.is_nan()),
                            "{name}: rows past {rows}'s groups stored"
                        );
                    }
                    for r in 0..rows {
                        let row = rb * BLOCK + r;
                        for j in 0..BLOCK {
                            let mut want = if load { c0[r * BLOCK + j] as f64 } else { 0.0 };
                            let mut size = want.abs();
                            for kk in 0..k.min(if row < m { k } else { 0 }) {
                                let p = rounded(a[row * k + kk]) * rounded(b[kk * BLOCK + j]);
                                want += p;
                                size += p.abs();
                            }
                            let got = c[r * BLOCK + j] as f64;
                            assert!(
                                (got - want).abs() <= size * k as f64 * f32::EPSILON as f64,
                                "{name}: row {row} column {j} (load {load}): {got} against {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The instruction itself gives the modelled sums bit for bit (Intel's pseudocode: the odd
    /// product added first, each sum rounded to nearest) over 40 k steps of operands without
    /// denormals: what lets `Modelled` stand for it on CPUs without it. Skipped, saying so, where
    /// the CPU lacks AVX-512 BF16.
    #[test]
    fn the_instruction_rounds_as_modelled() {
        if !dpbf16_available() {
            eprintln!("vdpbf16ps against its model: skipped, this CPU lacks AVX-512 BF16");
            return;
        }
        let mut rng = Rng::new(3);
        let ksteps = 40;
        let mut operand = || -> Vec<u16> {
            (0..ksteps * 2 * TILE).map(|_| bf16_bits(rng.uniform() as f32 * 2.0 - 1.0)).collect()
        };
        let (a, b) = (operand(), operand());
        let (mut native, mut modelled) = (vec![0f32; BLOCK * BLOCK], vec![0f32; BLOCK * BLOCK]);
        // SAFETY: AVX-512 BF16 checked; A and B hold `ksteps` steps of a block, C a 32 × 32 block.
        unsafe {
            dot_block(BLOCK, ksteps, a.as_ptr(), b.as_ptr(), None, (native.as_mut_ptr(), BLOCK * 4));
            block::<Modelled>(
                BLOCK,
                ksteps,
                a.as_ptr(),
                b.as_ptr(),
                None,
                (modelled.as_mut_ptr(), BLOCK * 4),
            );
        }
        let differ = native.iter().zip(&modelled).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        eprintln!("vdpbf16ps against its model: {differ} of {} sums differ", native.len());
        assert_eq!(differ, 0, "VDPBF16PS on this CPU does not round as Intel's pseudocode says");
    }
}
