//! Activation range observers for int8 calibration (issue 24): what a convolution's inputs
//! looked like over the calibration clips, turned into the range its quantizer covers.
//!
//! - `minmax`: the smallest and largest value seen (PyTorch's `MinMaxObserver`).
//! - `histogram`: PyTorch's `HistogramObserver` (the x86 backend's default for activations,
//!   `torch/ao/quantization/observer.py`): a 2048-bin histogram kept over the running range
//!   (re-binned by 16× upsampling when the range grows), then the range whose 256-level
//!   quantization has the least L2 error, found by its greedy trimming of outliers from either
//!   end (after caffe2's `NormMinimization::NonlinearQuantizationParamsSearch`).
//! - `percentile:P`: the (100 − P)th and Pth percentiles of the same histogram (as TensorRT's
//!   and pytorch-quantization's percentile calibrators, on both ends).

use std::fmt;
use std::str::FromStr;

/// Bins of the histogram (`HistogramObserver`'s default).
const BINS: usize = 2048;
/// Levels of the quantized type the L2 search assumes: 2⁸, as PyTorch's even with
/// `reduce_range`.
const DST_BINS: usize = 256;
/// How finely an old histogram is split when re-binned onto a wider range.
const UPSAMPLE: usize = 16;

/// How calibration turns what it saw into a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    MinMax,
    Histogram,
    /// The percentile of the upper end (the lower end takes 100 − P), in (50, 100].
    Percentile(f64),
}

impl FromStr for RangeMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minmax" => Ok(Self::MinMax),
            "histogram" => Ok(Self::Histogram),
            _ => match s.strip_prefix("percentile:").map(str::parse::<f64>) {
                Some(Ok(p)) if p > 50.0 && p <= 100.0 => Ok(Self::Percentile(p)),
                Some(_) => Err(format!("{s}: the percentile must be a number above 50 and at most 100")),
                None => Err(format!("{s}: not a calibration method (minmax, histogram, percentile:P)")),
            },
        }
    }
}

impl fmt::Display for RangeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MinMax => write!(f, "minmax"),
            Self::Histogram => write!(f, "histogram"),
            Self::Percentile(p) => write!(f, "percentile:{p}"),
        }
    }
}

/// One tensor's values over the calibration runs.
#[derive(Clone, Debug)]
pub struct RangeObserver {
    method: RangeMethod,
    /// The finite values' extremes so far (∞, −∞ before any).
    min: f32,
    max: f32,
    /// Counts over [min, max] in `BINS` equal bins (not for `MinMax`).
    hist: Vec<f32>,
}

impl RangeObserver {
    pub fn new(method: RangeMethod) -> Self {
        Self { method, min: f32::INFINITY, max: f32::NEG_INFINITY, hist: vec![] }
    }

    /// Adds `x`'s finite values (infinities and NaN are left out, as PyTorch leaves out
    /// infinities).
    pub fn observe(&mut self, x: &[f32]) {
        let (lo, hi) = x
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if lo > hi {
            return;
        }
        if self.method == RangeMethod::MinMax {
            (self.min, self.max) = (self.min.min(lo), self.max.max(hi));
            return;
        }
        if self.hist.is_empty() {
            (self.min, self.max) = (lo, hi);
            self.hist = histc(x, lo, hi);
            return;
        }
        let (new_min, new_max) = (self.min.min(lo), self.max.max(hi));
        let update = histc(x, new_min, new_max);
        if (new_min, new_max) != (self.min, self.max) {
            self.hist = self.rebinned(new_min, new_max);
            (self.min, self.max) = (new_min, new_max);
        }
        for (h, u) in self.hist.iter_mut().zip(update) {
            *h += u;
        }
    }

    /// The range to quantize over, by the method; `None` before any finite value.
    pub fn range(&self) -> Option<(f32, f32)> {
        if self.min > self.max {
            return None;
        }
        Some(match self.method {
            RangeMethod::MinMax => (self.min, self.max),
            RangeMethod::Histogram => self.l2_search(),
            RangeMethod::Percentile(p) => self.percentiles(p),
        })
    }

