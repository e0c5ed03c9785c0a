//! bf16 products on AMX tiles (TDPBF16PS): the blocked product's bf16 path on CPUs with AMX
//! (Sapphire Rapids and later). Same operands as the f32 kernels' bf16 path (A after BN's row
//! scale and B rounded to bf16, ties to even, `simd::bf16_round`), f32 accumulation, the same
//! epilogue; the matrix unit does 16×16×32 multiply-adds an instruction (512 a cycle against
//! AVX-512's 32 FMAs).
//!
//! Tiles: C as four 16×16 f32 tiles (a 32×32 block, tmm0–3), two A tiles of 16 rows × 32 bf16
//! (tmm4–5), two B tiles of 16 k-pairs × 16 columns × 2 (tmm6–7, the pair layout TDPBF16PS
//! reads). A is packed from the matrix straight into tiles (`ATiles`), once per product (or once
//! for many, `PackedA`); B is rounded and paired (`pairs`) straight from a matrix's rows, from a
//! convolution's implicit im2col two rows at a time, or from the f32 packers' panels (a weight
//! gradient's transposed columns). K is padded with zeros to whole 32-steps.
//!
//! Linux hands a process the tile state only once asked (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`): [`amx_bf16_available`] asks once and says no when the kernel refuses
//! (an old kernel, a VM without the state). No intrinsic for AMX is stable in Rust: the tile
//! instructions are `asm!`.
//!
//! CPUs with AVX-512 BF16 but no AMX multiply the same layouts with VDPBF16PS (`dpbf16`); the
//! blocked driver here (`blocked_bf16`) runs either block kernel.

use super::*;
#[cfg(target_arch = "x86_64")]
use pairs::{bf16_run_wide, pack_conv_pairs, pair_b_panels, pair_b_rows, TilePairs};

mod dpbf16;
mod paired_b;
mod pairs;

pub(super) use paired_b::PairedB;

pub(in crate::nn) use dpbf16::dpbf16_available;

/// A C block: two tiles of rows by two of columns.
pub(super) const BLOCK: usize = 32;
/// k values per tile step (16 pairs of bf16 per row: 64 bytes).
const KSTEP: usize = 32;
/// bf16 values in one 16 × 64-byte tile.
const TILE: usize = 512;
/// K block (whole `KSTEP`s): a row block's A (32 × 512 bf16, 32 kB) stays in L1 while the B
/// panels of the column block stream from L2.
const KCA: usize = 2 * KC;
/// Columns packed per B block (its 512 kB of bf16 stays in L2).
const NCA: usize = 512;

/// Whether this CPU has AMX tiles with bf16 products and the OS lets this process use them.
pub(in crate::nn) fn amx_bf16_available() -> bool {
    tiles_granted() && cpu_has(22)
}

/// Whether this CPU has AMX tiles with int8 products and the OS lets this process use them.
pub(in crate::nn) fn amx_int8_available() -> bool {
    tiles_granted() && cpu_has(25)
}

/// CPUID leaf 7's EDX bit `bit` (22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8).
fn cpu_has(bit: u32) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << bit) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = bit;
        false
    }
}

/// Whether the CPU has AMX tiles (and AVX-512, which the paths around them use) and the OS
/// granted this process their state (asked once, on first call).
fn tiles_granted() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            cpu_has(24) && super::has_avx512() && request_tile_state()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Asks Linux for the AMX tile data state for this process (all its threads); false when refused.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM only changes which extended states the process
    // may use; the syscall clobbers rcx and r11 and nothing in memory.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        )
    };
    ret == 0
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_tile_state() -> bool {
    false
}

/// Multiply-adds per second (in 10⁹) that the bf16 path's instruction (TDPBF16PS on AMX,
/// VDPBF16PS on AVX-512 BF16: `Isa::detected`) reaches on every thread of the rayon pool at
/// once, independent sums only, over about `seconds`: the ceiling `make bench` reports the bf16
/// product against. None on the other paths (their bf16 is the f32 kernel's).
pub fn bf16_peak_gmacs(seconds: f64) -> Option<f64> {
    let (macs_per_iter, run): (f64, fn(u64)) = match Isa::detected()? {
        // 12 instructions a step, each 16 × 16 sums of 32 products.
        Isa::Amx => (12.0 * 16.0 * 16.0 * 32.0, tiles_peak_loop),
        // 16 instructions a step, each 16 sums of 2 products.
        Isa::Avx512Bf16 => (16.0 * 32.0, dpbf16::peak_loop),
        _ => return None,
    };
    Some(crate::nn::qgemm::gmacs_on_every_thread(seconds, macs_per_iter, run))
}

