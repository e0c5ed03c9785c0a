//! Single-precision matrix product C = A·B with our own AVX-512 micro-kernel, and `matmul`, the
//! candle op built on it (forward and backward), used by every convolution.
//!
//! Why our own: candle's matmul goes through the `gemm` crate, whose AVX-512 kernels need a
//! nightly compiler; on stable it runs AVX2 kernels at about a third of what this CPU class
//! (Sapphire Rapids, 2 FMA ports × 16 lanes) does, and convolutions are ~80 % GEMM.
//!
//! Layout: BLIS-style blocking. B is packed in K×32 column panels (two zmm registers wide), A in
//! 12×K row panels; the 12×32 micro-kernel keeps its 24 accumulators in registers and takes the
//! B values two vectors per k step and the A values as broadcasts. Per K block of `KC` the B
//! panel being worked on stays in L1 while the A panels of an `MC` block stream from L2.
//! Without AVX-512 the `gemm` crate does the work (the same results to rounding).
//!
//! The optional epilogue (a per-row bias, then ReLU) is applied while the last K block's tile is
//! still in registers: it folds inference BatchNorm and the activation into the convolution.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::cell::RefCell;

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major (contiguous rows) `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
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
/// `max(0, ·)`. With `accumulate` the previous C is added unscaled.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub row_scale: Option<&'a [f32]>,
    pub row_bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
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
const NC: usize = 1024;

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
pub struct ConvRhs<'a> {
    pub x: &'a [f32],
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
    if has_avx512() && k > 0 {
        if x.g.stride[2] > 1 {
            let phased = split_w_phases(x.x, &x.g);
            let xp = ConvRhs { x: &phased, ..x };
            return run_blocked(
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
        run_blocked(a, Columns::single(k), Rhs::Conv(x, false), n, out_cols, c.ptr, ldc, false, epi);
    } else {
        let colbuf = super::vol2col::vol2col(x.x, &x.g).expect("geometry checked by the caller");
        let b = MatRef { data: &colbuf, rows: k, cols: n, rs: n, cs: 1 };
        sgemm_impl(a, b, Columns { b_stride: p, ..out_cols }, c, ldc, false, epi, false);
    }
}

/// C [M, C·taps] = A [M, N·P] · (conv columns of `x`)ᵀ: a convolution's weight gradient, with A
/// the output gradient (its columns, the output positions, batched per image by `a_cols`) and
/// the column matrix read from `x` while packing (no vol2col buffer, no transposes). AVX-512
/// only: callers check `has_avx512`.
pub(super) fn sgemm_conv_t(a: MatRef, a_cols: Columns, x: ConvRhs, c: &mut [f32], ldc: usize) {
    let [ot, oh, ow] = x.out;
    let (np, n) = (x.g.n * ot * oh * ow, x.g.c * x.g.taps());
    assert!(has_avx512(), "the implicit transposed columns need AVX-512");
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

pub(super) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Splits the product among the pool's threads and runs the blocked kernel on each part.
#[allow(clippy::too_many_arguments)]
fn run_blocked(
    a: MatRef,
    a_cols: Columns,
    b: Rhs,
    n: usize,
    cols: Columns,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    epi: Epilogue,
) {
    let (m, k) = (a.rows, a.cols);
    let threads = threads_for(m * n * k);
    let c_ptr = SendPtr(c);
    let parts = partition(m, n, threads);
    #[cfg(target_arch = "x86_64")]
    if parts.len() == 1 {
        // SAFETY: callers checked AVX-512 and that `c` holds the m × n output.
        unsafe { blocked(a, a_cols, b, cols, c_ptr.0, ldc, (0, m), (0, n), accumulate, epi, None) };
    } else {
        // Split by columns, every part would pack all of A (the weights, with BN's scale) for
        // itself: pack it once, the threads sharing the work, and let the parts read that.
        let panel_rows = m.div_ceil(MR) * MR;
        let shared = (parts.iter().all(|p| p.0 == (0, m)) && panel_rows * k <= SHARED_A_MAX)
            .then(|| pack_a_whole(&a, &a_cols, panel_rows, epi.row_scale, parts.len()));
        let packed = shared.as_ref().map(|v| SendPtr(v.as_ptr() as *mut f32));
        rayon::scope(|s| {
            for (rows, part) in parts {
                s.spawn(move |_| {
                    let (c_ptr, packed) = (c_ptr, packed);
                    let packed = packed.map(|p| p.0 as *const f32);
                    // SAFETY: as above; the parts cover disjoint blocks of C, and `packed` (read
                    // only) lives until the scope ends.
                    unsafe { blocked(a, a_cols, b, cols, c_ptr.0, ldc, rows, part, accumulate, epi, packed) };
                });
            }
        });
    }
}

/// The largest A (in packed values) packed once for all column parts: 16 MB.
const SHARED_A_MAX: usize = 1 << 22;

/// Where a whole packed A (all KC blocks at once) holds row `i` (counted from the part's first
/// row) of the block starting at column `pc`, `kc` wide: each block's MR-row panels one after
/// another, the blocks one after another.
#[inline]
fn whole_a_at(pc: usize, panel_rows: usize, i: usize, kc: usize) -> usize {
    pc * panel_rows + i * kc
}

/// All of A packed whole (`whole_a_at`), the blocks split over `threads`.
fn pack_a_whole(
    a: &MatRef,
    a_cols: &Columns,
    panel_rows: usize,
    scale: Option<&[f32]>,
    threads: usize,
) -> Vec<f32> {
    let (m, k) = (a.rows, a.cols);
    let mut out = vec![0f32; panel_rows * k];
    let blocks: Vec<(usize, usize)> =
        (0..k).step_by(KC).flat_map(|pc| (0..m).step_by(MC).map(move |ic| (pc, ic))).collect();
    let ptr = SendPtr(out.as_mut_ptr());
    let len = out.len();
    rayon::scope(|s| {
        for t in 0..threads {
            let blocks = &blocks;
            s.spawn(move |_| {
                let ptr = ptr;
                for &(pc, ic) in blocks.iter().skip(t).step_by(threads) {
                    let kc = KC.min(k - pc);
                    let at = whole_a_at(pc, panel_rows, ic, kc);
                    let rows = MC.min(m - ic);
                    let n = rows.div_ceil(MR) * MR * kc;
                    assert!(at + n <= len, "packed A block out of bounds");
                    // SAFETY: the (pc, ic) blocks occupy disjoint ranges of `out`, each taken by
                    // one thread, and `out` outlives the scope.
                    let dst = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(at), n) };
                    pack_a(a, a_cols, ic, rows, pc, kc, scale, dst);
                }
            });
        }
    });
    out
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
    sgemm_impl(a, b, cols, Out::of(c), ldc, accumulate, epi, has_avx512())
}

/// `sgemm_columns` (no accumulation) into a new buffer of `a.rows × b.cols` values laid out by
/// `cols` and `ldc`, which must cover it: no zeroing pass.
pub fn sgemm_columns_new(a: MatRef, b: MatRef, cols: Columns, ldc: usize, epi: Epilogue) -> Vec<f32> {
    let (m, n) = (a.rows, b.cols);
    new_product(m, n, cols, ldc, |c| sgemm_impl(a, b, cols, c, ldc, false, epi, has_avx512()))
}

/// `sgemm_columns_new` with B's rows read through `rows` (a frame shift per row, see
/// `FrameRows`; B contiguous along its columns). Needs AVX-512 (`has_avx512`).
pub fn sgemm_columns_shifted_new(
    a: MatRef,
    b: MatRef,
    cols: Columns,
    rows: FrameRows,
    ldc: usize,
    epi: Epilogue,
) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(has_avx512(), "the shifted product needs AVX-512");
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
        run_blocked(a, Columns::single(k), Rhs::ShiftedMat(b, cols, rows), n, cols, c.ptr, ldc, false, epi)
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
    avx512: bool,
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
    if avx512 && k > 0 {
        run_blocked(a, Columns::single(k), Rhs::Mat(b, cols), n, cols, out.ptr, ldc, accumulate, epi);
        return;
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

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each thread writes a disjoint block of the output.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Splits the output among `threads`: by columns in whole panels when there are enough of them,
/// else by rows in whole micro-panels.
fn partition(m: usize, n: usize, threads: usize) -> Vec<((usize, usize), (usize, usize))> {
    let split = |len: usize, unit: usize| -> Vec<(usize, usize)> {
        let units = len.div_ceil(unit);
        let parts = threads.min(units).max(1);
        (0..parts)
            .map(|p| ((units * p / parts * unit).min(len), (units * (p + 1) / parts * unit).min(len)))
            .filter(|(lo, hi)| hi > lo)
            .collect()
    };
    if threads <= 1 {
        return vec![((0, m), (0, n))];
    }
    // Every part packs all of the operand it does not split: split columns (each part packs all
    // of A, m × k) when that is the smaller duplicate, rows (each packs all of B, k × n) otherwise.
    let (col_units, row_units) = (n.div_ceil(NR), m.div_ceil(MR));
    let by_cols = if row_units < 2 * threads {
        true
    } else if col_units < 2 * threads {
        false
    } else {
        n >= m
    };
    if by_cols {
        split(n, NR).into_iter().map(|cols| ((0, m), cols)).collect()
    } else {
        split(m, MR).into_iter().map(|rows| (rows, (0, n))).collect()
    }
}

/// A 64-byte aligned scratch buffer per thread (packing), kept between calls.
struct Scratch {
    buf: Vec<f32>,
}

impl Scratch {
    fn get(&mut self, len: usize) -> &mut [f32] {
        if self.buf.len() < len + 16 {
            self.buf = vec![0.0; len + 16];
        }
        let off = self.buf.as_ptr().align_offset(64).min(15);
        &mut self.buf[off..off + len]
    }
}

thread_local! {
    static PACK_A: RefCell<Scratch> = const { RefCell::new(Scratch { buf: Vec::new() }) };
    static PACK_B: RefCell<Scratch> = const { RefCell::new(Scratch { buf: Vec::new() }) };
}

/// Packs rows `i0..i0+mc`, columns `p0..p0+kc` of A into `MR`-row panels, k-major inside a panel
/// (`MR` values per k), zero rows past the end; each row times `scale[row]` when given. A's
/// columns are laid out by `a_cols` (`Columns::single` for a plain matrix; batched when K runs
/// over images, as a weight gradient's positions do). Written in order, reading the panel's rows
/// side by side (row by row, the writes at a 48-byte stride took 4 % of a SlowFast forward).
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_a(
    a: &MatRef,
    a_cols: &Columns,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
    scale: Option<&[f32]>,
    out: &mut [f32],
) {
    for (panel, dst) in out.chunks_exact_mut(MR * kc).take(mc.div_ceil(MR)).enumerate() {
        let r0 = panel * MR;
        let rows = MR.min(mc - r0);
        let mut base = [0usize; MR];
        let mut s = [0f32; MR];
        for r in 0..rows {
            base[r] = (i0 + r0 + r) * a.rs;
            s[r] = scale.map_or(1.0, |s| s[i0 + r0 + r]);
        }
        if rows < MR {
            dst.fill(0.0);
        }
        let cs = a.cs;
        // Runs of columns inside one batch item (one run for a plain matrix).
        let mut kk = 0;
        while kk < kc {
            let col = p0 + kk;
            let run = (kc - kk).min(a_cols.per - col % a_cols.per);
            let start = a_cols.b_off(col, cs);
            // The run's last value of every row lies inside A; then unchecked reads (a bounds
            // check per value cost more than the copy).
            let last = start + (run - 1) * cs;
            assert!(base[..rows].iter().all(|&b| b + last < a.data.len()), "A block past its buffer");
            let run_dst = &mut dst[kk * MR..(kk + run) * MR];
            #[cfg(target_arch = "x86_64")]
            if cs == 1 && has_avx512() {
                // SAFETY: AVX-512 checked; each row's run lies inside A (asserted above).
                unsafe { pack_a_run_wide(a.data, &base, rows, start, &s, run_dst) };
                kk += run;
                continue;
            }
            pack_a_run(a.data, &base, rows, start, cs, &s, run_dst);
            kk += run;
        }
    }
}

/// One run of `pack_a`: `dst` (k-major, `MR` values per k) row r, column q = A value at
/// `base[r] + start + q·cs`, times `s[r]`, for the first `rows` rows.
#[inline(always)]
fn pack_a_run(
    a: &[f32],
    base: &[usize; MR],
    rows: usize,
    start: usize,
    cs: usize,
    s: &[f32; MR],
    dst: &mut [f32],
) {
    let src = a.as_ptr();
    let run = dst.len() / MR;
    assert!(
        run == 0 || base[..rows].iter().all(|&b| b + start + (run - 1) * cs < a.len()),
        "A run past its buffer"
    );
    for (q, d) in dst.chunks_exact_mut(MR).enumerate() {
        let at = start.wrapping_add(q.wrapping_mul(cs));
        for r in 0..rows {
            // SAFETY: base[r] + at ≤ the run's last value of row r, inside A (asserted above).
            d[r] = unsafe { *src.add(base[r].wrapping_add(at)) } * s[r];
        }
    }
}

/// How far ahead (values) the transposing packers prefetch each row they stream.
const PREFETCH_AHEAD: usize = 64;

/// `pack_a_run` for rows contiguous along k (cs = 1), 16 columns at a time: one masked load per
/// row, a 16 × 16 transpose, one masked store of the rows per column (the scalar gather was ~3.5 % of a
/// ResNet training step, mostly the weight gradients' output-gradient panels).
///
/// # Safety
/// AVX-512F available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_run_wide(
    a: &[f32],
    base: &[usize; MR],
    rows: usize,
    start: usize,
    s: &[f32; MR],
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    const { assert!(MR <= 16, "a panel's rows fit one transpose") };
    let run = dst.len() / MR;
    assert!(run == 0 || base[..rows].iter().all(|&b| b + start + run <= a.len()), "A run past its buffer");
    let (src, out) = (a.as_ptr(), dst.as_mut_ptr());
    let row_mask = ((1u32 << rows) - 1) as __mmask16;
    let mut q0 = 0;
    while q0 < run {
        let n = (run - q0).min(16);
        let mask = ((1u32 << n) - 1) as __mmask16;
        let mut v = [_mm512_setzero_ps(); 16];
        for r in 0..rows {
            _mm_prefetch::<_MM_HINT_T0>(src.wrapping_add(base[r] + start + q0 + PREFETCH_AHEAD) as *const i8);
            // SAFETY: n values from base[r] + start + q0, inside the run (asserted above).
            let x = _mm512_maskz_loadu_ps(mask, src.add(base[r] + start + q0));
            v[r] = _mm512_mul_ps(x, _mm512_set1_ps(s[r]));
        }
        for (q, col) in transpose16(v).iter().enumerate().take(n) {
            // SAFETY: column q0 + q < run of `dst`, its first `rows` values.
            _mm512_mask_storeu_ps(out.add((q0 + q) * MR), row_mask, *col);
        }
        q0 += 16;
    }
}

/// Packs columns `j0..j0+nc` of a K block (`kc` rows) of B into `NR`-column panels, k-major
/// inside a panel (`NR` values per k), zero columns past the end. Columns go in runs: `run_at(col,
/// left)` says how many columns from `col` on (at most `left`) one `copy(kk, at, dst)` fills
/// (`dst.len()` of them) for row `kk`, and where they are (`at`, decoded from `col` once per
/// block: the divisions cost more than the copy when done per row). Rows are the outer loop so
/// the reads stream along B's rows (a run of columns is contiguous in memory, the next row is far
/// away).
#[inline(always)]
fn pack_panels<At: Copy>(
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut [f32],
    run_at: impl Fn(usize, usize) -> (usize, At),
    copy: impl Fn(usize, At, &mut [f32]),
) {
    let panels = nc.div_ceil(NR);
    // (offset of the run in its panel's first row, where its columns are, length)
    let mut runs = Vec::with_capacity(panels * 2);
    for panel in 0..panels {
        let c0 = j0 + panel * NR;
        let cols = NR.min(j0 + nc - c0);
        if cols < NR {
            out[panel * NR * kc..(panel + 1) * NR * kc].fill(0.0);
        }
        let mut j = 0;
        while j < cols {
            let (run, at) = run_at(c0 + j, cols - j);
            runs.push((panel * NR * kc + j, at, run));
            j += run;
        }
    }
    for kk in 0..kc {
        for &(offset, at, run) in &runs {
            let start = offset + kk * NR;
            copy(kk, at, &mut out[start..start + run]);
        }
    }
}

/// `pack_panels` for a strided matrix: runs of columns inside one batch item, contiguous in B when
/// cs = 1.
#[inline(always)]
fn pack_b_mat(b: &MatRef, cols_map: &Columns, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    let run_at =
        |col: usize, left: usize| (left.min(cols_map.per - col % cols_map.per), cols_map.b_off(col, b.cs));
    pack_panels(kc, j0, nc, out, run_at, |kk, col_off, dst| {
        let base = (p0 + kk) * b.rs + col_off;
        if b.cs == 1 {
            copy_run(dst, &b.data[base..base + dst.len()]);
        } else {
            for (q, v) in dst.iter_mut().enumerate() {
                *v = b.data[base + q * b.cs];
            }
        }
    });
}

/// `pack_b_mat` for `Rhs::ShiftedMat`: a run of columns lies in one batch item, so each of its
/// rows is one run of the item `delta` away, or zeros when that item is outside the clip.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_b_shifted(
    b: &MatRef,
    cols: &Columns,
    rows: &FrameRows,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut [f32],
) {
    let run_at = |col: usize, left: usize| {
        (left.min(cols.per - col % cols.per), (cols.b_off(col, 1), (col / cols.per) % rows.segments))
    };
    pack_panels(kc, j0, nc, out, run_at, |kk, (col_off, t), dst| {
        let delta = rows.delta[p0 + kk] as isize;
        let from = t as isize + delta;
        if from < 0 || from >= rows.segments as isize {
            return dst.fill(0.0);
        }
        // Inside the clip, so inside B (items are whole clips).
        let base = ((p0 + kk) * b.rs + col_off).wrapping_add_signed(delta * cols.b_stride as isize);
        copy_run(dst, &b.data[base..base + dst.len()]);
    });
}

