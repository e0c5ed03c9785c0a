//! A dense convolution (2D as one-frame 3D) as one differentiable op on the CPU: the forward is
//! one GEMM over the implicit column matrix, written straight into [N, C_out, …]; the backward
//! computes both gradients with two GEMMs. As a chain of candle ops (unfold, matmul, transpose,
//! copy) each step was a graph node whose gradient candle accumulates as zeros + grad, and the
//! unfolded columns (9× the input for 3×3) stayed alive from the forward to the backward.

use super::gemm::{
    blocked_isa, sgemm, sgemm_columns_new, sgemm_conv_new, sgemm_conv_t, Columns, ConvRhs, Epilogue, MatRef,
};
use super::transpose::transpose;
use super::vol2col::{col2vol, f32_slice, par_planes, vol2col, zeros_par, Geometry3d};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// x [N, C, T, H, W] (f32, CPU) convolved with `weight` [C_out, C, kt, kh, kw] (groups 1) over
/// the window of `g` (whose n, c and input match x): [N, C_out, T', H', W']. A 2D convolution
/// passes x as [N, C, H, W] (T = 1) and gets [N, C_out, H', W']: the op takes and gives the
/// caller's rank itself, because every reshape around it would be one more graph node whose
/// gradient candle accumulates as zeros + grad over the whole activation.
pub fn conv_gemm(x: &Tensor, weight: &Tensor, g: Geometry3d) -> Result<Tensor> {
    let cout = weight.dim(0)?;
    let w = weight.contiguous()?.reshape((cout, g.c * g.taps()))?;
    x.contiguous()?.apply_op2(&w, ConvGemm { g, bf16: super::autocast::bf16_products() })
}

/// [N, C, T, H, W] of `g`'s input or output volume, or [N, C, H, W] where `rank` is 4 (T = 1).
pub(super) fn volume_shape(n: usize, c: usize, [t, h, w]: [usize; 3], rank: usize) -> Result<Shape> {
    match rank {
        5 => Ok(Shape::from(vec![n, c, t, h, w])),
        4 if t == 1 => Ok(Shape::from(vec![n, c, h, w])),
        _ => candle_core::bail!("conv: a {rank}-dimensional tensor for a {t}-frame volume"),
    }
}

/// (x, w [C_out, C·taps]) → y [N, C_out, T', H', W'] (or [N, C_out, H', W'] for a 4D x); `bf16`:
/// the forward ran under bf16 autocast, and so does the backward's products.
struct ConvGemm {
    g: Geometry3d,
    bf16: bool,
}
/// (x, grad_y [N, C_out, T', H', W']) → grad_w [C_out, C·taps].
pub(super) struct ConvGemmGradWeight(pub(super) Geometry3d);
/// (w, grad_y) → grad_x [N, C, T, H, W] (the rank of grad_y).
pub(super) struct ConvGemmGradInput(pub(super) Geometry3d);

/// A 1×1×1 stride-1 convolution without padding: B is the input itself.
fn is_direct(g: &Geometry3d) -> bool {
    g.taps() == 1 && g.stride == [1; 3] && g.pad == [0; 3]
}

