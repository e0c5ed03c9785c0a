//! MViT's q/k/v pooling for inference, on tokens as they lie: a depthwise Conv3d over the token
//! grid of each [1 + T·H·W, d] sequence (row 0 the cls token, passed through), channels last.
//! The general path transposes each head's tokens to [d, T, H, W] for the convolution and back
//! (two copies of the whole sequence, three times a block: most of a pooling block's time at
//! 16 × 224²); here every output token is Σ over the taps of w[tap] ⊙ x[token + tap], vectors of
//! d channels, and the copies vanish. Zero padding, PyTorch's `Conv3d` window arithmetic. The
//! same walk takes the maximum for MViT's shortcut (`MaxPool3d`, padding ignored).

use super::simd::{dispatch_simd, par_for, DisjointMut};
use super::vol2col::f32_slice;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `acc += w ⊙ x` over one token's channels.
#[inline(always)]
fn fma_row_body(acc: &mut [f32], w: &[f32], x: &[f32]) {
    for ((a, w), x) in acc.iter_mut().zip(w).zip(x) {
        *a += w * x;
    }
}

dispatch_simd!(fma_row, fma_row_body, (acc: &mut [f32], w: &[f32], x: &[f32]));

/// `acc = max(acc, x)` over one token's channels.
#[inline(always)]
fn max_row_body(acc: &mut [f32], x: &[f32]) {
    for (a, x) in acc.iter_mut().zip(x) {
        *a = a.max(*x);
    }
}

dispatch_simd!(max_row, max_row_body, (acc: &mut [f32], x: &[f32]));

struct TokenPool {
    /// Max pooling (the padding never wins, as torch's) instead of the depthwise convolution;
    /// the second operand is then unused.
    max: bool,
    groups: usize,
    grid: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    out: [usize; 3],
    d: usize,
}

impl CustomOp2 for TokenPool {
    fn name(&self) -> &'static str {
        "vidkit-token-pool"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let Self { max, groups, grid: [t, h, w], kernel: [kt, kh, kw], stride, out: [ot, oh, ow], d } = *self;
        let (x, weight) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (n_in, n_out, taps) = (1 + t * h * w, 1 + ot * oh * ow, kt * kh * kw);
        if x.len() != groups * n_in * d || (!max && weight.len() != d * taps) {
            candle_core::bail!("token pool: {} tokens, {} weights", x.len(), weight.len());
        }
        // The weight [d, taps] as [taps, d]: each tap's channel vector contiguous.
        let wt: Vec<f32> = match max {
            true => vec![],
            false => (0..taps * d).map(|i| weight[(i % d) * taps + i / d]).collect(),
        };
        let pad = [kt / 2, kh / 2, kw / 2];
        let mut y = vec![0f32; groups * n_out * d];
        let dst = DisjointMut(y.as_mut_ptr());
        par_for(groups * ot, |task| {
            let (g, to) = (task / ot, task % ot);
            let xg = &x[g * n_in * d..][..n_in * d];
            // SAFETY: task (g, to) writes group g's output tokens of frame `to` (and, for to = 0,
            // its cls row): disjoint ranges.
            let yg = unsafe { std::slice::from_raw_parts_mut(dst.at(g * n_out * d), n_out * d) };
            if to == 0 {
                yg[..d].copy_from_slice(&xg[..d]);
            }
            for yo in 0..oh {
                for xo in 0..ow {
                    let row = 1 + (to * oh + yo) * ow + xo;
                    let acc = &mut yg[row * d..][..d];
                    if max {
                        acc.fill(f32::NEG_INFINITY);
                    }
                    for dt in 0..kt {
                        let Some(ti) = (to * stride[0] + dt).checked_sub(pad[0]).filter(|v| *v < t) else {
                            continue;
                        };
                        for dy in 0..kh {
                            let Some(yi) = (yo * stride[1] + dy).checked_sub(pad[1]).filter(|v| *v < h)
                            else {
                                continue;
                            };
                            for dx in 0..kw {
                                let Some(xi) = (xo * stride[2] + dx).checked_sub(pad[2]).filter(|v| *v < w)
                                else {
                                    continue;
                                };
                                let tap = (dt * kh + dy) * kw + dx;
                                let src = 1 + (ti * h + yi) * w + xi;
                                match max {
                                    true => max_row(acc, &xg[src * d..][..d]),
                                    false => fma_row(acc, &wt[tap * d..][..d], &xg[src * d..][..d]),
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((groups, n_out, d))))
    }
}

/// Depthwise pooling (weight [d, 1, kt, kh, kw], padding kernel / 2) of `x` [.., 1 + T·H·W, d]
/// over the grid `thw`, the first token passed through: [.., 1 + T'·H'·W', d] and the pooled
/// grid. Inference only.
pub(super) fn pool_tokens(
    x: &Tensor,
    weight: &Tensor,
    thw: [usize; 3],
    stride: [usize; 3],
) -> Result<(Tensor, [usize; 3])> {
    let (_, _, kt, kh, kw) = weight.dims5()?;
    run(x, weight, false, thw, [kt, kh, kw], stride)
}

/// Max pooling (padding kernel / 2, never chosen) of `x` [B, 1 + T·H·W, C] over `thw`, the first
/// token passed through, as MViT's shortcut pools. Inference only.
pub fn max_pool_tokens(
    x: &Tensor,
    thw: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
) -> Result<(Tensor, [usize; 3])> {
    run(x, x, true, thw, kernel, stride)
}

fn run(
    x: &Tensor,
    weight: &Tensor,
    max: bool,
    thw: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
) -> Result<(Tensor, [usize; 3])> {
    let rank = x.rank();
    let (n, d) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    let out: Vec<usize> =
        (0..3).map(|a| (thw[a] + 2 * (kernel[a] / 2) - kernel[a]) / stride[a] + 1).collect();
    let out = [out[0], out[1], out[2]];
    let groups = x.elem_count() / (n * d).max(1);
    let op = TokenPool { max, groups, grid: thw, kernel, stride, out, d };
    let y = x.contiguous()?.apply_op2_no_bwd(&weight.contiguous()?, &op)?;
    let mut shape = x.dims()[..rank - 2].to_vec();
    shape.extend([1 + out.iter().product::<usize>(), d]);
    Ok((y.reshape(shape)?, out))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// The shortcut's max pool on tokens equals `max_pool3d` on the transposed grid, the cls
    /// token passed through.
    #[test]
    fn max_pool_on_tokens_equals_max_pool3d() {
        let (thw, c) = ([3, 5, 7], 6);
        let x = crate::rng::randn(0f32, 1., (2, 1 + 105, c), &Device::Cpu).unwrap();
        let (y, grid) = super::max_pool_tokens(&x, thw, [1, 3, 3], [1, 2, 2]).unwrap();
        assert_eq!(grid, [3, 3, 4]);
        let g =
            x.narrow(1, 1, 105).unwrap().reshape((2, 3, 5, 7, c)).unwrap().permute((0, 4, 1, 2, 3)).unwrap();
        let p = crate::nn::max_pool3d(&g.contiguous().unwrap(), [1, 3, 3], [1, 2, 2], [0, 1, 1]).unwrap();
        let want = p.reshape((2, c, 36)).unwrap().transpose(1, 2).unwrap();
        let want = Tensor::cat(&[&x.narrow(1, 0, 1).unwrap(), &want], 1).unwrap();
        let diff = (y - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
    }
}