/// `dst.copy_from_slice(src)` for a run of at most a panel row, inlined as vector moves: a
/// `memmove` call per run cost more than the copy (whole rows, and the short runs where a
/// panel spans two images: P = 49 or 196 in LCNetV2's 1×1 layers).
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    assert!(dst.len() == src.len() && dst.len() <= NR, "a run is at most a panel row");
    if let (Ok(d), Ok(s)) = (<&mut [f32; NR]>::try_from(&mut *dst), <&[f32; NR]>::try_from(src)) {
        *d = *s;
        return;
    }
    // Constant-size pieces of 16, 8, 4, 2 and 1 (a loop would be turned back into a memmove call).
    let mut at = 0;
    macro_rules! piece {
        ($n:literal) => {
            if (dst.len() - at) & $n != 0 {
                if let (Ok(d), Ok(s)) = (
                    <&mut [f32; $n]>::try_from(&mut dst[at..at + $n]),
                    <&[f32; $n]>::try_from(&src[at..at + $n]),
                ) {
                    *d = *s;
                }
                at += $n;
            }
        };
    }
    piece!(16);
    piece!(8);
    piece!(4);
    piece!(2);
    if dst.len() > at {
        dst[at] = src[at];
    }
}

/// # Safety
/// AVX-512F must be available (the packers are inlined here to use its moves).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(b: &Rhs, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    match b {
        Rhs::Mat(m, cols) => pack_b_mat(m, cols, p0, kc, j0, nc, out),
        Rhs::ShiftedMat(m, cols, rows) => pack_b_shifted(m, cols, rows, p0, kc, j0, nc, out),
        Rhs::Conv(x, phased) => pack_b_conv(x, *phased, p0, kc, j0, nc, out),
        Rhs::ConvT(x) => pack_b_conv_t(x, p0, kc, j0, nc, out),
    }
}

