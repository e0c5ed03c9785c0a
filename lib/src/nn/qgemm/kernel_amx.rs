//! The int8 product on AMX tiles (TDPBSUD: s8 weights × u8 activations, summed exactly in i32):
//! 32 rows × 32 columns of C a call as four 16 × 16 tiles, 64 k values a step. A B panel's k
//! groups (16 columns × 4 u8, 64 bytes) are B tile rows as they lie, packed or in place, so
//! only A takes a layout of its own (`a_tiles`, made once per weight matrix). The sums go
//! through the VNNI kernel's epilogue (`finish_sums`): the same integers, the same f32
//! operations, so the same bits as every other path.

use super::kernel_vnni::{finish_sums, VNNI_MP};
use super::{QuantizedMatrix, TileOut, KG, QMR, QNR};
use std::arch::x86_64::*;

/// A panels one call covers: two 16-row tiles.
pub(super) const AMX_MP: usize = 8;
/// B panels one call covers: one 16-column tile each.
pub(super) const AMX_NP: usize = 2;
/// k groups a tile step takes (A tile rows of 64 k values, B tiles of 16 group rows).
const STEP_GROUPS: usize = 16;
/// Bytes of one 16 × 64-byte tile.
const TILE: usize = 1024;

/// The tile steps of a matrix with `cols` columns.
fn steps(cols: usize) -> usize {
    cols.div_ceil(KG).div_ceil(STEP_GROUPS)
}

/// A's rows in tiles: each 32-row block's steps one after another, in a step its two 16-row
/// tiles, each row 64 k values in A's column order; zeros past the rows and columns.
pub(super) fn a_tiles(a: &QuantizedMatrix) -> Vec<i8> {
    let steps = steps(a.cols);
    let mut out = vec![0i8; a.rows.div_ceil(AMX_MP * QMR) * steps * 2 * TILE];
    for i in 0..a.rows {
        let (block, half, r) = (i / 32, (i % 32) / 16, i % 16);
        for p in 0..a.cols {
            out[((block * steps + p / 64) * 2 + half) * TILE + r * 64 + p % 64] = a.value(i, p);
        }
    }
    out
}

/// The sums of A's 32-row block at `a` (`a_tiles`) times B panels `b` (`np` of them, 1 or 2;
/// their k groups `g_stride` bytes apart), `groups` k groups, finished into `outs` (A panel p's
/// rows into `outs[p]`, its `cols` counted from the first B panel; `rows` 0 for A panels past
/// the end).
///
/// # Safety
/// Tiles configured on this thread (`gemm::with_tiles`, after `amx_int8_available`), AVX-512
/// VNNI available; `a` holds the block's steps; each B panel `groups` groups; each out's rows ×
/// cols inside the output and residual buffers, cols ≤ np · QNR.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile(
    groups: usize,
    a: *const i8,
    b: [*const u8; AMX_NP],
    g_stride: usize,
    np: usize,
    outs: &[TileOut; AMX_MP],
) {
    use std::arch::asm;
    let b1 = if np > 1 { b[1] } else { b[0] };
    let (full, rest) = (groups / STEP_GROUPS, groups % STEP_GROUPS);
    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    if full > 0 {
        steps_into_tiles(full, a, [b[0], b1], g_stride);
    }
    if rest > 0 {
        // The last step's groups copied into zeroed tiles: rows past B's end read nothing.
        #[repr(C, align(64))]
        struct Tail([u8; 2 * TILE]);
        let mut tail = Tail([0; 2 * TILE]);
        for (j, bj) in [b[0], b1].into_iter().enumerate() {
            for g in 0..rest {
                let src = bj.add((full * STEP_GROUPS + g) * g_stride);
                std::ptr::copy_nonoverlapping(src, tail.0.as_mut_ptr().add(j * TILE + g * 64), 64);
            }
        }
        let t = tail.0.as_ptr();
        steps_into_tiles(1, a.add(full * 2 * TILE), [t, t.add(TILE)], 64);
    }
    #[repr(C, align(64))]
    struct Sums([i32; 4 * 256]);
    let mut sums = Sums([0; 4 * 256]);
    let (c, row) = (sums.0.as_mut_ptr(), 64usize);
    // Tile 2·h + j: rows 16h.., B panel j; each stored as 16 rows of 16 sums.
    asm!(
        "tilestored [{c} + {row}*1], tmm0",
        "tilestored [{c} + {row}*1 + 1024], tmm1",
        "tilestored [{c} + {row}*1 + 2048], tmm2",
        "tilestored [{c} + {row}*1 + 3072], tmm3",
        c = in(reg) c,
        row = in(reg) row,
        options(nostack),
    );
    for pair in 0..AMX_MP / VNNI_MP {
        let outs: &[TileOut; VNNI_MP] =
            outs[pair * VNNI_MP..][..VNNI_MP].try_into().expect("a pair of panels");
        if outs.iter().all(|o| o.rows == 0) {
            break;
        }
        let sums_of = |p: usize, r: usize, j: usize| {
            let i = (pair * VNNI_MP + p) * QMR + r;
            _mm512_load_si512(sums.0.as_ptr().add(((i / 16) * 2 + j) * 256 + (i % 16) * QNR) as *const _)
        };
        if np > 1 {
            finish_sums::<2>(
                std::array::from_fn(|p| std::array::from_fn(|r| [sums_of(p, r, 0), sums_of(p, r, 1)])),
                outs,
            );
        } else {
            finish_sums::<1>(std::array::from_fn(|p| std::array::from_fn(|r| [sums_of(p, r, 0)])), outs);
        }
    }
}

/// tmm0–3 += `steps` steps of A (two tiles a step, 2 kB apart from step to step) times the two
/// B panels (16 groups a step, `g_stride` bytes apart).
///
/// # Safety
/// Tiles configured; `a` holds `steps` steps, each B panel `16 · steps` groups.
#[inline]
unsafe fn steps_into_tiles(steps: usize, a: *const i8, b: [*const u8; AMX_NP], g_stride: usize) {
    std::arch::asm!(
        "2:",
        "tileloadd tmm4, [{a} + {arow}*1]",
        "tileloadd tmm5, [{a} + {arow}*1 + 1024]",
        "tileloadd tmm6, [{b0} + {gs}*1]",
        "tileloadd tmm7, [{b1} + {gs}*1]",
        "tdpbsud tmm0, tmm4, tmm6",
        "tdpbsud tmm1, tmm4, tmm7",
        "tdpbsud tmm2, tmm5, tmm6",
        "tdpbsud tmm3, tmm5, tmm7",
        "add {a}, 2048",
        "add {b0}, {step}",
        "add {b1}, {step}",
        "dec {n}",
        "jnz 2b",
        a = inout(reg) a => _,
        b0 = inout(reg) b[0] => _,
        b1 = inout(reg) b[1] => _,
        n = inout(reg) steps => _,
        arow = in(reg) 64usize,
        gs = in(reg) g_stride,
        step = in(reg) STEP_GROUPS * g_stride,
        options(nostack, readonly),
    );
}
