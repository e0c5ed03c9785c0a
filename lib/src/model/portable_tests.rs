//! The path a GPU takes (candle's ops only, no vidkit CPU kernel: `with_portable_ops`) against
//! the kernels, for every frame-input architecture at a narrow width: inference logits, and in
//! training the loss, every parameter's gradient and the weights after an optimiser step.

use super::*;
use crate::nn::with_portable_ops;
use crate::train::{trainable_vars, OptimizerConfig, SgdConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

/// max |a − b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    diff / scale.max(f32::MIN_POSITIVE)
}

/// `arch` narrow, 5 classes, no dropout or drop path (random masks would differ between the two
/// runs), with its weights drawn from `seed`; and an input clip of the size it takes.
fn model_and_clip(arch: &str, seed: u64) -> (Model, VarMap, Tensor) {
    let mut cfg = narrow_config(arch);
    cfg.num_classes = 5;
    cfg.dropout = 0.0;
    let transformer = VitOptions::for_arch(arch).is_some() || MvitOptions::for_arch(arch).is_some();
    if transformer {
        cfg.apply_overrides(&["drop_path_rate=0".to_string()]).unwrap();
    }
    let varmap = VarMap::new();
    let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    init_weights_for(&varmap, arch, seed).unwrap();
    // Transformers take their crop (their position embedding's grid); the CNNs any size.
    let (h, w) = if transformer { (40, 40) } else { (40, 48) };
    let x = seeded_normal(&[2, cfg.frames, 3, h, w], seed);
    (model, varmap, x)
}