/// `iters` steps of 12 TDPBF16PS on four independent C tiles (called where `Isa::Amx` runs).
fn tiles_peak_loop(iters: u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: called only where `Isa::detected()` is Amx (AMX-BF16 granted); the tiles are
    // configured around the loop.
    unsafe {
        with_tiles(|| {
            std::arch::asm!("tilezero tmm4", "tilezero tmm6", options(nostack, nomem));
            for _ in 0..iters {
                std::arch::asm!(
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm6",
                    "tdpbf16ps tmm2, tmm4, tmm6",
                    "tdpbf16ps tmm3, tmm4, tmm6",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm6",
                    "tdpbf16ps tmm2, tmm4, tmm6",
                    "tdpbf16ps tmm3, tmm4, tmm6",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm6",
                    "tdpbf16ps tmm2, tmm4, tmm6",
                    "tdpbf16ps tmm3, tmm4, tmm6",
                    options(nostack, nomem),
                );
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = iters;
}

/// The bits of `x` rounded to bfloat16 (`simd::bf16_round`), as the matrix unit reads them.
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    (crate::nn::simd::bf16_round(x).to_bits() >> 16) as u16
}

thread_local! {
    static TILE_B: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
    /// A bf16 C's partial sums between K blocks (`blocked_on`).
    static PARTIALS: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// A 64-byte aligned part of `v` of `len` values (grown as needed).
fn aligned(v: &mut Vec<u16>, len: usize) -> &mut [u16] {
    if v.len() < len + 32 {
        *v = vec![0; len + 32];
    }
    let off = v.as_ptr().align_offset(64).min(31);
    &mut v[off..off + len]
}

/// Where row `r`, k `kk` lies in packed A with `ksteps` k steps a row block: each 32-row block's
/// k steps one after another, in a step its two 16-row tiles, rows of 32 k values.
#[inline(always)]
fn a_at(r: usize, kk: usize, ksteps: usize) -> usize {
    ((r / BLOCK * ksteps + kk / KSTEP) * 2 + (r % BLOCK) / 16) * TILE + (r % 16) * KSTEP + kk % KSTEP
}

/// All of A (times the row scale), rounded to bf16, in tiles (`a_at`), zeros in the rows and k
/// past the end: whole 32-row blocks, whole k steps. A K block starting at a multiple of
/// `KSTEP` is then a run of steps of each row block.
pub(super) struct ATiles {
    data: Vec<u16>,
    rows: usize,
    cols: usize,
    ksteps: usize,
}

impl ATiles {
    /// Packs `a` (columns laid out by `a_cols`), its 32-row blocks split over `threads`.
    pub(super) fn pack(a: &MatRef, a_cols: &Columns, scale: Option<&[f32]>, threads: usize) -> Self {
        let (m, k) = (a.rows, a.cols);
        let ksteps = k.div_ceil(KSTEP);
        let per_block = ksteps * 2 * TILE;
        let mut data = vec![0u16; m.div_ceil(BLOCK) * per_block];
        let pack_block = |(blk, out): (usize, &mut [u16])| {
            for r in 0..BLOCK.min(m - blk * BLOCK) {
                pack_a_row(
                    a,
                    a_cols,
                    blk * BLOCK + r,
                    scale.map_or(1.0, |s| s[blk * BLOCK + r]),
                    ksteps,
                    out,
                );
            }
        };
        if threads > 1 {
            use rayon::prelude::*;
            data.par_chunks_mut(per_block).enumerate().for_each(pack_block);
        } else {
            data.chunks_mut(per_block).enumerate().for_each(pack_block);
        }
        Self { data, rows: m, cols: k, ksteps }
    }
}

/// Row `row` of A times `s` into its block's tiles `out` (`a_at`, rows counted in the block).
fn pack_a_row(a: &MatRef, a_cols: &Columns, row: usize, s: f32, ksteps: usize, out: &mut [u16]) {
    let (k, r) = (a.cols, row % BLOCK);
    let base = row * a.rs;
    let mut kk = 0;
    while kk < k {
        let run = (k - kk).min(a_cols.per - kk % a_cols.per);
        let start = base + a_cols.b_off(kk, a.cs);
        if a.cs == 1 {
            let src = &a.data[start..start + run];
            // A run splits at k steps: each piece is contiguous in its tile row.
            let mut q = 0;
            while q < run {
                let piece = (KSTEP - (kk + q) % KSTEP).min(run - q);
                let at = a_at(r, kk + q, ksteps);
                bf16_run(&src[q..q + piece], s, &mut out[at..at + piece]);
                q += piece;
            }
        } else {
            for q in 0..run {
                out[a_at(r, kk + q, ksteps)] = bf16_bits(a.data[start + q * a.cs] * s);
            }
        }
        kk += run;
    }
}

/// `dst[i]` = the bf16 bits of `src[i] · s` (`bf16_bits`), in AVX-512 vectors.
fn bf16_run(src: &[f32], s: f32, dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F checked; both slices hold `src.len()` values.
        return unsafe { bf16_run_wide(src, s, dst) };
    }
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = bf16_bits(x * s);
    }
}

/// The tile configuration: palette 1, tiles 0–7 all 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
            c[48 + t] = 16; // rows
        }
        Self(c)
    }
}

