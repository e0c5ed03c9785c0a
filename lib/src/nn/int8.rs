//! Post-training int8 quantization of the dense convolutions and Linear layers (issue 24): every
//! inference convolution goes through `fused::conv_bn_act_3d_shifted` and every transformer
//! Linear layer through `transformer::linear`, which ask this module what to do while a closure
//! runs under [`calibrate`] or [`with_int8`] (both numbered together, in call order).
//!
//! - Calibration observes each convolution's input over as many forwards as given (min/max, a
//!   histogram searched for the least L2 error as PyTorch's, or percentiles: `observer.rs`). A
//!   convolution is known by its weight buffer (a loaded model's weights stay put) and numbered
//!   in the order forwards first call them, the same in every process for an architecture.
//! - An int8 run quantizes each convolution's input with its calibrated range (7-bit u8, as
//!   `qgemm` wants), its weights with BatchNorm's scale folded in per output channel (symmetric
//!   s8, done once per plan), multiplies through `qgemm` and adds bias, residual and ReLU in the
//!   epilogue; the output stays f32 (BN's bias and the residual are added at full precision).
//!
//! Each image's columns are packed for the kernel straight from its quantized volume, a group
//! of 4 column-matrix rows at a time (the matrix is never built whole).
//!
//! Not yet: requantized u8 outputs between layers, an AMX kernel.

use super::observer::{RangeMethod, RangeObserver};
use super::qgemm::{
    pack_b_matrix, pack_b_rows, pack_b_transposed, qgemm_packed, ActivationQuant, QEpilogue, QIsa,
    QuantizedMatrix,
};
use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

/// Input ranges of a model's convolutions in call order, as the calibration method chose them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    pub ranges: Vec<(f32, f32)>,
}

/// What calibration records: one observer per convolution, in call order.
#[derive(Clone, Debug)]
pub struct Calibrator {
    method: RangeMethod,
    observers: Vec<RangeObserver>,
}

impl Calibrator {
    pub fn new(method: RangeMethod) -> Self {
        Self { method, observers: vec![] }
    }

    /// The ranges the observers give (a convolution that saw no finite value: 0..0).
    pub fn finish(&self) -> Calibration {
        Calibration { ranges: self.observers.iter().map(|o| o.range().unwrap_or((0.0, 0.0))).collect() }
    }
}

/// What an int8 run uses: the calibration and each convolution's quantized weights, made on first use.
pub struct Int8Plan {
    calibration: Calibration,
    weights: Vec<OnceLock<Arc<QuantizedMatrix>>>,
}

impl Int8Plan {
    pub fn new(calibration: Calibration) -> Arc<Self> {
        let weights = calibration.ranges.iter().map(|_| OnceLock::new()).collect();
        Arc::new(Self { calibration, weights })
    }
}

enum Mode {
    Calibrate(Arc<Mutex<Calibrator>>),
    Run(Arc<Int8Plan>),
}

/// A mode and the convolutions met so far: weight buffer address → number.
struct State {
    mode: Mode,
    seen: std::collections::HashMap<usize, usize>,
}

thread_local! {
    static MODE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs `f` with every convolution's input observed by `calibrator`.
pub fn calibrate<T>(calibrator: &Arc<Mutex<Calibrator>>, f: impl FnOnce() -> T) -> T {
    with_mode(Mode::Calibrate(calibrator.clone()), f)
}

/// Runs `f` with the convolutions in int8 as `plan` says.
pub fn with_int8<T>(plan: &Arc<Int8Plan>, f: impl FnOnce() -> T) -> T {
    with_mode(Mode::Run(plan.clone()), f)
}

fn with_mode<T>(mode: Mode, f: impl FnOnce() -> T) -> T {
    /// Restores the previous mode when dropped, also when `f` panics.
    struct Restore(Option<State>);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.with(|m| *m.borrow_mut() = self.0.take());
        }
    }
    let state = State { mode, seen: Default::default() };
    let _restore = Restore(MODE.with(|m| m.borrow_mut().replace(state)));
    f()
}

/// Whether calibration or an int8 run is under way on this thread.
pub(super) fn engaged() -> bool {
    MODE.with(|m| m.borrow().is_some())
}

/// Whether the convolutions on this thread run in int8 (then TSM's shift is applied before).
pub(super) fn active() -> bool {
    MODE.with(|m| matches!(m.borrow().as_ref(), Some(State { mode: Mode::Run(_), .. })))
}

