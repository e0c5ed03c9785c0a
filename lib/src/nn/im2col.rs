//! im2col / col2im as candle custom ops over contiguous CPU buffers: the unfolding that turns a
//! convolution into one matrix product, each the other's backward. candle's strided copies of
//! nine shifted views cost ~3× the GEMM itself; these loops copy whole rows instead.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Geometry of a square-kernel 2D convolution over [N, C, H, W].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geometry {
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.pad - self.k) / self.stride + 1,
            (self.w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }
}

/// For output column `ox` and tap `kx`: the input column, or None in the padding.
#[inline]
fn src(o: usize, kk: usize, stride: usize, pad: usize, len: usize) -> Option<usize> {
    let i = (o * stride + kk) as isize - pad as isize;
    (i >= 0 && (i as usize) < len).then_some(i as usize)
}

/// x [N, C, H, W] → cols [C·k·k, N·Ho·Wo]: rows ordered (c, ky, kx) like a PyTorch weight,
/// columns (n, oy, ox), so the whole batch is one matrix product with the weight.
fn im2col(x: &[f32], g: Geometry) -> Vec<f32> {
    let (oh, ow) = g.out_hw();
    let plane_out = oh * ow;
    let mut cols = super::vol2col::zeros_par(g.c * g.k * g.k * g.n * plane_out);
    for n in 0..g.n {
        for c in 0..g.c {
            let plane = &x[(n * g.c + c) * g.h * g.w..][..g.h * g.w];
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let row = (c * g.k + ky) * g.k + kx;
                    let dst = &mut cols[(row * g.n + n) * plane_out..][..plane_out];
                    // The range of output columns whose input column is inside the image.
                    let ox_lo = (0..ow).find(|&o| src(o, kx, g.stride, g.pad, g.w).is_some());
                    let Some(ox_lo) = ox_lo else { continue };
                    let ox_hi =
                        (0..ow).rev().find(|&o| src(o, kx, g.stride, g.pad, g.w).is_some()).unwrap_or(ox_lo);
                    for oy in 0..oh {
                        let Some(iy) = src(oy, ky, g.stride, g.pad, g.h) else { continue };
                        let srow = &plane[iy * g.w..][..g.w];
                        let drow = &mut dst[oy * ow..][..ow];
                        let ix0 = ox_lo * g.stride + kx - g.pad;
                        if g.stride == 1 {
                            drow[ox_lo..=ox_hi].copy_from_slice(&srow[ix0..ix0 + (ox_hi - ox_lo + 1)]);
                        } else {
                            for (j, o) in (ox_lo..=ox_hi).enumerate() {
                                drow[o] = srow[ix0 + j * g.stride];
                            }
                        }
                    }
                }
            }
        }
    }
    cols
}

/// The adjoint of `im2col`: sums every column entry back onto the pixel it came from.
fn col2im(cols: &[f32], g: Geometry) -> Vec<f32> {
    let (oh, ow) = g.out_hw();
    let plane_out = oh * ow;
    let mut x = super::vol2col::zeros_par(g.n * g.c * g.h * g.w);
    for n in 0..g.n {
        for c in 0..g.c {
            let plane = &mut x[(n * g.c + c) * g.h * g.w..][..g.h * g.w];
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let row = (c * g.k + ky) * g.k + kx;
                    let srcrow = &cols[(row * g.n + n) * plane_out..][..plane_out];
                    for oy in 0..oh {
                        let Some(iy) = src(oy, ky, g.stride, g.pad, g.h) else { continue };
                        let prow = &mut plane[iy * g.w..][..g.w];
                        let crow = &srcrow[oy * ow..][..ow];
                        for ox in 0..ow {
                            if let Some(ix) = src(ox, kx, g.stride, g.pad, g.w) {
                                prow[ix] += crow[ox];
                            }
                        }
                    }
                }
            }
        }
    }
    x
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("im2col/col2im need contiguous input"),
    }
}

pub struct Im2col(pub Geometry);
pub struct Col2im(pub Geometry);

impl CustomOp1 for Im2col {
    fn name(&self) -> &'static str {
        "vidkit-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let g = self.0;
        let (oh, ow) = g.out_hw();
        let cols = im2col(f32_slice(storage, layout)?, g);
        Ok((CpuStorage::F32(cols), Shape::from((g.c * g.k * g.k, g.n * oh * ow))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Col2im(self.0))?))
    }
}

impl CustomOp1 for Col2im {
    fn name(&self) -> &'static str {
        "vidkit-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let g = self.0;
        let x = col2im(f32_slice(storage, layout)?, g);
        Ok((CpuStorage::F32(x), Shape::from((g.n, g.c, g.h, g.w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Im2col(self.0))?))
    }
}

/// Unfolds `x` [N, C, H, W] (f32) for a k×k convolution: [C·k·k, N·Ho·Wo], differentiable.
pub fn unfold(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let g = Geometry { n, c, h, w, k, stride, pad };
    x.to_dtype(candle_core::DType::F32)?.contiguous()?.apply_op1(Im2col(g))
}