/// Runs `f` with this thread's tiles configured (`TileConfig`: all eight 16 rows of 64 bytes,
/// zeroed), releasing them after.
///
/// # Safety
/// `tiles_granted()` (through `amx_bf16_available` or `amx_int8_available`).
#[cfg(target_arch = "x86_64")]
pub(in crate::nn) unsafe fn with_tiles<T>(f: impl FnOnce() -> T) -> T {
    let config = TileConfig::new();
    std::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
    let out = f();
    std::arch::asm!("tilerelease", options(nostack, nomem));
    out
}

/// The C tiles (tmm0–3: a 32 × 32 f32 block) zeroed, or loaded from `from` (rows `stride`
/// bytes apart); then += packed A block · packed B panel over `ksteps` steps of 32; then stored
/// at `to` (rows `to_stride` bytes apart).
///
/// # Safety
/// Tiles configured (`TileConfig`) on this thread; `a` and `b` hold `ksteps · 1024` bf16 each
/// as `ATiles` and `pair_b_panels` lay them out; `from` (when given) and `to` address 32 rows
/// of 32 floats at their strides; ksteps ≥ 1. All 32 rows, whatever `_rows` (the rows the
/// caller wants, as [`BlockKernel`] passes them) says.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_block(
    _rows: usize,
    ksteps: usize,
    a: *const u16,
    b: *const u16,
    from: Option<(*const f32, usize)>,
    to: (*mut f32, usize),
) {
    use std::arch::asm;
    match from {
        None => {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem))
        }
        Some((c, stride)) => asm!(
            "tileloadd tmm0, [{c} + {s}*1]",
            "tileloadd tmm1, [{c} + {s}*1 + 64]",
            "lea {c}, [{c} + {s}*8]",
            "lea {c}, [{c} + {s}*8]",
            "tileloadd tmm2, [{c} + {s}*1]",
            "tileloadd tmm3, [{c} + {s}*1 + 64]",
            c = inout(reg) c => _,
            s = in(reg) stride,
            options(nostack, readonly),
        ),
    }
    // The tile registers stay live between these statements: nothing else on this thread uses
    // them (the compiler emits no AMX code of its own).
    asm!(
        "2:",
        "tileloadd tmm4, [{a} + {row}*1]",
        "tileloadd tmm5, [{a} + {row}*1 + 1024]",
        "tileloadd tmm6, [{b} + {row}*1]",
        "tileloadd tmm7, [{b} + {row}*1 + 1024]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {a}, 2048",
        "add {b}, 2048",
        "dec {n}",
        "jnz 2b",
        a = inout(reg) a => _,
        b = inout(reg) b => _,
        n = inout(reg) ksteps => _,
        row = in(reg) 64usize,
        options(nostack, readonly),
    );
    let (c, stride) = to;
    asm!(
        "tilestored [{c} + {s}*1], tmm0",
        "tilestored [{c} + {s}*1 + 64], tmm1",
        "lea {c}, [{c} + {s}*8]",
        "lea {c}, [{c} + {s}*8]",
        "tilestored [{c} + {s}*1], tmm2",
        "tilestored [{c} + {s}*1 + 64], tmm3",
        c = inout(reg) c => _,
        s = in(reg) stride,
        options(nostack),
    );
}

