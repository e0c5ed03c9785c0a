//! ReLU, and a residual sum followed by ReLU, as single ops with a one-pass parallel backward on
//! the CPU; the exact (erf) GELU in vectors, where candle calls libm's `erff` per element. candle's ReLU differentiates as a comparison on one thread, a dtype conversion and a
//! product; the sum before it is one more graph node whose gradient candle accumulates. At
//! exactly 0 the gradient is 0, as torch's (candle's own ReLU passes it there).

use super::simd::{par_for, DisjointMut};
use super::vol2col::f32_slice;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

/// max(0, x).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    leaky_relu(x, 0.0)
}

/// max(0, x + r) for `x` and `r` of one shape.
pub fn add_relu(x: &Tensor, r: &Tensor) -> Result<Tensor> {
    add_leaky_relu(x, r, 0.0)
}

/// x where x > 0, else `slope` · x (Paddle's and torch's `leaky_relu`; gradient `slope` at 0).
pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    if !super::fusable(x) {
        return candle_leaky(x, slope);
    }
    x.contiguous()?.apply_op1(Relu { slope })
}

/// `leaky_relu(x + r, slope)` for `x` and `r` of one shape, in one pass.
pub fn add_leaky_relu(x: &Tensor, r: &Tensor, slope: f32) -> Result<Tensor> {
    if !super::fusable(x) || !super::fusable(r) || x.dims() != r.dims() {
        return candle_leaky(&(x + r)?, slope);
    }
    x.contiguous()?.apply_op2(&r.contiguous()?, AddRelu { slope })
}

/// The same from candle's ops (other devices and dtypes): five passes for a leaky slope. The
/// plain ReLU as x · (x > 0), not candle's `relu`: that one passes the gradient at exactly 0
/// (its mask is x ≥ 0) where torch's and Paddle's (and the kernels') stop it, and exact zeros are
/// common there (a branch whose last BatchNorm starts at γ = 0, as X3D's, adds β = 0 to the
/// previous block's ReLU output: its X3D gradients differed from the kernels' by 2× at γ).
fn candle_leaky(x: &Tensor, slope: f32) -> Result<Tensor> {
    if slope == 0.0 {
        x * x.gt(&x.zeros_like()?)?.to_dtype(x.dtype())?
    } else {
        candle_nn::ops::leaky_relu(x, slope as f64)
    }
}

/// x · Φ(x) = x/2 · (1 + erf(x/√2)), torch's and Paddle's `nn.GELU()` (not the tanh form),
/// with erf from [`erf`]; differentiable.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !super::fusable(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(Gelu)
}

/// erf(x) to within 4e-7 absolute: x · P(x²) / Q(x²) with P of degree 6 and Q of degree 5 (our
/// least-squares fit of erf(x)/x on [0, 3.92]; past 3.92 erf rounds to ±1 in f32), plain
/// multiply-adds and a division, no branch, so that loops over it vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: [f32; 7] = [
        // The fit's constant term is erf's slope at 0, 2/√π (the same f32).
        std::f32::consts::FRAC_2_SQRT_PI,
        0.184_570_33,
        0.053_944_47,
        0.003_786_328_2,
        0.000_366_443_33,
        4.344_605_3e-6,
        -1.136_795_5e-8,
    ];
    const Q: [f32; 6] = [1.0, 0.496_904_65, 0.113_441_37, 0.015_289_626, 0.001_277_035_2, 5.990_163_5e-5];
    // clamp keeps a NaN.
    let x = x.clamp(-3.92, 3.92);
    let t = x * x;
    let p = P.iter().rev().fold(0.0, |acc, c| acc * t + c);
    let q = Q.iter().rev().fold(0.0, |acc, c| acc * t + c);
    (x * p / q).clamp(-1.0, 1.0)
}

/// GELU's value, in torch's order of operations (`x * 0.5 * (1 + erf(x * M_SQRT1_2))`).
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's derivative: Φ(x) + x · φ(x).
#[inline(always)]
fn gelu_slope(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * super::simd::exp(-0.5 * x * x)
}

const CHUNK: usize = 1 << 15;