/// Each input row of `x` ([N, C, T, H, W]) as its `s` = stride-along-w phases one after the
/// other, phase φ holding columns φ, φ + s, … and zero-filled to ⌈W / s⌉: a tap of a w-strided
/// convolution then reads a contiguous run of one phase (vector moves instead of a strided
/// gather, which took most of the packing of strided stems).
fn split_w_phases(x: &[f32], g: &super::vol2col::Geometry3d) -> Vec<f32> {
    let (iw, s) = (g.input[2], g.stride[2]);
    let q = iw.div_ceil(s);
    let rows = g.n * g.c * g.input[0] * g.input[1];
    let mut out = super::vol2col::zeros_par(rows * s * q);
    super::vol2col::par_planes(&mut out, s * q, |row, dst| {
        let src = &x[row * iw..][..iw];
        if s == 2 {
            let (even, odd) = dst.split_at_mut(q);
            if iw % 2 == 1 {
                even[iw / 2] = src[iw - 1];
            }
            return super::simd::deinterleave(src, even, odd);
        }
        for (phase, part) in dst.chunks_exact_mut(q).enumerate() {
            for (d, v) in part.iter_mut().zip(src[phase.min(iw)..].iter().step_by(s)) {
                *d = *v;
            }
        }
    });
    out
}

/// `pack_panels` for a convolution's implicit column matrix: a run of output columns along one
/// output row (same image, t, h) reads, per tap row, a strided run of one input row (contiguous
/// when `phased`: x laid out by `split_w_phases`).
#[inline(always)]
fn pack_b_conv(x: &ConvRhs, phased: bool, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    let g = &x.g;
    let [ot, oh, ow] = x.out;
    let p = ot * oh * ow;
    let [it, ih, iw_input] = g.input;
    let [kt, kh, kw] = g.kernel;
    let taps = kt * kh * kw;
    let stride_w = g.stride[2];
    // A phased row: `stride_w` phases of `iw` columns each, read at stride 1.
    let (iw, pitch, sw) = if phased {
        let q = iw_input.div_ceil(stride_w);
        (q, stride_w * q, 1isize)
    } else {
        (iw_input, iw_input, stride_w as isize)
    };
    let vol = it * ih * pitch;
    let (dlw, pw) = (g.dilation[2] as isize, g.pad[2] as isize);
    // Taps that only move in t (1×1 in space, stride 1, no spatial padding: the temporal convs of
    // Slow and SlowFast) read whole (h, w) planes: runs then span a plane, not one short row.
    let plane_runs = !phased
        && kh == 1
        && kw == 1
        && g.stride[1] == 1
        && g.stride[2] == 1
        && g.pad[1] == 0
        && g.pad[2] == 0;
    let (ih, iw, pitch) = if plane_runs { (1, ih * iw, ih * iw) } else { (ih, iw, pitch) };
    // Per row of the block: the input plane offset and the tap's (t, h, w) offsets, decoded once.
    let mut rows = [(0usize, 0isize, 0isize, 0isize); KC];
    for (kk, r) in rows.iter_mut().enumerate().take(kc) {
        let (c, tap) = ((p0 + kk) / taps, (p0 + kk) % taps);
        let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
        // The tap's w offset, or its phase (as a plane offset) and its offset inside the phase.
        let dw_off = dw as isize * dlw - pw;
        let (plane, dw_off) = if phased {
            let s = stride_w as isize;
            (c * vol + dw_off.rem_euclid(s) as usize * iw, dw_off.div_euclid(s))
        } else {
            (c * vol, dw_off)
        };
        *r = (
            plane,
            (dt * g.dilation[0]) as isize - g.pad[0] as isize,
            (dh * g.dilation[1]) as isize - g.pad[1] as isize,
            dw_off,
        );
    }
    // A run: its image's offset in x and the input (t, h, w) its first column's window starts at
    // (before the tap's offset).
    let run_at = |col: usize, left: usize| {
        let (n, pos) = (col / p, col % p);
        let (t, rest) = (pos / (oh * ow), pos % (oh * ow));
        if plane_runs {
            return (
                left.min(oh * ow - rest),
                (n * g.c * vol, ((t * g.stride[0]) as isize, 0, rest as isize)),
            );
        }
        let (h, w0) = (rest / ow, rest % ow);
        let origin = ((t * g.stride[0]) as isize, (h * g.stride[1]) as isize, w0 as isize * sw);
        (left.min(ow - w0), (n * g.c * vol, origin))
    };
    pack_panels(kc, j0, nc, out, run_at, |kk, (image, (t0, h0, w0)), d| {
        let (plane, dt, dh, dw) = rows[kk];
        let (ti, hi) = (t0 + dt, h0 + dh);
        if ti < 0 || ti >= it as isize || hi < 0 || hi >= ih as isize {
            // SAFETY: `pack_b` (the only caller) runs with AVX-512; no lane is read.
            #[cfg(target_arch = "x86_64")]
            return unsafe { masked_run(d, std::ptr::null(), 0, 0) };
            #[cfg(not(target_arch = "x86_64"))]
            return d.fill(0.0);
        }
        let src_row = &x.x[image + plane + (ti as usize * ih + hi as usize) * pitch..][..iw];
        // Input column of output column w: w·sw + dw·dil − pad. Columns q in lo..hi read inside
        // the row, the others are padding.
        let first = w0 + dw;
        let run = d.len();
        if sw == 1 && first >= 0 && first + run as isize <= iw as isize {
            return copy_run(d, &src_row[first as usize..first as usize + run]);
        }
        let floor_div = |q: isize| match sw {
            1 => q,
            2 => q >> 1, // an idiv here took a tenth of the packing
            _ => q.div_euclid(sw),
        };
        let inside = |q: isize| floor_div(q).clamp(0, run as isize) as usize;
        let (lo, hi) = (inside(sw - 1 - first), inside(iw as isize - first + sw - 1));
        let hi = hi.max(lo);
        #[cfg(target_arch = "x86_64")]
        if sw == 1 {
            // SAFETY: as above; lanes lo..hi read input columns first + lo .. first + hi, inside
            // the row.
            return unsafe { masked_run(d, src_row.as_ptr().wrapping_offset(first), lo, hi) };
        }
        d[..lo].fill(0.0);
        d[hi..].fill(0.0);
        if hi > lo {
            let (start, sw) = ((first + lo as isize * sw) as usize, sw as usize);
            let src = &src_row[start..start + (hi - lo - 1) * sw + 1];
            // Wrapping index arithmetic: overflow checks would keep the loop scalar.
            if sw == 2 {
                for (q, v) in d[lo..hi].iter_mut().enumerate() {
                    *v = src[q.wrapping_mul(2)];
                }
            } else {
                for (q, v) in d[lo..hi].iter_mut().enumerate() {
                    *v = src[q.wrapping_mul(sw)];
                }
            }
        }
    });
}