/// A tensor of standard normal values drawn from `seed` (candle's `randn` is unseeded).
fn seeded_normal(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = crate::rng::Rng::new(seed);
    let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

#[test]
fn candle_only_ops_give_the_kernels_logits() {
    let mut failures = Vec::new();
    for arch in archs_for(Task::Recognizer) {
        let (model, _, x) = model_and_clip(arch, 3);
        let kernels = model.forward_t(&x, false).unwrap();
        match with_portable_ops(|| model.forward_t(&x, false)) {
            Ok(candle_only) => {
                let err = rel_err(&candle_only, &kernels);
                eprintln!("{arch}: {err:.2e}");
                if err > 1e-4 {
                    failures.push(format!("{arch}: relative error {err:.2e}"));
                }
            }
            Err(e) => failures.push(format!("{arch}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One training step, as `vtrain` runs it on a GPU: train-mode forward (BatchNorm on batch
/// statistics), L = Σ logits ⊙ R, backward, an SGD step (AdamW's first step is lr · sign(g): a
/// gradient within rounding of 0 would flip it). The candle-only path gives the kernels' logits
/// (1e-3 of the largest), a gradient of the right shape for every parameter, and gradients and
/// weight updates near the kernels': median within 0.2 (measured at most 4.7e-2), each within 1.
///
/// Near, not to rounding, for the deep ones: the two paths sum in different orders, and where a
/// train-mode pre-activation lies within rounding of a ReLU's zero one path passes its gradient
/// and the other not, which moves every earlier layer's gradient. Measured: ResNet-18/34, X3D,
/// MViT and TimeSformer agree to 1e-5; the bottleneck ResNets, SlowFast, CSN, R(2+1)D, StNet and
/// PP-TSMv2 by 3e-3..5e-2 at the median, 0.4 at worst (torch's own float32 gradients of slow_r50
/// are 1e-2 off its float64 ones at the median, 0.13 at worst: `export_train_gradients` in
/// scripts/export_zoo_parity.py). A missing or wrong backward (no gradient, a wrong shape, a
/// zero, another op's) is off by ~1 at the median. The convolutions' and the ReLU's gradients are
/// compared to rounding alone, op by op, in nn::portable's and nn::activation's tests.
#[test]
fn candle_only_ops_train_as_the_kernels() {
    let mut failures = Vec::new();
    for arch in archs_for(Task::Recognizer) {
        match train_step_errors(arch) {
            Ok(e) => {
                let mut sorted: Vec<f32> = e.grads.iter().map(|(_, e)| *e).collect();
                sorted.sort_by(f32::total_cmp);
                let median = sorted[sorted.len() / 2];
                let (worst_name, worst) =
                    e.grads.iter().max_by(|a, b| a.1.total_cmp(&b.1)).cloned().unwrap_or_default();
                let line = format!(
                    "{arch}: logits {:.1e}; {} gradients median {median:.1e}, worst {worst:.1e} ({worst_name}); SGD updates {:.1e}",
                    e.logits,
                    e.grads.len(),
                    e.updates
                );
                eprintln!("{line}");
                if e.logits > 1e-3 || median > 0.2 || worst > 1.0 || e.updates > 1.0 {
                    failures.push(line);
                }
            }
            Err(e) => failures.push(format!("{arch}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// How far the candle-only path's training step lands from the kernels'.
struct StepErrors {
    /// Train-mode logits: max |Δ| / max |logit|.
    logits: f32,
    /// Per parameter: max |Δg| over its largest gradient (or a thousandth of the model's largest
    /// where that is smaller: some gradients are 0 but for rounding, MViT's norm_k.bias, a bias on
    /// every key, which each query's softmax ignores).
    grads: Vec<(String, f32)>,
    /// The largest such error of a parameter's SGD update (new − old weights).
    updates: f32,
}

fn train_step_errors(arch: &str) -> candle_core::Result<StepErrors> {
    let (model, varmap, x) = model_and_clip(arch, 5);
    let r = seeded_normal(&[2, 5], 7);
    let initial: Vec<(String, Tensor)> =
        trainable_vars(&varmap).into_iter().map(|(n, v)| (n, v.as_tensor().copy().unwrap())).collect();
    let sgd =
        OptimizerConfig::Sgd(SgdConfig { lr: 0.01, momentum: 0.9, weight_decay: 1e-4, ..Default::default() });
    // One step from the initial weights: (logits, gradients, updates), in `initial`'s order.
    let step = |portable: bool| -> candle_core::Result<(Tensor, Vec<Tensor>, Vec<Tensor>)> {
        for (name, t) in &initial {
            varmap.data().lock().unwrap()[name].set(t)?;
        }
        let run = || -> candle_core::Result<_> {
            let logits = model.forward_t(&x, true)?;
            let grads = (&logits * &r)?.sum_all()?.backward()?;
            let vars = trainable_vars(&varmap);
            let mut by_param = Vec::new();
            for (name, var) in &vars {
                let g = grads
                    .get(var.as_tensor())
                    .ok_or_else(|| candle_core::Error::Msg(format!("{name}: no gradient")))?;
                if g.dims() != var.dims() {
                    candle_core::bail!("{name}: gradient {:?} for a parameter {:?}", g.dims(), var.dims())
                }
                by_param.push(g.clone());
            }
            let mut opt = sgd.build(vars.clone()).map_err(candle_core::Error::wrap)?;
            opt.step(&grads).map_err(candle_core::Error::wrap)?;
            let updates = vars
                .iter()
                .zip(&initial)
                .map(|((_, v), (_, before))| v.as_tensor() - before)
                .collect::<candle_core::Result<_>>()?;
            Ok((logits, by_param, updates))
        };
        if portable {
            with_portable_ops(run)
        } else {
            run()
        }
    };
    let (logits_k, grads_k, updates_k) = step(false)?;
    let (logits_p, grads_p, updates_p) = step(true)?;
    let max_abs = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let errors = |ours: &[Tensor], theirs: &[Tensor]| -> Vec<f32> {
        let global = theirs.iter().map(max_abs).fold(0f32, f32::max);
        ours.iter()
            .zip(theirs)
            .map(|(o, t)| max_abs(&(o - t).unwrap()) / max_abs(t).max(1e-3 * global).max(f32::MIN_POSITIVE))
            .collect()
    };
    let names = initial.iter().map(|(n, _)| n.clone());
    Ok(StepErrors {
        logits: rel_err(&logits_p, &logits_k),
        grads: names.zip(errors(&grads_p, &grads_k)).collect(),
        updates: errors(&updates_p, &updates_k).into_iter().fold(0f32, f32::max),
    })
}

/// Every GEMM path this CPU has (AVX-512, AVX2, the `gemm` crate) gives a training step the same
/// gradients (TSM, X3D; not SlowFast, whose narrow fast pathway's train-mode step sits at ReLU
/// kinks, where any two summation orders differ by ~1e-2 at the median, as the candle-only path
/// does in `candle_only_ops_train_as_the_kernels`): each parameter's within 1e-4 of its largest value (or of a thousandth of the
/// largest gradient anywhere, for parameters whose gradient is rounding noise).
#[test]
fn every_gemm_path_gives_the_same_gradients() {
    for arch in ["tsm_r18", "x3d_xs"] {
        gradients_agree_on_every_gemm_path(arch);
    }
}

fn gradients_agree_on_every_gemm_path(arch: &str) {
    use crate::nn::gemm::{with_isa, Isa};
    let (model, varmap, x) = model_and_clip(arch, 5);
    let r = seeded_normal(&[2, 5], 7);
    let grads_on = |isa: Option<Isa>| -> Vec<(String, Tensor)> {
        with_isa(isa, || {
            let logits = model.forward_t(&x, true).unwrap();
            let grads = (&logits * &r).unwrap().sum_all().unwrap().backward().unwrap();
            trainable_vars(&varmap)
                .into_iter()
                .map(|(n, v)| (n, grads.get(v.as_tensor()).unwrap().clone()))
                .collect()
        })
    };
    let want = grads_on(None);
    let max_abs = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let global = want.iter().map(|(_, g)| max_abs(g)).fold(0f32, f32::max);
    for isa in Isa::paths().into_iter().flatten() {
        let got = grads_on(Some(isa));
        let mut worst = (0f32, String::new());
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            let err = max_abs(&(g - w).unwrap()) / max_abs(w).max(1e-3 * global);
            if err > worst.0 {
                worst = (err, name.clone());
            }
        }

        eprintln!("{arch} {isa:?}: worst gradient {} off by {:.2e}", worst.1, worst.0);
        assert!(worst.0 <= 1e-4, "{arch} {isa:?}: {} off by {:e}", worst.1, worst.0);
    }
}
