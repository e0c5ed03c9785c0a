//! A left operand packed once and multiplied by many right operands: attention's keys and
//! values, the same for every tile of a group's queries, would otherwise be re-packed (a
//! transposing gather) for each tile.

use super::*;

/// All of A (rows scaled by a per-row factor, rounded to bf16 under bf16 autocast) in the
/// blocked kernel's panel layout (`pack_a_whole`), or under bf16 on AMX or AVX-512 BF16 in
/// tiles (`amx::ATiles`), for [`sgemm_packed`].
pub struct PackedA {
    data: Vec<f32>,
    /// Under bf16 on AMX or AVX-512 BF16: A in tiles instead (`data` empty).
    #[cfg(target_arch = "x86_64")]
    tiles: Option<super::amx::ATiles>,
    rows: usize,
    cols: usize,
    isa: Isa,
    bf16: bool,
}

impl PackedA {
    /// `a` with row `i` times `row_scale[i]`, packed on this thread for the blocked kernel this
    /// thread's products take, in its precision; None where there is no blocked kernel.
    pub fn new(a: MatRef, row_scale: Option<&[f32]>) -> Option<Self> {
        let isa = blocked_isa()?;
        a.check();
        if let Some(s) = row_scale {
            assert!(s.len() >= a.rows, "per-row vector shorter than the rows");
        }
        Some(Self::pack(isa, bf16_products(), a, &Columns::single(a.cols), row_scale, 1))
    }

    /// `a` (columns laid out by `a_cols`, rows scaled, in bf16 when `bf16`) for `isa`'s blocked
    /// kernel, the work split over `threads`; the caller checked the view and the scale.
    pub(super) fn pack(
        isa: Isa,
        bf16: bool,
        a: MatRef,
        a_cols: &Columns,
        row_scale: Option<&[f32]>,
        threads: usize,
    ) -> Self {
        #[cfg(target_arch = "x86_64")]
        if bf16 && isa.bf16_pairs() {
            let tiles = Some(super::amx::ATiles::pack(&a, a_cols, row_scale, threads));
            return Self { data: vec![], tiles, rows: a.rows, cols: a.cols, isa, bf16 };
        }
        let data = pack_a_whole(&a, a_cols, a.rows.div_ceil(MR) * MR, row_scale, bf16, threads);
        #[cfg(target_arch = "x86_64")]
        return Self { data, tiles: None, rows: a.rows, cols: a.cols, isa, bf16 };
        #[cfg(not(target_arch = "x86_64"))]
        Self { data, rows: a.rows, cols: a.cols, isa, bf16 }
    }

    /// Whether this is A packed for `isa`'s kernel in this precision.
    pub(super) fn is_for(&self, isa: Isa, bf16: bool) -> bool {
        (self.isa, self.bf16) == (isa, bf16)
    }

    /// The panels as the blocked kernel reads a shared A (empty when A is in tiles).
    pub(super) fn whole(&self) -> WholeA {
        WholeA { data: self.data.as_ptr(), panel_rows: self.rows.div_ceil(MR) * MR }
    }

    /// A in tiles, under bf16 on AMX or AVX-512 BF16.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn tiles(&self) -> Option<&super::amx::ATiles> {
        self.tiles.as_ref()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// C (`a.rows() × b.cols`, leading dimension `ldc`) = A·B then the epilogue (its `row_scale`
/// is not used: scales are packed in), on the calling thread, B rounded as A was packed.
pub fn sgemm_packed(a: &PackedA, b: MatRef, c: &mut [f32], ldc: usize, epi: Epilogue) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    b.check();
    if m == 0 || n == 0 {
        return;
    }
    assert!(n <= ldc || m == 1, "rows overlap");
    assert!((m - 1) * ldc + n <= c.len(), "output buffer too small");
    if let Some(bias) = epi.row_bias {
        assert!(bias.len() >= m, "per-row vector shorter than the rows");
    }
    if let Some(res) = epi.residual {
        assert!(res.len() >= (m - 1) * ldc + n, "residual too small");
    }
    if k == 0 {
        // Nothing was packed: the product is the epilogue over zeros.
        let zeros = MatRef::row_major(&[], m, 0);
        return sgemm(zeros, b, c, ldc, false, Epilogue { row_scale: None, ..epi });
    }
    // The view only gives the blocked product A's shape: its values come from `a.data`.
    let shape = MatRef { data: &[], rows: m, cols: k, rs: k, cs: 1 };
    let epi = Epilogue { row_scale: None, ..epi };
    #[cfg(target_arch = "x86_64")]
    if let Some(tiles) = &a.tiles {
        let single = Columns::single(n);
        // SAFETY: tiles are packed only where `a.isa` runs bf16 on them (`Isa::supported`);
        // `c` holds the m × n output (asserted) and is borrowed mutably for the call; rows
        // start at 0.
        return unsafe {
            super::amx::blocked_bf16(
                a.isa,
                tiles,
                Rhs::Mat(b, single),
                None,
                single,
                CPtr::F32(c.as_mut_ptr()),
                ldc,
                (0, m),
                (0, n),
                false,
                epi,
            )
        };
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `PackedA::new` checked that the CPU runs `a.isa`; `c` holds the m × n output
    // (asserted) and is borrowed mutably for the call; `a.data` holds every row of A packed as
    // `pack_a_whole` lays it out.
    unsafe {
        blocked(
            a.isa,
            a.bf16,
            shape,
            Columns::single(k),
            Rhs::Mat(b, Columns::single(n)),
            Columns::single(n),
            c.as_mut_ptr(),
            ldc,
            (0, m),
            (0, n),
            false,
            epi,
            Some(a.whole()),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A packed once (scaled rows, more rows than a panel, K past one block) gives what `sgemm`
    /// gives, on every blocked path the machine has, with and without a bias.
    #[test]
    fn a_packed_once_multiplies_like_sgemm() {
        let mut rng = Rng::new(7);
        let mut random = |n: usize| (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect::<Vec<f32>>();
        let (m, k) = (29, 300);
        let (a, scale, bias) = (random(m * k), random(m), random(m));
        let mut ran = vec![];
        for isa in Isa::paths().into_iter().flatten() {
            // f32, and bf16 (on AMX and AVX-512 BF16: A in tiles), against what `sgemm` gives in the same
            // precision: the same rounded operands, sums in another order.
            for half in [None, Some(candle_core::DType::BF16)] {
                crate::nn::with_autocast(half, || {
                    with_isa(Some(isa), || {
                        let packed = PackedA::new(MatRef::row_major(&a, m, k), Some(&scale))
                            .expect("a blocked kernel");
                        for n in [1, 40, 97] {
                            let b = random(k * n);
                            let epi = Epilogue {
                                row_scale: Some(&scale),
                                row_bias: Some(&bias),
                                ..Default::default()
                            };
                            let mut want = vec![0f32; m * n];
                            let (am, bm) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
                            sgemm(am, bm, &mut want, n, false, epi);
                            let mut got = vec![f32::NAN; m * n];
                            sgemm_packed(&packed, bm, &mut got, n, epi);
                            let worst =
                                want.iter().zip(&got).map(|(w, g)| (w - g).abs()).fold(0f32, f32::max);
                            assert!(worst < 1e-4, "{half:?} {isa:?} n = {n}: {worst}");
                        }
                    })
                });
            }
            ran.push(isa);
        }
        println!("blocked paths: {ran:?}");
    }
}
