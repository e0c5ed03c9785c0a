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
        let x = crate::rng::randn(0f32, 1., (2, 16, 1, 12, 12), &dev).unwrap().relu().unwrap();
        let w = crate::rng::randn(0f32, 0.2, (24, 16, 1, kernel, kernel), &dev).unwrap();
        let vm = candle_nn::VarMap::new();
        let bn = BatchNorm2d::new(24, candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev))
            .unwrap();
        crate::nn::randomise_params(&vm);
        let res = crate::rng::randn(0f32, 1., (2, 24, 1, 12, 12), &dev).unwrap();
        let f32_out = crate::nn::conv_bn_act_3d(&x, g, &w, None, &bn, Some(&res), true).unwrap();
        let cal = Arc::new(Mutex::new(Calibrator::new(RangeMethod::MinMax)));
        calibrate(&cal, || crate::nn::conv_bn_act_3d(&x, g, &w, None, &bn, Some(&res), true).unwrap());
        let plan = Int8Plan::new(cal.lock().unwrap().finish());
        let q =
            with_int8(&plan, || crate::nn::conv_bn_act_3d(&x, g, &w, None, &bn, Some(&res), true).unwrap());
        let diff = (&q - &f32_out).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let range = f32_out.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 0.03 * range, "{kernel}×{kernel}: {diff} against outputs up to {range}");
        let empty = Int8Plan::new(Calibration::default());
        let err =
            with_int8(&empty, || crate::nn::conv_bn_act_3d(&x, g, &w, None, &bn, None, true)).unwrap_err();
        assert!(err.to_string().contains("no calibrated range"), "{err}");
    }
}

