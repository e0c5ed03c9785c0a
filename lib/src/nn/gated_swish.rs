//! swish(x · s) for x [N, C, ...] and a per-(sample, channel) gate s [N, C]: X3D's
//! squeeze-excitation product followed by its swish, as one op with a hand-written backward
//! (candle's broadcast multiply, sigmoid and their gradients are five passes over x each way).
//!
//! Where a gradient will be taken the forward rounds as candle's and torch's silu do,
//! u / (1 + e^-u) with libm's exp. The faster u · σ(u) with our vectorised exp (3e-7) is as
//! accurate, but X3D's last stages in train mode (BatchNorm over 4 values per channel) turn such
//! last-bit differences into gradients 3e-3 off torch's float64 ones where torch's float32 ones
//! are 1e-5 off (measured with the gradient-parity test of x3d_xs; with this rounding, 7.7e-6).

use super::simd::{self, dispatch_simd, par_for, DisjointMut};
use super::vol2col::f32_slice;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// x [N, C, ...] (any trailing dims), s [N, C] (or [N, C, 1, ...]) → swish(x · s), on the CPU in
/// f32; other devices and dtypes through candle's ops.
/// `train`: rounded exactly as candle's silu (see `GatedSwish::exact`), else the vectorised form.
pub fn gated_swish(x: &Tensor, s: &Tensor, train: bool) -> Result<Tensor> {
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    if !super::fusable(x) || s.dtype() != DType::F32 {
        let mut gate_shape = vec![n, c];
        gate_shape.resize(x.rank(), 1);
        return x.broadcast_mul(&s.reshape(gate_shape)?)?.silu();
    }
    if s.elem_count() != n * c {
        candle_core::bail!("gated swish: gate {:?} for input {:?}", s.dims(), x.dims())
    }
    let per = x.elem_count() / (n * c).max(1);
    // By the mode, not by `track_op()`: model weights are variables, so in eval mode the input
    // always tracks a gradient and the vectorised form was never taken.
    let op = GatedSwish { exact: train };
    let y = x.contiguous()?.reshape((n * c, per))?.apply_op2(&s.contiguous()?.reshape(n * c)?, op)?;
    y.reshape(x.shape())
}

/// swish(x) for inference: the same vectorised loop as `gated_swish`, without a gradient (use
/// `Tensor::silu` where one is needed).
pub fn swish_inference(x: &Tensor) -> Result<Tensor> {
    if !super::fusable(x) {
        return x.silu();
    }
    let x = x.contiguous()?;
    super::fused::kernel_allowed("swish")?;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("swish: expected a CPU tensor")
    };
    let data = f32_slice(cpu, layout)?;
    let chunk = 1 << 14;
    let mut y = super::vol2col::zeros_par(data.len());
    let out = DisjointMut(y.as_mut_ptr());
    par_for(data.len().div_ceil(chunk), |i| {
        let src = &data[i * chunk..((i + 1) * chunk).min(data.len())];
        // SAFETY: chunk `i` of y is written by this iteration only.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.at(i * chunk), src.len()) };
        row_forward_simd(src, 1.0, dst);
    });
    drop(storage);
    Tensor::from_vec(y, x.shape(), x.device())
}

#[inline(always)]
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + simd::exp(-v))
}

/// One row: y = u·σ(u), u = x·s.
#[inline(always)]
fn row_forward(x: &[f32], s: f32, y: &mut [f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        let u = v * s;
        *o = u * sigmoid(u);
    }
}

/// One row as candle's silu rounds it (see the module comment); libm's exp keeps it scalar.
fn row_forward_exact(x: &[f32], s: f32, y: &mut [f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        let u = v * s;
        *o = u / (1.0 + (-u).exp());
    }
}

/// One row's backward: writes grad_x, returns grad_s = Σ g · swish'(u) · x.
#[inline(always)]
fn row_backward(x: &[f32], s: f32, g: &[f32], gx: &mut [f32]) -> f64 {
    let mut gs = 0f64;
    for ((o, v), gi) in gx.iter_mut().zip(x).zip(g) {
        let u = v * s;
        let sg = sigmoid(u);
        let d = gi * sg * (1.0 + u * (1.0 - sg));
        *o = d * s;
        gs += (d * v) as f64;
    }
    gs
}

dispatch_simd!(row_forward_simd, row_forward, (x: &[f32], s: f32, y: &mut [f32]));
dispatch_simd!(row_backward_simd, row_backward, (x: &[f32], s: f32, g: &[f32], gx: &mut [f32]) -> f64);

/// (x [R, P], s [R]) → swish(x · s) row by row; `exact`: rounded as candle's silu.
struct GatedSwish {
    exact: bool,
}
/// (x [R, P], [grad_y [R·P] | s [R]]) → [grad_x [R·P] | grad_s [R]].
struct GatedSwishBwd;