/// The blocked product's bf16 path on the tile layouts, for output rows `rows` and columns `cols`
/// (`blocked`'s contract, A packed in `a`), each 32 × 32 block of C multiplied on AMX tiles
/// (`isa` Amx) or with VDPBF16PS (Avx512Bf16, `dpbf16`). A block lying whole in one batch item
/// of an f32 C travels between K blocks in C itself (loaded and stored by the block kernel); a
/// bf16 C's blocks travel in an f32 buffer of the part's partial sums (rounding between K blocks
/// would change the sums). The last K block's sums go through a scratch block and the epilogue,
/// as do an f32 C's edge blocks at every K block. B is paired per block, or read from `paired`
/// (a weight's, paired once: `PairedB`), which must then be B's.
///
/// # Safety
/// `isa.supported()` and one of the two; `c` addresses the m × n output with leading dimension
/// `ldc`, and no other thread touches the block (rows × cols) at the same time; `rows.0` is a
/// multiple of `BLOCK`; a bf16 C is not accumulated into.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn blocked_bf16(
    isa: Isa,
    a: &ATiles,
    b: Rhs,
    paired: Option<&PairedB>,
    cols_map: Columns,
    c: CPtr,
    ldc: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    accumulate: bool,
    epi: Epilogue,
) {
    match isa {
        // SAFETY: AMX-BF16 granted (the caller's `isa.supported()`); tiles configured around it.
        Isa::Amx => {
            with_tiles(|| blocked_on(tile_block, a, b, paired, cols_map, c, ldc, rows, cols, accumulate, epi))
        }
        Isa::Avx512Bf16 => {
            blocked_on(dpbf16::dot_block, a, b, paired, cols_map, c, ldc, rows, cols, accumulate, epi)
        }
        _ => unreachable!("no bf16 block kernel on {isa:?}"),
    }
}

/// A 32 × 32 block product on the tile layouts (`tile_block`'s contract): the rows wanted (those
/// past them may be left as they are: the tiles compute all 32, VDPBF16PS only the groups of 8
/// holding wanted ones), k steps, packed A, paired B, C to load (or zero), C to store.
type BlockKernel =
    unsafe fn(usize, usize, *const u16, *const u16, Option<(*const f32, usize)>, (*mut f32, usize));