/// A 2D convolution over frames run with its frames as time (one product over all of them,
/// bytes frames inside channel groups) writes what it writes a frame at a time, bit for bit:
/// f32 inputs quantized here (3 channels, a stem's; 8), u8 ones handed over (frames inside
/// against frame by frame), 1×1 (whole groups: read in place; 6 channels: packed), 3×3 padded,
/// stride 2, an f32 residual, and TSM's shift (bands of whole groups, moved inside each group;
/// and not, read as channel planes) over two clips.
#[test]
fn frames_as_time_give_what_frames_one_by_one_give() {
    let dev = Device::Cpu;
    let mut rng = crate::rng::Rng::new(7);
    for (c, size, kernel, stride, pad, with_residual, shift_div) in [
        (3, 11, 7, 2, 3, false, None),
        (8, 6, 1, 1, 0, true, None),
        (6, 6, 1, 1, 0, false, None),
        (8, 9, 3, 1, 1, true, None),
        (8, 9, 3, 2, 1, false, None),
        (8, 9, 1, 2, 0, false, None),
        (32, 5, 1, 1, 0, false, Some(8)),
        (16, 5, 3, 1, 1, true, Some(8)),
    ] {
        let frames = 4;
        let g = Geometry3d {
            n: frames,
            c,
            input: [1, size, size],
            kernel: [1, kernel, kernel],
            stride: [1, stride, stride],
            pad: [0, pad, pad],
            dilation: [1; 3],
        };
        let direct = kernel == 1 && stride == 1;
        let [_, oh, ow] = g.out().unwrap();
        let (cout, plane) = (12, size * size);
        let x: Vec<f32> = (0..frames * c * plane).map(|_| rng.uniform() as f32 * 4.0 - 1.0).collect();
        let w: Vec<f32> = (0..cout * c * kernel * kernel).map(|_| rng.uniform() as f32 - 0.5).collect();
        let r: Vec<f32> = (0..frames * cout * oh * ow).map(|_| rng.uniform() as f32 - 0.5).collect();
        let (scale, bias) = (vec![0.5f32; cout], vec![0.1f32; cout]);
        let plan = Int8Plan::new(Calibration { ranges: vec![(-1.0, 3.0)], residual_ranges: vec![] });
        let shift = shift_div.map(|d| crate::nn::shift::FrameShift::mmaction(c, 2, d));
        let run = |fold_frames: bool, x: ConvIn| {
            let layer = Int8Layer {
                index: 0,
                plan: plan.clone(),
                fold_frames,
                shadow: None,
                remap: None,
                output: Output::Learn,
            };
            let residual = with_residual.then_some(ConvIn::F32(&r));
            let epi = (&scale[..], &bias[..], residual, true);
            let y = conv(&layer, x, shift.as_ref(), &g, direct, &w, epi, &dev).unwrap();
            assert_eq!(y.dims(), [frames, cout, 1, oh, ow]);
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let case = format!("{c} channels, {kernel}×{kernel} stride {stride}, shift {shift_div:?}");
        let one_by_one = run(false, ConvIn::F32(&x));
        assert_eq!(run(true, ConvIn::F32(&x)), one_by_one, "{case}: f32 input");
        if c % 4 != 0 {
            continue;
        }
        // The bytes a convolution before hands over: frame by frame, or frames inside.
        let xq = plan.input_quant(0).quantize_slice(&x);
        let mut grouped = vec![0u8; xq.len()];
        for f in 0..frames {
            for ch in 0..c {
                for p in 0..plane {
                    grouped[(((f * c / 4) + ch / 4) * plane + p) * 4 + ch % 4] = xq[(f * c + ch) * plane + p];
                }
            }
        }
        let inside = super::layers::swap_outer(&grouped, frames, c / 4, plane * 4);
        assert_eq!(run(false, ConvIn::U8(&grouped)), one_by_one, "{case}: u8 input");
        assert_eq!(run(true, ConvIn::U8(&inside)), one_by_one, "{case}: u8 input frames inside");
    }
}

/// A convolution reading its input in channel groups of 4 (as the convolution before hands
/// it over) writes what it writes from the f32 input quantized here, bit for bit: 1×1 read
/// in place (a partial last panel), 3×3 padded, stride 2, a 3×1×1 window, and TSM shifts
/// whose bands are whole groups (shifted grouped) and are not (read as channel planes).
#[test]
fn grouped_inputs_give_what_channel_planes_give() {
    let dev = Device::Cpu;
    let mut rng = crate::rng::Rng::new(3);
    for (c, input, kernel, stride, pad, shift_div) in [
        (8, [1, 5, 7], [1, 1, 1], [1, 1, 1], [0, 0, 0], None),
        (8, [1, 6, 6], [1, 3, 3], [1, 1, 1], [0, 1, 1], None),
        (8, [1, 9, 9], [1, 3, 3], [1, 2, 2], [0, 1, 1], None),
        (8, [1, 9, 9], [1, 1, 1], [1, 2, 2], [0, 0, 0], None),
        (8, [3, 5, 5], [3, 1, 1], [1, 1, 1], [1, 0, 0], None),
        (32, [1, 4, 4], [1, 1, 1], [1, 1, 1], [0, 0, 0], Some(8)),
        (16, [1, 4, 4], [1, 1, 1], [1, 1, 1], [0, 0, 0], Some(8)),
    ] {
        let g = Geometry3d { n: 4, c, input, kernel, stride, pad, dilation: [1; 3] };
        let direct = kernel == [1; 3] && stride == [1; 3] && pad == [0; 3];
        let (vol, cout) = (g.in_volume(), 12);
        let x: Vec<f32> = (0..4 * c * vol).map(|_| rng.uniform() as f32 * 4.0 - 1.0).collect();
        let w: Vec<f32> = (0..cout * c * g.taps()).map(|_| rng.uniform() as f32 - 0.5).collect();
        let (scale, bias) = (vec![0.5f32; cout], vec![0.1f32; cout]);
        let plan = Int8Plan::new(Calibration { ranges: vec![(-1.0, 3.0)], residual_ranges: vec![] });
        let xq = plan.input_quant(0).quantize_slice(&x);
        let mut grouped = vec![0u8; xq.len()];
        for ch in 0..4 * c {
            for p in 0..vol {
                grouped[((ch / 4) * vol + p) * 4 + ch % 4] = xq[ch * vol + p];
            }
        }
        let shift = shift_div.map(|d| crate::nn::shift::FrameShift::mmaction(c, 4, d));
        let run = |x: ConvIn| {
            let layer = Int8Layer {
                index: 0,
                plan: plan.clone(),
                fold_frames: false,
                shadow: None,
                remap: None,
                output: Output::Learn,
            };
            let epi = (&scale[..], &bias[..], None, true);
            let y = conv(&layer, x, shift.as_ref(), &g, direct, &w, epi, &dev).unwrap();
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(ConvIn::F32(&x)), run(ConvIn::U8(&grouped)), "{g:?} shift {shift_div:?}");
        // Bytes quantized with another map (a shared block output read by a convolution
        // calibrated apart): what the f32 values they stand for give.
        let other = ActivationQuant { scale: 0.05, zero_point: 30 };
        let bytes: Vec<u8> =
            grouped.iter().map(|&q| other.quantize(plan.input_quant(0).dequantize(q))).collect();
        let standing: Vec<f32> =
            xq.iter().map(|&q| other.dequantize(other.quantize(plan.input_quant(0).dequantize(q)))).collect();
        let remapped = {
            let layer = Int8Layer {
                index: 0,
                plan: plan.clone(),
                fold_frames: false,
                shadow: None,
                remap: Some(other),
                output: Output::Learn,
            };
            let epi = (&scale[..], &bias[..], None, true);
            let y = conv(&layer, ConvIn::U8(&bytes), shift.as_ref(), &g, direct, &w, epi, &dev).unwrap();
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(ConvIn::F32(&standing)), remapped, "{g:?} shift {shift_div:?}: remapped");
    }
}

/// TSM's shifted convolution shifts its quantized input (the zero point shifted in): the
/// same bytes, so the same outputs, as quantizing the f32 input shifted first.
#[test]
fn shifting_the_quantized_input_equals_quantizing_the_shifted_one() {
    let dev = Device::Cpu;
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev);
    let conv = crate::nn::conv2d(16, 8, 1, 1, 0, vb.pp("conv")).unwrap();
    let bn = crate::nn::batch_norm2d(8, vb.pp("bn")).unwrap();
    crate::nn::randomise_params(&vm);
    // 2 clips of 4 frames; values of both signs, so the zero point is inside the range.
    let x = crate::rng::randn(0f32, 1., (8, 16, 5, 5), &dev).unwrap();
    let shifted = || crate::nn::conv2d_bn_relu_shifted(&conv, &bn, &x, false, 4, 4).unwrap();
    let shift_first = || {
        let xs = crate::nn::temporal_shift(&x, 4, 4).unwrap();
        crate::nn::conv2d_bn_act(&conv, &bn, &xs, false, None, true).unwrap()
    };
    let cal = Arc::new(Mutex::new(Calibrator::new(RangeMethod::MinMax)));
    calibrate(&cal, shift_first);
    let plan = Int8Plan::new(cal.lock().unwrap().finish());
    assert!(
        ActivationQuant::from_range(plan.calibration.ranges[0].0, plan.calibration.ranges[0].1).zero_point
            > 0
    );
    let [a, b] = [with_int8(&plan, shifted), with_int8(&plan, shift_first)]
        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    assert_eq!(a, b);
    let f32_out = shift_first().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(a, f32_out, "the int8 run ran in f32");
}

