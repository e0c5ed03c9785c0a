//! Seeded weight initialisation, as torchvision's ResNet does it: convolutions (2D and 3D, as
//! pytorchvideo's `c2_msra_fill`) `kaiming_normal_(mode='fan_out', nonlinearity='relu')`, BatchNorm weight 1 and bias 0, the
//! linear classifier PyTorch's default `U(-1/√fan_in, 1/√fan_in)` for weight and bias. Drawn from
//! our Rng in name order, so the same seed gives the same model on every machine.
//!
//! Feature-sequence models: LSTM weights and biases `U(-1/√H, 1/√H)` (PyTorch's `nn.LSTM`);
//! AttentionCluster's shift scale and bias `N(0, √(1/√units))` and NeXtVLAD's cluster weights
//! MSRA normal `N(0, √(2/fan_in))`, as PaddleVideo initialises them.
//!
//! PaddleVideo's own recognizers (PP-TSM, PP-TSMv2) start as Paddle does it instead
//! ([`init_weights_for`]): convolutions `KaimingNormal` in fan-in mode (a depthwise conv's
//! fan-in is its k², where torch's fan-out would be C·k² and starve the signal), biases 0,
//! ppTSMHead's classifier `Normal(0, 0.01)`, other linear layers Paddle's default Xavier-uniform.

use crate::rng::Rng;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarMap;

/// timm's and torch's `trunc_normal_(std=0.02)`: N(0, 0.02²) cut at ±2 (absolute, so far out
/// in the tail that the cut hardly matters).
fn trunc_normal_002(rng: &mut Rng) -> f32 {
    loop {
        let v = rng.normal();
        if v.abs() <= 2.0 / 0.02 {
            break (v * 0.02) as f32;
        }
    }
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
            Some((0..n).map(|_| (rng.normal() * std) as f32).collect())
        } else if leaf == "cluster_weights" || leaf == "cluster_weights2" {
            let std = (2.0 / dims[0] as f64).sqrt();
            Some((0..n).map(|_| (rng.normal() * std) as f32).collect())
        } else if dims.len() == 4 || dims.len() == 5 {
            // [out, in / groups, (kt,) kh, kw]; 3D convs as pytorchvideo's `c2_msra_fill`.
            let fan_out = dims[0] * dims[2..].iter().product::<usize>();
            let std = (2.0 / fan_out as f64).sqrt();
            Some((0..n).map(|_| (rng.normal() * std) as f32).collect())
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

/// The initialisation `arch` trains from: PaddleVideo's for its own architectures
/// (`pptsm_*`), torchvision's ([`init_weights`]) for the others, and for X3D that with each
/// residual branch's last BatchNorm scale at 0, as pytorchvideo's `init_net_weights` does
/// (`BottleneckBlock` flags `norm_c.block_final_bn`): every block starts as its shortcut. With
/// unit scales X3D-XS's 25 random branches drown the input and training does not start (loss
/// at ln 4 for 6 epochs on a 4-class vsynth set, where zero scales start it in 2).
pub fn init_weights_for(varmap: &VarMap, arch: &str, seed: u64) -> Result<()> {
    if super::VitOptions::for_arch(arch).is_some() {
        return init_vit(varmap, seed);
    }
    if super::MvitOptions::for_arch(arch).is_some() {
        return init_mvit(varmap, seed);
    }
    if arch.starts_with("x3d") {
        init_weights(varmap, seed)?;
        return zero_block_final_bn(varmap);
    }
    if !arch.starts_with("pptsm") {
        return init_weights(varmap, seed);
    }
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = Rng::new(seed ^ 0x1A17_5EED);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Option<Vec<f32>> = if crate::nn::is_buffer(name) {
            None
        } else if dims.len() == 4 {
            // Paddle's conv weight is [out, in / groups, kh, kw]; fan_in = in / groups · kh · kw.
            let std = (2.0 / (dims[1] * dims[2] * dims[3]) as f64).sqrt();
            Some((0..n).map(|_| (rng.normal() * std) as f32).collect())
        } else if dims.len() == 2 && name == "head.fc.weight" && arch == "pptsm_r50vd" {
            Some((0..n).map(|_| (rng.normal() * 0.01) as f32).collect())
        } else if dims.len() == 2 {
            let bound = (6.0 / (dims[0] + dims[1]) as f64).sqrt();
            Some((0..n).map(|_| rng.uniform_range(-bound, bound) as f32).collect())
        } else if name.ends_with(".bias") {
            Some(vec![0.0; n])
        } else {
            None // BatchNorm scale: 1 as created
        };
        if let Some(v) = values {
            var.set(&Tensor::from_vec(v, dims, var.device())?.to_dtype(var.dtype())?)?;
        }
    }
    Ok(())
}