/// What the convolution with weights `w` (`own`: its model's own buffer, not a copy) about to
/// run on `x` does: its number and the plan when it runs in int8. Records `x`'s range when
/// calibrating.
pub(super) fn next_conv(
    x: &[f32],
    w: &[f32],
    own: bool,
) -> candle_core::Result<Option<(usize, Arc<Int8Plan>)>> {
    MODE.with(|m| {
        let mut m = m.borrow_mut();
        let Some(State { mode, seen }) = m.as_mut() else { return Ok(None) };
        if !own {
            candle_core::bail!("int8: a convolution whose weights are a strided view is not supported yet")
        }
        let next = seen.len();
        let index = *seen.entry(w.as_ptr() as usize).or_insert(next);
        match mode {
            Mode::Calibrate(cal) => {
                let mut cal = cal.lock().map_err(|_| candle_core::Error::Msg("calibration poisoned".into()))?;
                let method = cal.method;
                if cal.observers.len() <= index {
                    cal.observers.resize(index + 1, RangeObserver::new(method));
                }
                cal.observers[index].observe(x);
                Ok(None)
            }
            Mode::Run(plan) => {
                if index >= plan.calibration.ranges.len() {
                    candle_core::bail!(
                        "int8: convolution {} has no calibrated range (the calibration saw {}): calibrate this model",
                        index + 1,
                        plan.calibration.ranges.len()
                    )
                }
                Ok(Some((index, plan.clone())))
            }
        }
    })
}

