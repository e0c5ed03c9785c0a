//! bf16 products on AMX tiles (TDPBF16PS): the blocked product's bf16 path on CPUs with AMX
//! (Sapphire Rapids and later). Same operands as the f32 kernels' bf16 path (A after BN's row
//! scale and B rounded to bf16, ties to even, `simd::bf16_round`), f32 accumulation, the same
//! epilogue; the matrix unit does 16×16×32 multiply-adds an instruction (512 a cycle against
//! AVX-512's 32 FMAs).
//!
//! Tiles: C as four 16×16 f32 tiles (a 32×32 block, tmm0–3), two A tiles of 16 rows × 32 bf16
//! (tmm4–5), two B tiles of 16 k-pairs × 16 columns × 2 (tmm6–7, the pair layout TDPBF16PS
//! reads). A is packed from the matrix straight into tiles (`ATiles`), once per product; B goes through the
//! f32 packers (implicit im2col, frame shifts, batched columns all as before) and its panels are
//! then rounded and paired (`pair_b_panels`). K is padded with zeros to whole 32-steps.
//!
//! Linux hands a process the tile state only once asked (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`): [`amx_bf16_available`] asks once and says no when the kernel refuses
//! (an old kernel, a VM without the state). No intrinsic for AMX is stable in Rust: the tile
//! instructions are `asm!`.

use super::*;

/// A C block: two tiles of rows by two of columns.
pub(super) const BLOCK: usize = 32;
/// k values per tile step (16 pairs of bf16 per row: 64 bytes).
const KSTEP: usize = 32;
/// bf16 values in one 16 × 64-byte tile.
const TILE: usize = 512;
/// K block (whole `KSTEP`s): the B panel of one column block (32 × 512 bf16, 32 kB) stays in L1
/// while the A blocks of its rows stream from L2.
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
            cpu_has(24) && std::arch::is_x86_feature_detected!("avx512f") && request_tile_state()
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

/// Multiply-adds per second (in 10⁹) that TDPBF16PS reaches on every thread of the rayon pool
/// at once, independent tile sums only, over about `seconds`: the ceiling `make bench` reports
/// the bf16 product against. None without AMX-BF16.
pub fn bf16_peak_gmacs(seconds: f64) -> Option<f64> {
    if !amx_bf16_available() {
        return None;
    }
    // 12 instructions a step, each 16 × 16 sums of 32 products.
    const MACS_PER_STEP: f64 = 12.0 * 16.0 * 16.0 * 32.0;
    let run = |iters: u64| {
        // SAFETY: AMX-BF16 checked above; the tiles are configured around the loop.
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
    };
    // Calibrate the loop count on one thread, then run it on all of them together.
    let mut iters = 1u64 << 10;
    loop {
        let t = std::time::Instant::now();
        run(iters);
        if t.elapsed().as_secs_f64() > seconds / 4.0 {
            break;
        }
        iters *= 2;
    }
    let t = std::time::Instant::now();
    rayon::broadcast(|_| run(iters));
    let macs = iters as f64 * MACS_PER_STEP * rayon::current_num_threads() as f64;
    Some(macs / t.elapsed().as_secs_f64() / 1e9)
}

/// The bits of `x` rounded to bfloat16 (`simd::bf16_round`), as the matrix unit reads them.
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    (crate::nn::simd::bf16_round(x).to_bits() >> 16) as u16
}

thread_local! {
    static TILE_B: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
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

/// `simd::bf16_round` in 16 lanes: ties to even, NaN kept NaN; the rounded bits, the low half
/// not yet cleared.
///
/// # Safety
/// AVX-512F available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn round_bits(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let b = _mm512_castps_si512(x);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
    let r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(b, _mm512_set1_epi32(0x0040_0000)))
}

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