/// Linear layers that read one input run as one int8 product over their stacked weights: the
/// same values as each layer's own product.
#[test]
fn linears_side_by_side_equal_each_alone() {
    let dev = Device::Cpu;
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev);
    let layers: Vec<candle_nn::Linear> = [("q", 16), ("k", 16), ("v", 8)]
        .iter()
        .map(|(n, o)| candle_nn::linear(24, *o, vb.pp(n)).unwrap())
        .collect();
    crate::nn::randomise_params(&vm);
    let layers: Vec<&candle_nn::Linear> = layers.iter().collect();
    let x = crate::rng::randn(0f32, 1., (2, 7, 24), &dev).unwrap();
    let alone = || {
        let parts: Vec<Tensor> = layers.iter().map(|l| crate::nn::linear(&x, l).unwrap()).collect();
        Tensor::cat(&parts, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let cal = Arc::new(Mutex::new(Calibrator::new(RangeMethod::MinMax)));
    calibrate(&cal, alone);
    let plan = Int8Plan::new(cal.lock().unwrap().finish());
    let side_by_side = with_int8(&plan, || {
        let y = crate::nn::transformer::linears_side_by_side(&x, &layers).unwrap();
        assert_eq!(y.dims(), [2, 7, 40]);
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    });
    assert_eq!(plan.stacked.lock().unwrap().len(), 1, "one stacked product");
    assert_eq!(side_by_side, with_int8(&plan, alone));
}

/// Whole models in int8 (TSM-R50: the shifted 1×1 path and residual epilogues, and with
/// Slow-R50 the u8 handover inside bottlenecks; X3D-XS: 3D
/// convolutions beside f32 depthwise ones; a small TimeSformer and MViT: the patch embedding
/// and every Linear layer), calibrated on 4 random clips, run on 4 others: logits within 10 % of
/// the f32 ones (relative L2) and one layer counted per call.
#[test]
fn int8_models_follow_the_f32_ones() {
    use crate::model::{build, frozen, ModelConfig};
    let dev = Device::Cpu;
    // TimeSformer (small): its Linear layers (qkv, projections, MLPs) run in int8 too.
    let small_vit: Vec<String> = ["embed_dim=48", "num_heads=2", "depth=3", "patch_size=16", "crop_size=64"]
        .map(String::from)
        .to_vec();
    // MViT (narrow): pooled attention, whose q, k and v projections run apart under int8.
    let small_mvit: Vec<String> =
        ["embed_dim=16", "num_heads=1", "depth=3", "stage_starts=[1]", "crop_size=64"]
            .map(String::from)
            .to_vec();
    for arch in [
        "tsn_r50",
        "tsm_r50",
        "tsm_r18",
        "slow_r50",
        "c2d_r50",
        "r2plus1d_r50",
        "x3d_xs",
        "timesformer_vit_b",
        "mvit_base_16x4",
    ] {
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
        // The first forward learns which convolutions hand over in u8; the later ones do,
        // and give the same bits (the requantized bytes are the ones quantizing f32 gives).
        let logits = |x: &Tensor| with_int8(&plan, || model.forward_t(x, false).unwrap());
        let first = logits(&clip(10)).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (mut err, mut norm) = (0f64, 0f64);
        for seed in 10..14 {
            let x = clip(seed);
            let f = model.forward_t(&x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let q = logits(&x).flatten_all().unwrap().to_vec1::<f32>().unwrap();
            err += f.iter().zip(&q).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
            norm += f.iter().map(|a| (*a as f64).powi(2)).sum::<f64>();
        }
        let rel = (err / norm).sqrt();
        let (chained, residuals) = (plan.chained(), plan.residuals_in_u8());
        println!(
            "{arch}: int8 logits' relative L2 error {rel:.4} ({} layers, {chained} handing over u8, {residuals} shortcuts)",
            plan.weights.len()
        );
        assert!(rel < 0.1, "{arch}: relative error {rel}");
        let again = logits(&clip(10)).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let third = logits(&clip(10)).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(again, third, "{arch}: two chained forwards differ");
        // The ResNets' blocks and shortcut convolutions hand their outputs over in u8 alone,
        // added as residuals dequantized: close to the first forward's f32 residuals, not
        // equal. Elsewhere the u8 handed over is what quantizing f32 gives: the same bits.
        let change = first.iter().zip(&again).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt()
            / first.iter().map(|a| a.powi(2)).sum::<f32>().sqrt();
        println!("{arch}: the chained forward moved the logits by {change:.4} (relative L2)");
        match arch {
            "tsn_r50" | "tsm_r50" | "tsm_r18" | "slow_r50" | "c2d_r50" | "r2plus1d_r50" => {
                assert!(change > 0.0 && change < 0.05, "{arch}: {change}")
            }
            _ => assert_eq!(first, again, "{arch}: the chained forward differs from the first"),
        }
        // A ResNet-50's 16 bottlenecks hand over u8 from their two inner convolutions (32),
        // and a block's output to the next block's first convolutions (15, in u8 alone; TSM
        // shifts it in u8; C2D's stage-1 pool pools the bytes), and the stem to the first
        // block through its max pool (1, pooled as bytes). X3D's blocks do too (their inner
        // convolutions feed depthwise ones, which stay f32); the transformers' Linear layers
        // never do.
        match arch {
            "tsn_r50" | "tsm_r50" | "slow_r50" | "c2d_r50" => assert_eq!(chained, 32 + 15 + 1, "{arch}"),
            // R(2+1)D's conv_b is two convolutions (spatial, then temporal): three inner ones.
            "r2plus1d_r50" => assert_eq!(chained, 48 + 15 + 1, "{arch}"),
            // 8 basic blocks: one inner convolution each. Their shifted first convolutions
            // calibrate on the shifted input (a 3×3 one shifts a copy), so they map the
            // bytes of the block before to their own range.
            "tsm_r18" => assert_eq!(chained, 8 + 7 + 1, "{arch}"),
            "x3d_xs" => assert!(chained > 10, "{arch}: {chained}"),
            _ => assert_eq!(chained, 0, "{arch}"),
        }
        // A 2D ResNet runs its frames as time (TSN; TSM shifting them inside channel groups).
        let folded = plan.frames_folded();
        match arch {
            "tsn_r50" | "tsm_r50" | "tsm_r18" => assert_eq!(folded, plan.weights.len(), "{arch}"),
            _ => assert_eq!(folded, 0, "{arch}"),
        }
        // Each stage's shortcut convolution (ResNet-18's first stage has none) hands its output
        // over in u8 alone, quantized with the calibrated range of the residual it becomes.
        match arch {
            "tsn_r50" | "tsm_r50" | "slow_r50" | "c2d_r50" | "r2plus1d_r50" => {
                assert_eq!(residuals, 4, "{arch}")
            }
            "tsm_r18" => assert_eq!(residuals, 3, "{arch}"),
            _ => {}
        }
    }
}
