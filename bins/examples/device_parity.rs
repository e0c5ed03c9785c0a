//! Every frame architecture on a GPU against the CPU: the same random weights and input, logits
//! compared, forward times (eval, median of REPS) printed. Needs a build with `--features cuda`
//! and a CUDA device; without one it says so and exits 1.
//!
//!   cargo run --features cuda --example device_parity -- [REPS] [ARCH ...]
//!
//! Sizes are the zoo's (frames, crop) for the 3D models and 8 × 224² for the 2D ones, batch 1.
//! One JSON line per architecture on stdout; exit 1 when any relative error exceeds 1e-4.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;
use vidkit::model::{archs_for, build, from_tensors, frozen, init_weights_for, ModelConfig, Task};

fn median_time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up (kernels load, buffers allocate)
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f().map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

fn main() -> Result<()> {
    vidkit::nn::retain_freed_buffers();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let chosen: Vec<String> = args.iter().skip(1).cloned().collect();
    let gpu = Device::new_cuda(0).context("no CUDA device (build with --features cuda, run on a GPU)")?;
    let mut worst = 0f32;
    for arch in archs_for(Task::Recognizer) {
        if !chosen.is_empty() && !chosen.iter().any(|c| c == arch) {
            continue;
        }
        let mut cfg = ModelConfig::defaults(arch);
        let size = cfg.crop_size as usize;
        cfg.dropout = 0.0;
        let varmap = VarMap::new();
        let trainable = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
        init_weights_for(&varmap, arch, 7)?;
        let cpu_model = frozen(&varmap, trainable.config())?;
        let tensors = {
            let data = varmap.data().lock().expect("varmap lock");
            data.iter()
                .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_device(&gpu)?)))
                .collect::<Result<_>>()?
        };
        let gpu_model = from_tensors(cfg.clone(), tensors, &gpu)?.for_inference()?;
        let x = Tensor::randn(0f32, 1., (1, cfg.frames, 3, size, size), &Device::Cpu)?;
        let xg = x.to_device(&gpu)?;
        let want = cpu_model.forward_t(&x, false)?;
        let got = gpu_model.forward_t(&xg, false)?.to_device(&Device::Cpu)?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        let err = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
        worst = worst.max(err);
        let cpu_s = median_time(reps, || Ok(drop(cpu_model.forward_t(&x, false)?)))?;
        let gpu_s = median_time(reps, || {
            // to the host: the time includes the GPU's work, not only its queueing
            Ok(drop(gpu_model.forward_t(&xg, false)?.to_device(&Device::Cpu)?))
        })?;
        println!(
            "{}",
            serde_json::json!({"arch": arch, "input": [1, cfg.frames, 3, size, size],
                "relative_error": err, "cpu_forward_s": cpu_s, "cuda_forward_s": gpu_s})
        );
    }
    if worst > 1e-4 {
        anyhow::bail!("logits differ: worst relative error {worst:.2e} > 1e-4");
    }
    Ok(())
}