/// # Safety
/// AVX-512F available; `src` and `dst` of one length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bf16_run_wide(src: &[f32], s: f32, dst: &mut [u16]) {
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
unsafe fn pair_b_panels(f32s: &[f32], panels: usize, kc: usize, out: &mut [u16], ksteps: usize, s0: usize) {
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

/// For B read straight from its rows (`Rhs::Mat` with contiguous columns, `Rhs::ShiftedMat`):
/// rows `p0..p0+kc`, columns `j0..j0+nc` rounded and paired into tiles as `pair_b_panels`
/// lays them out (from step 0 of `ksteps`), without packing f32 panels first (a 1×1
/// convolution's B is its input). False, with nothing written, for any other B.
///
/// # Safety
/// AVX-512F available; B's view lies inside its buffer for the block (the callers' checks);
/// `out` holds `⌈nc / 32⌉ · ksteps · 1024` values, `⌈kc / 32⌉ ≤ ksteps`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn pair_b_rows(
    b: &Rhs,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut [u16],
    ksteps: usize,
) -> bool {
    use std::arch::x86_64::*;
    let (m, cols, shift) = match b {
        Rhs::Mat(m, cols) if m.cs == 1 => (m, cols, None),
        Rhs::ShiftedMat(m, cols, rows) => (m, cols, Some(rows)),
        _ => return false,
    };
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
        let mut v = _mm512_setzero_ps();
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
            // Masked: only the run's lanes are read, all inside B.
            v = _mm512_mask_loadu_ps(v, lanes, data.wrapping_offset(at));
        }
        v
    };
    // Each half's runs, as a range of `runs`.
    let mut halves = Vec::with_capacity(panels * 2);
    let mut from = 0;
    for half in 0..panels * 2 {
        let to = from + runs[from..].iter().take_while(|r| r.0 == half).count();
        halves.push((from, to));
        from = to;
    }
    let dst = out.as_mut_ptr();
    // Two rows at a time across all the halves: the reads stream along B's rows (down a column
    // of halves, each row a page or more apart, cost a TLB miss a row).
    for s in 0..ksteps {
        for r in 0..16 {
            let k = s * KSTEP + 2 * r;
            for (half, &(from, to)) in halves.iter().enumerate() {
                let tile = dst.add(((half / 2 * ksteps + s) * 2 + half % 2) * TILE);
                store_pairs(tile.add(r * KSTEP), row_of(k, from, to), row_of(k + 1, from, to));
            }
        }
    }
    true
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

