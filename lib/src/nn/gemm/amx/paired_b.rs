//! A weight taken as B, rounded and paired once for an inference run: a Linear layer multiplies
//! its input by Wᵀ, so its weight is the right operand, a transposed view that every product
//! packed into f32 panels and paired again, in each part of a product split by rows (MViT-B
//! bf16: `pack_b_mat` 6.6 % of a forward's samples).

use super::*;

/// All of B (k × n) rounded to bf16 and paired as the block kernels read it: panel p (32
/// columns) holds all of K's steps one after another (`pair_b_panels`' layout with `ksteps`
/// covering K), so a K block starting at a whole step is a run of each panel's steps.
pub(in crate::nn::gemm) struct PairedB {
    data: Vec<u16>,
    /// Where the 64-byte aligned tiles start in `data`.
    off: usize,
    /// The view of the weight's buffer it was paired from (rows, columns, strides).
    view: [usize; 4],
    ksteps: usize,
}

impl PairedB {
    /// Pairs `b` (k × n), the column blocks split over the pool's threads when `threads > 1`.
    ///
    /// # Safety
    /// AVX-512 F, BW and VL available; `b`'s view lies inside its buffer.
    pub(in crate::nn::gemm) unsafe fn pair(b: &Rhs, k: usize, n: usize, threads: usize) -> Self {
        let Rhs::Mat(m, _) = b else { panic!("a weight paired as B is a matrix") };
        assert_eq!((m.rows, m.cols), (k, n), "B's view against the product's shape");
        let ksteps = k.div_ceil(KSTEP);
        let panel_len = ksteps * 2 * TILE;
        let mut data = vec![0u16; n.div_ceil(NR) * panel_len + 32];
        let off = data.as_ptr().align_offset(64).min(31);
        let tiles = &mut data[off..off + n.div_ceil(NR) * panel_len];
        // One column block (`NCA` columns: whole panels) a job, as `blocked_on` pairs them.
        let pair_block = |(i, bt): (usize, &mut [u16])| {
            let jc = i * NCA;
            // SAFETY: the caller's contract; `bt` holds the block's panels, all of K's steps.
            unsafe { pair_b_block(b, (0, k), (jc, NCA.min(n - jc)), bt, ksteps) }
        };
        let per_block = NCA / NR * panel_len;
        if threads > 1 {
            use rayon::prelude::*;
            tiles.par_chunks_mut(per_block).enumerate().for_each(pair_block);
        } else {
            tiles.chunks_mut(per_block).enumerate().for_each(pair_block);
        }
        Self { data, off, view: [k, n, m.rs, m.cs], ksteps }
    }

    /// Whether this was paired from the view `m` (the same weight seen another way is not).
    pub(in crate::nn::gemm) fn fits(&self, m: &MatRef) -> bool {
        self.view == [m.rows, m.cols, m.rs, m.cs]
    }

    /// The first panel of the block at column `jc` (whole panels), its steps from row `pc` (whole
    /// steps) on.
    pub(super) fn block(&self, jc: usize, pc: usize) -> *const u16 {
        assert!(
            jc % NR == 0 && pc % KSTEP == 0 && jc < self.view[1] && pc < self.view[0],
            "block off the panels"
        );
        self.data[self.off + (jc / NR) * self.panel_len() + pc / KSTEP * 2 * TILE..].as_ptr()
    }

    /// Values from one panel to the next.
    pub(super) fn panel_len(&self) -> usize {
        self.ksteps * 2 * TILE
    }
}
