//! TSM's temporal shift (Lin et al. 2019), as mmaction2's `TemporalShift.shift`:
//! the first `C / shift_div` channels take the next frame's values (shift left in time), the
//! next `C / shift_div` the previous frame's (shift right), the rest stay; the frames shifted
//! in from outside the clip are zeros. Built from narrow/cat so autograd gives its backward.

use candle_core::{Result, Tensor};

/// `x`: [N × T, C, H, W] with T = `segments` consecutive frames per clip.
pub fn temporal_shift(x: &Tensor, segments: usize, shift_div: usize) -> Result<Tensor> {
    let (nt, c, h, w) = x.dims4()?;
    if segments <= 1 || nt % segments != 0 {
        candle_core::bail!("temporal_shift: batch {nt} is not a multiple of {segments} segments");
    }
    let fold = c / shift_div;
    if fold == 0 {
        return Ok(x.clone());
    }
    let n = nt / segments;
    let x = x.reshape((n, segments, c, h * w))?;
    let zeros = Tensor::zeros((n, 1, fold, h * w), x.dtype(), x.device())?;
    // out[:, t, :fold] = x[:, t + 1, :fold]
    let left = Tensor::cat(&[&x.narrow(1, 1, segments - 1)?.narrow(2, 0, fold)?, &zeros], 1)?;
    // out[:, t, fold:2fold] = x[:, t - 1, fold:2fold]
    let right = Tensor::cat(&[&zeros, &x.narrow(1, 0, segments - 1)?.narrow(2, fold, fold)?], 1)?;
    let rest = x.narrow(2, 2 * fold, c - 2 * fold)?;
    Tensor::cat(&[&left, &right, &rest], 2)?.reshape((nt, c, h, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn shifts_match_the_reference_by_hand() {
        // N=1, T=3, C=4 (shift_div 4 → fold 1), H=W=1; value = 10 t + c
        let v: Vec<f32> = (0..3).flat_map(|t| (0..4).map(move |c| (10 * t + c) as f32)).collect();
        let x = Tensor::from_vec(v, (3, 4, 1, 1), &Device::Cpu).unwrap();
        let y = temporal_shift(&x, 3, 4).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        #[rustfmt::skip]
        let want = vec![
            10., 0., 2., 3.,   // t0: c0 from t1, c1 from t-1 (zero)
            20., 1., 12., 13., // t1: c0 from t2, c1 from t0
            0., 11., 22., 23., // t2: c0 from t3 (zero), c1 from t1
        ];
        assert_eq!(y, want);
    }

    #[test]
    fn gradient_flows_back_through_the_shift() {
        let x = Var::from_tensor(&Tensor::ones((4, 8, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        let y = temporal_shift(x.as_tensor(), 4, 8).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap();
        // Channel 0 of the first frame feeds nothing (t - 1 = -1 does not exist for shift-left
        // sources: frame 0's channel 0 is never read), so its gradient is 0; the rest is 1 or 0.
        let first = gx
            .narrow(0, 0, 1)
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(first, 0.0);
        let total = gx.sum_all().unwrap().to_scalar::<f32>().unwrap();
        // 4 frames × 8 channels × 4 px = 128, minus the 2 channel-planes dropped at the ends
        assert_eq!(total, 128.0 - 8.0);
    }
}