/// `pack_b_conv` into tile pairs, in AVX-512 (its masked moves).
///
/// # Safety
/// AVX-512F available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_conv_pairs(
    x: &ConvRhs,
    phased: bool,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    pairs: &mut TilePairs,
) {
    pack_b_conv(x, phased, true, p0, kc, j0, nc, pairs)
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
/// of 32 floats at their strides; ksteps ≥ 1.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_block(
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

/// The blocked product's bf16 path on AMX tiles for output rows `rows` and columns `cols`
/// (`blocked`'s contract, A packed in `a`). A 32 × 32 block of C lying whole in one batch item
/// travels between K blocks in C itself (tile loads and stores); the last K block's tiles go
/// through a scratch block and the epilogue, as do edge blocks at every K block.
///
/// # Safety
/// `amx_bf16_available()`, the tiles configured (`with_tiles`); `c` addresses the m × n output
/// with leading dimension `ldc`, and no other thread touches the block (rows × cols) at the
/// same time; `rows.0` is a multiple of `BLOCK`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn blocked_amx(
    a: &ATiles,
    b: Rhs,
    cols_map: Columns,
    c: *mut f32,
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
    PACK_B.with_borrow_mut(|pb| {
        TILE_B.with_borrow_mut(|tb| {
            let f32s = pb.get(KC * NCA);
            for jc in (cols.0..cols.1).step_by(NCA) {
                let nc = NCA.min(cols.1 - jc);
                let panels = nc.div_ceil(NR);
                for pc in (0..k).step_by(KCA) {
                    let kc = KCA.min(k - pc);
                    let ksteps = kc.div_ceil(KSTEP);
                    let (first, last) = (pc == 0, pc + kc == k);
                    let bt = aligned(tb, panels * ksteps * 2 * TILE);
                    if !pair_b_rows(&b, pc, kc, jc, nc, bt, ksteps) {
                        // The f32 packers take K blocks of at most `KC` rows.
                        for piece in (0..kc).step_by(KC) {
                            let kp = KC.min(kc - piece);
                            if let Rhs::Conv(x, phased) = &b {
                                let mut pairs = TilePairs { tiles: &mut *bt, ksteps, s0: piece / KSTEP };
                                pack_conv_pairs(x, *phased, pc + piece, kp, jc, nc, &mut pairs);
                                continue;
                            }
                            pack_b(&b, pc + piece, kp, jc, nc, f32s);
                            pair_b_panels(&f32s[..panels * kp * NR], panels, kp, bt, ksteps, piece / KSTEP);
                        }
                    }
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
                            let bp = bt.as_ptr().add(jr * ksteps * 2 * TILE);
                            let cp = c.add(row0 * ldc + cols_map.c_off(col0));
                            let direct = mr == BLOCK && nr == NR && one_item;
                            // Whether C's previous values are in the tiles or still to be added.
                            let c_in = accumulate || !first;
                            let from = (direct && c_in).then_some((cp as *const f32, ldc * 4));
                            if direct && !last {
                                tile_block(ksteps, ap, bp, from, (cp, ldc * 4));
                                continue;
                            }
                            tile_block(ksteps, ap, bp, from, scratch);
                            let bias = match (last, epi.row_bias) {
                                (true, Some(bias)) => bias.as_ptr().add(row0),
                                _ => std::ptr::null(),
                            };
                            let res = if last { epi.residual } else { None };
                            let part = TilePart { tile: block.0.as_ptr(), rows: mr, cols: nr };
                            let load = c_in && !direct;
                            let relu = last && epi.relu;
                            store_block(
                                Isa::Amx,
                                part,
                                c,
                                ldc,
                                &cols_map,
                                (row0, col0),
                                load,
                                bias,
                                res,
                                relu,
                            );
                        }
                    }
                }
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// B paired straight from its rows equals B packed into f32 panels then paired, for batched
    /// columns whose items split halves (7 columns an item, 3 items) and for frame-shifted rows
    /// (a clip of 3 frames, rows moving −1, 0, +1), K past a step and the columns past a panel.
    #[test]
    fn b_paired_from_rows_equals_b_packed_then_paired() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
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
        for rhs in [Rhs::Mat(m, cols), Rhs::ShiftedMat(m, cols, shifted)] {
            for (p0, kc, j0, nc) in [(0usize, 45usize, 0usize, 21usize), (3, 40, 2, 19), (0, 45, 5, 1)] {
                let (panels, ksteps) = (nc.div_ceil(NR), kc.div_ceil(KSTEP));
                let mut f32s = vec![0f32; panels * kc * NR];
                let (mut want, mut got) =
                    (vec![1u16; panels * ksteps * 2 * TILE], vec![2u16; panels * ksteps * 2 * TILE]);
                // SAFETY: AVX-512 checked; the block lies inside B and the buffers fit it.
                unsafe {
                    pack_b(&rhs, p0, kc, j0, nc, &mut f32s);
                    pair_b_panels(&f32s, panels, kc, &mut want, ksteps, 0);
                    assert!(pair_b_rows(&rhs, p0, kc, j0, nc, &mut got, ksteps));
                }
                assert!(want == got, "{rhs:?} block {p0} {kc} {j0} {nc}");
            }
        }
    }

    /// A convolution's B packed straight into tile pairs equals B packed into f32 panels then
    /// paired: 3×3 padded, w-strided (phased), 3×1×1 temporal and 3×7×7 stems, K pieces from
    /// a later step, column blocks that split output rows and images.
    #[test]
    fn conv_paired_straight_equals_conv_packed_then_paired() {
        use crate::nn::vol2col::Geometry3d;
        if !std::arch::is_x86_feature_detected!("avx512f") {
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