/// y [N, C_out, P] = w [C_out, C·taps] applied to x's columns (sizes checked by the caller).
pub(super) fn conv_forward(x: &[f32], w: &[f32], cout: usize, g: &Geometry3d) -> Result<Vec<f32>> {
    let g = *g;
    let (k, p) = (g.c * g.taps(), positions(&g)?);
    let a = MatRef::row_major(w, cout, k);
    let out_cols = Columns { per: p, b_stride: 0, c_stride: cout * p };
    let y = if is_direct(&g) {
        let b = MatRef { data: x, rows: g.c, cols: g.n * p, rs: p, cs: 1 };
        let cols = Columns { b_stride: g.c * p, ..out_cols };
        sgemm_columns_new(a, b, cols, p, Epilogue::default())
    } else {
        sgemm_conv_new(a, ConvRhs { x, g, out: g.out()? }, out_cols, p, Epilogue::default())
    };
    Ok(y)
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
        super::fused::kernel_allowed(self.name())?;
        let g = self.g;
        let (x, w) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (cout, k) = l2.shape().dims2()?;
        if k != g.c * g.taps() || x.len() != g.n * g.c * g.in_volume() {
            candle_core::bail!("conv: weight {:?} and input {:?} do not fit", l2.dims(), l1.dims())
        }
        let y = conv_forward(x, w, cout, &g)?;
        Ok((CpuStorage::F32(y), volume_shape(g.n, cout, g.out()?, l1.dims().len())?))
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
        super::autocast::bf16_if(self.bf16, || {
            let gx =
                x.track_op().then(|| w.apply_op2_no_bwd(&grad, &ConvGemmGradInput(self.g))).transpose()?;
            let gw =
                w.track_op().then(|| x.apply_op2_no_bwd(&grad, &ConvGemmGradWeight(self.g))).transpose()?;
            Ok((gx, gw))
        })
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
        super::fused::kernel_allowed(self.name())?;
        let g = self.0;
        let (w, grad) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (cout, k) = l1.shape().dims2()?;
        let p = positions(&g)?;
        if k != g.c * g.taps() || grad.len() != g.n * cout * p {
            candle_core::bail!(
                "conv backward: weight {:?} and gradient {:?} do not fit",
                l1.dims(),
                l2.dims()
            )
        }
        // Wᵀ [C·taps, C_out] · grad, grad's columns batched per image.
        let a = MatRef::row_major(w, cout, k).t();
        let b = MatRef { data: grad, rows: cout, cols: g.n * p, rs: p, cs: 1 };
        let shape = volume_shape(g.n, g.c, g.input, l2.dims().len())?;
        if is_direct(&g) {
            let cols = Columns { per: p, b_stride: cout * p, c_stride: g.c * p };
            let gx = sgemm_columns_new(a, b, cols, p, Epilogue::default());
            return Ok((CpuStorage::F32(gx), shape));
        }
        let gx = match transposed_geometry(&g, cout) {
            Some(tg) => grad_input_transposed(w, grad, cout, &g, tg),
            None => grad_input_by_columns(w, grad, cout, &g)?,
        };
        Ok((CpuStorage::F32(gx), shape))
    }
}

/// Stride 1: grad_x is grad_y convolved with the flipped, channel-swapped kernel, one
/// implicit-column GEMM, with no [C·taps, N·P] column gradient (taps × the input) to write,
/// zero and sum back.
fn grad_input_transposed(w: &[f32], grad: &[f32], cout: usize, g: &Geometry3d, tg: Geometry3d) -> Vec<f32> {
    let wt = flipped_transposed(w, cout, g.c, g.kernel);
    let pin = g.in_volume();
    let a = MatRef::row_major(&wt, g.c, cout * g.taps());
    let cols = Columns { per: pin, b_stride: 0, c_stride: g.c * pin };
    sgemm_conv_new(a, ConvRhs { x: grad, g: tg, out: g.input }, cols, pin, Epilogue::default())
}

/// Any stride: the column gradients Wᵀ · grad_y [C·taps, N·P], then summed back onto the input.
fn grad_input_by_columns(w: &[f32], grad: &[f32], cout: usize, g: &Geometry3d) -> Result<Vec<f32>> {
    let (k, p) = (g.c * g.taps(), positions(g)?);
    let a = MatRef::row_major(w, cout, k).t();
    let b = MatRef { data: grad, rows: cout, cols: g.n * p, rs: p, cs: 1 };
    let cols = Columns { per: p, b_stride: cout * p, c_stride: p };
    let gcols = sgemm_columns_new(a, b, cols, g.n * p, Epilogue::default());
    col2vol(&gcols, g)
}

