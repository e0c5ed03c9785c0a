//! Seeded weight initialisation, as torchvision's ResNet does it: convolutions
//! `kaiming_normal_(mode='fan_out', nonlinearity='relu')`, BatchNorm weight 1 and bias 0, the
//! linear classifier PyTorch's default `U(-1/√fan_in, 1/√fan_in)` for weight and bias. Drawn from
//! our Rng in name order, so the same seed gives the same model on every machine.
//!
//! Feature-sequence models: LSTM weights and biases `U(-1/√H, 1/√H)` (PyTorch's `nn.LSTM`);
//! AttentionCluster's shift scale and bias `N(0, √(1/√units))` and NeXtVLAD's cluster weights
//! MSRA normal `N(0, √(2/fan_in))`, as PaddleVideo initialises them.

use crate::rng::Rng;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarMap;

fn normal(rng: &mut Rng) -> f64 {
    // Box–Muller; one value per call keeps the stream simple to reason about.
    let u1 = rng.uniform().max(f64::MIN_POSITIVE);
    let u2 = rng.uniform();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

pub fn init_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = Rng::new(seed ^ 0x1A17_5EED);
    // fan_in of a linear layer's bias is its weight's second dimension.
    let fan_in_of =
        |prefix: &str| data.get(&format!("{prefix}.weight")).and_then(|w| w.dims().get(1).copied());
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let values: Option<Vec<f32>> = if crate::nn::is_buffer(name) {
            None // running_mean 0 / running_var 1 as created
        } else if ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
            .iter()
            .any(|p| leaf.trim_end_matches("_reverse") == *p)
        {
            let hidden = dims[0] / 4;
            let bound = 1.0 / (hidden as f64).sqrt();
            Some((0..n).map(|_| rng.uniform_range(-bound, bound) as f32).collect())
        } else if leaf == "shift_w" || leaf == "shift_b" {
            let std = (1.0 / (dims[0] as f64).sqrt()).sqrt();
            Some((0..n).map(|_| (normal(&mut rng) * std) as f32).collect())
        } else if leaf == "cluster_weights" || leaf == "cluster_weights2" {
            let std = (2.0 / dims[0] as f64).sqrt();
            Some((0..n).map(|_| (normal(&mut rng) * std) as f32).collect())
        } else if dims.len() == 4 {
            let fan_out = dims[0] * dims[2] * dims[3];
            let std = (2.0 / fan_out as f64).sqrt();
            Some((0..n).map(|_| (normal(&mut rng) * std) as f32).collect())
        } else if dims.len() == 2 {
            let bound = 1.0 / (dims[1] as f64).sqrt();
            Some((0..n).map(|_| rng.uniform_range(-bound, bound) as f32).collect())
        } else if name.ends_with(".bias") && !name.contains("bn") && !name.contains("downsample.1") {
            let prefix = name.trim_end_matches(".bias");
            fan_in_of(prefix).map(|f| {
                let bound = 1.0 / (f as f64).sqrt();
                (0..n).map(|_| rng.uniform_range(-bound, bound) as f32).collect()
            })
        } else {
            None // BatchNorm affine: candle creates weight 1, bias 0
        };
        if let Some(v) = values {
            var.set(&Tensor::from_vec(v, dims, var.device())?.to_dtype(var.dtype())?)?;
        }
    }
    Ok(())
}