    /// The histogram over [min, max] moved onto the wider [new_min, new_max]
    /// (`_combine_histograms`): one value spreads its whole count into the bin it falls in;
    /// otherwise each bin splits into `UPSAMPLE` equal parts, each counted where its middle
    /// falls.
    fn rebinned(&self, new_min: f32, new_max: f32) -> Vec<f32> {
        if self.min == self.max {
            let total: f32 = self.hist.iter().sum();
            return histc(&[self.min], new_min, new_max).into_iter().map(|c| c * total).collect();
        }
        let fine = BINS * UPSAMPLE;
        let step = (self.max - self.min) / fine as f32;
        let mids = linspace(self.min, self.max, fine + 1);
        let edges = linspace(new_min, new_max, BINS + 1);
        let mut out = vec![0f32; BINS];
        for (i, &m) in mids[..fine].iter().enumerate() {
            let mid = m + 0.5 * step;
            // bucketize(right=True) − 1: the last edge ≤ mid.
            let bin = edges.partition_point(|&e| e <= mid).saturating_sub(1).min(BINS - 1);
            out[bin] += self.hist[i / UPSAMPLE] / UPSAMPLE as f32;
        }
        out
    }

    /// `_non_linear_param_search`: trim the tail (low or high) that the next 10⁻⁵ of the
    /// count removes more bins from, while that lowers the L2 quantization error.
    fn l2_search(&self) -> (f32, f32) {
        let bin_width = (self.max - self.min) / BINS as f32;
        let csum = cumsum(&self.hist);
        let total = csum[BINS - 1] as f64;
        let (mut alpha, mut beta) = (0f64, 1f64);
        let (mut start, mut end) = (0usize, BINS - 1);
        let mut norm_min = f64::INFINITY;
        const STEP: f64 = 1e-5;
        while alpha < beta {
            let (next_alpha, next_beta) = (alpha + STEP, beta - STEP);
            // The first bin from `start` whose cumulative count reaches next_alpha · total, and
            // the last from `end` down whose count stays within next_beta · total (the
            // reference's linear scans, by bisection: the sums never decrease).
            let lo_t = (next_alpha * total) as f32;
            let hi_t = (next_beta * total) as f32;
            let l = csum.partition_point(|&c| c < lo_t).clamp(start, end);
            let r = (csum.partition_point(|&c| c <= hi_t) as isize - 1).clamp(start as isize, end as isize)
                as usize;
            let (mut next_start, mut next_end) = (start, end);
            if l - start > end - r {
                next_start = l;
                alpha = next_alpha;
            } else {
                next_end = r;
                beta = next_beta;
            }
            if (next_start, next_end) == (start, end) {
                continue;
            }
            let norm = self.quantization_error(next_start, next_end);
            if norm > norm_min {
                break;
            }
            norm_min = norm;
            (start, end) = (next_start, next_end);
        }
        (self.min + bin_width * start as f32, self.min + bin_width * (end + 1) as f32)
    }

    /// `_compute_quantization_error`: the L2 error of quantizing the histogram (each bin's
    /// count spread evenly over it) to `DST_BINS` levels over bins start..=end.
    fn quantization_error(&self, start: usize, end: usize) -> f64 {
        let bin_width = (self.max as f64 - self.min as f64) / BINS as f64;
        let dst_width = bin_width * (end - start + 1) as f64 / DST_BINS as f64;
        if dst_width == 0.0 {
            return 0.0;
        }
        // density · ∫ x² dx from a to b.
        let norm = |a: f64, b: f64, density: f64| density * (b * b * b - a * a * a) / 3.0;
        let last = (DST_BINS - 1) as f64;
        let mut sum = 0.0;
        for (i, &count) in self.hist.iter().enumerate() {
            let density = count as f64 / bin_width;
            let begin = (i as f64 - start as f64) * bin_width;
            let end_x = begin + bin_width;
            let dst_begin = (begin / dst_width).floor().clamp(0.0, last);
            let dst_end = (end_x / dst_width).floor().clamp(0.0, last);
            let begin_center = (dst_begin + 0.5) * dst_width;
            let end_center = dst_end * dst_width + dst_width / 2.0;
            sum += norm(begin - begin_center, dst_width / 2.0, density);
            sum += (dst_end - dst_begin - 1.0) * norm(-dst_width / 2.0, dst_width / 2.0, density);
            sum += norm(-dst_width / 2.0, end_x - end_center, density);
        }
        sum
    }

