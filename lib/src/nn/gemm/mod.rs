//! Single-precision matrix product C = A·B with our own AVX-512 micro-kernel, and `matmul`, the
//! candle op built on it (forward and backward), used by every convolution.
//!
//! Why our own: candle's matmul goes through the `gemm` crate, whose AVX-512 kernels need a
//! nightly compiler; on stable it runs AVX2 kernels at about a third of what this CPU class
//! (Sapphire Rapids, 2 FMA ports × 16 lanes) does, and convolutions are ~80 % GEMM.
//!
//! Layout: BLIS-style blocking. B is packed in K×32 column panels (two zmm registers wide), A in
//! 12×K row panels; the 12×32 micro-kernel keeps its 24 accumulators in registers and takes the
//! B values two vectors per k step and the A values as broadcasts. Per K block of `KC`, a block
//! of B's columns (`isa::nc`, sized to stay in L2) is packed once; each A panel stays in L1
//! while that block's B panels pass it.
//! On CPUs with AVX2 + FMA but not AVX-512 the same panels and packers feed an AVX2 micro-kernel
//! (`kernel_avx2`: each 12×32 tile as four 6×16 sub-tiles); without either, the `gemm` crate does
//! the work through buffers (the same results to rounding). Under bf16 autocast on CPUs with
//! AMX-BF16 the products run on its tiles instead (`amx`: the same packers for B, A in tiles),
//! on CPUs with AVX-512 BF16 but no AMX on VDPBF16PS with the same layouts (`amx::dpbf16`).
//! [`Isa`] says which runs.
//!
//! The optional epilogue (a per-row bias, then ReLU) is applied while the last K block's tile is
//! still in registers: it folds inference BatchNorm and the activation into the convolution.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::cell::RefCell;

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, E = f32> {
    pub data: &'a [E],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, E> MatRef<'a, E> {
    /// A row-major (contiguous rows) `rows × cols` matrix.
    pub fn row_major(data: &'a [E], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view exceeds its buffer");
        }
    }
}

/// What happens to each element of the product: `· row_scale[i]` (applied to A's rows while
/// packing them, so it costs nothing), `+ row_bias[i]`, `+ residual` (laid out as C), then
/// `max(0, ·)`. With `accumulate` the previous C is added unscaled. The residual may be bf16
/// (`residual_bf16`, bits; the bf16 tile paths only), not both.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub row_scale: Option<&'a [f32]>,
    pub row_bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub residual_bf16: Option<&'a [u16]>,
    pub relu: bool,
}

/// How the columns of B and C are laid out when they span a batch: column `j` is column `j % per`
/// of batch item `j / per`, which starts `b_stride` (in B) and `c_stride` (in C) elements after
/// the previous one. A convolution over N images is then one product whose output lands in
/// [N, C_out, P] order directly.
#[derive(Clone, Copy, Debug)]
pub struct Columns {
    pub per: usize,
    pub b_stride: usize,
    pub c_stride: usize,
}

impl Columns {
    /// One batch item: plain matrices.
    pub(super) fn single(n: usize) -> Self {
        Self { per: n.max(1), b_stride: 0, c_stride: 0 }
    }

    #[inline]
    fn b_off(&self, j: usize, cs: usize) -> usize {
        (j / self.per) * self.b_stride + (j % self.per) * cs
    }

    #[inline]
    fn c_off(&self, j: usize) -> usize {
        (j / self.per) * self.c_stride + j % self.per
    }
}

/// The output C as the product writes it: a pointer and a length, and whether its values are
/// initialised. The blocked product stores every element of its first K block before reading
/// any (without `accumulate`), so it can write a fresh, unzeroed buffer; the paths that read C
/// first zero an uninitialised one before taking it as a slice.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    len: usize,
    init: bool,
}

impl Out {
    fn of(c: &mut [f32]) -> Self {
        Self { ptr: c.as_mut_ptr(), len: c.len(), init: true }
    }

