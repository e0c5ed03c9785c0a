//! Model timings for `make bench`: forward (eval, batch 1) and one training step (forward,
//! backward, SGD momentum) of a registered architecture on random input, median of N runs.
//! Prints one JSON object; scripts/bench_models.py runs PyTorch (or pytorchvideo, `--zoo`) on the
//! same shapes beside it.
//!
//!   cargo run --example bench_models -- ARCH FRAMES SIZE REPS [forward]
//!
//!   cargo run --example bench_models -- attention GROUPS HEADS NQ NK D REPS
//!
//!   cargo run --example bench_models -- int8_rate REPS
//!
//!   cargo run --example bench_models -- bf16_rate REPS
//!
//! The third form times the int8 product alone on the largest convolution layers of ResNet-50
//! (one frame, and Slow-R50's 8 frames at once), B packed beforehand, against the rate of the
//! kernel's dot-product instruction on all threads (`qgemm::peak_gmacs`): one JSON line per layer.
//! The fourth times the bf16 product (f32 operands rounded while packed) on the same layers
//! against the bf16 unit's rate where the CPU has one (`gemm::bf16_peak_gmacs`: TDPBF16PS on
//! AMX, VDPBF16PS on AVX-512 BF16).
//!
//! The second form times `nn::attend` alone (inference: softmax(q kᵀ / √d) v over q
//! [GROUPS, HEADS, NQ, D] and k, v [GROUPS, HEADS, NK, D]) for scripts/bench_models.py
//! `--attention`, beside torch's `scaled_dot_product_attention`.
//!
//! FRAMES or SIZE 0: the architecture's own (a zoo model's T and crop). `forward`: no training
//! step (`train_step_s` is null). `*_cpu_s`: the CPU time of all the process's threads over the
//! same runs (median), steal time excluded: steadier than wall time on a shared machine, for
//! comparing builds of our own. `VK_PRECISION=bf16`: the forward and the training step's products
//! in bf16 (`--precision bf16`, `-o amp=bf16`); `VK_PRECISION=int8`: the forward's convolutions
//! in int8, calibrated on the input itself (forward only).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;
use vidkit::model::{build, init_weights, ModelConfig};
use vidkit::train::{cross_entropy, trainable_vars, OptimizerConfig, SgdConfig, Targets};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Seconds all threads of this process have run on a CPU (/proc's schedstat, which leaves out the
/// time a virtual machine's host stole); 0 where /proc is absent.
fn process_cpu_s() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// `attention GROUPS HEADS NQ NK D REPS`: the median wall time of `nn::attend`.
fn attention(args: &[String]) -> anyhow::Result<()> {
    let n: Vec<usize> = args.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let [g, h, nq, nk, d, reps] = n[..] else { anyhow::bail!("attention GROUPS HEADS NQ NK D REPS") };
    let dev = Device::Cpu;
    let q = Tensor::randn(0f32, 1., (g, h, nq, d), &dev)?;
    let k = Tensor::randn(0f32, 1., (g, h, nk, d), &dev)?;
    let v = Tensor::randn(0f32, 1., (g, h, nk, d), &dev)?;
    let scale = (d as f64).powf(-0.5);
    vidkit::nn::attend(&q, &k, &v, scale, false)?; // warm-up
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            vidkit::nn::attend(&q, &k, &v, scale, false).map(|_| t.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    println!("{}", serde_json::json!({"shape": [g, h, nq, nk, d], "forward_s": median(times), "reps": reps}));
    Ok(())
}

/// `int8_rate REPS`: each layer's median GMAC/s and its share of the instruction's rate.
fn int8_rate(args: &[String]) -> anyhow::Result<()> {
    use vidkit::nn::gemm::MatRef;
    use vidkit::nn::qgemm::{self, ActivationQuant, QEpilogue, QIsa, QuantizedMatrix};
    let reps: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let isa = QIsa::detected();
    let peak = qgemm::peak_gmacs(isa, 0.5);
    let mut rng = vidkit::rng::Rng::new(1);
    let mut next = || rng.uniform() as f32;
    for (layer, m, k, n) in RATE_LAYERS {
        let w: Vec<f32> = (0..m * k).map(|_| next() - 0.5).collect();
        let a = QuantizedMatrix::quantize(MatRef::row_major(&w, m, k));
        let b: Vec<u8> = (0..k * n).map(|_| (next() * 127.0) as u8).collect();
        let mut buf = Vec::new();
        let packed = qgemm::pack_b_matrix(&b, n, k, n, &mut buf);
        let mut c = vec![std::mem::MaybeUninit::<f32>::uninit(); m * n];
        let bq = ActivationQuant { scale: 0.01, zero_point: 0 };
        let mut run = || {
            let t = Instant::now();
            qgemm::qgemm_packed(
                isa,
                &a,
                packed,
                bq,
                &mut c,
                n,
                QEpilogue { relu: true, ..Default::default() },
            );
            t.elapsed().as_secs_f64()
        };
        run(); // warm-up
        let s = median((0..reps).map(|_| run()).collect());
        let gmacs = (m * k * n) as f64 / s / 1e9;
        println!(
            "{}",
            serde_json::json!({"layer": layer, "m": m, "k": k, "n": n, "kernel": isa.map_or("portable".to_string(), |i| format!("{i:?}")), "threads": std::env::var("RAYON_NUM_THREADS").ok(),
                "gmacs": gmacs, "tops": 2.0 * gmacs / 1e3, "peak_gmacs": peak, "of_peak": peak.map(|p| gmacs / p)})
        );
    }
    Ok(())
}

/// `bf16_rate REPS`: the bf16 product (f32 in and out, operands rounded to bf16: what every
/// convolution runs under `--precision bf16`) on the same layers as `int8_rate`, each layer's
/// median GMAC/s and its share of the bf16 unit's rate on the same threads (`gemm::bf16_peak_gmacs`).
fn bf16_rate(args: &[String]) -> anyhow::Result<()> {
    use vidkit::nn::gemm::{self, Epilogue, MatRef};
    let reps: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(5);
    #[cfg(target_arch = "x86_64")]
    let peak = gemm::bf16_peak_gmacs(0.5);
    #[cfg(not(target_arch = "x86_64"))]
    let peak: Option<f64> = None;
    let kernel = gemm::blocked_isa().map_or("portable".to_string(), |i| format!("{i:?}"));
    let mut rng = vidkit::rng::Rng::new(1);
    let mut next = || rng.uniform() as f32;
    for (layer, m, k, n) in RATE_LAYERS {
        let w: Vec<f32> = (0..m * k).map(|_| next() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
        let mut c = vec![0f32; m * n];
        let epi = Epilogue { relu: true, ..Default::default() };
        let mut run = || {
            let t = Instant::now();
            vidkit::nn::with_autocast(Some(DType::BF16), || {
                gemm::sgemm(MatRef::row_major(&w, m, k), MatRef::row_major(&b, k, n), &mut c, n, false, epi)
            });
            t.elapsed().as_secs_f64()
        };
        run(); // warm-up
        let s = median((0..reps).map(|_| run()).collect());
        let gmacs = (m * k * n) as f64 / s / 1e9;
        println!(
            "{}",
            serde_json::json!({"layer": layer, "m": m, "k": k, "n": n, "kernel": kernel, "threads": std::env::var("RAYON_NUM_THREADS").ok(),
                "gmacs": gmacs, "tflops": 2.0 * gmacs / 1e3, "peak_gmacs": peak, "of_peak": peak.map(|p| gmacs / p)})
        );
    }
    Ok(())
}

/// ResNet-50's largest layers as products: (layer, C_out, k = C_in · taps, positions).
const RATE_LAYERS: [(&str, usize, usize, usize); 7] = [
    ("res2 3x3, 1 frame 56x56", 64, 576, 3136),
    ("res3 3x3, 1 frame 28x28", 128, 1152, 784),
    ("res4 3x3, 1 frame 14x14", 256, 2304, 196),
    ("res5 3x3, 1 frame 7x7", 512, 4608, 49),
    ("res4 1x1 expand, 1 frame", 1024, 256, 196),
    ("res2 3x3, 8 frames (Slow-R50)", 64, 576, 25088),
    ("res5 1x1 expand, 8 frames (Slow-R50)", 2048, 512, 392),
];

fn main() -> anyhow::Result<()> {
    vidkit::nn::retain_freed_buffers();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "attention") {
        return attention(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "int8_rate") {
        return int8_rate(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "bf16_rate") {
        return bf16_rate(&args[1..]);
    }
    let arch = args.first().map(String::as_str).unwrap_or("tsm_r50");
    let frames: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(224);
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let forward_only = args.get(4).is_some_and(|s| s == "forward");
    let precision: vidkit::precision::Precision =
        std::env::var("VK_PRECISION").map_or(Ok(Default::default()), |p| p.parse())?;
    let mut cfg = ModelConfig::defaults(arch);
    let frames = if frames == 0 { cfg.frames } else { frames };
    let size = if size == 0 { cfg.crop_size as usize } else { size };
    cfg.frames = frames;
    cfg.dropout = 0.0;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    init_weights(&varmap, 0)?;
    let x1 = Tensor::randn(0f32, 1., (1, frames, 3, size, size), &dev)?;
    let x2 = Tensor::randn(0f32, 1., (2, frames, 3, size, size), &dev)?;
    let labels = Tensor::new(&[1u32, 2], &dev)?;
    let mut opt =
        OptimizerConfig::Sgd(SgdConfig { lr: 0.01, momentum: 0.9, weight_decay: 1e-4, ..Default::default() })
            .build(trainable_vars(&varmap))?;
    // Inference over plain tensors, as torch's no_grad: over variables every op would keep its inputs.
    let inference = vidkit::model::frozen(&varmap, model.config())?;
    let mut extra = serde_json::Map::new();
    if precision == vidkit::precision::Precision::Int8 {
        anyhow::ensure!(forward_only, "int8 times the forward only: pass `forward`");
        let cal = vidkit::quantize::calibrate_model(
            &inference,
            [Ok(x1.squeeze(0)?)],
            vidkit::quantize::RangeMethod::Histogram,
        )?;
        vidkit::precision::store_int8_calibration(&mut extra, &cal);
    }
    // The forwards read the weights packed in the warm-up (`Inference::run`) while the train
    // steps change the variables `inference` shares: the same work, stale values, which a
    // timing does not look at.
    let precision = vidkit::precision::Inference::new(precision, &extra)?;
    precision.run(|| inference.forward_t(&x1, false))?; // warm-up
    let (mut fwd, mut fwd_cpu) = (Vec::new(), Vec::new());
    let (mut step, mut step_cpu) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (t, cpu) = (Instant::now(), process_cpu_s());
        precision.run(|| inference.forward_t(&x1, false))?;
        fwd.push(t.elapsed().as_secs_f64());
        fwd_cpu.push(process_cpu_s() - cpu);
        if forward_only {
            continue;
        }
        let (t, cpu) = (Instant::now(), process_cpu_s());
        let logits = precision.run(|| model.forward_t(&x2, true))?;
        let loss = cross_entropy(&logits, Targets::Labels(&labels), 0.0)?;
        opt.step(&loss.backward()?)?;
        step.push(t.elapsed().as_secs_f64());
        step_cpu.push(process_cpu_s() - cpu);
    }
    // Learned parameters (running statistics excluded), as torch's `sum(p.numel())` counts them.
    let params: usize = trainable_vars(&varmap).iter().map(|(_, v)| v.elem_count()).sum();
    println!(
        "{}",
        serde_json::json!({"arch": arch, "precision": precision.precision.to_string(), "frames": frames, "size": size, "params": params, "forward_s": median(fwd), "train_step_s": (!step.is_empty()).then(|| median(step)),
            "forward_cpu_s": median(fwd_cpu), "train_step_cpu_s": (!step_cpu.is_empty()).then(|| median(step_cpu)), "reps": reps})
    );
    Ok(())
}
