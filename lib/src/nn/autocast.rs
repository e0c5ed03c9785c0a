//! Mixed precision on candle's ops, as `torch.autocast` does it: inside `with_autocast(dtype)`
//! the products (convolutions, the matrix products of linear layers and attention) take their
//! f32 operands cast to `dtype` and hand back f32; everything else (normalisation, softmax,
//! pooling, activations, losses, classifier heads) stays f32. The casts are candle ops, so the
//! backward runs each product in `dtype` too and gives the f32 parameters f32 gradients.
//!
//! The candle-only path (a GPU, or `with_portable_ops`) casts the operands of its products. Of
//! vidkit's CPU kernels, the GEMM and everything built on it (convolutions, linear layers,
//! attention) take bf16 (not f16): the packers round A and B to bf16 and the product accumulates
//! in f32 (`gemm::bf16_products`). Where the CPU has AMX-BF16 the products run on its tiles
//! (`gemm::Isa::Amx`), where it has AVX-512 BF16 on VDPBF16PS (`gemm::Isa::Avx512Bf16`);
//! elsewhere the rounded values are multiplied in f32: the same roundings as a matrix unit, not
//! its speed.

use candle_core::{DType, Result, Tensor};
use std::cell::Cell;

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// Runs `f` with the products on this thread in `dtype` (None: f32, as outside).
pub fn with_autocast<T>(dtype: Option<DType>, f: impl FnOnce() -> T) -> T {
    super::scoped::with_setting(&AUTOCAST, dtype, f)
}

/// The autocast dtype set on this thread (None: f32).
pub(crate) fn dtype() -> Option<DType> {
    AUTOCAST.with(|a| a.get())
}

/// Whether vidkit's CPU products (the blocked GEMM and its fallback) round their operands to
/// bf16 on this thread: under bf16 autocast. f16 has no matrix unit on these CPUs and stays
/// with the candle-only path.
pub(crate) fn bf16_products() -> bool {
    dtype() == Some(DType::BF16)
}

/// Runs `f` with bf16 products on this thread when `bf16`, else f32 ones: a custom op's backward
/// in the precision its forward ran in (candle calls it outside the forward's autocast scope).
pub(crate) fn bf16_if<T>(bf16: bool, f: impl FnOnce() -> T) -> T {
    with_autocast(bf16.then_some(DType::BF16), f)
}

/// The product `f` of `operands`: in the autocast dtype with the result cast back when one is
/// set and the operands are f32, as it is otherwise.
pub(crate) fn product<const N: usize>(
    operands: [&Tensor; N],
    f: impl FnOnce([Tensor; N]) -> Result<Tensor>,
) -> Result<Tensor> {
    match AUTOCAST.with(|a| a.get()) {
        Some(half) if operands.iter().all(|t| t.dtype() == DType::F32) => {
            // candle's CPU backend lacks half-precision products in places (bf16 convolution
            // gradients): there the operands and the result are rounded to `half` and the
            // product runs in f32 — a matrix unit's arithmetic (half inputs, f32 accumulation),
            // and the backward's gradients are rounded the same way by the casts.
            let on_cpu = operands[0].device().is_cpu();
            let mut cast = Vec::with_capacity(N);
            for t in operands {
                let h = t.to_dtype(half)?;
                cast.push(if on_cpu { h.to_dtype(DType::F32)? } else { h });
            }
            let cast: [Tensor; N] = cast.try_into().expect("N operands");
            let y = f(cast)?;
            match on_cpu {
                true => y.to_dtype(half)?.to_dtype(DType::F32),
                false => y.to_dtype(DType::F32),
            }
        }
        _ => f(operands.map(|t| t.clone())),
    }
}

/// `a.matmul(b)` under autocast.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    product([a, b], |[a, b]| a.matmul(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::portable::tests::max_rel;
    use crate::nn::{with_portable_ops, Conv2d};
    use candle_core::{Device, Var};

    /// Under autocast a convolution and a matmul on the candle-only path compute in half
    /// precision (results within its rounding of f32's, and not equal to them) and return f32;
    /// their gradients reach the f32 parameters as f32, also within half precision's rounding.
    #[test]
    fn products_run_in_half_precision_and_give_f32_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (2, 8, 9, 10), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&crate::rng::randn(0f32, 0.2, (6, 8, 3, 3), &dev).unwrap()).unwrap();
        let m = Var::from_tensor(&crate::rng::randn(0f32, 0.2, (5, 6), &dev).unwrap()).unwrap();
        let conv = Conv2d { weight: w.as_tensor().clone(), kernel: 3, stride: 2, padding: 1 };
        let r = crate::rng::randn(0f32, 1., (2, 5, 5, 5), &dev).unwrap();
        let run = |dtype: Option<DType>| {
            with_portable_ops(|| {
                let (y, loss) = with_autocast(dtype, || {
                    let y = conv.forward(x.as_tensor()).unwrap();
                    // [2, 6, 5, 5] → rows of 6 channels through a 6 → 5 matmul.
                    let rows = y.permute((0, 2, 3, 1)).unwrap().reshape((50, 6)).unwrap();
                    let z = crate::nn::gemm::matmul(&rows, &m.as_tensor().t().unwrap()).unwrap();
                    let z = z.reshape((2, 5, 5, 5)).unwrap().permute((0, 3, 1, 2)).unwrap();
                    (z.clone(), (z * &r).unwrap().sum_all().unwrap())
                });
                let g = loss.backward().unwrap();
                let grads: Vec<Tensor> =
                    [&x, &w, &m].iter().map(|v| g.get(v.as_tensor()).unwrap().clone()).collect();
                (y, grads)
            })
        };
        let (y32, g32) = run(None);
        for (half, bound) in [(DType::BF16, 2e-2), (DType::F16, 3e-3)] {
            let (y, g) = run(Some(half));
            assert_eq!(y.dtype(), DType::F32, "{half:?}: the product hands back f32");
            let err = max_rel(&y, &y32);
            assert!(err > 0.0 && err < bound, "{half:?}: output off f32 by {err}");
            for (i, (a, b)) in g.iter().zip(&g32).enumerate() {
                assert_eq!(a.dtype(), DType::F32, "{half:?}: gradient {i}");
                let err = max_rel(a, b);
                assert!(err > 0.0 && err < bound, "{half:?}: gradient {i} off f32 by {err}");
            }
        }
    }

    /// Outside autocast, and for operands that are not f32, products are untouched.
    #[test]
    fn only_f32_operands_inside_autocast_are_cast() {
        let dev = Device::Cpu;
        let a = crate::rng::randn(0f32, 1., (3, 4), &dev).unwrap();
        let b = crate::rng::randn(0f32, 1., (4, 2), &dev).unwrap();
        let exact = a.matmul(&b).unwrap();
        assert_eq!(max_rel(&matmul(&a, &b).unwrap(), &exact), 0.0);
        let a64 = a.to_dtype(DType::F64).unwrap();
        let b64 = b.to_dtype(DType::F64).unwrap();
        let y = with_autocast(Some(DType::BF16), || matmul(&a64, &b64).unwrap());
        assert_eq!(y.dtype(), DType::F64);
        assert!(with_autocast(Some(DType::BF16), || max_rel(&matmul(&a, &b).unwrap(), &exact)) > 0.0);
    }
}
