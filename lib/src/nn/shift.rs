//! TSM's temporal shift (Lin et al. 2019) in its two reference forms. Both move one band of
//! channels one frame forward in time and another band one frame back, filling the frames
//! shifted in from outside the clip with zeros; they differ in which band goes which way:
//! * mmaction2's `TemporalShift.shift`: the first `C / shift_div` channels take the next frame's
//!   values, the next `C / shift_div` the previous frame's;
//! * Paddle's `temporal_shift` op (paddle/phi/kernels/cpu/temporal_shift_kernel.cc, used by
//!   PaddleVideo's PP-TSM): channels below `c1 = int(C * shift_ratio)` take the previous frame's
//!   values, those from `c1` to `c2 = int(2 C * shift_ratio)` the next frame's.
//!
//! On the CPU one pass copies each band from its source frame, frames spread over the threads (a
//! custom op whose backward is the opposite shift); elsewhere narrow/cat, whose backward autograd gives.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

/// Where a band of channels takes its values from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    Next,
    Previous,
    Same,
}

/// `x` [N × T, C, H, W] with each band (first channel, channel count, source) shifted; the
/// bands cover the channels in order.
fn shift_bands(x: &Tensor, segments: usize, bands: &[(usize, usize, From)]) -> Result<Tensor> {
    let nt = x.dims4()?.0;
    if segments <= 1 || nt % segments != 0 {
        candle_core::bail!("temporal_shift: batch {nt} is not a multiple of {segments} segments");
    }
    if super::fusable(x) {
        return x.contiguous()?.apply_op1(ShiftOp(FrameShift { segments, bands: bands.to_vec() }));
    }
    shift_bands_cat(x, segments, bands)
}

/// `shift_bands` from candle's narrow and cat (any device and dtype).
fn shift_bands_cat(x: &Tensor, segments: usize, bands: &[(usize, usize, From)]) -> Result<Tensor> {
    let (nt, c, h, w) = x.dims4()?;
    let n = nt / segments;
    let x = x.reshape((n, segments, c, h * w))?;
    let mut parts = Vec::new();
    for &(start, len, from) in bands.iter().filter(|b| b.1 > 0) {
        let band = x.narrow(2, start, len)?;
        let zeros = || Tensor::zeros((n, 1, len, h * w), x.dtype(), x.device());
        parts.push(match from {
            From::Next => Tensor::cat(&[&band.narrow(1, 1, segments - 1)?, &zeros()?], 1)?,
            From::Previous => Tensor::cat(&[&zeros()?, &band.narrow(1, 0, segments - 1)?], 1)?,
            From::Same => band,
        });
    }
    Tensor::cat(&parts, 2)?.reshape((nt, c, h, w))
}

/// A temporal shift as data: clips of `segments` frames, and the bands of channels with where
/// each takes its values from. The CPU op below, and the training conv that takes its input
/// shifted (`conv_bn_train`, so the shifted copy is no graph node of its own).
#[derive(Clone, Debug)]
pub(super) struct FrameShift {
    segments: usize,
    bands: Vec<(usize, usize, From)>,
}

impl FrameShift {
    /// mmaction2's `TemporalShift.shift` of `c` channels.
    pub(super) fn mmaction(c: usize, segments: usize, shift_div: usize) -> Self {
        let fold = c / shift_div.max(1);
        FrameShift {
            segments,
            bands: vec![
                (0, fold, From::Next),
                (fold, fold, From::Previous),
                (2 * fold, c - 2 * fold, From::Same),
            ],
        }
    }

    /// (segments, per channel the frame offset it reads: +1 from the next, −1 from the previous).
    pub(super) fn deltas(&self) -> (usize, Vec<i8>) {
        let mut d = Vec::new();
        for &(_, len, from) in &self.bands {
            d.extend(std::iter::repeat_n(
                match from {
                    From::Next => 1,
                    From::Previous => -1,
                    From::Same => 0,
                },
                len,
            ));
        }
        (self.segments, d)
    }

    /// The same shift over channels taken `size` at a time (an int8 input in channel groups of
    /// 4: each group one channel of `size` times the plane), where every band is whole groups.
    pub(super) fn grouped(&self, size: usize) -> Option<Self> {
        self.bands.iter().all(|&(s, l, _)| s % size == 0 && l % size == 0).then(|| FrameShift {
            segments: self.segments,
            bands: self.bands.iter().map(|&(s, l, f)| (s / size, l / size, f)).collect(),
        })
    }