/// `out[i] = f(a[i], b[i])` (b = a for one operand) in parallel chunks, into an uninitialised
/// buffer (every element is written), each chunk's loop compiled for AVX-512 where the CPU has
/// it: the baseline build would run these passes four lanes wide.
fn zip_map<F: Fn(f32, f32) -> f32 + Sync>(a: &[f32], b: &[f32], f: F) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "elementwise operands differ in length");
    let len = a.len();
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = DisjointMut(out.as_mut_ptr());
    par_for(len.div_ceil(CHUNK), |c| {
        let start = c * CHUNK;
        let n = CHUNK.min(len - start);
        // SAFETY: chunk `c` of `out` (within its capacity) is written by this iteration only.
        let part = unsafe { std::slice::from_raw_parts_mut(dst.at(start) as *mut MaybeUninit<f32>, n) };
        zip_chunk(&a[start..start + n], &b[start..start + n], part, &f);
    });
    // SAFETY: the chunks cover 0..len and `zip_chunk` writes every element of its chunk.
    unsafe { out.set_len(len) };
    out
}

#[inline(always)]
fn zip_loop<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], out: &mut [MaybeUninit<f32>], f: &F) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        o.write(f(*x, *y));
    }
}

fn zip_chunk<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], out: &mut [MaybeUninit<f32>], f: &F) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn wide<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], out: &mut [MaybeUninit<f32>], f: &F) {
            zip_loop(a, b, out, f)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { wide(a, b, out, f) };
        }
    }
    zip_loop(a, b, out, f)
}

/// `x` where x > 0, else `slope`·x, as a select (no branch, so the loop vectorises); ReLU
/// (slope 0) as `max(0, x)`, torch's 0 for −0 and NaN.
fn leaky_map(a: &[f32], b: Option<&[f32]>, slope: f32) -> Vec<f32> {
    match (b, slope == 0.0) {
        (None, true) => zip_map(a, a, |x, _| x.max(0.0)),
        (None, false) => zip_map(a, a, |x, _| x * if x > 0.0 { 1.0 } else { slope }),
        (Some(b), true) => zip_map(a, b, |x, r| (x + r).max(0.0)),
        (Some(b), false) => zip_map(a, b, |x, r| {
            let v = x + r;
            v * if v > 0.0 { 1.0 } else { slope }
        }),
    }
}

/// grad where y > 0, else 0: ReLU's backward from its output `y`.
pub(super) fn relu_mask(grad: &Tensor, y: &Tensor) -> Result<Tensor> {
    masked_leaky(grad, y, 0.0)
}

/// grad where y > 0, else grad · `slope`; y is the op's output, positive exactly where its
/// input was.
fn masked_leaky(grad: &Tensor, y: &Tensor, slope: f32) -> Result<Tensor> {
    grad.contiguous()?.apply_op2_no_bwd(y, &Mask { slope })
}

struct Gelu;
/// (grad, x) → grad · GELU'(x).
struct GeluGrad;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "vidkit-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let x = f32_slice(s, l)?;
        Ok((CpuStorage::F32(zip_map(x, x, |x, _| gelu_one(x))), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(x, &GeluGrad)?))
    }
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "vidkit-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let out = zip_map(f32_slice(s1, l1)?, f32_slice(s2, l2)?, |g, x| g * gelu_slope(x));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct Relu {
    slope: f32,
}
struct AddRelu {
    slope: f32,
}
/// (grad, y) → grad where y > 0, else grad · slope (0 for ReLU).
struct Mask {
    slope: f32,
}

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "vidkit-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let y = leaky_map(f32_slice(s, l)?, None, self.slope);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(masked_leaky(grad, y, self.slope)?))
    }
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "vidkit-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let y = leaky_map(f32_slice(s1, l1)?, Some(f32_slice(s2, l2)?), self.slope);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = masked_leaky(grad, y, self.slope)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