/// `d[q] = src[q]` for q in `lo..hi`, zero elsewhere (d.len() ≤ NR): a row run that starts or
/// ends in the padding, or lies in it (lo = hi), as masked moves instead of fill calls and a
/// per-value copy.
///
/// # Safety
/// AVX-512F available; `src + q` readable for q in `lo..hi` (no other lane is read, so `src`
/// may point outside its row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn masked_run(d: &mut [f32], src: *const f32, lo: usize, hi: usize) {
    use std::arch::x86_64::*;
    assert!(d.len() <= NR && lo <= hi && hi <= d.len(), "a run is at most a panel row");
    let bits = |from: usize, to: usize| (((1u32 << to) - 1) & !((1u32 << from) - 1)) as __mmask16;
    let mut base = 0;
    while base < d.len() {
        let lanes = (d.len() - base).min(16);
        let at = |q: usize| q.clamp(base, base + 16) - base;
        let v = _mm512_maskz_loadu_ps(bits(at(lo), at(hi)), src.wrapping_add(base));
        // SAFETY: `lanes` values from `base` lie inside `d`.
        _mm512_mask_storeu_ps(d.as_mut_ptr().add(base), bits(0, lanes), v);
        base += 16;
    }
}

/// Packs `Rhs::ConvT`: rows `p0..p0+kc` (output positions) and columns `j0..j0+nc` ((c, tap)
/// pairs) into `NR`-column panels. The positions go in runs along an output row (a whole plane
/// for 1×1 taps at stride 1 without spatial padding), decoded once per block; each column then
/// reads, per run, a run of one input row (strided by the w stride) and writes it down its
/// panel column. At w stride 1 with AVX-512 the runs are transposed 16 × 16 in registers.
#[inline(always)]
fn pack_b_conv_t(x: &ConvRhs, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    let t = ConvTBlock::new(x, p0, kc);
    #[cfg(target_arch = "x86_64")]
    if t.sw <= 2 {
        // SAFETY: `pack_b` (this packer's only caller) runs with AVX-512.
        return unsafe { pack_conv_t_wide(&t, kc, j0, nc, out) };
    }
    pack_conv_t_columns(&t, kc, j0, nc, out)
}

/// A K block of `Rhs::ConvT` decoded: the geometry as the packers read it (1×1 taps at stride 1
/// without spatial padding read whole planes as one row) and its runs of output positions along
/// one output row.
struct ConvTBlock<'a> {
    x: &'a [f32],
    g: &'a super::vol2col::Geometry3d,
    taps: usize,
    /// Input extent (t, h, w) and volume per channel, planes flattened for plane runs.
    it: usize,
    ih: usize,
    iw: usize,
    vol: usize,
    sw: isize,
    runs: Vec<PositionRun>,
}

/// Output positions along one output row: (first row in the block, length, image offset, input t
/// and h of the window origin, output w of the first).
type PositionRun = (usize, usize, usize, (isize, isize), isize);

impl<'a> ConvTBlock<'a> {
    fn new(x: &'a ConvRhs, p0: usize, kc: usize) -> Self {
        let g = &x.g;
        let [ot, oh, ow] = x.out;
        let [it, ih, iw] = g.input;
        let [kt, kh, kw] = g.kernel;
        let (taps, p) = (kt * kh * kw, ot * oh * ow);
        let plane_runs =
            kh == 1 && kw == 1 && g.stride[1] == 1 && g.stride[2] == 1 && g.pad[1] == 0 && g.pad[2] == 0;
        let (ih, iw, oh, ow) = if plane_runs { (1, ih * iw, 1, oh * ow) } else { (ih, iw, oh, ow) };
        let vol = it * ih * iw;
        let mut runs = Vec::with_capacity(kc / ow.max(1) + 2);
        let mut kk = 0;
        while kk < kc {
            let pos = p0 + kk;
            let (n, rest) = (pos / p, pos % p);
            let (t, rest) = (rest / (oh * ow), rest % (oh * ow));
            let (h, w) = (rest / ow, rest % ow);
            let len = (kc - kk).min(ow - w);
            let origin = ((t * g.stride[0]) as isize, (h * g.stride[1]) as isize);
            runs.push((kk, len, n * g.c * vol, origin, w as isize));
            kk += len;
        }
        ConvTBlock { x: x.x, g, taps, it, ih, iw, vol, sw: g.stride[2] as isize, runs }
    }

    /// Column j's (channel plane offset, tap t / h / w offsets of its input position).
    fn column(&self, j: usize) -> (usize, isize, isize, isize) {
        let g = self.g;
        let [_, kh, kw] = g.kernel;
        let (c, tap) = (j / self.taps, j % self.taps);
        let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
        (
            c * self.vol,
            (dt * g.dilation[0]) as isize - g.pad[0] as isize,
            (dh * g.dilation[1]) as isize - g.pad[1] as isize,
            dw as isize * g.dilation[2] as isize - g.pad[2] as isize,
        )
    }

    /// For a column and a run: the input row it reads (its offset in x; None when the row lies in
    /// the t/h padding), the input column of the run's first value, and the run values `lo..hi`
    /// that fall inside the row (the others are padding).
    #[inline(always)]
    fn source(
        &self,
        (plane, dt, dh, dw): (usize, isize, isize, isize),
        (len, image, (t0, h0), w0): (usize, usize, (isize, isize), isize),
    ) -> Option<(usize, isize, usize, usize)> {
        let (ti, hi) = (t0 + dt, h0 + dh);
        if ti < 0 || ti >= self.it as isize || hi < 0 || hi >= self.ih as isize {
            return None;
        }
        let row = image + plane + (ti as usize * self.ih + hi as usize) * self.iw;
        // Input column of run element q: (w0 + q)·sw + dw; inside the row for q in lo..hi.
        let (sw, first) = (self.sw, w0 * self.sw + dw);
        let inside = |q: isize| q.clamp(0, len as isize) as usize;
        let lo = inside((-first + sw - 1).div_euclid(sw));
        let hi = inside((self.iw as isize - first + sw - 1).div_euclid(sw)).max(lo);
        Some((row, first, lo, hi))
    }
}

/// `pack_b_conv_t` one panel column at a time, values written down the column (any w stride).
fn pack_conv_t_columns(t: &ConvTBlock, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    for (panel, dst) in out.chunks_exact_mut(NR * kc).take(nc.div_ceil(NR)).enumerate() {
        for jj in 0..NR {
            let j = j0 + panel * NR + jj;
            if j >= j0 + nc {
                for kk in 0..kc {
                    dst[kk * NR + jj] = 0.0;
                }
                continue;
            }
            let column = t.column(j);
            for &(k0, len, image, origin, w0) in &t.runs {
                let col = &mut dst[k0 * NR + jj..];
                assert!(len == 0 || (len - 1) * NR < col.len(), "run past its panel");
                // Strided writes down the panel column through a pointer: per-value index
                // arithmetic (overflow-checked in this build) cost more than the copy.
                let mut d = col.as_mut_ptr();
                let zeros = |d: &mut *mut f32, count: usize| {
                    for _ in 0..count {
                        // SAFETY: at most `len` values NR apart from the run's first (asserted).
                        unsafe {
                            **d = 0.0;
                            *d = d.add(NR);
                        }
                    }
                };
                let Some((row, first, lo, hi)) = t.source(column, (len, image, origin, w0)) else {
                    zeros(&mut d, len);
                    continue;
                };
                let row = &t.x[row..][..t.iw];
                zeros(&mut d, lo);
                if hi > lo {
                    let sw = t.sw as usize;
                    let src = &row[(first + lo as isize * t.sw) as usize..];
                    assert!((hi - lo - 1) * sw < src.len(), "run past its input row");
                    let mut v = src.as_ptr();
                    for _ in lo..hi {
                        // SAFETY: `d` as above; `v` stays inside `src` (asserted).
                        unsafe {
                            *d = *v;
                            d = d.add(NR);
                            v = v.add(sw);
                        }
                    }
                }
                zeros(&mut d, len - hi);
            }
        }
    }
}

