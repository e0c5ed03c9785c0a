//! ReLU, and a residual sum followed by ReLU, as single ops with a one-pass parallel backward on
//! the CPU. candle's ReLU differentiates as a comparison on one thread, a dtype conversion and a
//! product; the sum before it is one more graph node whose gradient candle accumulates. At
//! exactly 0 the gradient is 0, as torch's (candle's own ReLU passes it there).

use super::simd::{par_for, DisjointMut};
use super::vol2col::f32_slice;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// max(0, x).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !super::fusable(x) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Relu)
}

/// max(0, x + r) for `x` and `r` of one shape.
pub fn add_relu(x: &Tensor, r: &Tensor) -> Result<Tensor> {
    if !super::fusable(x) || !super::fusable(r) || x.dims() != r.dims() {
        return (x + r)?.relu();
    }
    x.contiguous()?.apply_op2(&r.contiguous()?, AddRelu)
}

const CHUNK: usize = 1 << 15;

/// `out[i] = f(i)` over `len` elements in parallel chunks.
fn par_map(len: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = super::vol2col::zeros_par(len);
    let dst = DisjointMut(out.as_mut_ptr());
    par_for(len.div_ceil(CHUNK), |c| {
        let start = c * CHUNK;
        // SAFETY: chunk `c` of `out` is written by this iteration only.
        let part = unsafe { std::slice::from_raw_parts_mut(dst.at(start), CHUNK.min(len - start)) };
        f(start, part);
    });
    out
}

/// `f(a[i], b[i])` for two slices of one length, in parallel chunks.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    par_map(a.len(), |at, out| {
        for ((o, x), y) in out.iter_mut().zip(&a[at..]).zip(&b[at..]) {
            *o = f(*x, *y);
        }
    })
}

/// grad · [y > 0], y being the op's output (positive exactly where the input was).
pub(super) fn masked(grad: &Tensor, y: &Tensor) -> Result<Tensor> {
    grad.contiguous()?.apply_op2_no_bwd(y, &Mask)
}

struct Relu;
struct AddRelu;
/// (grad, y) → grad · [y > 0].
struct Mask;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "vidkit-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let x = f32_slice(s, l)?;
        let y = par_map(x.len(), |at, out| {
            for (o, v) in out.iter_mut().zip(&x[at..]) {
                *o = v.max(0.0);
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(masked(grad, y)?))
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
        let y = zip_map(f32_slice(s1, l1)?, f32_slice(s2, l2)?, |a, b| (a + b).max(0.0));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = masked(grad, y)?;
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
        let out = zip_map(f32_slice(s1, l1)?, f32_slice(s2, l2)?, |g, y| if y > 0.0 { g } else { 0.0 });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn equal_to_candle_ops_with_gradients() {
        let dev = Device::Cpu;
        let shape = (3, 5, 7, 300);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., shape, &dev).unwrap()).unwrap();
        let r = Var::from_tensor(&Tensor::randn(0f32, 1., shape, &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1., shape, &dev).unwrap();
        let grads = |y: Tensor| {
            let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let get =
                |v: &Var| g.get(v.as_tensor()).map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), get(&x), get(&r))
        };
        let (xt, rt) = (x.as_tensor(), r.as_tensor());
        assert_eq!(grads(relu(xt).unwrap()), grads(xt.relu().unwrap()));
        assert_eq!(grads(add_relu(xt, rt).unwrap()), grads((xt + rt).unwrap().relu().unwrap()));
    }
}