    /// The adjoint: each band moves back the way it came.
    pub(super) fn reversed(&self) -> Self {
        let back = |from| match from {
            From::Next => From::Previous,
            From::Previous => From::Next,
            From::Same => From::Same,
        };
        FrameShift {
            segments: self.segments,
            bands: self.bands.iter().map(|&(s, l, f)| (s, l, back(f))).collect(),
        }
    }

    /// The shifted copy of `x`, contiguous [frames, c, plane] f32 (frames a multiple of the
    /// segments); errors when it is not, or when the bands do not tile the c channels.
    pub(super) fn apply(&self, x: &[f32], frames: usize, c: usize, plane: usize) -> Result<Vec<f32>> {
        self.apply_with(x, frames, c, plane, 0.0)
    }

    /// `apply` of any values, `zero` filling the frames shifted in from outside the clip (an
    /// int8 input's zero point: then the shifted copy of the quantized input is the quantized
    /// shifted input, byte for byte).
    pub(super) fn apply_with<T: Copy + Send + Sync>(
        &self,
        x: &[T],
        frames: usize,
        c: usize,
        plane: usize,
        zero: T,
    ) -> Result<Vec<T>> {
        let frame = c * plane;
        self.check(x.len(), frames, c, plane)?;
        if frame == 0 {
            return Ok(Vec::new());
        }
        let copy_frame = |_: &mut (), f: usize, dst: &mut [MaybeUninit<T>]| {
            let t = f % self.segments;
            for &(start, len, from) in &self.bands {
                let src_frame = match from {
                    From::Same => Some(f),
                    From::Next => (t + 1 < self.segments).then_some(f + 1),
                    From::Previous => (t > 0).then(|| f - 1),
                };
                let range = start * plane..(start + len) * plane;
                match src_frame {
                    Some(sf) => {
                        for (d, v) in dst[range.clone()].iter_mut().zip(&x[sf * frame..][range]) {
                            d.write(*v);
                        }
                    }
                    // Frames shifted in from outside the clip are zeros.
                    None => dst[range].fill(MaybeUninit::new(zero)),
                }
            }
        };
        // SAFETY: the bands tile the channels (checked above), so each frame is written whole.
        Ok(unsafe { super::vol2col::par_planes_uninit(x.len(), frame, || (), copy_frame) })
    }
}

impl FrameShift {
    /// An error unless `len` values are `frames` frames (whole clips) of `c` × `plane` and the
    /// bands tile the c channels (so every output value is written).
    fn check(&self, len: usize, frames: usize, c: usize, plane: usize) -> Result<()> {
        if self.segments <= 1 || frames % self.segments != 0 || len != frames * c * plane {
            candle_core::bail!(
                "temporal_shift: {len} values are not {frames} frames of {c} × {plane} in clips of {}",
                self.segments
            )
        }
        let mut next = 0;
        for &(start, len, _) in &self.bands {
            if start != next {
                candle_core::bail!("temporal_shift: bands {:?} do not tile {c} channels", self.bands)
            }
            next += len;
        }
        if next != c {
            candle_core::bail!("temporal_shift: bands {:?} do not tile {c} channels", self.bands)
        }
        Ok(())
    }

    /// `apply_with` of `x` laid out frames inside channels, [c, frames, plane] (an int8 run's
    /// frames as time, `int8::frames_as_time`), into the same layout; channels in parallel.
    pub(super) fn apply_frames_inside<T: Copy + Send + Sync>(
        &self,
        x: &[T],
        frames: usize,
        c: usize,
        plane: usize,
        zero: T,
    ) -> Result<Vec<T>> {
        use rayon::prelude::*;
        self.check(x.len(), frames, c, plane)?;
        let mut out = vec![zero; x.len()];
        if out.is_empty() {
            return Ok(out);
        }
        let from: Vec<From> =
            self.bands.iter().flat_map(|&(_, len, f)| std::iter::repeat_n(f, len)).collect();
        out.par_chunks_mut(frames * plane).zip(x.par_chunks(frames * plane)).zip(&from).for_each(
            |((dst, src), from)| {
                for (f, d) in dst.chunks_exact_mut(plane).enumerate() {
                    let t = f % self.segments;
                    let src_frame = match from {
                        From::Same => Some(f),
                        From::Next => (t + 1 < self.segments).then_some(f + 1),
                        From::Previous => (t > 0).then(|| f - 1),
                    };
                    // Frames shifted in from outside the clip stay zeros.
                    if let Some(sf) = src_frame {
                        d.copy_from_slice(&src[sf * plane..][..plane]);
                    }
                }
            },
        );
        Ok(out)
    }
}