/// `pack_b_conv_t` at w stride 1 or 2: per half panel (16 columns) and run, 16 run values of
/// each column are one masked load (two and an even-lane permute at stride 2; lanes in the
/// padding or past the run read as zero) and a 16 × 16 transpose turns the 16 column vectors
/// into 16 panel rows: whole-vector moves instead of one scalar store per value (the scalar
/// packer was ~5 % of a ResNet training step).
///
/// # Safety
/// AVX-512F available; `t.sw` is 1 or 2 and `out` holds ⌈nc / NR⌉ panels of `NR × kc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_conv_t_wide(t: &ConvTBlock, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(t.sw == 1 || t.sw == 2, "the transposing packer reads rows at stride 1 or 2");
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let bits = |from: usize, to: usize| (((1u32 << to) - 1) & !((1u32 << from) - 1)) as __mmask16;
    assert!(out.len() >= nc.div_ceil(NR) * NR * kc, "panel buffer too small");
    let base = t.x.as_ptr();
    for (panel, dst) in out.chunks_exact_mut(NR * kc).take(nc.div_ceil(NR)).enumerate() {
        for half in 0..NR / 16 {
            let j_first = j0 + panel * NR + half * 16;
            let columns: [Option<_>; 16] =
                std::array::from_fn(|jj| (j_first + jj < j0 + nc).then(|| t.column(j_first + jj)));
            for &(k0, len, image, origin, w0) in &t.runs {
                // Per column: the address of run value 0 (wrapping: it may lie before the row when
                // the run starts in the padding; only lanes in lo..hi are read) and lo..hi.
                let mut src = [(base, 0usize, 0usize); 16];
                for (s, column) in src.iter_mut().zip(&columns) {
                    if let Some((row, first, lo, hi)) =
                        column.and_then(|c| t.source(c, (len, image, origin, w0)))
                    {
                        *s = (base.wrapping_add(row).wrapping_offset(first), lo, hi);
                    }
                }
                let mut q0 = 0;
                while q0 < len {
                    let mut v = [_mm512_setzero_ps(); 16];
                    for (v, &(p, lo, hi)) in v.iter_mut().zip(&src) {
                        // Each column is its own stream through memory: ask for a few lines ahead.
                        _mm_prefetch::<_MM_HINT_T0>(
                            p.wrapping_add((q0 + PREFETCH_AHEAD) * t.sw as usize) as *const i8
                        );
                        let (a, b) = (lo.clamp(q0, q0 + 16) - q0, hi.clamp(q0, q0 + 16) - q0);
                        if t.sw == 1 {
                            // SAFETY: the unmasked lanes are run values lo..hi, inside their row.
                            *v = _mm512_maskz_loadu_ps(bits(a, b), p.wrapping_add(q0));
                        } else if b > a {
                            // Run values a..b sit at even offsets 2a..2b−2 from p + 2·q0; the odd
                            // ones between them are inside the row too, so one range per load.
                            let (from, to) = (2 * a, 2 * b - 1);
                            let at = p.wrapping_add(2 * q0);
                            let lo_half = _mm512_maskz_loadu_ps(bits(from.min(16), to.min(16)), at);
                            let hi_half = _mm512_maskz_loadu_ps(
                                bits(from.saturating_sub(16), to.saturating_sub(16)),
                                at.wrapping_add(16),
                            );
                            *v = _mm512_permutex2var_ps(lo_half, even, hi_half);
                        }
                    }
                    let rows = transpose16(v);
                    for (q, row) in rows.iter().enumerate().take(len - q0) {
                        // SAFETY: panel row k0 + q0 + q < kc, 16 values at column half·16.
                        _mm512_storeu_ps(dst.as_mut_ptr().add((k0 + q0 + q) * NR + half * 16), *row);
                    }
                    q0 += 16;
                }
            }
        }
    }
}

