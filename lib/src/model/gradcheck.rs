//! Test support: a model's backward pass against central differences.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

/// Perturbs every parameter of `vm` with noise (so that no branch hides behind a zero
/// initialisation), then compares the backward pass of L = Σ logits ⊙ R (R fixed, random) with
/// central differences at three coordinates of every parameter (where the one-sided
/// differences agree, i.e. not at a kink); f32, so agreement to within
/// 10% of the larger of the two (or of 0.1). `forward(train)` gives the logits; the
/// differences are of the training forward, the function the backward pass differentiates.
pub(crate) fn assert_gradients(vm: &VarMap, forward: impl Fn(bool) -> Tensor) {
    // Buffers (batch norm's running statistics) are not parameters: no gradient, no noise.
    for (_, var) in crate::nn::vars_by_name(vm).into_iter().filter(|(n, _)| !crate::nn::is_buffer(n)) {
        let noise = crate::rng::randn(0f32, 0.3, var.shape(), &Device::Cpu).unwrap();
        var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
    }
    let r = crate::rng::randn(0f32, 1., forward(false).shape(), &Device::Cpu).unwrap();
    let loss = |train: bool| (forward(train) * &r).unwrap().sum_all().unwrap();
    let g = loss(true).backward().unwrap();
    let mut worst = (0f32, String::new());
    let (mut checked, mut kinks) = (0, 0);
    for (name, var) in vm.data().lock().unwrap().iter().filter(|(n, _)| !crate::nn::is_buffer(n)) {
        let grad: Vec<f32> = g.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let n = base.len();
        let eps = 5e-3f32;
        let at = |values: Vec<f32>| {
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap()).unwrap();
            loss(true).to_scalar::<f32>().unwrap()
        };
        let base_loss = at(base.clone());
        for i in [0, n / 2, n - 1] {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let (ahead, behind) = ((at(plus) - base_loss) / eps, (base_loss - at(minus)) / eps);
            let fd = (ahead + behind) / 2.0;
            checked += 1;
            // One-sided differences that disagree straddle a kink (a max pool's choice
            // switching): no derivative to compare with there. Not where they differ by the
            // loss's own rounding (a few ulps of it over eps: 1e-2 for a loss of 100), which
            // called 12% of a TimeSformer's points kinks, a model without any.
            let rounding = 4.0 * base_loss.abs() * f32::EPSILON / eps;
            if (ahead - behind).abs() > 0.05 * fd.abs().max(0.1) + rounding {
                kinks += 1;
                continue;
            }
            let err = (fd - grad[i]).abs() / fd.abs().max(grad[i].abs()).max(0.1);
            if err > worst.0 {
                worst = (err, format!("{name}[{i}]: backward {} vs differences {fd}", grad[i]));
            }
        }
        at(base);
    }
    eprintln!("worst gradient error {:.3}: {} ({kinks} of {checked} points at a kink)", worst.0, worst.1);
    // f32 differences of a loss of a few units carry errors of ~1e-2 relative (measured worst
    // 0.03 over 20 runs, one of 0.06); a wrong backward errs by far more, at many points.
    assert!(worst.0 < 0.1, "{}", worst.1);
    assert!(kinks * 10 <= checked, "{kinks} of {checked} points at a kink");
}