    /// The output as a slice, zeroed first when it was not initialised.
    ///
    /// # Safety
    /// `ptr` must address `len` writable values that nothing else uses during `'a`.
    unsafe fn slice<'a>(self) -> &'a mut [f32] {
        if !self.init {
            // SAFETY: the caller's guarantee; zeroing makes every value initialised.
            unsafe { std::ptr::write_bytes(self.ptr, 0, self.len) };
        }
        // SAFETY: as above, and now initialised.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// Whether `m` rows × `n` batched columns laid out by `cols` and `ldc` write every element of a
/// buffer of `m · n` exactly once: [N, m, per] (`ldc` = per, items `m · per` apart) or
/// [m, N · per] (`ldc` = n, items `per` apart).
fn covers(m: usize, n: usize, cols: Columns, ldc: usize) -> bool {
    let per = cols.per.min(n);
    (ldc == per && (n <= per || cols.c_stride == m * per)) || (ldc == n && (n <= per || cols.c_stride == per))
}

/// A new buffer of the `m × n` product `fill` writes into `Out` (laid out by `cols` and `ldc`,
/// covering it), without a zeroing pass first: the threads that compute the product take the
/// buffer's page faults and write it once.
fn new_product(m: usize, n: usize, cols: Columns, ldc: usize, fill: impl FnOnce(Out)) -> Vec<f32> {
    assert!(covers(m, n, cols, ldc), "the product does not cover its new buffer");
    let len = m * n;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    fill(Out { ptr: v.as_mut_ptr(), len, init: false });
    // SAFETY: `fill` computed the product without accumulating, which writes each of its m × n
    // outputs, distinct positions that cover the buffer (`covers`); paths that read C first
    // zeroed it (`Out::slice`).
    unsafe { v.set_len(len) };
    v
}

pub(super) const MR: usize = 12;
const NR: usize = 32;
const KC: usize = 256;
const MC: usize = 144;

/// Below this many multiply-adds one thread does the whole product (thread hand-off costs more).
const PARALLEL_MIN_MACS: usize = 1 << 20;

thread_local! {
    /// Set while a caller that already spreads its own tasks over the threads runs products:
    /// each then stays on its thread ([`serial`]).
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every product on this thread single-threaded (for callers whose tasks already
/// occupy the pool: nested splitting only adds hand-offs).
pub fn serial<T>(f: impl FnOnce() -> T) -> T {
    let was = SERIAL.with(|s| s.replace(true));
    let out = f();
    SERIAL.with(|s| s.set(was));
    out
}

/// Threads for a product of `macs` multiply-adds.
fn threads_for(macs: usize) -> usize {
    if macs < PARALLEL_MIN_MACS || SERIAL.with(|s| s.get()) {
        1
    } else {
        rayon::current_num_threads().max(1)
    }
}

/// C (`m × n`, row-major with leading dimension `ldc`) = A·B (+ C when `accumulate`), then the
/// epilogue. Uses the rayon pool's threads.
pub fn sgemm(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool, epi: Epilogue) {
    b.check();
    sgemm_columns(a, b, Columns::single(b.cols), c, ldc, accumulate, epi)
}

/// The right-hand operand as the packer reads it: a strided matrix with batched columns, or the
/// implicit column matrix of a convolution (im2col done while packing, no buffer of 9× the input).
#[derive(Clone, Copy, Debug)]
enum Rhs<'a> {
    Mat(MatRef<'a>, Columns),
    /// A matrix whose rows read neighbouring batch items (`FrameRows`).
    ShiftedMat(MatRef<'a>, Columns, FrameRows<'a>),
    /// `phased`: `x` is laid out by `split_w_phases` (stride along w becomes 1).
    Conv(ConvRhs<'a>, bool),
    /// The transposed column matrix: row (n, t, h, w) and column (c, dt, dh, dw) hold what
    /// `Conv` holds at (column, row), for a weight gradient.
    ConvT(ConvRhs<'a>),
    /// `Mat` (rows read shifted where given, as `ShiftedMat`) of bf16 bits (`act`): the bf16
    /// tile paths only.
    MatBf16(MatRef<'a, u16>, Columns, Option<FrameRows<'a>>),
    /// `Conv` of a bf16 input: the bf16 tile paths only.
    ConvBf16(ConvRhs<'a, u16>, bool),
}

/// B's rows read from neighbouring batch items: row k of item n is row k of item n + `delta[k]`
/// when that item lies in the same clip of `segments` consecutive items, zeros otherwise. TSM's
/// temporal shift of a 1×1 convolution's input (items = frames), read while packing instead of
/// copied first.
#[derive(Clone, Copy, Debug)]
pub struct FrameRows<'a> {
    pub segments: usize,
    pub delta: &'a [i8],
}

/// A convolution's input `x` [N, C, T, H, W] as the B operand: row (c, dt, dh, dw) and column
/// (n, t, h, w) hold the input value that tap (dt, dh, dw) of channel c sees at output (t, h, w),
/// 0 in the padding (rows in PyTorch's weight order, as `vol2col`).
#[derive(Clone, Copy, Debug)]
pub struct ConvRhs<'a, E = f32> {
    pub x: &'a [E],
    pub g: super::vol2col::Geometry3d,
    /// Output extent (t, h, w).
    pub out: [usize; 3],
}

/// C (+ epilogue) = A [C_out, C·taps] · conv columns of `x` (`ConvRhs`). C's columns are laid
/// out by `out_cols` (`per` = P, the output positions per image; `c_stride` C_out·P with `ldc` P
/// for [N, C_out, P], or P with `ldc` N·P for [C_out, N·P]).
pub fn sgemm_conv(a: MatRef, x: ConvRhs, out_cols: Columns, c: &mut [f32], ldc: usize, epi: Epilogue) {
    sgemm_conv_out(a, x, out_cols, Out::of(c), ldc, epi)
}

/// `sgemm_conv` into a new buffer of `a.rows × N·P` values laid out by `out_cols` and `ldc`,
/// which must cover it ([N, C_out, P] or [C_out, N·P]): no zeroing pass.
pub fn sgemm_conv_new(a: MatRef, x: ConvRhs, out_cols: Columns, ldc: usize, epi: Epilogue) -> Vec<f32> {
    let n = x.g.n * x.out.iter().product::<usize>();
    new_product(a.rows, n, out_cols, ldc, |c| sgemm_conv_out(a, x, out_cols, c, ldc, epi))
}

fn sgemm_conv_out(a: MatRef, x: ConvRhs, out_cols: Columns, c: Out, ldc: usize, epi: Epilogue) {
    let [ot, oh, ow] = x.out;
    let p = ot * oh * ow;
    let k = x.g.c * x.g.taps();
    let n = x.g.n * p;
    assert_eq!(a.cols, k, "weight and input channels differ");
    assert_eq!(out_cols.per, p, "output columns per image");
    assert!(x.x.len() >= x.g.n * x.g.c * x.g.in_volume(), "input buffer too small");
    if n == 0 || a.rows == 0 {
        return;
    }
    assert!((a.rows - 1) * ldc + out_cols.c_off(n - 1) < c.len, "output buffer too small");
    if let (Some(isa), true) = (blocked_isa(), k > 0) {
        if x.g.stride[2] > 1 {
            let phased = split_w_phases(x.x, &x.g);
            let xp = ConvRhs { x: &phased, ..x };
            return run_blocked(
                isa,
                a,
                Columns::single(k),
                Rhs::Conv(xp, true),
                n,
                out_cols,
                c.ptr,
                ldc,
                false,
                epi,
            );
        }
        run_blocked(isa, a, Columns::single(k), Rhs::Conv(x, false), n, out_cols, c.ptr, ldc, false, epi);
    } else {
        let colbuf = super::vol2col::vol2col(x.x, &x.g).expect("geometry checked by the caller");
        let b = MatRef { data: &colbuf, rows: k, cols: n, rs: n, cs: 1 };
        sgemm_impl(a, b, Columns { b_stride: p, ..out_cols }, c, ldc, false, epi, None);
    }
}

/// C [M, C·taps] = A [M, N·P] · (conv columns of `x`)ᵀ: a convolution's weight gradient, with A
/// the output gradient (its columns, the output positions, batched per image by `a_cols`) and
/// the column matrix read from `x` while packing (no vol2col buffer, no transposes). Blocked
/// kernels only: callers check `blocked_isa`.
pub(super) fn sgemm_conv_t(a: MatRef, a_cols: Columns, x: ConvRhs, c: &mut [f32], ldc: usize) {
    let [ot, oh, ow] = x.out;
    let (np, n) = (x.g.n * ot * oh * ow, x.g.c * x.g.taps());
    let isa = blocked_isa().expect("the implicit transposed columns need a blocked kernel");
    assert_eq!(a.cols, np, "gradient and input positions differ");
    assert!(x.x.len() >= x.g.n * x.g.c * x.g.in_volume(), "input buffer too small");
    if a.rows == 0 || n == 0 {
        return;
    }
    assert!(
        np == 0 || (a.rows - 1) * a.rs + a_cols.b_off(np - 1, a.cs) < a.data.len(),
        "A exceeds its buffer"
    );
    assert!((a.rows - 1) * ldc + n <= c.len() && n <= ldc, "output buffer too small");
    if np == 0 {
        for row in c.chunks_mut(ldc).take(a.rows) {
            row[..n].fill(0.0);
        }
        return;
    }
    run_blocked(
        isa,
        a,
        a_cols,
        Rhs::ConvT(x),
        n,
        Columns::single(n),
        c.as_mut_ptr(),
        ldc,
        false,
        Epilogue::default(),
    );
}

/// The convolution `A · conv columns of x` with the epilogue on the bf16 tile paths
/// (`Isa::bf16_pairs` under bf16 products), from an f32 or bf16 input (`act`) into a new
/// [N, M, T', H', W'] output in f32 or, with `bf16_out`, bf16; a 1×1×1 stride-1 convolution
/// reads its input as B (rows shifted by `shift` where given), any other packs the implicit
/// column matrix. The residual (f32 or bf16) is laid out as the output.
///
/// # Panics
/// Off the bf16 tile paths; where the operands do not fit the geometry.
pub fn conv_on_tiles(
    a: MatRef,
    x: Activations,
    g: super::vol2col::Geometry3d,
    out: [usize; 3],
    shift: Option<FrameRows>,
    epi: Epilogue,
    bf16_out: bool,
) -> Product {
    let isa = blocked_isa().filter(|i| i.bf16_pairs() && bf16_products()).expect("the bf16 tile paths");
    let p = out.iter().product::<usize>();
    let (m, k, n) = (a.rows, g.c * g.taps(), g.n * p);
    assert_eq!(a.cols, k, "weight and input channels differ");
    let len = match x {
        Activations::F32(x) => x.len(),
        Activations::Bf16(x) => x.len(),
    };
    assert!(len >= g.n * g.c * g.in_volume(), "input buffer too small");
    let direct = g.taps() == 1 && g.stride == [1; 3] && g.pad == [0; 3];
    assert!(shift.is_none() || direct, "a frame shift of a 1×1×1 convolution's rows only");
    if let Some(r) = &shift {
        assert!(r.delta.len() == k && r.segments > 0 && g.n % r.segments == 0, "items are not whole clips");
    }
    for v in [epi.row_bias, epi.row_scale].into_iter().flatten() {
        assert!(v.len() >= m, "per-row vector shorter than the rows");
    }
    let res_len = epi.residual.map(<[f32]>::len).or(epi.residual_bf16.map(<[u16]>::len));
    assert!(res_len.is_none_or(|r| r >= m * n), "residual too small");
    let cols = Columns { per: p.max(1), b_stride: if direct { g.c * p } else { 0 }, c_stride: m * p };
    let (phased32, phased16);
    let rhs = match x {
        Activations::F32(x) if direct => {
            let b = MatRef { data: x, rows: k, cols: n, rs: p, cs: 1 };
            match shift {
                Some(rows) => Rhs::ShiftedMat(b, cols, rows),
                None => Rhs::Mat(b, cols),
            }
        }
        Activations::Bf16(x) if direct => {
            Rhs::MatBf16(MatRef { data: x, rows: k, cols: n, rs: p, cs: 1 }, cols, shift)
        }
        Activations::F32(x) if g.stride[2] > 1 => {
            phased32 = split_w_phases(x, &g);
            Rhs::Conv(ConvRhs { x: &phased32, g, out }, true)
        }
        Activations::F32(x) => Rhs::Conv(ConvRhs { x, g, out }, false),
        Activations::Bf16(x) if g.stride[2] > 1 => {
            phased16 = split_w_phases(x, &g);
            Rhs::ConvBf16(ConvRhs { x: &phased16, g, out }, true)
        }
        Activations::Bf16(x) => Rhs::ConvBf16(ConvRhs { x, g, out }, false),
    };
    let len = m * n;
    let run = |c: CPtr| {
        if len > 0 {
            run_blocked_to(isa, a, Columns::single(k), rhs, n, cols, c, p, false, epi)
        }
    };
    // Not zeroed first: the product writes each of the m × n outputs once ([N, M, P] is covered).
    if bf16_out {
        let mut v: Vec<half::bf16> = Vec::with_capacity(len);
        run(CPtr::Bf16(v.as_mut_ptr().cast()));
        // SAFETY: the product stored every output (above).
        unsafe { v.set_len(len) };
        Product::Bf16(v)
    } else {
        let mut v: Vec<f32> = Vec::with_capacity(len);
        run(CPtr::F32(v.as_mut_ptr()));
        // SAFETY: as above.
        unsafe { v.set_len(len) };
        Product::F32(v)
    }
}

/// `sgemm` with batched columns (`cols`): B's `rs`/`cs` apply within a batch item.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_columns(
    a: MatRef,
    b: MatRef,
    cols: Columns,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epi: Epilogue,
) {
    sgemm_impl(a, b, cols, Out::of(c), ldc, accumulate, epi, blocked_isa())
}

/// `sgemm_columns` (no accumulation) into a new buffer of `a.rows × b.cols` values laid out by
/// `cols` and `ldc`, which must cover it: no zeroing pass.
pub fn sgemm_columns_new(a: MatRef, b: MatRef, cols: Columns, ldc: usize, epi: Epilogue) -> Vec<f32> {
    let (m, n) = (a.rows, b.cols);
    new_product(m, n, cols, ldc, |c| sgemm_impl(a, b, cols, c, ldc, false, epi, blocked_isa()))
}

/// `sgemm_columns_new` with B's rows read through `rows` (a frame shift per row, see
/// `FrameRows`; B contiguous along its columns). Needs a blocked kernel (`blocked_isa`).
pub fn sgemm_columns_shifted_new(
    a: MatRef,
    b: MatRef,
    cols: Columns,
    rows: FrameRows,
    ldc: usize,
    epi: Epilogue,
) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let isa = blocked_isa().expect("the shifted product needs a blocked kernel");
    assert!(b.cs == 1 && b.rows == k && rows.delta.len() == k, "B rows and their shifts differ");
    assert!(
        rows.segments > 0 && n % cols.per == 0 && (n / cols.per) % rows.segments == 0,
        "items are not whole clips"
    );
    a.check();
    if m == 0 || n == 0 || k == 0 {
        // Without rows to read, the product is the epilogue over zeros: the unshifted path.
        return sgemm_columns_new(a, b, cols, ldc, epi);
    }
    assert!((k - 1) * b.rs + cols.b_off(n - 1, 1) < b.data.len(), "B view exceeds its buffer");
    assert!((m - 1) * ldc + cols.c_off(n - 1) < m * n, "output does not fit");
    for v in [epi.row_bias, epi.row_scale].into_iter().flatten() {
        assert!(v.len() >= m, "per-row vector shorter than the rows");
    }
    if let Some(res) = epi.residual {
        assert!(res.len() >= m * n, "residual too small");
    }
    new_product(m, n, cols, ldc, |c| {
        run_blocked(
            isa,
            a,
            Columns::single(k),
            Rhs::ShiftedMat(b, cols, rows),
            n,
            cols,
            c.ptr,
            ldc,
            false,
            epi,
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn sgemm_impl(
    a: MatRef,
    b: MatRef,
    cols: Columns,
    out: Out,
    ldc: usize,
    accumulate: bool,
    epi: Epilogue,
    isa: Option<Isa>,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    a.check();
    if m == 0 || n == 0 {
        return;
    }
    let last_col = cols.c_off(n - 1);
    assert!(cols.per.min(n) <= ldc || m == 1);
    assert!((m - 1) * ldc + last_col < out.len, "output buffer too small");
    if k > 0 {
        let last_b = (k - 1) * b.rs + cols.b_off(n - 1, b.cs);
        assert!(last_b < b.data.len(), "B view exceeds its buffer");
    }
    for v in [epi.row_bias, epi.row_scale].into_iter().flatten() {
        assert!(v.len() >= m, "per-row vector shorter than the rows");
    }
    if let Some(res) = epi.residual {
        assert!(res.len() > (m - 1) * ldc + last_col, "residual too small");
    }
    if let (Some(isa), true) = (isa, k > 0) {
        run_blocked(isa, a, Columns::single(k), Rhs::Mat(b, cols), n, cols, out.ptr, ldc, accumulate, epi);
        return;
    }
    if bf16_products() && k > 0 {
        // The operands rounded as the blocked packers round them: A (after BN's scale) as a
        // row-major copy, B as a copy of its whole buffer (the view's strides unchanged).
        let mut ar = match epi.row_scale {
            Some(s) => scale_rows(&a, s),
            None => scale_rows(&a, &vec![1.0; m]),
        };
        bf16_round_in_place(&mut ar);
        let mut br = b.data.to_vec();
        bf16_round_in_place(&mut br);
        let a = MatRef::row_major(&ar, m, k);
        let b = MatRef { data: &br, ..b };
        let epi = Epilogue { row_scale: None, ..epi };
        return crate::nn::autocast::with_autocast(None, || {
            sgemm_impl(a, b, cols, out, ldc, accumulate, epi, None)
        });
    }
    // SAFETY: `out` addresses the caller's buffer (a slice, or a new one `new_product` owns).
    let c = unsafe { out.slice() };
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                let at = i * ldc + cols.c_off(j);
                let x = if accumulate { c[at] } else { 0.0 };
                let extra = epi.row_bias.map_or(0.0, |b| b[i]) + epi.residual.map_or(0.0, |r| r[at]);
                c[at] = finish(x, extra, epi.relu);
            }
        }
        return;
    }
    // BN's row scale folded into A once, not once per batch item.
    let scaled: Vec<f32>;
    let (a, epi) = match epi.row_scale {
        Some(s) => {
            scaled = scale_rows(&a, s);
            (MatRef::row_major(&scaled, m, k), Epilogue { row_scale: None, ..epi })
        }
        None => (a, epi),
    };
    if cols.per >= n {
        fallback(a, b, c, ldc, accumulate, epi);
    } else if cols.b_stride == cols.per * b.cs {
        // B's items follow one another as one matrix: one product for the batch (small images
        // make thin per-item products, each packing all of A), scattered into C's items.
        let mut t = vec![0f32; m * n];
        fallback(a, b, &mut t, n, false, Epilogue::default());
        for i in 0..m {
            let bias = epi.row_bias.map_or(0.0, |b| b[i]);
            for (j, &v) in t[i * n..(i + 1) * n].iter().enumerate() {
                let at = i * ldc + cols.c_off(j);
                let x = if accumulate { c[at] + v } else { v };
                c[at] = finish(x, bias + epi.residual.map_or(0.0, |r| r[at]), epi.relu);
            }
        }
    } else {
        // One plain product per batch item.
        for start in (0..n).step_by(cols.per) {
            let item = start / cols.per;
            let width = cols.per.min(n - start);
            let bv =
                MatRef { data: &b.data[item * cols.b_stride..], rows: k, cols: width, rs: b.rs, cs: b.cs };
            let off = item * cols.c_stride;
            let epi_item = Epilogue { residual: epi.residual.map(|r| &r[off..]), ..epi };
            fallback(a, bv, &mut c[off..], ldc, accumulate, epi_item);
        }
    }
}

#[inline]
fn finish(x: f32, bias: f32, relu: bool) -> f32 {
    let y = x + bias;
    if relu {
        y.max(0.0)
    } else {
        y
    }
}

use crate::nn::autocast::bf16_products;
use crate::nn::simd::bf16_round_in_place;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
pub use amx::bf16_peak_gmacs;
#[cfg(target_arch = "x86_64")]
pub(in crate::nn) use amx::{amx_int8_available, with_tiles};
mod act;
mod fallback;
mod isa;
mod kernel;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
mod op;
mod pack;
mod pack_conv;
mod packed;
mod split;
mod weight_cache;

use act::*;
pub use act::{Activations, Product};
use fallback::*;
pub(in crate::nn) use isa::has_avx512;
use isa::nc;
pub use isa::{blocked_isa, with_isa, Isa};
#[cfg(target_arch = "x86_64")]
use kernel::*;
#[cfg(target_arch = "x86_64")]
pub(super) use kernel::{by_rows, fma_rows, store_rows};
#[cfg(target_arch = "x86_64")]
use kernel_avx2::*;
pub use op::matmul;
pub(super) use pack::pack_a;
use pack::*;
use pack_conv::*;
pub use packed::{sgemm_packed, PackedA};
use split::*;
pub use weight_cache::{as_weight, with_weight_cache, WeightCache};

#[cfg(all(test, target_arch = "x86_64"))]
mod kernel_timing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timing;