/// The 16 × 16 transpose of `v` (row i = v[i]): in-lane unpacks of floats, then of float pairs,
/// then two rounds of 128-bit block shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose16(v: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // r[g][c]: in 128-bit block l, column 4l + c of rows 4g..4g+3.
    let mut r = [[_mm512_setzero_ps(); 4]; 4];
    for (g, r) in r.iter_mut().enumerate() {
        let (a, b, c, d) = (v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]);
        let (ab_lo, ab_hi) = (_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let (cd_lo, cd_hi) = (_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        let pairs = |x: __m512, y: __m512, hi: bool| {
            let (x, y) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
            _mm512_castpd_ps(if hi { _mm512_unpackhi_pd(x, y) } else { _mm512_unpacklo_pd(x, y) })
        };
        *r = [
            pairs(ab_lo, cd_lo, false),
            pairs(ab_lo, cd_lo, true),
            pairs(ab_hi, cd_hi, false),
            pairs(ab_hi, cd_hi, true),
        ];
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        // Blocks (even, odd) of groups 0/1 and 2/3, then block l of every group into row 4l + c.
        let even01 = _mm512_shuffle_f32x4::<0x88>(r[0][c], r[1][c]);
        let odd01 = _mm512_shuffle_f32x4::<0xDD>(r[0][c], r[1][c]);
        let even23 = _mm512_shuffle_f32x4::<0x88>(r[2][c], r[3][c]);
        let odd23 = _mm512_shuffle_f32x4::<0xDD>(r[2][c], r[3][c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(even01, even23);
        out[8 + c] = _mm512_shuffle_f32x4::<0xDD>(even01, even23);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(odd01, odd23);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(odd01, odd23);
    }
    out
}

/// The blocked product for output rows `rows` and columns `cols`.
///
/// # Safety
/// AVX-512F must be available; `c` must address the m × n output with leading dimension `ldc`,
/// and no other thread may touch the block (rows × cols) at the same time; `shared_a`, when
/// given, must hold all of A packed as `pack_a_whole` lays it out, for rows starting at 0.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn blocked(
    a: MatRef,
    a_cols: Columns,
    b: Rhs,
    cols_map: Columns,
    c: *mut f32,
    ldc: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    accumulate: bool,
    epi: Epilogue,
    shared_a: Option<*const f32>,
) {
    let k = a.cols;
    PACK_B.with_borrow_mut(|pb| {
        PACK_A.with_borrow_mut(|pa| {
            let bbuf = pb.get(KC * NC);
            // A packed once for all column blocks when there are several and it is small (the
            // early layers of a ResNet: 25 column blocks, A re-packed for each took ~9 % of the
            // product); else one MC × KC block at a time.
            let panel_rows = (rows.1 - rows.0).div_ceil(MR) * MR;
            let whole_a = shared_a.is_some() || ((cols.1 - cols.0) > NC && panel_rows * k <= 1 << 20);
            let abuf = pa.get(if shared_a.is_some() {
                0
            } else if whole_a {
                panel_rows * k
            } else {
                KC * MC
            });
            if whole_a && shared_a.is_none() {
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    for ic in (rows.0..rows.1).step_by(MC) {
                        let at = whole_a_at(pc, panel_rows, ic - rows.0, kc);
                        pack_a(&a, &a_cols, ic, MC.min(rows.1 - ic), pc, kc, epi.row_scale, &mut abuf[at..]);
                    }
                }
            }
            let mut tile = [0f32; MR * NR];
            for jc in (cols.0..cols.1).step_by(NC) {
                let nc = NC.min(cols.1 - jc);
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    let (first, last) = (pc == 0, pc + kc == k);
                    let load = accumulate || !first;
                    pack_b(&b, pc, kc, jc, nc, bbuf);
                    for ic in (rows.0..rows.1).step_by(MC) {
                        let mc = MC.min(rows.1 - ic);
                        let a_block = if let Some(shared) = shared_a {
                            // All rows packed (rows.0 is 0 for the column parts that share it).
                            shared.add(whole_a_at(pc, panel_rows, ic - rows.0, kc))
                        } else if whole_a {
                            abuf.as_ptr().add(whole_a_at(pc, panel_rows, ic - rows.0, kc))
                        } else {
                            pack_a(&a, &a_cols, ic, mc, pc, kc, epi.row_scale, abuf);
                            abuf.as_ptr()
                        };
                        for ir in 0..mc.div_ceil(MR) {
                            let mr = MR.min(mc - ir * MR);
                            let ap = a_block.add(ir * MR * kc);
                            for jr in 0..nc.div_ceil(NR) {
                                let nr = NR.min(nc - jr * NR);
                                let bp = bbuf.as_ptr().add(jr * NR * kc);
                                let row0 = ic + ir * MR;
                                let col0 = jc + jr * NR;
                                let cp = c.add(row0 * ldc + cols_map.c_off(col0));
                                let bias = match (last, epi.row_bias) {
                                    (true, Some(bias)) => bias.as_ptr().add(row0),
                                    _ => std::ptr::null(),
                                };
                                let res = match (last, epi.residual) {
                                    (true, Some(res)) => res.as_ptr().add(row0 * ldc + cols_map.c_off(col0)),
                                    _ => std::ptr::null(),
                                };
                                let relu = last && epi.relu;
                                let one_item = cols_map.c_stride == cols_map.per
                                    || col0 / cols_map.per == (col0 + nr - 1) / cols_map.per;
                                if nr == NR && one_item {
                                    by_rows!(mr, kernel(kc, ap, bp, cp, ldc, load, bias, res, relu));
                                } else {
                                    // Edge tile: full tile into scratch, then the valid part, a run
                                    // of columns within one item at a time.
                                    let null = std::ptr::null();
                                    kernel::<MR>(kc, ap, bp, tile.as_mut_ptr(), NR, false, null, null, false);
                                    let base = (row0 * ldc + cols_map.c_off(col0)) as isize;
                                    let mut j = 0;
                                    while j < nr {
                                        let col = col0 + j;
                                        let run = (nr - j).min(cols_map.per - col % cols_map.per);
                                        let at = (row0 * ldc + cols_map.c_off(col)) as isize - base;
                                        let res_at = if res.is_null() { res } else { res.offset(at) };
                                        let part =
                                            TilePart { tile: tile.as_ptr().add(j), rows: mr, cols: run };
                                        store_tile_part(part, cp.offset(at), ldc, load, bias, res_at, relu);
                                        j += run;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
    })
}

/// Part of a scratch tile (rows of `NR`): its first `rows` rows, `cols` ≤ 16·2 columns from
/// `tile` on.
struct TilePart {
    tile: *const f32,
    rows: usize,
    cols: usize,
}

/// An edge tile's part into C as the micro-kernel's epilogue would store it: row r =
/// (C's previous values when `load`) + tile row, + (`bias[r]` + the residual row) where either
/// is given, then ReLU when `relu`; masked to `cols` columns.
///
/// # Safety
/// AVX-512F available; `c` (and `res` when not null) address `rows` rows of `ldc` with `cols`
/// writable (readable) values each; `bias`, when not null, `rows` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_tile_part(
    part: TilePart,
    c: *mut f32,
    ldc: usize,
    load: bool,
    bias: *const f32,
    res: *const f32,
    relu: bool,
) {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    for half in 0..part.cols.div_ceil(16) {
        let n = (part.cols - 16 * half).min(16);
        let m = ((1u32 << n) - 1) as __mmask16;
        for r in 0..part.rows {
            let at = r * ldc + 16 * half;
            let mut v = _mm512_maskz_loadu_ps(m, part.tile.add(r * NR + 16 * half));
            if load {
                v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c.add(at)), v);
            }
            if !bias.is_null() || !res.is_null() {
                let b = if bias.is_null() { zero } else { _mm512_set1_ps(*bias.add(r)) };
                let extra =
                    if res.is_null() { b } else { _mm512_add_ps(b, _mm512_maskz_loadu_ps(m, res.add(at))) };
                v = _mm512_add_ps(v, extra);
            }
            if relu {
                v = _mm512_max_ps(v, zero);
            }
            _mm512_mask_storeu_ps(c.add(at), m, v);
        }
    }
}

/// Calls `$kernel::<R>($args)` with R = `$rows` (1..=12): the micro-kernel instance compiled
/// for that many rows, so a short last row panel (M = 8 or 16 in SlowFast's fast pathway) costs
/// its own rows' work, not twelve rows' and a scalar copy.
macro_rules! by_rows {
    ($rows:expr, $kernel:ident $args:tt) => {
        by_rows!(@ $rows, $kernel $args, 1 2 3 4 5 6 7 8 9 10 11 12)
    };
    (@ $rows:expr, $kernel:ident $args:tt, $($r:literal)*) => {
        match $rows {
            $($r => $kernel::<$r> $args,)*
            rows => unreachable!("micro-kernel rows {rows} out of 1..=12"),
        }
    };
}
pub(super) use by_rows;

/// The micro-kernel: C tile (R rows × 32) (+)= A panel · B panel over `kc` steps, then the
/// epilogue (`store_rows`). The A panel is always `MR` rows wide; only its first R are read.
///
/// # Safety
/// AVX-512F available; `a` holds `kc·12`, `b` `kc·32` floats; `c` addresses an R × 32 tile
/// with leading dimension `ldc`; `bias`, when not null, R floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    load: bool,
    bias: *const f32,
    res: *const f32,
    relu: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        fma_rows(a, b, &mut acc);
        a = a.add(MR);
        b = b.add(NR);
    }
    store_rows(acc, c, ldc, NR, load, bias, res, relu);
}

/// One k step of a micro-kernel: R accumulator rows (left and right 16 columns) += the first R
/// values of `a` (broadcast) times the 32 values at `b`.
///
/// # Safety
/// AVX-512F available; `a` holds R floats, `b` 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn fma_rows<const R: usize>(
    a: *const f32,
    b: *const f32,
    acc: &mut ([std::arch::x86_64::__m512; R], [std::arch::x86_64::__m512; R]),
) {
    use std::arch::x86_64::*;
    let b0 = _mm512_loadu_ps(b);
    let b1 = _mm512_loadu_ps(b.add(16));
    for r in 0..R {
        let av = _mm512_set1_ps(*a.add(r));
        acc.0[r] = _mm512_fmadd_ps(av, b0, acc.0[r]);
        acc.1[r] = _mm512_fmadd_ps(av, b1, acc.1[r]);
    }
}

/// A micro-kernel's epilogue: row r of the tile (first `cols` ≤ 32 columns) = accumulators
/// (+ the previous C when `load`) + `bias[r]` + residual row (laid out as C), then ReLU when
/// `relu`; null pointers for no bias or residual. Columns past `cols` are neither read nor
/// written.
///
/// # Safety
/// AVX-512F available; `c` (and `res` when not null) address R rows of `ldc` with `cols`
/// writable (readable) values each; `bias`, when not null, R floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_rows<const R: usize>(
    // By value: a reference made the accumulators' home a stack array, zeroed by a memset call on
    // every kernel entry (1.5 KB for 12 rows, ~2 % of the kernel's samples).
    acc: ([std::arch::x86_64::__m512; R], [std::arch::x86_64::__m512; R]),
    c: *mut f32,
    ldc: usize,
    cols: usize,
    load: bool,
    bias: *const f32,
    res: *const f32,
    relu: bool,
) {
    use std::arch::x86_64::*;
    let mask = |n: usize| if n >= 16 { 0xffff } else { ((1u32 << n) - 1) as __mmask16 };
    let (mlo, mhi) = (mask(cols), mask(cols.saturating_sub(16)));
    let zero = _mm512_setzero_ps();
    for r in 0..R {
        // wrapping: with `cols` ≤ 16 the right half lies past the tile (masked off).
        let (row_lo, row_hi) = (c.add(r * ldc), c.add(r * ldc).wrapping_add(16));
        let (mut lo, mut hi) = (acc.0[r], acc.1[r]);
        if load {
            lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(mlo, row_lo));
            hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(mhi, row_hi));
        }
        if !bias.is_null() {
            let bv = _mm512_set1_ps(*bias.add(r));
            lo = _mm512_add_ps(lo, bv);
            hi = _mm512_add_ps(hi, bv);
        }
        if !res.is_null() {
            let rrow = res.add(r * ldc);
            lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(mlo, rrow));
            hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(mhi, rrow.wrapping_add(16)));
        }
        if relu {
            lo = _mm512_max_ps(lo, zero);
            hi = _mm512_max_ps(hi, zero);
        }
        _mm512_mask_storeu_ps(row_lo, mlo, lo);
        _mm512_mask_storeu_ps(row_hi, mhi, hi);
    }
}

/// `a` row-major with row `i` times `s[i]`.
fn scale_rows(a: &MatRef, s: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.rows * a.cols);
    for (i, &si) in s.iter().enumerate().take(a.rows) {
        let row = &a.data[i * a.rs..];
        if a.cs == 1 {
            out.extend(row[..a.cols].iter().map(|&v| v * si));
        } else {
            out.extend((0..a.cols).map(|j| row[j * a.cs] * si));
        }
    }
    out
}