impl CustomOp2 for GatedSwish {
    fn name(&self) -> &'static str {
        "vidkit-gated-swish"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let (x, s) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (rows, per) = l1.shape().dims2()?;
        let mut y = super::vol2col::zeros_par(rows * per);
        let out = DisjointMut(y.as_mut_ptr());
        par_for(rows, |r| {
            // SAFETY: row `r` of y is written by this iteration only.
            let yr = unsafe { std::slice::from_raw_parts_mut(out.at(r * per), per) };
            let row = &x[r * per..][..per];
            if self.exact {
                row_forward_exact(row, s[r], yr)
            } else {
                row_forward_simd(row, s[r], yr)
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((rows, per))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        s: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, per) = x.dims2()?;
        let packed = Tensor::cat(&[&grad.contiguous()?.flatten_all()?, s], 0)?;
        let all = x.apply_op2_no_bwd(&packed, &GatedSwishBwd)?;
        Ok((
            Some(all.narrow(0, 0, rows * per)?.reshape((rows, per))?),
            Some(all.narrow(0, rows * per, rows)?),
        ))
    }
}

impl CustomOp2 for GatedSwishBwd {
    fn name(&self) -> &'static str {
        "vidkit-gated-swish-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let (x, packed) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (rows, per) = l1.shape().dims2()?;
        let (g, s) = packed.split_at(rows * per);
        let mut out = super::vol2col::zeros_par(rows * per + rows);
        let p = DisjointMut(out.as_mut_ptr());
        par_for(rows, |r| {
            // SAFETY: row `r` of grad_x and entry `r` of grad_s are written by this iteration only.
            let gx = unsafe { std::slice::from_raw_parts_mut(p.at(r * per), per) };
            let gs = row_backward_simd(&x[r * per..][..per], s[r], &g[r * per..][..per], gx);
            unsafe { *p.at(rows * per + r) = gs as f32 };
        });
        Ok((CpuStorage::F32(out), Shape::from(rows * per + rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The inference channel scale equals candle's broadcast multiply bit for bit (4D and 5D,
    /// a gate as [N, C] or [N, C, 1, 1]).
    #[test]
    fn channel_scale_equals_broadcast_mul() {
        let dev = Device::Cpu;
        for dims in [vec![2, 3, 5, 7], vec![3, 4, 2, 3, 3]] {
            let x = crate::rng::randn(0f32, 2., dims.clone(), &dev).unwrap();
            let s = crate::rng::rand(0f32, 1., (dims[0], dims[1]), &dev).unwrap();
            let mut gate_shape = vec![dims[0], dims[1]];
            gate_shape.resize(dims.len(), 1);
            let want = x.broadcast_mul(&s.reshape(gate_shape.clone()).unwrap()).unwrap();
            for gate in [s.clone(), s.reshape(gate_shape).unwrap()] {
                let got = channel_scale_inference(&x, &gate).unwrap();
                assert_eq!(got.dims(), want.dims());
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(flat(&got), flat(&want), "{dims:?}");
            }
        }
    }

    #[test]
    fn equals_candle_ops_with_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&crate::rng::randn(0f32, 2., (2, 3, 4, 5, 6), &dev).unwrap()).unwrap();
        let s = Var::from_tensor(&crate::rng::rand(0f32, 1., (2, 3, 1, 1, 1), &dev).unwrap()).unwrap();
        let want = x.as_tensor().broadcast_mul(s.as_tensor()).unwrap().silu().unwrap();
        let got = gated_swish(x.as_tensor(), s.as_tensor(), true).unwrap();
        let r = crate::rng::randn(0f32, 1., want.shape(), &dev).unwrap();
        let gw = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gg = (&got * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
        };
        assert!(diff(&want, &got) < 1e-5);
        // Without a gradient to take, the vectorised forward.
        assert!(
            diff(&want, &gated_swish(&x.as_tensor().detach(), &s.as_tensor().detach(), false).unwrap())
                < 1e-5
        );
        assert!(diff(&x.as_tensor().silu().unwrap(), &swish_inference(x.as_tensor()).unwrap()) < 1e-5);
        assert!(diff(gw.get(x.as_tensor()).unwrap(), gg.get(x.as_tensor()).unwrap()) < 1e-5);
        let gs = gg.get(s.as_tensor()).unwrap();
        assert_eq!(gs.dims(), s.as_tensor().dims());
        assert!(diff(gw.get(s.as_tensor()).unwrap(), gs) < 1e-4);
    }
}

/// x · s for inference (no gradient), x [N, C, ...] and s [N, C] (or [N, C, 1, ...]): one pass
/// over x where candle's broadcast multiply took two thread pools' worth of strided indexing
/// (PP-LCNetV2's squeeze-excitation, ~2 % of a PP-TSMv2 forward). Candle's op elsewhere.
pub fn channel_scale_inference(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    if !super::fusable(x) || s.dtype() != DType::F32 || s.elem_count() != n * c {
        let mut gate_shape = vec![n, c];
        gate_shape.resize(x.rank(), 1);
        return x.broadcast_mul(&s.reshape(gate_shape)?);
    }
    super::fused::kernel_allowed("channel scale")?;
    let (x, s) = (x.contiguous()?, s.contiguous()?);
    let per = x.elem_count() / (n * c).max(1);
    let (xs, xl) = x.storage_and_layout();
    let (ss, sl) = s.storage_and_layout();
    let (candle_core::Storage::Cpu(xc), candle_core::Storage::Cpu(sc)) = (&*xs, &*ss) else {
        candle_core::bail!("channel scale: expected CPU tensors")
    };
    let (data, gate) = (f32_slice(xc, xl)?, f32_slice(sc, sl)?);
    if per == 0 {
        return Ok(x.clone());
    }
    let scale_plane = |_: &mut (), i: usize, out: &mut [std::mem::MaybeUninit<f32>]| {
        scale_row_simd(&data[i * per..(i + 1) * per], gate[i], out)
    };
    // SAFETY: `scale_row` writes every value of each plane it is given.
    let y = unsafe { super::vol2col::par_planes_uninit(data.len(), per, || (), scale_plane) };
    drop((xs, ss));
    Tensor::from_vec(y, x.shape(), x.device())
}

#[inline(always)]
fn scale_row(x: &[f32], s: f32, y: &mut [std::mem::MaybeUninit<f32>]) {
    for (o, v) in y.iter_mut().zip(x) {
        o.write(v * s);
    }
}

dispatch_simd!(scale_row_simd, scale_row, (x: &[f32], s: f32, y: &mut [std::mem::MaybeUninit<f32>]));