/// Sets the scale of every residual branch's closing BatchNorm (`*.norm_c.weight`) to 0.
/// TimeSformer and PaddleVideo's `vit.py` (`init_weights`, `_init_fn`): Linear weights and the cls
/// and position embeddings truncated normal with std 0.02 (timm's `trunc_normal_`, cut at ±2, far
/// outside), the time embedding 0, `temporal_fc` 0 in every block but the first (so each later
/// block starts as a spatial-only one), LayerNorm 1 and 0, and the patch convolution PyTorch's
/// default `U(±1/√fan_in)` for weight and bias. All other biases 0.
fn init_vit(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = Rng::new(seed ^ 0x1A17_5EED);
    let fan_in =
        data.get("backbone.patch_embed.proj.weight").map(|w| w.dims()[1..].iter().product::<usize>());
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let later_temporal_fc = name.contains(".temporal_fc.") && !name.starts_with("backbone.blocks.0.");
        let values: Vec<f32> = if later_temporal_fc || name.ends_with("time_embed") {
            vec![0.0; n]
        } else if name.starts_with("backbone.patch_embed.") {
            let bound = 1.0 / (fan_in.unwrap_or(1) as f64).sqrt();
            (0..n).map(|_| rng.uniform_range(-bound, bound) as f32).collect()
        } else if dims.len() == 2 || name.ends_with("cls_token") || name.ends_with("pos_embed") {
            (0..n).map(|_| trunc_normal_002(&mut rng)).collect()
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            continue; // LayerNorm weights: 1 as created
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// pytorchvideo's MViT (`init_net_weights(style="vit", init_std=0.02)`): Linear weights and the
/// cls token and position embeddings truncated normal with std 0.02, Linear biases 0,
/// LayerNorms 1 and 0; the convolutions (patch embedding, q/k/v pools) keep PyTorch's default
/// `U(±1/√fan_in)` for weight and bias.
fn init_mvit(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = Rng::new(seed ^ 0x3517_5EED);
    let conv_fan_in = |name: &str| {
        let w = name.strip_suffix(".bias").map(|s| format!("{s}.weight")).unwrap_or(name.to_string());
        data.get(&w).filter(|w| w.rank() == 5).map(|w| w.dims()[1..].iter().product::<usize>())
    };
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if let Some(fan_in) = conv_fan_in(name) {
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n).map(|_| rng.uniform_range(-bound, bound) as f32).collect()
        } else if dims.len() == 2 || name.starts_with("cls_positional_encoding.") {
            (0..n).map(|_| trunc_normal_002(&mut rng)).collect()
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            continue; // LayerNorm weights: 1 as created
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

fn zero_block_final_bn(varmap: &VarMap) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    for (_, var) in data.iter().filter(|(n, _)| n.ends_with("norm_c.weight")) {
        var.set(&var.as_tensor().zeros_like()?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{build, ModelConfig};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    /// The same seed gives the same 3D model, bit for bit. Regression: 3D conv weights kept
    /// candle's unseeded initialisation, so two training runs with one seed differed.
    #[test]
    fn a_seed_fixes_every_weight_of_a_3d_model() {
        let init = |arch: &str| {
            let mut cfg = ModelConfig::defaults(arch);
            (cfg.num_classes, cfg.base_width, cfg.stage_depths) = (2, 8, Some([1, 1, 1, 1]));
            let varmap = VarMap::new();
            build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
            init_weights(&varmap, 7).unwrap();
            let data = varmap.data().lock().unwrap();
            let mut named: Vec<(String, Vec<f32>)> = data
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()))
                .collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named
        };
        for arch in ["slow_r50", "x3d_xs"] {
            let (a, b) = (init(arch), init(arch));
            for ((name, x), (_, y)) in a.iter().zip(&b) {
                assert_eq!(x, y, "{arch}: {name} differs between two inits with one seed");
            }
        }
        // Slow's first conv_c, 1×1×1 from 8 to 32 channels: kaiming fan-out std √(2/32).
        let slow = init("slow_r50");
        let (_, w) = slow.iter().find(|(n, _)| n == "blocks.1.res_blocks.0.branch2.conv_c.weight").unwrap();
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std / (2f32 / 32.0).sqrt() - 1.0).abs() < 0.35, "std {std}");
    }

    /// An untrained PP-TSMv2 in eval mode (BatchNorm on its initial running statistics) still
    /// passes the input through: with torch's fan-out init its depthwise convs shrank the
    /// features to ~1e-14 and every clip got the same logits.
    #[test]
    fn paddle_init_keeps_an_untrained_pptsmv2_alive_in_eval() {
        let mut cfg = ModelConfig::defaults("pptsmv2_lcnetv2");
        (cfg.num_classes, cfg.base_width, cfg.frames) = (2, 16, 4);
        let varmap = VarMap::new();
        let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_weights_for(&varmap, &cfg.arch, 3).unwrap();
        let x = crate::rng::randn(0f32, 1., (2, 4, 3, 32, 32), &Device::Cpu).unwrap();
        let f = model.features_t(&x, false).unwrap();
        let mean_abs = f.abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(mean_abs > 1e-2, "features vanish: mean |f| = {mean_abs}");
        let data = varmap.data().lock().unwrap();
        let bias = data["head.fc.bias"].as_tensor().to_vec1::<f32>().unwrap();
        assert_eq!(bias, vec![0.0, 0.0]);
        // A depthwise 3×3 kernel [C, 1, 3, 3]: std √(2/9).
        let (name, w) = data
            .iter()
            .find(|(n, v)| {
                n.ends_with(".weight") && v.rank() == 4 && v.dim(1).unwrap() == 1 && v.dim(2).unwrap() == 3
            })
            .unwrap();
        let w = w.as_tensor().flatten_all().unwrap();
        let std = w.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
        assert!((std / (2f32 / 9.0).sqrt() - 1.0).abs() < 0.35, "{name}: std {std}");
    }

    /// X3D starts as pytorchvideo's does: every residual branch's closing BN scale 0, the
    /// other BN scales 1, the convolutions drawn.
    #[test]
    fn x3d_branches_start_closed() {
        let mut cfg = ModelConfig::defaults("x3d_xs");
        (cfg.num_classes, cfg.base_width, cfg.stage_depths) = (2, 8, Some([1, 2, 1, 1]));
        let varmap = VarMap::new();
        build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_weights_for(&varmap, "x3d_xs", 3).unwrap();
        let data = varmap.data().lock().unwrap();
        let max_abs =
            |n: &str| data[n].as_tensor().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let closing: Vec<&String> = data.keys().filter(|n| n.ends_with("norm_c.weight")).collect();
        assert_eq!(closing.len(), 5);
        for n in closing {
            assert_eq!(max_abs(n), 0.0, "{n}");
        }
        assert_eq!(max_abs("blocks.1.res_blocks.0.branch2.norm_a.weight"), 1.0);
        assert!(max_abs("blocks.1.res_blocks.0.branch2.conv_c.weight") > 0.0);
    }

    #[test]
    fn a_timesformer_starts_as_the_references_start_it() {
        let mut cfg = ModelConfig::defaults("timesformer_vit_b");
        let o: Vec<String> = ["embed_dim=48", "num_heads=2", "depth=3", "patch_size=8", "crop_size=16"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        cfg.apply_overrides(&o).unwrap();
        let varmap = VarMap::new();
        build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_weights_for(&varmap, "timesformer_vit_b", 1).unwrap();
        let data = varmap.data().lock().unwrap();
        let values = |n: &str| data[n].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let all_zero = |n: &str| values(n).iter().all(|v| *v == 0.0);
        assert!(all_zero("backbone.time_embed") && all_zero("backbone.blocks.2.temporal_fc.weight"));
        assert!(
            !all_zero("backbone.blocks.0.temporal_fc.weight") && all_zero("backbone.blocks.0.attn.proj.bias")
        );
        assert!(values("backbone.norm.weight").iter().all(|v| *v == 1.0));
        let w = values("backbone.blocks.1.mlp.fc1.weight");
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.002, "std {std}");
    }
}