/// Without AVX-512: the `gemm` crate (AVX2/FMA where available), then the epilogue.
fn fallback(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool, epi: Epilogue) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let scaled: Vec<f32>;
    let a = match epi.row_scale {
        Some(s) => {
            scaled = scale_rows(&a, s);
            MatRef::row_major(&scaled, m, k)
        }
        None => a,
    };
    let threads = threads_for(m * n * k);
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the views and the output were bounds-checked by `sgemm`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    };
    if epi.row_bias.is_some() || epi.residual.is_some() || epi.relu {
        for i in 0..m {
            let bias = epi.row_bias.map_or(0.0, |b| b[i]);
            for j in 0..n {
                let at = i * ldc + j;
                c[at] = finish(c[at], bias + epi.residual.map_or(0.0, |r| r[at]), epi.relu);
            }
        }
    }
}

/// `a` [M, K] × `b` [K, N] for f32 CPU tensors of any strides, through `sgemm`, differentiable;
/// other dtypes and devices go to candle's `matmul`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !super::fusable(a) || b.dtype() != candle_core::DType::F32 {
        return super::autocast::matmul(a, b);
    }
    a.apply_op2(b, MatMul)
}

struct MatMul;

/// The 2D view of a CPU tensor's storage.
fn view<'a>(s: &'a CpuStorage, l: &Layout) -> Result<MatRef<'a>> {
    let data = s.as_slice::<f32>()?;
    let dims = l.dims();
    if dims.len() != 2 {
        candle_core::bail!("matmul: expected 2D operands, got {dims:?}")
    }
    let st = l.stride();
    let data = &data[l.start_offset()..];
    let (rows, cols) = (dims[0], dims[1]);
    // Singleton dimensions may carry any stride; make them harmless.
    let rs = if rows == 1 { 0 } else { st[0] };
    let cs = if cols == 1 { 0 } else { st[1] };
    Ok(MatRef { data, rows, cols, rs, cs })
}

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "vidkit-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let (a, b) = (view(s1, l1)?, view(s2, l2)?);
        if a.cols != b.rows {
            candle_core::bail!("matmul: shapes {:?} and {:?} do not chain", l1.dims(), l2.dims())
        }
        b.check();
        let out = sgemm_columns_new(a, b, Columns::single(b.cols), b.cols, Epilogue::default());
        Ok((CpuStorage::F32(out), Shape::from((a.rows, b.cols))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // dA = dC·Bᵀ, dB = Aᵀ·dC: transposed views, no copies.
        let da = matmul(grad, &b.t()?)?;
        let db = matmul(&a.t()?, grad)?;
        Ok((Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
    }

    fn naive(a: &MatRef, b: &MatRef) -> Vec<f64> {
        let mut c = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|p| a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64)
                    .sum();
            }
        }
        c
    }

    /// Every edge case of the blocking: tiles cut in M and N, several K blocks, strided
    /// (transposed) operands, accumulation and the epilogue.
    #[test]
    fn matches_naive_product_on_edge_shapes() {
        let mut rng = Rng::new(7);
        for &(m, k, n) in &[
            (1, 1, 1),
            (12, 256, 32),
            (13, 257, 33),
            (150, 600, 70),
            // Split by columns on 2+ threads: A packed once for both parts (two M blocks, a
            // short last panel, two K blocks).
            (150, 300, 1100),
            (5, 3, 2100),
            (40, 20, 2200),
            (8, 24, 64),
            (23, 9, 96),
        ] {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                let ad = random(m * k, &mut rng);
                let bd = random(k * n, &mut rng);
                let a = if ta { MatRef::row_major(&ad, k, m).t() } else { MatRef::row_major(&ad, m, k) };
                let b = if tb { MatRef::row_major(&bd, n, k).t() } else { MatRef::row_major(&bd, k, n) };
                let want = naive(&a, &b);
                let bias = random(m, &mut rng);
                let scale = random(m, &mut rng);
                let init = random(m * n, &mut rng);
                for &(accumulate, with_bias, relu) in
                    &[(false, false, false), (true, true, true), (false, true, false)]
                {
                    let mut c = init.clone();
                    let epi =
                        Epilogue { row_bias: with_bias.then_some(&bias[..]), relu, ..Default::default() };
                    let epi = Epilogue { row_scale: with_bias.then_some(&scale[..]), ..epi };
                    sgemm(a, b, &mut c, n, accumulate, epi);
                    for i in 0..m {
                        for j in 0..n {
                            let ab = want[i * n + j] * if with_bias { scale[i] as f64 } else { 1.0 };
                            let mut v = ab + if accumulate { init[i * n + j] as f64 } else { 0.0 };
                            if with_bias {
                                v += bias[i] as f64;
                            }
                            if relu {
                                v = v.max(0.0);
                            }
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - v).abs() <= 1e-4 * (1.0 + v.abs()),
                                "{m}x{k}x{n} ({i},{j}): {got} vs {v}"
                            );
                        }
                    }
                    let mut c2 = init.clone();
                    fallback(a, b, &mut c2, n, accumulate, epi);
                    for (x, y) in c.iter().zip(&c2) {
                        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()));
                    }
                }
            }
        }
    }

    /// The transposing ConvT packer (w stride 1 or 2) writes the same panels as the per-column
    /// one, over padded, dilated, strided, temporal and 1×1 (plane-run) geometries and blocks
    /// that start mid-row, cross images, and end in a partial panel.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn conv_t_transposing_packer_equals_column_packer() {
        if !has_avx512() {
            return;
        }
        let mut rng = Rng::new(7);
        let cases: [([usize; 3], [usize; 3], [usize; 3], [usize; 3], [usize; 3]); 9] = [
            // (input t/h/w, kernel, stride, pad, dilation)
            ([1, 9, 13], [1, 3, 3], [1, 1, 1], [0, 1, 1], [1, 1, 1]),
            ([1, 7, 7], [1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1]),
            ([3, 6, 37], [3, 3, 3], [1, 2, 1], [1, 1, 1], [1, 1, 1]),
            ([2, 11, 19], [1, 3, 3], [1, 1, 1], [0, 2, 2], [1, 2, 2]),
            ([4, 5, 5], [3, 1, 1], [2, 1, 1], [1, 0, 0], [1, 1, 1]),
            ([1, 4, 3], [1, 5, 5], [1, 1, 1], [0, 2, 2], [1, 1, 1]),
            ([1, 9, 37], [1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 1, 1]),
            ([1, 8, 40], [1, 1, 1], [1, 2, 2], [0, 0, 0], [1, 1, 1]),
            ([2, 7, 71], [1, 3, 3], [1, 1, 2], [0, 2, 3], [1, 2, 2]),
        ];
        for (input, kernel, stride, pad, dilation) in cases {
            let g = super::super::vol2col::Geometry3d { n: 2, c: 3, input, kernel, stride, pad, dilation };
            let out = g.out().expect("geometry fits");
            let x = random(g.n * g.c * g.in_volume(), &mut rng);
            let rhs = ConvRhs { x: &x, g, out };
            let (rows, cols) = (g.n * out.iter().product::<usize>(), g.c * g.taps());
            for (p0, kc) in [(0, rows.min(KC)), (5, (rows - 5).min(40)), (rows - rows.min(17), rows.min(17))]
            {
                for (j0, nc) in [(0, cols), (1, cols - 1), (cols - 1, 1)] {
                    let t = ConvTBlock::new(&rhs, p0, kc);
                    let len = nc.div_ceil(NR) * NR * kc;
                    let (mut wide, mut columns) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                    pack_conv_t_columns(&t, kc, j0, nc, &mut columns);
                    // SAFETY: AVX-512 checked; w stride 1 or 2 in every case; the buffer holds the panels.
                    unsafe { pack_conv_t_wide(&t, kc, j0, nc, &mut wide) };
                    let same = wide.iter().zip(&columns).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{input:?} {kernel:?} pad {pad:?} dil {dilation:?}: rows {p0}+{kc}, columns {j0}+{nc}");
                }
            }
        }
    }

    /// The vector A run packer (rows contiguous along k) writes what the scalar one writes, for
    /// every run length up to three transposes, partial panels and row scales.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_run_packers_agree() {
        if !has_avx512() {
            return;
        }
        let mut rng = Rng::new(3);
        let (ld, start) = (61, 5);
        let a = random(MR * ld, &mut rng);
        let base: [usize; MR] = std::array::from_fn(|r| r * ld);
        let s: [f32; MR] = std::array::from_fn(|r| 0.5 + r as f32 * 0.25);
        for rows in [1, 7, MR] {
            for run in 0..=ld - start {
                let (mut wide, mut scalar) = (vec![f32::NAN; run * MR], vec![f32::NAN; run * MR]);
                pack_a_run(&a, &base, rows, start, 1, &s, &mut scalar);
                // SAFETY: AVX-512 checked.
                unsafe { pack_a_run_wide(&a, &base, rows, start, &s, &mut wide) };
                let same = wide
                    .iter()
                    .zip(&scalar)
                    .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
                assert!(same, "rows {rows}, run {run}");
            }
        }
    }

    /// `masked_run` copies exactly lanes lo..hi and zeroes the rest of the run, for every run
    /// length up to a panel row, and writes nothing past the run.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn masked_run_copies_the_inside_and_zeroes_the_padding() {
        if !has_avx512() {
            return;
        }
        let src: Vec<f32> = (1..=NR).map(|v| v as f32).collect();
        for len in 0..=NR {
            for lo in 0..=len {
                for hi in lo..=len {
                    let mut d = vec![-1f32; NR + 1];
                    // SAFETY: AVX-512 checked; lanes lo..hi of `src` exist.
                    unsafe { masked_run(&mut d[..len], src.as_ptr(), lo, hi) };
                    for (q, &v) in d.iter().enumerate() {
                        let want = if q >= len {
                            -1.0
                        } else if (lo..hi).contains(&q) {
                            src[q]
                        } else {
                            0.0
                        };
                        assert_eq!(v, want, "len {len}, lanes {lo}..{hi}, value {q}");
                    }
                }
            }
        }
    }

    #[test]
    fn copy_run_copies_every_length_up_to_a_panel_row() {
        let src: Vec<f32> = (0..NR).map(|i| i as f32 + 1.0).collect();
        for len in 0..=NR {
            let mut dst = vec![0f32; NR + 1];
            copy_run(&mut dst[..len], &src[..len]);
            assert_eq!(&dst[..len], &src[..len], "length {len}");
            assert!(dst[len..].iter().all(|&v| v == 0.0), "length {len}: wrote past the run");
        }
    }

    /// A batch of column blocks (as a convolution over N images) with a residual: equal to one
    /// product per batch item.
    #[test]
    fn batched_columns_equal_per_item_products() {
        let mut rng = Rng::new(9);
        for &(m, k, per, items) in &[(20, 30, 49, 3), (13, 300, 7, 5), (40, 8, 64, 2), (5, 17, 100, 3)] {
            let ad = random(m * k, &mut rng);
            let a = MatRef::row_major(&ad, m, k);
            // B as [k][items][per] (vol2col's layout): within an item rs = items·per.
            let bd = random(k * items * per, &mut rng);
            let b = MatRef { data: &bd, rows: k, cols: items * per, rs: items * per, cs: 1 };
            let cols = Columns { per, b_stride: per, c_stride: m * per };
            let bias = random(m, &mut rng);
            let res = random(items * m * per, &mut rng);
            let epi =
                Epilogue { row_scale: Some(&bias), row_bias: Some(&bias), residual: Some(&res), relu: true };
            let mut c = vec![0f32; items * m * per];
            sgemm_columns(a, b, cols, &mut c, per, false, epi);
            let mut c_portable = vec![0f32; items * m * per];
            sgemm_impl(a, b, cols, Out::of(&mut c_portable), per, false, epi, false);
            for (x, y) in c.iter().zip(&c_portable) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()));
            }
            // Into new, unzeroed buffers: the same values, on both paths.
            assert_eq!(sgemm_columns_new(a, b, cols, per, epi), c);
            let n = items * per;
            let portable_new =
                new_product(m, n, cols, per, |o| sgemm_impl(a, b, cols, o, per, false, epi, false));
            assert_eq!(portable_new, c_portable);
            // Accumulating: the previous C added before the epilogue, on both paths.
            let prev = random(items * m * per, &mut rng);
            let (mut acc, mut acc_portable) = (prev.clone(), prev.clone());
            sgemm_columns(a, b, cols, &mut acc, per, true, epi);
            sgemm_impl(a, b, cols, Out::of(&mut acc_portable), per, true, epi, false);
            for (i, (x, y)) in acc.iter().zip(&acc_portable).enumerate() {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "accumulated {i}");
            }
            // [m, N·per]: the items side by side in each row.
            let wide = Columns { c_stride: per, ..cols };
            let plain = Epilogue { residual: None, ..epi };
            let mut c_wide = vec![f32::NAN; m * n];
            sgemm_columns(a, b, wide, &mut c_wide, n, false, plain);
            assert_eq!(sgemm_columns_new(a, b, wide, n, plain), c_wide);
            assert!(!covers(m, n, Columns { c_stride: (m + 1) * per, ..cols }, per), "a gap between items");
            assert!(!covers(m, n, cols, per + 1), "a gap between rows");
            for item in 0..items {
                let bi = MatRef { data: &bd[item * per..], rows: k, cols: per, rs: items * per, cs: 1 };
                let want = naive(&a, &bi);
                for i in 0..m {
                    for j in 0..per {
                        let at = item * m * per + i * per + j;
                        let v =
                            (want[i * per + j] * bias[i] as f64 + bias[i] as f64 + res[at] as f64).max(0.0);
                        assert!(
                            (c[at] as f64 - v).abs() <= 1e-4 * (1.0 + v.abs()),
                            "{m}x{k} item {item} ({i},{j})"
                        );
                        let v = (prev[at] as f64
                            + want[i * per + j] * bias[i] as f64
                            + bias[i] as f64
                            + res[at] as f64)
                            .max(0.0);
                        assert!(
                            (acc_portable[at] as f64 - v).abs() <= 1e-4 * (1.0 + v.abs()),
                            "{m}x{k} item {item} ({i},{j}) accumulated"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_op_matches_candle_with_gradients() {
        use candle_core::{Device, Var};
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1., (37, 70), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1., (70, 45), &dev).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1., (37, 45), &dev).unwrap();
        let ours = matmul(a.as_tensor(), b.as_tensor()).unwrap();
        let theirs = a.as_tensor().matmul(b.as_tensor()).unwrap();
        let d = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "{d}");
        let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            let x = g1.get(v.as_tensor()).unwrap();
            let y = g2.get(v.as_tensor()).unwrap();
            let d = (x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-4, "{d}");
        }
        // Transposed operands (strided views) give the same product.
        let t = matmul(&b.as_tensor().t().unwrap(), &a.as_tensor().t().unwrap()).unwrap();
        let tt = b.as_tensor().t().unwrap().matmul(&a.as_tensor().t().unwrap()).unwrap();
        let d = (t - tt).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "{d}");
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// `cargo test -p vidkit --lib gemm_rate -- --ignored --nocapture`: GFLOP/s on conv shapes.
    #[test]
    #[ignore]
    fn gemm_rate() {
        for &(m, k, n) in
            &[(256, 576, 3136 * 8), (64, 64, 3136 * 8), (512, 4608, 392), (2048, 512, 392), (64, 576, 3136)]
        {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0f32; m * n];
            let (am, bm) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
            sgemm(am, bm, &mut c, n, false, Epilogue::default());
            let t = std::time::Instant::now();
            for _ in 0..5 {
                sgemm(am, bm, &mut c, n, false, Epilogue::default());
            }
            let ours = 2.0 * (m * k * n) as f64 * 5.0 / t.elapsed().as_secs_f64() / 1e9;
            let t = std::time::Instant::now();
            for _ in 0..5 {
                fallback(am, bm, &mut c, n, false, Epilogue::default());
            }
            let theirs = 2.0 * (m * k * n) as f64 * 5.0 / t.elapsed().as_secs_f64() / 1e9;
            eprintln!("{m}x{k}x{n}: ours {ours:.0} GFLOP/s, gemm crate {theirs:.0}");
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod kernel_timing {
    use super::*;

    /// `cargo test -p vidkit --lib kernel_peak -- --ignored --nocapture`: the micro-kernel alone
    /// on L1-resident panels, GFLOP per thread-CPU-second.
    #[test]
    #[ignore]
    fn kernel_peak() {
        if !has_avx512() {
            return;
        }
        let kc = 256;
        let a = vec![0.5f32; MR * kc];
        let b = vec![0.25f32; NR * kc];
        let mut c = vec![0f32; MR * NR];
        let reps = 200_000;
        let cpu = || {
            let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
            s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1e9
        };
        let (t0, c0) = (std::time::Instant::now(), cpu());
        for _ in 0..reps {
            // SAFETY: AVX-512 checked; the buffers hold the panels and the tile.
            unsafe {
                kernel::<MR>(
                    kc,
                    a.as_ptr(),
                    b.as_ptr(),
                    c.as_mut_ptr(),
                    NR,
                    true,
                    std::ptr::null(),
                    std::ptr::null(),
                    false,
                )
            };
        }
        let flops = 2.0 * (MR * NR * kc * reps) as f64;
        eprintln!(
            "kernel: {:.0} GFLOP/s wall, {:.0} per CPU-second",
            flops / t0.elapsed().as_secs_f64() / 1e9,
            flops / (cpu() - c0) / 1e9
        );
    }
}
