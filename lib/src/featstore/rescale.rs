//! Resampling a video's feature sequence to a fixed number of steps, as temporal localizers
//! take it (BMN and BSN: 100): MMAction2's `tools/data/activitynet/activitynet_feature_postprocessing.py`,
//! `pool_feature(data, num_proposals, num_sample_bins=3, pool_type='mean')`.

use anyhow::{bail, Result};
use ndarray::{Array2, ArrayView2};

/// How the sample points of one step are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPool {
    Mean,
    Max,
}

/// `pool_feature`: `data` [T, C] to [steps, C]. A single row is repeated. Otherwise the rows
/// are a piecewise-linear function of the row number (`scipy.interpolate.interp1d`, linear) on
/// [eps, T - 1 - eps] with eps = 1e-4; step k samples it at `ptr + i / bins * anchor` for
/// i < bins, where `anchor = (T - 1 - 2 eps) / steps` and `ptr` starts at eps and grows by
/// `anchor` each step (accumulated, as the reference does), then pools the samples.
/// Computed in f64 as the reference's float64 result is; returned as f32.
pub fn pool_steps(data: ArrayView2<f32>, steps: usize, bins: usize, pool: StepPool) -> Result<Array2<f32>> {
    let (t, c) = data.dim();
    if t == 0 {
        bail!("no feature rows to rescale");
    }
    if steps == 0 || bins == 0 {
        bail!("rescaling needs at least one step and one sample per step");
    }
    if t == 1 {
        return Ok(Array2::from_shape_fn((steps, c), |(_, j)| data[[0, j]]));
    }
    const EPS: f64 = 1e-4;
    let (start, end) = (EPS, (t - 1) as f64 - EPS);
    let anchor = (end - start) / steps as f64;
    let mut ptr = start;
    let mut out = Array2::<f32>::zeros((steps, c));
    let mut acc = vec![0f64; c];
    for k in 0..steps {
        for i in 0..bins {
            let x = ptr + i as f64 / bins as f64 * anchor;
            // interp1d: searchsorted(x_range, x) (left), clipped to [1, T - 1]; lo = hi - 1.
            let hi = (x.ceil().max(0.0) as usize).clamp(1, t - 1);
            let lo = hi - 1;
            let dx = x - lo as f64;
            for j in 0..c {
                // float32 rows: their difference is taken in float32, the rest in float64.
                let slope = (data[[hi, j]] - data[[lo, j]]) as f64;
                let y = slope * dx + data[[lo, j]] as f64;
                acc[j] = match (pool, i) {
                    (_, 0) => y,
                    (StepPool::Mean, _) => acc[j] + y,
                    (StepPool::Max, _) => acc[j].max(y),
                };
            }
        }
        for j in 0..c {
            out[[k, j]] = match pool {
                StepPool::Mean => (acc[j] / bins as f64) as f32,
                StepPool::Max => acc[j] as f32,
            };
        }
        ptr += anchor;
    }
    Ok(out)
}

/// Row times [T, 2] of the rescaled sequence: `steps` equal shares of the span the original
/// rows cover (first start to last end).
pub fn step_times(times: ArrayView2<f64>, steps: usize) -> Array2<f64> {
    let t = times.nrows();
    let (a, b) = (times[[0, 0]], times[[t - 1, 1]]);
    let share = (b - a) / steps as f64;
    Array2::from_shape_fn((steps, 2), |(k, e)| a + (k + e) as f64 * share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_row_repeats_and_a_line_stays_a_line() {
        let one = Array2::from_shape_vec((1, 2), vec![1.5f32, -2.0]).unwrap();
        let r = pool_steps(one.view(), 4, 3, StepPool::Mean).unwrap();
        assert_eq!(r.dim(), (4, 2));
        assert!(r.rows().into_iter().all(|row| row.to_vec() == vec![1.5, -2.0]));
        // rows 0..T-1 of value = row number: step k's mean is the mean of its sample points
        let t = 11;
        let line = Array2::from_shape_fn((t, 1), |(i, _)| i as f32);
        let r = pool_steps(line.view(), 5, 3, StepPool::Mean).unwrap();
        let anchor = (10.0 - 2e-4) / 5.0;
        for k in 0..5 {
            let ptr = 1e-4 + k as f64 * anchor;
            let want = (0..3).map(|i| ptr + i as f64 / 3.0 * anchor).sum::<f64>() / 3.0;
            assert!((r[[k, 0]] as f64 - want).abs() < 1e-5, "{k}: {} vs {want}", r[[k, 0]]);
        }
        let r = pool_steps(line.view(), 5, 3, StepPool::Max).unwrap();
        assert!((r[[4, 0]] as f64 - (1e-4 + 4.0 * anchor + 2.0 / 3.0 * anchor)).abs() < 1e-5);
        assert!(pool_steps(Array2::<f32>::zeros((0, 3)).view(), 5, 3, StepPool::Mean).is_err());
    }

    #[test]
    fn step_times_share_the_span() {
        let times = Array2::from_shape_vec((3, 2), vec![1.0, 2.0, 2.0, 3.0, 3.0, 5.0]).unwrap();
        let s = step_times(times.view(), 4);
        assert_eq!(s.row(0).to_vec(), vec![1.0, 2.0]);
        assert_eq!(s.row(3).to_vec(), vec![4.0, 5.0]);
    }
}
