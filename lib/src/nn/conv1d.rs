//! A 1-D convolution whose backward pass is right: candle 0.11's own `conv1d` computes the
//! forward correctly, but its gradients (through `conv_transpose1d` and a `conv1d` over
//! transposed views) are wrong for more than one channel or sample — measured 8–10 apart from
//! the exact sums on [3, 4, 6] × [5, 4, 3] (`tests::gradients_are_the_exact_sums`) — and its
//! transposed convolution underflows where the padding exceeds one output step. Training paths
//! use this one: the input zero-padded, its k shifted views stacked (unfold), one matrix
//! product per group, a strided convolution as every `stride`-th output of the dense one; all
//! ops whose gradients candle has right.

use candle_core::{Result, Tensor};

/// `x` [B, C, L] with kernel `w` [O, C / groups, k]: [B, O, ⌊(L + 2p − k) / stride⌋ + 1], as
/// torch's `conv1d` (cross-correlation, zero padding, dilation 1).
pub fn conv1d_differentiable(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
    groups: usize,
) -> Result<Tensor> {
    let (b, c, _) = x.dims3()?;
    let (o, cg, k) = w.dims3()?;
    let xp = if padding > 0 { x.pad_with_zeros(2, padding, padding)? } else { x.clone() };
    let l = xp.dim(2)?;
    if l < k {
        candle_core::bail!("conv1d: input of {l} steps (padded) shorter than the kernel's {k}");
    }
    let lo = l - k + 1;
    // cols [B, C, k, lo]: cols[b, c, j, t] = xp[b, c, t + j]
    let views: Vec<Tensor> = (0..k).map(|j| xp.narrow(2, j, lo)).collect::<Result<_>>()?;
    let cols = Tensor::stack(&views, 2)?;
    let og = o / groups;
    // One product per group over all samples' steps: [G, og, cg·k] × [G, cg·k, B·lo].
    let cols = cols.reshape((b, groups, cg * k, lo))?.permute((1, 2, 0, 3))?.contiguous()?.reshape((
        groups,
        cg * k,
        b * lo,
    ))?;
    let wg = w.reshape((groups, og, cg * k))?;
    let y = wg
        .matmul(&cols)?
        .reshape((groups, og, b, lo))?
        .permute((2, 0, 1, 3))?
        .contiguous()?
        .reshape((b, o, lo))?;
    debug_assert_eq!(c, cg * groups);
    if stride == 1 {
        return Ok(y);
    }
    let out = lo.div_ceil(stride);
    let y = y.pad_with_zeros(2, 0, out * stride - lo)?;
    y.reshape((b, o, out, stride))?.narrow(3, 0, 1)?.squeeze(3)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::needless_range_loop)]
    use super::*;
    use candle_core::{Device, Var};

    /// Forward equal to candle's, and the gradients of Σ y ⊙ r with respect to the input and the
    /// kernel equal to the exact sums, grouped and strided included.
    #[test]
    fn gradients_are_the_exact_sums() {
        for (groups, stride, padding) in [(1, 1, 0), (1, 2, 1), (2, 1, 1), (1, 2, 3)] {
            let (b, ci, co, l, k) = (3, 4, 6, 7, 3);
            let x =
                Var::from_tensor(&crate::rng::randn(0f32, 1., (b, ci, l), &Device::Cpu).unwrap()).unwrap();
            let w =
                Var::from_tensor(&crate::rng::randn(0f32, 1., (co, ci / groups, k), &Device::Cpu).unwrap())
                    .unwrap();
            let y = conv1d_differentiable(x.as_tensor(), w.as_tensor(), padding, stride, groups).unwrap();
            let want = x.as_tensor().conv1d(w.as_tensor(), padding, stride, 1, groups).unwrap();
            assert_eq!(y.dims(), want.dims());
            let diff = (&y - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "forward {diff}");
            let lo = y.dim(2).unwrap();
            let r = crate::rng::randn(0f32, 1., y.shape(), &Device::Cpu).unwrap();
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (gx, gw) = (
                g.get(x.as_tensor()).unwrap().to_vec3::<f32>().unwrap(),
                g.get(w.as_tensor()).unwrap().to_vec3::<f32>().unwrap(),
            );
            let (xv, wv, rv) = (
                x.as_tensor().to_vec3::<f32>().unwrap(),
                w.as_tensor().to_vec3::<f32>().unwrap(),
                r.to_vec3::<f32>().unwrap(),
            );
            let (cg, og) = (ci / groups, co / groups);
            let (mut ex, mut ew) = (vec![vec![vec![0f32; l]; ci]; b], vec![vec![vec![0f32; k]; cg]; co]);
            for bb in 0..b {
                for oo in 0..co {
                    let grp = oo / og;
                    for t in 0..lo {
                        for cc in 0..cg {
                            for j in 0..k {
                                let u = (t * stride + j) as isize - padding as isize;
                                if u < 0 || u >= l as isize {
                                    continue;
                                }
                                let c = grp * cg + cc;
                                ex[bb][c][u as usize] += rv[bb][oo][t] * wv[oo][cc][j];
                                ew[oo][cc][j] += rv[bb][oo][t] * xv[bb][c][u as usize];
                            }
                        }
                    }
                }
            }
            let worst = |a: &Vec<Vec<Vec<f32>>>, e: &Vec<Vec<Vec<f32>>>| {
                a.iter()
                    .flatten()
                    .flatten()
                    .zip(e.iter().flatten().flatten())
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max)
            };
            assert!(worst(&gx, &ex) < 1e-4, "{groups} {stride} {padding}: input {}", worst(&gx, &ex));
            assert!(worst(&gw, &ew) < 1e-4, "{groups} {stride} {padding}: kernel {}", worst(&gw, &ew));
        }
    }
}