    /// The lower edge of the bin where the cumulative count reaches (100 − p) % and the upper
    /// edge of the one where it reaches p %.
    fn percentiles(&self, p: f64) -> (f32, f32) {
        let bin_width = (self.max - self.min) / BINS as f32;
        let csum = cumsum(&self.hist);
        let total = csum[BINS - 1] as f64;
        let lo = csum.partition_point(|&c| (c as f64) < (1.0 - p / 100.0) * total).min(BINS - 1);
        let hi = csum.partition_point(|&c| (c as f64) < p / 100.0 * total).min(BINS - 1);
        let lo = if p >= 100.0 { 0 } else { lo };
        (self.min + bin_width * lo as f32, self.min + bin_width * (hi + 1) as f32)
    }
}

/// `torch.histc(x, BINS, min, max)`: equal bins over [min, max] (widened by 1 each way when
/// they are equal), bin ⌊(v − min) · BINS / (max − min)⌋ in f32, max itself in the last bin,
/// values outside and non-finite ones left out.
fn histc(x: &[f32], min: f32, max: f32) -> Vec<f32> {
    let (min, max) = if min == max { (min - 1.0, max + 1.0) } else { (min, max) };
    let mut h = vec![0f32; BINS];
    for &v in x {
        if v.is_finite() && v >= min && v <= max {
            let pos = ((v - min) * BINS as f32 / (max - min)) as usize;
            h[pos.min(BINS - 1)] += 1.0;
        }
    }
    h
}

/// `torch.linspace(start, end, steps)` in f32: from the start for the first half, from the end
/// for the rest.
fn linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| if i < half { start + step * i as f32 } else { end - step * (steps - 1 - i) as f32 })
        .collect()
}

fn cumsum(h: &[f32]) -> Vec<f32> {
    h.iter()
        .scan(0f32, |s, &v| {
            *s += v;
            Some(*s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn methods_parse_and_print() {
        for s in ["minmax", "histogram", "percentile:99.99"] {
            assert_eq!(s.parse::<RangeMethod>().unwrap().to_string(), s);
        }
        for bad in ["percentile:20", "percentile:x", "kl", "percentile:101"] {
            assert!(bad.parse::<RangeMethod>().is_err(), "{bad}");
        }
    }

    /// On values with two far outliers the percentile range leaves them out; the L2 search
    /// keeps them, as PyTorch's does (clipping 40 to 3 costs more than the finer steps save;
    /// torch 2.x gives -30..39.9658 on such data); min/max keeps them exactly.
    #[test]
    fn ranges_by_method() {
        let mut rng = Rng::new(4);
        let mut x: Vec<f32> = (0..50_000).map(|_| rng.uniform() as f32 * 4.0 - 1.0).collect();
        x.extend([40.0, -30.0, f32::INFINITY, f32::NAN]);
        let range = |m: RangeMethod| {
            let mut o = RangeObserver::new(m);
            // Two batches, the second wider: the histogram is re-binned once.
            o.observe(&x[..20_000]);
            o.observe(&x[20_000..]);
            o.range().unwrap()
        };
        assert_eq!(range(RangeMethod::MinMax), (-30.0, 40.0));
        let (lo, hi) = range(RangeMethod::Percentile(99.9));
        assert!((-1.2..=-0.9).contains(&lo) && (2.9..=3.5).contains(&hi), "percentile: {lo}..{hi}");
        let (lo, hi) = range(RangeMethod::Histogram);
        assert!(lo == -30.0 && (39.9..40.0).contains(&hi), "histogram: {lo}..{hi}");
        assert_eq!(RangeObserver::new(RangeMethod::Histogram).range(), None);
    }

    /// A constant tensor: its value is the whole range.
    #[test]
    fn a_constant_is_its_own_range() {
        for m in [RangeMethod::MinMax, RangeMethod::Histogram, RangeMethod::Percentile(99.0)] {
            let mut o = RangeObserver::new(m);
            o.observe(&[2.5; 10]);
            let (lo, hi) = o.range().unwrap();
            assert!(lo <= 2.5 && hi >= 2.5 && hi - lo < 0.01, "{m}: {lo}..{hi}");
        }
    }
}