/// The one-pass shift of [N × T, C, H, W] f32 (contiguous).
pub(super) struct ShiftOp(pub(super) FrameShift);

impl CustomOp1 for ShiftOp {
    fn name(&self) -> &'static str {
        "vidkit-temporal-shift"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let (nt, c, h, w) = layout.shape().dims4()?;
        let Some((lo, hi)) = layout.contiguous_offsets() else {
            candle_core::bail!("temporal_shift: not contiguous")
        };
        let out = self.0.apply(&storage.as_slice::<f32>()?[lo..hi], nt, c, h * w)?;
        Ok((CpuStorage::F32(out), Shape::from((nt, c, h, w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(ShiftOp(self.0.reversed()))?))
    }
}

/// mmaction2's shift. `x`: [N × T, C, H, W] with T = `segments` consecutive frames per clip.
pub fn temporal_shift(x: &Tensor, segments: usize, shift_div: usize) -> Result<Tensor> {
    shift_bands(x, segments, &FrameShift::mmaction(x.dim(1)?, segments, shift_div).bands)
}

/// Paddle's `temporal_shift(x, seg_num, shift_ratio)` (NCHW). The band edges are computed in
/// float32 and truncated, as the kernel does.
pub fn temporal_shift_paddle(x: &Tensor, segments: usize, shift_ratio: f32) -> Result<Tensor> {
    let c = x.dim(1)?;
    let c1 = ((c as f32 * shift_ratio) as usize).min(c);
    let c2 = (((2 * c) as f32 * shift_ratio) as usize).clamp(c1, c);
    shift_bands(x, segments, &[(0, c1, From::Previous), (c1, c2 - c1, From::Next), (c2, c - c2, From::Same)])
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
    fn paddle_shift_moves_the_bands_the_other_way() {
        // N=1, T=3, C=4, shift_ratio 1/4 → c1 = 1, c2 = 2; value = 10 t + c + 1
        let v: Vec<f32> = (0..3).flat_map(|t| (0..4).map(move |c| (10 * t + c + 1) as f32)).collect();
        let x = Tensor::from_vec(v, (3, 4, 1, 1), &Device::Cpu).unwrap();
        let y = temporal_shift_paddle(&x, 3, 0.25).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        #[rustfmt::skip]
        let want = vec![
            0., 12., 3., 4.,    // t0: c0 from t-1 (zero), c1 from t1
            1., 22., 13., 14.,  // t1: c0 from t0, c1 from t2
            11., 0., 23., 24.,  // t2: c0 from t1, c1 from t3 (zero)
        ];
        assert_eq!(y, want);
        // 1/3 of 6 channels in float32: c1 = 2, c2 = 4.
        let x = Tensor::ones((3, 6, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = temporal_shift_paddle(&x, 3, 1.0 / 3.0).unwrap();
        let first = y.narrow(0, 0, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(first, vec![0., 0., 1., 1., 1., 1.]);
    }

    /// The one-pass CPU op equals the narrow/cat construction, values and gradients.
    #[test]
    fn cpu_op_matches_narrow_cat() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (6, 10, 3, 2), &dev).unwrap()).unwrap();
        let r = crate::rng::randn(0f32, 1., (6, 10, 3, 2), &dev).unwrap();
        let bands = [(0, 2, From::Next), (2, 3, From::Previous), (5, 5, From::Same)];
        let a = shift_bands(x.as_tensor(), 3, &bands).unwrap();
        let b = shift_bands_cat(x.as_tensor(), 3, &bands).unwrap();
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let ga = (a * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (ga.get(x.as_tensor()).unwrap(), gb.get(x.as_tensor()).unwrap());
        assert_eq!(
            ga.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            gb.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
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
