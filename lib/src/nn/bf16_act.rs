//! bf16 activations between convolutions (issue 24): under bf16 products on the tile paths
//! (`gemm::Isa::bf16_pairs`: AMX or AVX-512 BF16) a convolution whose output only convolutions
//! read writes that output as bf16, rounded in its epilogue, and the readers pack the bits
//! (`gemm::act`): half the bytes written and read back, which the products' packing and
//! epilogues waited on.
//!
//! - [`Handovers::Exact`]: outputs only the next convolution reads as its input
//!   (`int8::feeds_next_conv`: a bottleneck's inner convolutions). Every reader rounds its B to
//!   bf16 with ties to even, so the rounded output is the value it would have used: the same
//!   logits, bit for bit.
//! - [`Handovers::All`] (the default) adds a residual block's output that only the next block
//!   reads (`int8::read_by_convs`: its convolutions and its residual), as `torch.autocast`
//!   carries every activation in bf16: the next block then adds its residual from bf16, which
//!   moves the logits within bf16's rounding (`precision` tests).
//! - At Exact too: a stem whose max pool alone reads it ([`through_max_pool`]; the pool pools
//!   bf16 into bf16, a max of rounded values being the rounded max). At All: SlowFast's block
//!   outputs ([`block_output_to_convs`]), bf16 alone.
//!
//! A reader off the tile paths (a depthwise convolution, an average pool, the candle-only path)
//! widens the tensor to f32 first, which is exact.

use candle_core::{DType, Result, Tensor};
use std::cell::Cell;

/// Which convolution outputs go over in bf16 on the tile paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Handovers {
    /// None: f32 activations throughout.
    None,
    /// Those whose bf16 changes no logit (the next convolution alone reads them).
    Exact,
    /// Block outputs too (their residual then added from bf16).
    All,
}

thread_local! {
    /// Set for the first convolution run inside [`handing_over`].
    static HANDOVER: Cell<bool> = const { Cell::new(false) };
    /// Set by [`with_handovers`].
    static ENABLED: Cell<Handovers> = const { Cell::new(Handovers::All) };
    /// Outputs handed over in bf16 on this thread so far.
    static HANDED: Cell<usize> = const { Cell::new(0) };
}

/// How many convolution outputs this thread has handed over in bf16 so far.
pub fn handovers() -> usize {
    HANDED.with(|h| h.get())
}

/// Runs `f`, whose first convolution's output only convolutions read (the callers in `int8`
/// say which, and of which `kind`): bf16 where [`on_tiles`] and [`with_handovers`] allows it.
pub(super) fn handing_over<T>(kind: Handovers, f: impl FnOnce() -> T) -> T {
    super::scoped::with_setting(&HANDOVER, ENABLED.with(|e| e.get()) >= kind, f)
}

/// Runs `f` with the outputs up to `which` handed over in bf16 (All outside).
pub fn with_handovers<T>(which: Handovers, f: impl FnOnce() -> T) -> T {
    super::scoped::with_setting(&ENABLED, which, f)
}

/// Runs `f`, whose first convolution's output only a max pool reads, whose output in turn only
/// convolutions read as their input (a ResNet's stem): bf16 at [`Handovers::Exact`], since the
/// pool's maxima of rounded values are its maxima rounded (`nn::max_pool3d` pools bf16 into
/// bf16), which the convolutions would round to anyway.
pub fn through_max_pool<T>(f: impl FnOnce() -> T) -> T {
    handing_over(Handovers::Exact, f)
}

/// Runs `f`, a residual block whose output only convolutions read, as their input or as their
/// residual (SlowFast's blocks, whose outputs at a stage's end are concatenated with a lateral
/// connection first): bf16 at [`Handovers::All`], as `int8::read_by_convs` hands them over but
/// under bf16 alone.
pub fn block_output_to_convs<T>(f: impl FnOnce() -> T) -> T {
    handing_over(Handovers::All, f)
}

/// Runs `f` with every activation in f32 (`with_handovers(Handovers::None, f)`).
pub fn with_f32_activations<T>(f: impl FnOnce() -> T) -> T {
    with_handovers(Handovers::None, f)
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