/// For a stride-1 convolution `g`, the geometry of the one whose output is its input gradient:
/// over the output volume with C_out input channels, padding d·(k − 1) − p per axis (None where the
/// padding exceeds that, or for strided convolutions: those go through col2vol).
fn transposed_geometry(g: &Geometry3d, cout: usize) -> Option<Geometry3d> {
    if g.stride != [1; 3] {
        return None;
    }
    let out = g.out().ok()?;
    let mut pad = [0; 3];
    for a in 0..3 {
        pad[a] = (g.dilation[a] * (g.kernel[a] - 1)).checked_sub(g.pad[a])?;
    }
    let tg = Geometry3d { c: cout, input: out, pad, ..*g };
    (tg.out().ok()? == g.input).then_some(tg)
}

/// w [C_out, C, kt, kh, kw] → [C, C_out, kt, kh, kw] with every kernel reversed along t, h, w.
fn flipped_transposed(w: &[f32], cout: usize, c: usize, [kt, kh, kw]: [usize; 3]) -> Vec<f32> {
    let taps = kt * kh * kw;
    let mut out = vec![0f32; w.len()];
    for o in 0..cout {
        for ci in 0..c {
            let src = &w[(o * c + ci) * taps..][..taps];
            let dst = &mut out[(ci * cout + o) * taps..][..taps];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    out
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
        super::fused::kernel_allowed(self.name())?;
        let g = self.0;
        let (x, grad) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let p = positions(&g)?;
        let cout = grad.len() / (g.n * p).max(1);
        let k = g.c * g.taps();
        let np = g.n * p;
        if x.len() != g.n * g.c * g.in_volume() || grad.len() != np * cout {
            candle_core::bail!(
                "conv weight gradient: input {:?} and gradient {:?} do not fit",
                l1.dims(),
                l2.dims()
            )
        }
        let gw = if blocked_isa().is_some() {
            grad_weight_implicit(x, grad, cout, &g)?
        } else {
            grad_weight_by_columns(x, grad, cout, &g)?
        };
        Ok((CpuStorage::F32(gw), Shape::from((cout, k))))
    }
}

/// grad_w [C_out, C·taps] = grad [C_out, N·P] · colsᵀ in one product, the columns read from x
/// while packing: no [C·taps, N·P] column buffer (taps × the input), no transposed gradient.
fn grad_weight_implicit(x: &[f32], grad: &[f32], cout: usize, g: &Geometry3d) -> Result<Vec<f32>> {
    let p = positions(g)?;
    let k = g.c * g.taps();
    let mut gw = vec![0f32; cout * k];
    let a = MatRef { data: grad, rows: cout, cols: g.n * p, rs: p, cs: 1 };
    let a_cols = Columns { per: p.max(1), b_stride: cout * p, c_stride: 0 };
    sgemm_conv_t(a, a_cols, ConvRhs { x, g: *g, out: g.out()? }, &mut gw, k);
    Ok(gw)
}

/// The weight gradient through buffers (CPUs without a blocked kernel): the columns [C·taps, N·P] (for
/// 1×1×1 stride 1, x with images side by side) and grad as [N·P, C_out], one product
/// grad_wᵀ = cols · gradᵀ with both operands read along rows, then transposed.
fn grad_weight_by_columns(x: &[f32], grad: &[f32], cout: usize, g: &Geometry3d) -> Result<Vec<f32>> {
    let p = positions(g)?;
    let (k, np) = (g.c * g.taps(), g.n * p);
    let cols = if is_direct(g) {
        let mut cols = zeros_par(k * np);
        par_planes(&mut cols, np, |c, row| {
            for n in 0..g.n {
                row[n * p..][..p].copy_from_slice(&x[(n * g.c + c) * p..][..p]);
            }
        });
        cols
    } else {
        vol2col(x, g)?
    };
    let mut grad_t = zeros_par(np * cout);
    par_planes(&mut grad_t, p * cout, |n, dst| transpose(&grad[n * cout * p..][..cout * p], cout, p, dst));
    let mut gw_t = vec![0f32; k * cout];
    let a = MatRef::row_major(&cols, k, np);
    let b = MatRef::row_major(&grad_t, np, cout);
    sgemm(a, b, &mut gw_t, cout, false, Epilogue::default());
    let mut gw = vec![0f32; cout * k];
    transpose(&gw_t, k, cout, &mut gw);
    Ok(gw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gemm::with_isa;
    use crate::rng::Rng;

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
    }

    #[test]
    fn implicit_weight_gradient_equals_the_column_route() {
        let kernels: Vec<_> = crate::nn::gemm::Isa::paths().into_iter().flatten().collect();
        if kernels.is_empty() {
            eprintln!("skipped: the implicit weight gradient needs a blocked kernel (AVX2 or AVX-512)");
            return;
        }
        eprintln!("kernels: {kernels:?}");
        let mut rng = Rng::new(11);
        // (n, c, cout, input, kernel, stride, pad, dilation): ResNet's 3×3, its strided 3×3 and
        // 1×1 shortcut, the 7×7 stem, 1×1 (whole-plane runs), temporal and dilated 3D kernels,
        // channel counts off the 12-row and 32-column panels, positions over several K blocks
        // that cross images.
        type Case = (usize, usize, usize, [usize; 3], [usize; 3], [usize; 3], [usize; 3], [usize; 3]);
        let cases: [Case; 9] = [
            (3, 5, 13, [1, 17, 19], [1, 3, 3], [1; 3], [0, 1, 1], [1; 3]),
            (2, 6, 7, [1, 15, 16], [1, 3, 3], [1, 2, 2], [0, 1, 1], [1; 3]),
            (2, 9, 14, [1, 14, 13], [1, 1, 1], [1, 2, 2], [0; 3], [1; 3]),
            (2, 3, 5, [1, 23, 22], [1, 7, 7], [1, 2, 2], [0, 3, 3], [1; 3]),
            (3, 37, 25, [1, 9, 11], [1, 1, 1], [1; 3], [0; 3], [1; 3]),
            (2, 4, 6, [5, 7, 6], [3, 1, 1], [1; 3], [1, 0, 0], [1; 3]),
            (2, 3, 4, [6, 8, 9], [3, 3, 3], [2, 1, 2], [1, 2, 1], [1, 2, 1]),
            (1, 2, 3, [4, 5, 5], [2, 3, 3], [1, 1, 1], [0, 3, 3], [1; 3]),
            (4, 3, 2, [1, 1, 1], [1, 1, 1], [1; 3], [0; 3], [1; 3]),
        ];
        for (n, c, cout, input, kernel, stride, pad, dilation) in cases {
            let g = Geometry3d { n, c, input, kernel, stride, pad, dilation };
            let x = random(n * c * g.in_volume(), &mut rng);
            let grad = random(n * cout * positions(&g).unwrap(), &mut rng);
            let want = grad_weight_by_columns(&x, &grad, cout, &g).unwrap();
            for &isa in &kernels {
                let got = with_isa(Some(isa), || grad_weight_implicit(&x, &grad, cout, &g)).unwrap();
                assert_eq!(got.len(), want.len());
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    scale > 0.0 && diff <= 1e-5 * scale,
                    "{isa:?} {g:?}: differs by {diff} (max {scale})"
                );
            }
        }
    }

    #[test]
    fn stride_one_input_gradient_as_a_convolution_equals_the_column_route() {
        let mut rng = Rng::new(7);
        // (c, cout, input, kernel, pad, dilation)
        let cases: [(usize, usize, [usize; 3], [usize; 3], [usize; 3], [usize; 3]); 7] = [
            (5, 7, [1, 9, 11], [1, 3, 3], [0, 1, 1], [1, 1, 1]),
            (3, 4, [5, 6, 7], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
            (4, 6, [7, 5, 4], [3, 1, 1], [1, 0, 0], [1, 1, 1]),
            (2, 3, [1, 8, 8], [1, 3, 3], [0, 0, 0], [1, 1, 1]),
            (4, 8, [5, 8, 9], [2, 3, 3], [1, 2, 0], [2, 2, 3]),
            (3, 5, [1, 12, 10], [1, 7, 5], [0, 3, 1], [1, 1, 1]),
            (40, 3, [1, 6, 33], [1, 3, 3], [0, 1, 1], [1, 1, 1]),
        ];
        for (c, cout, input, kernel, pad, dilation) in cases {
            let g = Geometry3d { n: 2, c, input, kernel, stride: [1; 3], pad, dilation };
            let tg = transposed_geometry(&g, cout).expect("stride 1 with padding inside the kernel");
            let w = random(cout * c * g.taps(), &mut rng);
            let grad = random(g.n * cout * positions(&g).unwrap(), &mut rng);
            let want = grad_input_by_columns(&w, &grad, cout, &g).unwrap();
            let got = grad_input_transposed(&w, &grad, cout, &g, tg);
            assert_eq!(got.len(), want.len());
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5 * scale, "{g:?}: differs by {diff} (max {scale})");
        }
        // Strided, or padded beyond the kernel's reach: the column route.
        let strided = Geometry3d {
            n: 1,
            c: 2,
            input: [1, 8, 8],
            kernel: [1, 3, 3],
            stride: [1, 2, 2],
            pad: [0, 1, 1],
            dilation: [1; 3],
        };
        assert!(transposed_geometry(&strided, 4).is_none());
        let wide = Geometry3d { stride: [1; 3], pad: [0, 3, 3], ..strided };
        assert!(transposed_geometry(&wide, 4).is_none());
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// `cargo test -p vidkit --lib conv_rates -- --ignored --nocapture`: GFLOP/s of the forward,
    /// input gradient and weight gradient of ResNet-50 layer shapes over 16 frames.
    #[test]
    #[ignore]
    fn conv_rates() {
        crate::nn::retain_freed_buffers();
        for &(c, cout, k, hw, s) in &[
            (64, 64, 3, 56, 1),
            (64, 256, 1, 56, 1),
            (256, 64, 1, 56, 1),
            (128, 128, 3, 28, 1),
            (256, 256, 3, 14, 1),
            (1024, 256, 1, 14, 1),
            (512, 512, 3, 7, 1),
            (128, 128, 3, 56, 2),
        ] {
            let g = Geometry3d {
                n: 16,
                c,
                input: [1, hw, hw],
                kernel: [1, k, k],
                stride: [1, s, s],
                pad: [0, k / 2, k / 2],
                dilation: [1; 3],
            };
            let x = vec![0.5f32; g.n * c * g.in_volume()];
            let w = vec![0.25f32; cout * c * k * k];
            let p = positions(&g).unwrap();
            let dy = vec![0.125f32; g.n * cout * p];
            let flops = 2.0 * (g.n * p * cout * c * k * k) as f64;
            let time = |f: &dyn Fn()| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..3 {
                    f();
                }
                flops * 3.0 / t.elapsed().as_secs_f64() / 1e9
            };
            let fwd = time(&|| drop(conv_forward(&x, &w, cout, &g).unwrap()));
            let gi = time(&|| {
                drop(match transposed_geometry(&g, cout) {
                    Some(tg) => grad_input_transposed(&w, &dy, cout, &g, tg),
                    None => grad_input_by_columns(&w, &dy, cout, &g).unwrap(),
                })
            });
            let gw = time(&|| {
                drop(match blocked_isa() {
                    Some(_) => grad_weight_implicit(&x, &dy, cout, &g),
                    None => grad_weight_by_columns(&x, &dy, cout, &g),
                })
            });
            eprintln!("{c}->{cout} k{k} {hw}² s{s}: forward {fwd:.0}, grad input {gi:.0}, grad weight {gw:.0} GFLOP/s");
        }
    }
}
