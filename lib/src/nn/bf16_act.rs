//! bf16 activations between convolutions (issue 24): under bf16 products on the tile paths
//! (`gemm::Isa::bf16_pairs`: AMX or AVX-512 BF16), a convolution whose output only the next
//! convolution reads as its input (`int8::feeds_next_conv`: a bottleneck's inner convolutions)
//! or as its residual (`int8::residual_only`: a shortcut's) writes that output as bf16, rounded
//! in its epilogue, and the reader packs the bits. Every reader rounds its B (and the epilogue
//! could round a residual no differently) to bf16 with ties to even, so the rounded output is
//! the value it would have used: the same logits, bit for bit, with half the bytes written and
//! read back (the products' packing and epilogues waited on those activations: `gemm::act`).
//!
//! A reader off the tile paths (a depthwise convolution, the candle-only path) widens the
//! tensor to f32 first, which is exact.

use candle_core::{DType, Result, Tensor};
use std::cell::Cell;

thread_local! {
    /// Set for the first convolution run inside [`handing_over`].
    static HANDOVER: Cell<bool> = const { Cell::new(false) };
    /// Cleared inside [`with_f32_activations`].
    static ENABLED: Cell<bool> = const { Cell::new(true) };
    /// Outputs handed over in bf16 on this thread so far.
    static HANDED: Cell<usize> = const { Cell::new(0) };
}

/// How many convolution outputs this thread has handed over in bf16 so far.
pub fn handovers() -> usize {
    HANDED.with(|h| h.get())
}

/// Runs `f`, whose first convolution's output only convolutions read (the callers in `int8`
/// say which): bf16 where [`on_tiles`].
pub(super) fn handing_over<T>(f: impl FnOnce() -> T) -> T {
    let before = HANDOVER.with(|h| h.replace(ENABLED.with(|e| e.get())));
    let out = f();
    HANDOVER.with(|h| h.set(before));
    out
}

/// Runs `f` with every activation in f32 (the handovers off): the path before them, for tests
/// and comparisons.
pub fn with_f32_activations<T>(f: impl FnOnce() -> T) -> T {
    /// Restores the setting when dropped, also when `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENABLED.with(|e| e.set(self.0));
        }
    }
    let _restore = Restore(ENABLED.with(|e| e.replace(false)));
    f()
}

/// Whether the convolution now starting hands its output over in bf16 (the first one inside
/// [`handing_over`] takes the flag, whatever path it runs).
pub(super) fn take_handover() -> bool {
    HANDOVER.with(|h| h.replace(false))
}

/// Counts an output handed over in bf16 ([`handovers`]).
pub(super) fn count_handover() {
    HANDED.with(|h| h.set(h.get() + 1))
}

/// Whether this thread's dense convolutions run on the bf16 tile paths, which read and write
/// bf16 activations: bf16 products on AMX or AVX-512 BF16, outside an int8 run.
pub(super) fn on_tiles() -> bool {
    super::autocast::bf16_products()
        && super::gemm::blocked_isa().is_some_and(|i| i.bf16_pairs())
        && !super::int8::engaged()
}

/// `x` as f32: a bf16 activation widened (exact), anything else as it is.
pub(super) fn widened(x: &Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::BF16 => x.to_dtype(DType::F32),
        _ => Ok(x.clone()),
    }
}

/// The bits of bf16 values.
pub(super) fn bits(x: &[half::bf16]) -> &[u16] {
    use half::slice::HalfFloatSliceExt;
    x.reinterpret_cast()
}