/// The int8 convolution of `x` [N, C, T, H, W] over geometry `g` (`direct`: 1×1, stride 1, no
/// padding): x quantized once, its column matrix built in u8 (padding the quantized zero);
/// `w` [C_out, k] with BN's `scale` per row, `bias` and `residual` ([N, C_out, P]) added in f32.
/// Returns [N, C_out, P].
#[allow(clippy::too_many_arguments)]
pub(super) fn conv(
    plan: &Int8Plan,
    index: usize,
    x: &[f32],
    g: &super::vol2col::Geometry3d,
    direct: bool,
    w: &[f32],
    scale: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
) -> candle_core::Result<Vec<f32>> {
    let [ot, oh, ow] = g.out()?;
    let (images, positions) = (g.n, ot * oh * ow);
    let cout = scale.len();
    let k = w.len() / cout.max(1);
    let a = plan.weights[index].get_or_init(|| {
        let folded: Vec<f32> =
            w.chunks(k.max(1)).zip(scale).flat_map(|(row, s)| row.iter().map(move |v| v * s)).collect();
        Arc::new(QuantizedMatrix::quantize(super::gemm::MatRef::row_major(&folded, cout, k)))
    });
    let (aq, xq) = quantized_input(plan, index, a, (cout, k), x)?;
    let len = images * cout * positions;
    if len == 0 {
        return Ok(vec![]);
    }
    let mut out = Vec::with_capacity(len);
    let isa = QIsa::detected();
    let image_len = g.c * g.in_volume();
    let one = super::vol2col::Geometry3d { n: 1, ..*g };
    // Image n's [C_out, P] block.
    let image = |n: usize, o: &mut [std::mem::MaybeUninit<f32>]| {
        PACKED_B.with(|buf| {
            let buf = &mut buf.borrow_mut();
            let x_n = &xq[n * image_len..][..image_len];
            // Image n's columns, packed for the kernel straight from its volume (1×1 stride-1
            // convolutions: the volume is the matrix), padded first with the quantized zero.
            let b = match direct {
                true => pack_b_matrix(x_n, positions, k, positions, buf),
                false => PADDED.with(|padded| {
                    let padded = &mut padded.borrow_mut();
                    super::vol2col::pad_volume(x_n, &one, aq.zero_point, padded);
                    let padded = &**padded;
                    pack_b_rows(k, positions, buf, |row, dst| {
                        super::vol2col::padded_column_row(padded, &one, [ot, oh, ow], row, dst)
                    })
                }),
            };
            let epi = QEpilogue {
                bias: Some(bias),
                residual: residual.map(|r| &r[n * cout * positions..][..cout * positions]),
                relu,
                transposed: false,
            };
            qgemm_packed(isa, a, b, aq, o, positions, epi);
        })
    };
    let blocks = &mut out.spare_capacity_mut()[..len];
    let threads = super::simd::pool_threads();
    // Whole images per thread only where they share out evenly enough.
    if threads > 1 && images >= threads && (images % threads == 0 || images >= 4 * threads) {
        // A batch of images (TSN's and TSM's frames): one image per task, each packed and
        // multiplied on its own thread, rather than every image split over the threads (a fork
        // and join per image and step, and each core's columns read by the other).
        use rayon::prelude::*;
        let per_image = blocks.par_chunks_mut(cout * positions).enumerate();
        per_image.for_each(|(n, o)| super::simd::sequential(|| image(n, o)));
    } else {
        blocks.chunks_mut(cout * positions).enumerate().for_each(|(n, o)| image(n, o));
    }
    // SAFETY: qgemm_packed wrote every value of every image's [C_out, P] block.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// The int8 Linear layer on `x` [rows, k] with weights `w` [out, k] (quantized once per plan,
/// symmetric per output feature) and `bias`: x quantized per tensor, C [out, rows] = W·xᵀ with
/// the bias in the epilogue, written transposed: [rows, out].
pub(super) fn linear(
    plan: &Int8Plan,
    index: usize,
    x: &[f32],
    rows: usize,
    w: &[f32],
    bias: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    let k = x.len() / rows.max(1);
    let out_features = w.len() / k.max(1);
    let a = plan.weights[index].get_or_init(|| {
        Arc::new(QuantizedMatrix::quantize(super::gemm::MatRef::row_major(w, out_features, k)))
    });
    let (aq, xq) = quantized_input(plan, index, a, (out_features, k), x)?;
    let mut y = Vec::with_capacity(rows * out_features);
    PACKED_B.with(|buf| {
        let buf = &mut buf.borrow_mut();
        let b = pack_b_transposed(&xq, k, rows, buf);
        // C [out, rows] written transposed: y [rows, out].
        let epi = QEpilogue { bias, residual: None, relu: false, transposed: true };
        qgemm_packed(
            QIsa::detected(),
            a,
            b,
            aq,
            &mut y.spare_capacity_mut()[..rows * out_features],
            out_features,
            epi,
        );
    });
    // SAFETY: qgemm_packed wrote all rows × out values.
    unsafe { y.set_len(rows * out_features) };
    Ok(y)
}

/// Layer `index`'s input `x` quantized with its calibrated range, once its quantized weights
/// `a` are checked to be `shape` (rows × k).
fn quantized_input(
    plan: &Int8Plan,
    index: usize,
    a: &QuantizedMatrix,
    (rows, k): (usize, usize),
    x: &[f32],
) -> candle_core::Result<(ActivationQuant, Vec<u8>)> {
    if (a.rows(), a.cols()) != (rows, k) {
        candle_core::bail!("int8: layer {} is {rows}×{k}, quantized as {}×{}", index + 1, a.rows(), a.cols())
    }
    let (lo, hi) = plan.calibration.ranges[index];
    let aq = ActivationQuant::from_range(lo, hi);
    Ok((aq, aq.quantize_slice(x)))
}

thread_local! {
    /// The packed columns of the convolution running on this thread, kept between calls.
    static PACKED_B: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Its input image padded with the quantized zero (`vol2col::pad_volume`).
    static PADDED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::vol2col::Geometry3d;
    use crate::nn::BatchNorm2d;
    use candle_core::{Device, Tensor};

    /// A 3×3 convolution with BN, residual and ReLU in int8 stays within a few percent of the
    /// f32 one, calibrated on its own input; a 1×1 one too; an uncalibrated one is refused.
    #[test]
    fn int8_convolutions_follow_the_f32_ones() {
        let dev = Device::Cpu;
        for (kernel, pad) in [(3, 1), (1, 0)] {
            let g = Geometry3d {
                n: 2,
                c: 16,
                input: [1, 12, 12],
                kernel: [1, kernel, kernel],
                stride: [1; 3],
                pad: [0, pad, pad],
                dilation: [1; 3],
            };
            let x = Tensor::randn(0f32, 1., (2, 16, 1, 12, 12), &dev).unwrap().relu().unwrap();
            let w = Tensor::randn(0f32, 0.2, (24, 16, 1, kernel, kernel), &dev).unwrap();
            let vm = candle_nn::VarMap::new();
            let bn =
                BatchNorm2d::new(24, candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev))
                    .unwrap();
            crate::nn::randomise_params(&vm);
            let res = Tensor::randn(0f32, 1., (2, 24, 1, 12, 12), &dev).unwrap();
            let f32_out = crate::nn::conv_bn_act_3d(&x, g, &w, None, &bn, Some(&res), true).unwrap();
            let cal = Arc::new(Mutex::new(Calibrator::new(RangeMethod::MinMax)));
            calibrate(&cal, || crate::nn::conv_bn_act_3d(&x, g, &w, None, &bn, Some(&res), true).unwrap());
            let plan = Int8Plan::new(cal.lock().unwrap().finish());
            let q = with_int8(&plan, || {
                crate::nn::conv_bn_act_3d(&x, g, &w, None, &bn, Some(&res), true).unwrap()
            });
            let diff = (&q - &f32_out).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let range = f32_out.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 0.03 * range, "{kernel}×{kernel}: {diff} against outputs up to {range}");
            let empty = Int8Plan::new(Calibration::default());
            let err = with_int8(&empty, || crate::nn::conv_bn_act_3d(&x, g, &w, None, &bn, None, true))
                .unwrap_err();
            assert!(err.to_string().contains("no calibrated range"), "{err}");
        }
    }

    /// Whole models in int8 (TSM-R50: the shifted 1×1 path and residual epilogues; X3D-XS: 3D
    /// convolutions beside f32 depthwise ones; a small TimeSformer and MViT: the patch embedding
    /// and every Linear layer), calibrated on 4 random clips, run on 4 others: logits within 10 % of
    /// the f32 ones (relative L2) and one layer counted per call.
    #[test]
    fn int8_models_follow_the_f32_ones() {
        use crate::model::{build, frozen, ModelConfig};
        let dev = Device::Cpu;
        // TimeSformer (small): its Linear layers (qkv, projections, MLPs) run in int8 too.
        let small_vit: Vec<String> =
            ["embed_dim=48", "num_heads=2", "depth=3", "patch_size=16", "crop_size=64"]
                .map(String::from)
                .to_vec();
        // MViT (narrow): pooled attention, whose q, k and v projections run apart under int8.
        let small_mvit: Vec<String> =
            ["embed_dim=16", "num_heads=1", "depth=3", "stage_starts=[1]", "crop_size=64"]
                .map(String::from)
                .to_vec();
        for arch in ["tsm_r50", "x3d_xs", "timesformer_vit_b", "mvit_base_16x4"] {
            let mut cfg = ModelConfig::defaults(arch);
            if arch.starts_with("timesformer") {
                cfg.apply_overrides(&small_vit).unwrap();
            }
            if arch.starts_with("mvit") {
                cfg.apply_overrides(&small_mvit).unwrap();
            }
            cfg.frames = 4;
            cfg.num_classes = 10;
            let vm = candle_nn::VarMap::new();
            let model =
                build(&cfg, candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev)).unwrap();
            crate::model::init_weights_for(&vm, arch, 1).unwrap();
            let model = frozen(&vm, model.config()).unwrap();
            let clip = |seed: u64| {
                let mut rng = crate::rng::Rng::new(seed);
                let v: Vec<f32> = (0..4 * 3 * 64 * 64).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect();
                Tensor::from_vec(v, (1, 4, 3, 64, 64), &dev).unwrap()
            };
            let cal = Arc::new(Mutex::new(Calibrator::new(RangeMethod::Histogram)));
            for seed in 0..4 {
                calibrate(&cal, || model.forward_t(&clip(seed), false).unwrap());
            }
            let calibration = cal.lock().unwrap().finish();
            assert!(calibration.ranges.len() > 10, "{arch}: {} convolutions", calibration.ranges.len());
            let plan = Int8Plan::new(calibration);
            let (mut err, mut norm) = (0f64, 0f64);
            for seed in 10..14 {
                let x = clip(seed);
                let f = model.forward_t(&x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let q = with_int8(&plan, || model.forward_t(&x, false).unwrap());
                let q = q.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                err += f.iter().zip(&q).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
                norm += f.iter().map(|a| (*a as f64).powi(2)).sum::<f64>();
            }
            let rel = (err / norm).sqrt();
            println!("{arch}: int8 logits' relative L2 error {rel:.4} ({} layers)", plan.weights.len());
            assert!(rel < 0.1, "{arch}: relative error {rel}");
        }
    }
}
