//! A dense convolution (2D as one-frame 3D) as one differentiable op on the CPU: the forward is
//! one GEMM over the implicit column matrix, written straight into [N, C_out, …]; the backward
//! computes both gradients with two GEMMs. As a chain of candle ops (unfold, matmul, transpose,
//! copy) each step was a graph node whose gradient candle accumulates as zeros + grad, and the
//! unfolded columns (9× the input for 3×3) stayed alive from the forward to the backward.

use super::gemm::{sgemm, sgemm_columns, sgemm_conv, Columns, ConvRhs, Epilogue, MatRef};
use super::vol2col::{col2vol, f32_slice, par_planes, vol2col, zeros_par, Geometry3d};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// x [N, C, T, H, W] (f32, CPU) convolved with `weight` [C_out, C, kt, kh, kw] (groups 1) over
/// the window of `g` (whose n, c and input match x): [N, C_out, T', H', W'].
pub fn conv_gemm(x: &Tensor, weight: &Tensor, g: Geometry3d) -> Result<Tensor> {
    let cout = weight.dim(0)?;
    let [ot, oh, ow] = g.out()?;
    let w = weight.contiguous()?.reshape((cout, g.c * g.taps()))?;
    let y = x.contiguous()?.apply_op2(&w, ConvGemm(g))?;
    y.reshape(vec![g.n, cout, ot, oh, ow])
}

/// (x, w [C_out, C·taps]) → y [N, C_out, P].
struct ConvGemm(Geometry3d);
/// (x, grad_y [N, C_out, P]) → grad_w [C_out, C·taps].
struct ConvGemmGradWeight(Geometry3d);
/// (w, grad_y) → grad_x [N, C, T, H, W].
struct ConvGemmGradInput(Geometry3d);

impl ConvGemm {
    fn direct(&self) -> bool {
        let g = &self.0;
        g.taps() == 1 && g.stride == [1; 3] && g.pad == [0; 3]
    }
}

fn positions(g: &Geometry3d) -> Result<usize> {
    Ok(g.out()?.iter().product())
}

impl CustomOp2 for ConvGemm {
    fn name(&self) -> &'static str {
        "vidkit-conv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (x, w) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (cout, k) = l2.shape().dims2()?;
        if k != g.c * g.taps() || x.len() != g.n * g.c * g.in_volume() {
            candle_core::bail!("conv: weight {:?} and input {:?} do not fit", l2.dims(), l1.dims())
        }
        let p = positions(&g)?;
        let mut y = zeros_par(g.n * cout * p);
        let a = MatRef::row_major(w, cout, k);
        let out_cols = Columns { per: p, b_stride: 0, c_stride: cout * p };
        if self.direct() {
            let b = MatRef { data: x, rows: g.c, cols: g.n * p, rs: p, cs: 1 };
            sgemm_columns(
                a,
                b,
                Columns { b_stride: g.c * p, ..out_cols },
                &mut y,
                p,
                false,
                Epilogue::default(),
            );
        } else {
            let out = g.out()?;
            sgemm_conv(a, ConvRhs { x, g, out }, out_cols, &mut y, p, Epilogue::default());
        }
        Ok((CpuStorage::F32(y), Shape::from((g.n, cout, p))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Only the gradients something upstream needs: the stem's input is the clip itself, and
        // its grad_x (a product and a col2vol over 3 × 224² × frames) would be thrown away.
        let gx = x.track_op().then(|| w.apply_op2_no_bwd(&grad, &ConvGemmGradInput(self.0))).transpose()?;
        let gw = w.track_op().then(|| x.apply_op2_no_bwd(&grad, &ConvGemmGradWeight(self.0))).transpose()?;
        Ok((gx, gw))
    }
}

impl CustomOp2 for ConvGemmGradInput {
    fn name(&self) -> &'static str {
        "vidkit-conv-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (w, grad) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (cout, k) = l1.shape().dims2()?;
        let p = positions(&g)?;
        // Wᵀ [C·taps, C_out] · grad, grad's columns batched per image.
        let a = MatRef::row_major(w, cout, k).t();
        let b = MatRef { data: grad, rows: cout, cols: g.n * p, rs: p, cs: 1 };
        let [t, h, wd] = g.input;
        let shape = Shape::from(vec![g.n, g.c, t, h, wd]);
        if ConvGemm(g).direct() {
            let mut gx = zeros_par(g.n * g.c * p);
            let cols = Columns { per: p, b_stride: cout * p, c_stride: g.c * p };
            sgemm_columns(a, b, cols, &mut gx, p, false, Epilogue::default());
            return Ok((CpuStorage::F32(gx), shape));
        }
        // Column gradients [C·taps, N·P], then summed back onto the input.
        let mut gcols = zeros_par(k * g.n * p);
        let cols = Columns { per: p, b_stride: cout * p, c_stride: p };
        sgemm_columns(a, b, cols, &mut gcols, g.n * p, false, Epilogue::default());
        Ok((CpuStorage::F32(col2vol(&gcols, &g)?), shape))
    }
}

impl CustomOp2 for ConvGemmGradWeight {
    fn name(&self) -> &'static str {
        "vidkit-conv-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (x, grad) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let p = positions(&g)?;
        let cout = grad.len() / (g.n * p).max(1);
        let k = g.c * g.taps();
        let np = g.n * p;
        // The columns [C·taps, N·P] (for 1×1×1 stride 1, x with images side by side) and grad as
        // [N·P, C_out]: one product grad_wᵀ = cols · gradᵀ with both operands read along rows.
        let cols = if ConvGemm(g).direct() {
            let mut cols = zeros_par(k * np);
            par_planes(&mut cols, np, |c, row| {
                for n in 0..g.n {
                    row[n * p..][..p].copy_from_slice(&x[(n * g.c + c) * p..][..p]);
                }
            });
            cols
        } else {
            vol2col(x, &g)?
        };
        let mut grad_t = zeros_par(np * cout);
        par_planes(&mut grad_t, p * cout, |n, dst| {
            transpose(&grad[n * cout * p..][..cout * p], cout, p, dst)
        });
        let mut gw_t = vec![0f32; k * cout];
        let a = MatRef::row_major(&cols, k, np);
        let b = MatRef::row_major(&grad_t, np, cout);
        sgemm(a, b, &mut gw_t, cout, false, Epilogue::default());
        let mut gw = vec![0f32; cout * k];
        transpose(&gw_t, k, cout, &mut gw);
        Ok((CpuStorage::F32(gw), Shape::from((cout, k))))
    }
}

/// `dst` [cols, rows] = `src` [rows, cols]ᵀ, in 16 × 16 blocks so reads and writes both stay in
/// cache lines.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 16;
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    for r0 in (0..rows).step_by(B) {
        let r1 = (r0 + B).min(rows);
        for c0 in (0..cols).step_by(B) {
            for c in c0..(c0 + B).min(cols) {
                for r in r0..r1 {
                    // SAFETY: r < rows and c < cols, both buffers hold rows · cols (asserted);
                    // unchecked and wrapping so the block loop compiles to plain moves.
                    unsafe {
                        *dst.get_unchecked_mut(c.wrapping_mul(rows).wrapping_add(r)) =
                            *src.get_unchecked(r.wrapping_mul(cols).wrapping_add(c));
                    }
                }
            }
        }
    }
}