impl CustomOp2 for Mask {
    fn name(&self) -> &'static str {
        "vidkit-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let slope = self.slope;
        let (grad, y) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let out = if slope == 0.0 {
            zip_map(grad, y, |g, y| if y > 0.0 { g } else { 0.0 })
        } else {
            zip_map(grad, y, |g, y| g * if y > 0.0 { 1.0 } else { slope })
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// At exactly 0 the ReLU's gradient is 0, as torch's and Paddle's, on the kernels and on the
    /// candle-only path alike (candle's own `relu` passes it).
    #[test]
    fn relu_stops_the_gradient_at_zero_on_both_paths() {
        let x = Var::from_tensor(&Tensor::new(&[-1f32, 0.0, 2.0, 0.0], &Device::Cpu).unwrap()).unwrap();
        let zeros = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        for portable in [false, true] {
            let run = || {
                let y = (relu(x.as_tensor()).unwrap() + add_relu(x.as_tensor(), &zeros).unwrap()).unwrap();
                let g = y.sum_all().unwrap().backward().unwrap();
                (y.to_vec1::<f32>().unwrap(), g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap())
            };
            let (y, g) = if portable { crate::nn::with_portable_ops(run) } else { run() };
            assert_eq!(y, [0.0, 0.0, 4.0, 0.0], "portable {portable}");
            assert_eq!(g, [0.0, 0.0, 2.0, 0.0], "portable {portable}");
        }
    }

    /// The vector GELU against candle's (libm's `erff` per element): values and gradients within
    /// a few f32 ulp over the range where erf is not yet ±1 and past it, NaN kept.
    #[test]
    fn gelu_follows_candles_exact_one() {
        let dev = Device::Cpu;
        let values: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).chain([-30.0, 30.0, 1e-6]).collect();
        let x = Var::from_tensor(&Tensor::new(values.as_slice(), &dev).unwrap()).unwrap();
        let run = |f: &dyn Fn(&Tensor) -> Tensor| {
            let y = f(x.as_tensor());
            let g = (&y * &y).unwrap().sum_all().unwrap().backward().unwrap();
            (y.to_vec1::<f32>().unwrap(), g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap())
        };
        let (y, g) = run(&|t| gelu_erf(t).unwrap());
        let (want_y, want_g) = run(&|t| t.gelu_erf().unwrap());
        for (i, &v) in values.iter().enumerate() {
            let tol = 1e-6 * v.abs().max(1.0);
            assert!((y[i] - want_y[i]).abs() <= tol, "gelu({v}) = {} not {}", y[i], want_y[i]);
            assert!(
                (g[i] - want_g[i]).abs() <= 2.0 * tol * want_y[i].abs().max(1.0),
                "gelu'({v}): {} not {}",
                g[i],
                want_g[i]
            );
        }
        let nan = gelu_erf(&Tensor::new(&[f32::NAN], &dev).unwrap()).unwrap().to_vec1::<f32>().unwrap();
        assert!(nan[0].is_nan());
    }

    #[test]
    fn equal_to_candle_ops_with_gradients() {
        let dev = Device::Cpu;
        // Over three parallel chunks, the last one partial.
        let shape = (3, 5, 7, 1000);
        let x = Var::from_tensor(&crate::rng::randn(0f32, 1., shape, &dev).unwrap()).unwrap();
        let r = Var::from_tensor(&crate::rng::randn(0f32, 1., shape, &dev).unwrap()).unwrap();
        let w = crate::rng::randn(0f32, 1., shape, &dev).unwrap();
        let grads = |y: Tensor| {
            let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let get =
                |v: &Var| g.get(v.as_tensor()).map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), get(&x), get(&r))
        };
        let (xt, rt) = (x.as_tensor(), r.as_tensor());
        assert_eq!(grads(relu(xt).unwrap()), grads(xt.relu().unwrap()));
        assert_eq!(grads(add_relu(xt, rt).unwrap()), grads((xt + rt).unwrap().relu().unwrap()));
        let leaky = |v: &Tensor| candle_nn::ops::leaky_relu(v, 0.01f32 as f64).unwrap();
        let close = |a: (Vec<f32>, Option<Vec<f32>>, Option<Vec<f32>>),
                     b: (Vec<f32>, Option<Vec<f32>>, Option<Vec<f32>>)| {
            let near = |p: &[f32], q: &[f32]| {
                p.len() == q.len() && p.iter().zip(q).all(|(u, v)| (u - v).abs() <= 1e-6 * v.abs().max(1.0))
            };
            assert!(near(&a.0, &b.0), "values");
            for (p, q) in [(a.1, b.1), (a.2, b.2)] {
                match (p, q) {
                    (Some(p), Some(q)) => assert!(near(&p, &q), "gradients"),
                    (p, q) => assert_eq!(p.is_some(), q.is_some(), "gradient presence"),
                }
            }
        };
        close(grads(leaky_relu(xt, 0.01).unwrap()), grads(leaky(xt)));
        close(grads(add_leaky_relu(xt, rt, 0.01).unwrap()), grads(leaky(&(xt + rt).unwrap())));
    }
}