/// [`blocked_bf16`] with `block_kernel` multiplying each block.
///
/// # Safety
/// `block`'s instructions available (tiles configured for `tile_block`); the rest as for
/// [`blocked_bf16`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn blocked_on(
    block_kernel: BlockKernel,
    a: &ATiles,
    b: Rhs,
    paired: Option<&PairedB>,
    cols_map: Columns,
    c: CPtr,
    ldc: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    accumulate: bool,
    epi: Epilogue,
) {
    assert!(rows.0.is_multiple_of(BLOCK) && rows.1 <= a.rows, "rows outside packed A");
    let k = a.cols;
    #[repr(C, align(64))]
    struct Block([f32; BLOCK * BLOCK]);
    let mut block = Block([0.0; BLOCK * BLOCK]);
    let scratch = (block.0.as_mut_ptr(), BLOCK * 4);
    let (c32, c16) = match c {
        CPtr::F32(c) => (c, std::ptr::null_mut()),
        CPtr::Bf16(c) => {
            assert!(!accumulate, "a bf16 C accumulated into");
            (std::ptr::null_mut(), c)
        }
    };
    let residual = epi.res();
    TILE_B.with_borrow_mut(|tb| {
        PARTIALS.with_borrow_mut(|kept| {
            // A bf16 C's partial sums between K blocks: the part's rows (whole blocks) by a
            // column block's panels, rows `NCA` apart (every block's first K block writes its
            // sums before a later one reads them).
            let partials: &mut [f32] = match c {
                CPtr::Bf16(_) if k > KCA => kept.get((rows.1 - rows.0).div_ceil(BLOCK) * BLOCK * NCA),
                _ => &mut [],
            };
            for jc in (cols.0..cols.1).step_by(NCA) {
                let nc = NCA.min(cols.1 - jc);
                let panels = nc.div_ceil(NR);
                for pc in (0..k).step_by(KCA) {
                    let kc = KCA.min(k - pc);
                    let ksteps = kc.div_ceil(KSTEP);
                    let (first, last) = (pc == 0, pc + kc == k);
                    // B's panels for this block: paired now, or a weight's paired once.
                    let (bt, panel_len) = match paired {
                        Some(p) => (p.block(jc, pc), p.panel_len()),
                        None => {
                            let bt = aligned(tb, panels * ksteps * 2 * TILE);
                            pair_b_block(&b, (pc, kc), (jc, nc), bt, ksteps);
                            (bt.as_ptr(), ksteps * 2 * TILE)
                        }
                    };
                    // Along C's rows (the A block in L1, the B panels from L2): the output and
                    // residual rows are then read and written in streams the prefetchers follow.
                    for row0 in (rows.0..rows.1).step_by(BLOCK) {
                        let mr = BLOCK.min(rows.1 - row0);
                        let ap = a.data.as_ptr().add((row0 / BLOCK * a.ksteps + pc / KSTEP) * 2 * TILE);
                        for jr in 0..panels {
                            let nr = NR.min(nc - jr * NR);
                            let col0 = jc + jr * NR;
                            let one_item = cols_map.c_stride == cols_map.per
                                || col0 / cols_map.per == (col0 + nr - 1) / cols_map.per;
                            let bp = bt.add(jr * panel_len);
                            // Whether C's previous values are in the tiles or still to be added.
                            let c_in = accumulate || !first;
                            // A whole block in one item travels between K blocks in the block
                            // kernel's sums: through C (f32) or the partials (bf16 C). Any other
                            // block's sums start from zero and its previous sums are added after
                            // (the same order in both, so a bf16 C is the f32 one rounded).
                            let direct = mr == BLOCK && nr == NR && one_item;
                            let (carry, carry_ld) = match c16.is_null() {
                                true => (c32.add(row0 * ldc + cols_map.c_off(col0)), ldc * 4),
                                false => {
                                    let at = (row0 - rows.0) * NCA + jr * NR;
                                    (partials.as_mut_ptr().wrapping_add(at), NCA * 4)
                                }
                            };
                            let from = (direct && c_in).then_some((carry as *const f32, carry_ld));
                            if direct && !last {
                                block_kernel(mr, ksteps, ap, bp, from, (carry, carry_ld));
                                continue;
                            }
                            let res = if last { residual } else { None };
                            if last {
                                // C's and the residual's lines, of either type (a block's
                                // bf16 output reads its bf16 residual as cold as in f32).
                                use super::kernel::prefetch_rows;
                                let at = ((row0, col0), (mr, nr));
                                match c16.is_null() {
                                    true => prefetch_rows(c32.cast_const(), ldc, &cols_map, at.0, at.1),
                                    false => prefetch_rows(c16.cast_const(), ldc, &cols_map, at.0, at.1),
                                }
                                match res {
                                    Some(Res::F32(r)) => {
                                        prefetch_rows(r.as_ptr(), ldc, &cols_map, at.0, at.1)
                                    }
                                    Some(Res::Bf16(r)) => {
                                        prefetch_rows(r.as_ptr(), ldc, &cols_map, at.0, at.1)
                                    }
                                    None => {}
                                }
                            }
                            // Only the part's rows are stored (SlowFast's fast pathway has 8
                            // and 16 channels: VDPBF16PS then skips 3 or 2 of the 4 groups).
                            block_kernel(mr, ksteps, ap, bp, from, scratch);
                            let bias = match (last, epi.row_bias) {
                                (true, Some(bias)) => bias.as_ptr().add(row0),
                                _ => std::ptr::null(),
                            };
                            if !c16.is_null() && !direct && !partials.is_empty() {
                                // An edge block of a bf16 C: its previous sums added here (as
                                // the f32 epilogue's load does), its sums kept until the last.
                                let partial =
                                    std::slice::from_raw_parts_mut(carry, (BLOCK - 1) * NCA + BLOCK);
                                for (r, row) in block.0.chunks_exact_mut(BLOCK).enumerate().take(mr) {
                                    let kept = &mut partial[r * NCA..r * NCA + BLOCK];
                                    if c_in {
                                        row.iter_mut().zip(&*kept).for_each(|(v, p)| *v += p);
                                    }
                                    if !last {
                                        kept.copy_from_slice(row);
                                    }
                                }
                                if !last {
                                    continue;
                                }
                            }
                            let part = TilePart { tile: block.0.as_ptr(), rows: mr, cols: nr };
                            let relu = last && epi.relu;
                            let at = (row0, col0);
                            match c {
                                CPtr::F32(c) => {
                                    let load = c_in && !direct;
                                    store_block_act(part, c, ldc, &cols_map, at, load, bias, res, relu)
                                }
                                CPtr::Bf16(c) => {
                                    store_block_act(part, c, ldc, &cols_map, at, false, bias, res, relu)
                                }
                            }
                        }
                    }
                }
            }
        })
    });
}

/// B's rows `pc..pc+kc`, columns `jc..jc+nc` rounded and paired into `bt` (`ksteps` steps a
/// panel, `pair_b_panels`' layout): straight from B's rows where `pair_b_rows` can, from the
/// convolution's implicit im2col, or through the f32 packers' panels.
///
/// # Safety
/// AVX-512 F, BW and VL available; B's view lies inside its buffer for the block; `bt` holds
/// `⌈nc / 32⌉ · ksteps · 1024` values, `⌈kc / 32⌉ ≤ ksteps`, `nc ≤ NCA`.
#[cfg(target_arch = "x86_64")]
unsafe fn pair_b_block(
    b: &Rhs,
    (pc, kc): (usize, usize),
    (jc, nc): (usize, usize),
    bt: &mut [u16],
    ksteps: usize,
) {
    if pair_b_rows(b, pc, kc, jc, nc, bt, ksteps) {
        return;
    }
    let panels = nc.div_ceil(NR);
    PACK_B.with_borrow_mut(|pb| {
        let f32s = pb.get(KC * NCA);
        // The f32 packers take K blocks of at most `KC` rows.
        for piece in (0..kc).step_by(KC) {
            let kp = KC.min(kc - piece);
            let mut pairs = TilePairs { tiles: &mut *bt, ksteps, s0: piece / KSTEP };
            match b {
                Rhs::Conv(x, phased) => pack_conv_pairs(x, *phased, pc + piece, kp, jc, nc, &mut pairs),
                Rhs::ConvBf16(x, phased) => pack_conv_pairs(x, *phased, pc + piece, kp, jc, nc, &mut pairs),
                _ => {
                    pack_b(b, pc + piece, kp, jc, nc, f32s);
                    pair_b_panels(&f32s[..panels * kp * NR], panels, kp, bt, ksteps, piece / KSTEP);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Packed A puts each value where `a_at` says, zeros elsewhere; paired B holds (k even, k odd)
    /// per column in a tile row. Checked value by value against the layouts' definitions.
    #[test]
    fn tile_layouts_hold_each_value_where_the_instruction_reads_it() {
        let mut rng = Rng::new(3);
        let (m, k) = (37, 45);
        let data: Vec<f32> = (0..m * k).map(|_| rng.uniform() as f32 - 0.5).collect();
        let a = MatRef::row_major(&data, m, k);
        let ksteps = k.div_ceil(KSTEP);
        let out = ATiles::pack(&a, &Columns::single(k), None, 2).data;
        assert_eq!(out.len(), m.div_ceil(BLOCK) * ksteps * 2 * TILE);
        let mut seen = vec![false; out.len()];
        for r in 0..m {
            for kk in 0..k {
                let at = a_at(r, kk, ksteps);
                assert_eq!(out[at], bf16_bits(data[r * k + kk]));
                seen[at] = true;
            }
        }
        assert!(out.iter().zip(&seen).all(|(&v, &s)| s || v == 0), "padding not zero");
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512: B pairing not checked");
            return;
        }
        // A second piece of 45 rows from step 3 of 5: steps 0–2 stay as they were.
        let (kc, panels, ksteps, s0) = (45, 2, 5, 3);
        let f: Vec<f32> = (0..panels * kc * NR).map(|_| rng.uniform() as f32 - 0.5).collect();
        let mut paired = vec![7u16; panels * ksteps * 2 * TILE];
        // SAFETY: AVX-512 checked; the sizes are the ones the function wants.
        unsafe { pair_b_panels(&f, panels, kc, &mut paired, ksteps, s0) };
        for p in 0..panels {
            let untouched = &paired[p * ksteps * 2 * TILE..(p * ksteps + s0) * 2 * TILE];
            assert!(untouched.iter().all(|&v| v == 7), "steps before s0 written");
            for kk in 0..(ksteps - s0) * KSTEP {
                for j in 0..NR {
                    let want = if kk < kc { bf16_bits(f[p * kc * NR + kk * NR + j]) } else { 0 };
                    let (s, h, r) = (s0 + kk / KSTEP, j / 16, (kk % KSTEP) / 2);
                    let at = ((p * ksteps + s) * 2 + h) * TILE + r * KSTEP + (j % 16) * 2 + kk % 2;
                    assert_eq!(paired[at], want, "panel {p} k {kk} column {j}");
                }
            }
        }
    }
}
