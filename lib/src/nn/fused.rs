//! Inference-time convolution with its BatchNorm folded in, the residual added and the ReLU
//! applied inside the GEMM's epilogue: one pass over the output instead of four, and no
//! [C_out, N·P] → [N, C_out, P] transpose (the GEMM writes each image's block in place).
//!
//! Eval mode only (no gradient); `ConvBn::forward_act` and `ConvBn3d::forward_act` call it for
//! f32 CPU tensors and use the separate differentiable ops otherwise.

use super::depthwise3d::depthwise_forward;
use super::gemm::{
    conv_on_tiles, sgemm_columns_new, sgemm_columns_shifted_new, sgemm_conv_new, Activations, Columns,
    ConvRhs, Epilogue, FrameRows, MatRef, Product,
};
use super::vol2col::Geometry3d;
use super::BatchNorm2d;
use candle_core::{DType, Result, Storage, Tensor};

thread_local! {
    static PORTABLE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with vidkit's CPU kernels switched off on this thread: every op then takes the path
/// built from candle's own ops alone, the one it takes on a GPU, so that path can be tested (and
/// compared with the kernels) on a machine without one.
pub fn with_portable_ops<T>(f: impl FnOnce() -> T) -> T {
    super::scoped::with_setting(&PORTABLE_ONLY, true, f)
}

/// Whether `x` must take the candle-only path: it is not on the CPU (candle runs vidkit's custom
/// ops on the CPU only), or `with_portable_ops` asked for it.
pub fn portable(x: &Tensor) -> bool {
    !x.device().is_cpu() || PORTABLE_ONLY.with(|p| p.get())
}

/// Err when a CPU kernel is about to run inside `with_portable_ops` (called first by every custom
/// op), so a test of the candle-only path fails where that path still reaches a kernel.
pub(super) fn kernel_allowed(op: &str) -> Result<()> {
    if PORTABLE_ONLY.with(|p| p.get()) {
        candle_core::bail!("{op}: a CPU-only kernel on the candle-only path")
    }
    Ok(())
}

/// Whether the fused path (vidkit's CPU kernels) applies: f32 on the CPU.
pub fn fusable(x: &Tensor) -> bool {
    // u8: an int8 convolution's output for the next (`int8::feeds_next_conv`).
    (x.dtype() == DType::F32 || x.dtype() == DType::U8 && super::int8::active()) && !portable(x)
}

/// Whether a fused inference convolution takes `x`: [`fusable`], or a convolution's output handed
/// over in bf16 (`bf16_act`; the convolutions that can be its readers ask this).
pub fn conv_fusable(x: &Tensor) -> bool {
    fusable(x) || x.dtype() == DType::BF16 && !portable(x)
}

/// BN's per-channel scale `γ/√(σ²+ε)` (the GEMM applies it to the weight rows as it packs them)
/// and bias `β − μ·γ/√(σ²+ε)` (+ the conv's own bias, scaled).
fn fold(cout: usize, conv_bias: Option<&Tensor>, bn: &BatchNorm2d) -> Result<(Vec<f32>, Vec<f32>)> {
    let vec = |t: &Tensor| t.to_dtype(DType::F32)?.to_vec1::<f32>();
    let (gamma, beta) = (vec(&bn.weight)?, vec(&bn.bias)?);
    let (mean, var) = (vec(bn.running_mean.as_tensor())?, vec(bn.running_var.as_tensor())?);
    let cb = match conv_bias {
        Some(b) => vec(b)?,
        None => vec![0.0; cout],
    };
    if gamma.len() != cout || cb.len() != cout {
        candle_core::bail!("batch norm over {} channels after a conv with {cout}", gamma.len())
    }
    // The same expression as BatchNorm2d's eval path, so fused and unfused agree closely.
    let scale: Vec<f32> =
        (0..cout).map(|o| (1.0 / ((var[o] as f64 + bn.eps) as f32).sqrt()) * gamma[o]).collect();
    let bias = (0..cout).map(|o| beta[o] - mean[o] * scale[o] + cb[o] * scale[o]).collect();
    Ok((scale, bias))
}

/// The f32 data of a contiguous CPU tensor's storage.
fn cpu_f32<'a>(storage: &'a Storage, layout: &candle_core::Layout) -> Result<&'a [f32]> {
    kernel_allowed("fused conv")?;
    let Storage::Cpu(cpu) = storage else { candle_core::bail!("fused conv: expected a CPU tensor") };
    let data = cpu.as_slice::<f32>()?;
    let Some((lo, hi)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused conv: not contiguous")
    };
    Ok(&data[lo..hi])
}

/// The bf16 bits of a contiguous CPU tensor's storage.
fn cpu_bf16<'a>(storage: &'a Storage, layout: &candle_core::Layout) -> Result<&'a [u16]> {
    kernel_allowed("fused conv")?;
    let Storage::Cpu(cpu) = storage else { candle_core::bail!("fused conv: expected a CPU tensor") };
    let data = cpu.as_slice::<half::bf16>()?;
    let Some((lo, hi)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused conv: not contiguous")
    };
    Ok(super::bf16_act::bits(&data[lo..hi]))
}

/// The u8 data of a contiguous CPU tensor's storage.
fn cpu_u8<'a>(storage: &'a Storage, layout: &candle_core::Layout) -> Result<&'a [u8]> {
    let Storage::Cpu(cpu) = storage else { candle_core::bail!("fused conv: expected a CPU tensor") };
    let data = cpu.as_slice::<u8>()?;
    let Some((lo, hi)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused conv: not contiguous")
    };
    Ok(&data[lo..hi])
}

/// relu(BN(conv(x)) + residual) for `x` [N, C, T, H, W] and a dense (groups 1) 3D geometry whose
/// weight is `weight` [C_out, C, kt, kh, kw]; `residual` is [N, C_out, T', H', W'].
pub fn conv_bn_act_3d(
    x: &Tensor,
    g: Geometry3d,
    weight: &Tensor,
    conv_bias: Option<&Tensor>,
    bn: &BatchNorm2d,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    conv_bn_act_3d_shifted(x, g, weight, conv_bias, bn, residual, relu, None)
}

/// `conv_bn_act_3d` of x temporally shifted (`shift`, frames as x's N, one frame each), read
/// shifted by the GEMM's packing for a 1×1 conv with AVX-512 (no shifted copy of x), shifted
/// first otherwise.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_bn_act_3d_shifted(
    x: &Tensor,
    g: Geometry3d,
    weight: &Tensor,
    conv_bias: Option<&Tensor>,
    bn: &BatchNorm2d,
    residual: Option<&Tensor>,
    relu: bool,
    shift: Option<&super::shift::FrameShift>,
) -> Result<Tensor> {
    let direct = g.taps() == 1 && g.stride == [1; 3] && g.pad == [0; 3];
    if shift.is_some() && g.input[0] != 1 {
        candle_core::bail!("fused conv: a temporal shift needs frames as the batch (T = 1)")
    }
    // An int8 run shifts its quantized input (`int8::conv`).
    let int8_shift = shift.filter(|_| super::int8::active());
    let shift = match shift.filter(|_| int8_shift.is_none()) {
        Some(s) if !(direct && super::gemm::blocked_isa().is_some()) => {
            let (n, c, _, h, w) = x.dims5()?;
            // A bf16 block output (`bf16_act`) shifted as f32: widening is exact.
            let x = super::bf16_act::widened(x)?.contiguous()?;
            let xs = x.reshape((n, c, h, w))?.apply_op1(super::shift::ShiftOp(s.clone()))?;
            return conv_bn_act_3d_shifted(
                &xs.reshape(x.shape())?,
                g,
                weight,
                conv_bias,
                bn,
                residual,
                relu,
                None,
            );
        }
        s => s.map(|s| s.deltas()),
    };
    if shift.as_ref().is_some_and(|(_, d)| d.len() != g.c) {
        candle_core::bail!("fused conv: the shift's bands do not cover {} channels", g.c)
    }
    // bf16 activations (`bf16_act`): every convolution takes its flag, the tile paths use it.
    let tiles = super::bf16_act::on_tiles();
    // Few output channels: the direct kernel, without packing the column matrix (f32 in and out).
    let few_channels = !direct && super::conv_direct::applies(weight.dim(0)?, &g);
    let bf16_out = super::bf16_act::take_handover() && tiles && !few_channels;
    let [ot, oh, ow] = g.out()?;
    let p = ot * oh * ow;
    let cout = weight.dim(0)?;
    let k = g.c * g.taps();
    let (scale, bias) = fold(cout, conv_bias, bn)?;
    if weight.elem_count() != cout * k || weight.dtype() != DType::F32 {
        candle_core::bail!("fused conv: weight {:?} does not fit {} input channels", weight.dims(), g.c)
    }
    // int8 knows a convolution by its weight buffer: the model's own, not a contiguous copy.
    let own_weights = weight.is_contiguous();
    // So is the weight cache of an inference run (`gemm::weight_cache`).
    let weight_id = own_weights.then(|| weight.id());
    let weight = weight.contiguous()?;
    let (w_storage, w_layout) = weight.storage_and_layout();
    let w = cpu_f32(&w_storage, w_layout)?;
    // Output [N, C_out, P] written in place with the epilogue, tiles that straddle two images
    // (P = 49 at ResNet's last stage) as a run per image (`store_tile_part`).
    let a = MatRef::row_major(w, cout, k);
    let (c_stride, ldc) = (cout * p, p);
    let x = x.contiguous()?;
    let residual = residual.map(|r| r.contiguous()).transpose()?;
    if let Some(r) = &residual {
        if r.dims() != [g.n, cout, ot, oh, ow] {
            candle_core::bail!(
                "fused conv: residual {:?}, output [{}, {cout}, {ot}, {oh}, {ow}]",
                r.dims(),
                g.n
            )
        }
    }
    let is_bf16 = |t: &Tensor| t.dtype() == DType::BF16;
    if tiles && !few_channels && (bf16_out || is_bf16(&x) || residual.as_ref().is_some_and(is_bf16)) {
        let epi = Epilogue { row_scale: Some(&scale), row_bias: Some(&bias), relu, ..Default::default() };
        let rows = shift.as_ref().map(|(segments, delta)| FrameRows { segments: *segments, delta });
        let out =
            conv_on_tiles_bf16(a, &x, g, [ot, oh, ow], rows, epi, residual.as_ref(), bf16_out, weight_id)?;
        return Ok(out);
    }
    // Off the tile paths a bf16 activation is read widened (exact).
    let (x, residual) =
        (super::bf16_act::widened(&x)?, residual.map(|r| super::bf16_act::widened(&r)).transpose()?);
    let (x_storage, x_layout) = x.storage_and_layout();
    let input = match x.dtype() {
        DType::U8 => super::int8::ConvIn::U8(cpu_u8(&x_storage, x_layout)?),
        _ => super::int8::ConvIn::F32(cpu_f32(&x_storage, x_layout)?),
    };
    let res_guard = residual.as_ref().map(|r| (r.dtype(), r.storage_and_layout()));
    // u8: a block's input handed over in u8 alone (`int8::read_by_convs`).
    let res_in = match &res_guard {
        Some((DType::U8, (storage, layout))) => Some(super::int8::ConvIn::U8(cpu_u8(storage, layout)?)),
        Some((_, (storage, layout))) => Some(super::int8::ConvIn::F32(cpu_f32(storage, layout)?)),
        None => None,
    };
    if let Some(int8) = super::int8::next_conv(input, res_in, w, own_weights)? {
        let (epi, device) = ((&scale[..], &bias[..], res_in, relu), x.device());
        return super::int8::conv(&int8, input, int8_shift, &g, direct, w, epi, device);
    }
    let res_data = match res_in {
        Some(super::int8::ConvIn::F32(r)) => Some(r),
        Some(super::int8::ConvIn::U8(_)) => candle_core::bail!("fused conv: a u8 residual outside int8"),
        None => None,
    };
    if int8_shift.is_some() {
        candle_core::bail!("fused conv: a shift left for an int8 run outside one")
    }
    let super::int8::ConvIn::F32(xs) = input else {
        candle_core::bail!("fused conv: a u8 input outside int8")
    };
    #[cfg(target_arch = "x86_64")]
    if few_channels {
        let mut out = super::vol2col::zeros_par(g.n * cout * p);
        super::conv_direct::conv_direct(w, &scale, &bias, res_data, relu, xs, &g, &mut out)?;
        return Tensor::from_vec(out, (g.n, cout, ot, oh, ow), x.device());
    }
    let epi = Epilogue {
        row_scale: Some(&scale),
        row_bias: Some(&bias),
        residual: res_data,
        relu,
        ..Default::default()
    };
    let product = || {
        if direct {
            // 1×1×1, stride 1: each image's [C, P] block is B itself.
            let b = MatRef { data: xs, rows: k, cols: g.n * p, rs: p, cs: 1 };
            let cols = Columns { per: p, b_stride: g.c * p, c_stride };
            match &shift {
                Some((segments, delta)) => {
                    sgemm_columns_shifted_new(a, b, cols, FrameRows { segments: *segments, delta }, ldc, epi)
                }
                None => sgemm_columns_new(a, b, cols, ldc, epi),
            }
        } else {
            let conv = ConvRhs { x: xs, g, out: [ot, oh, ow] };
            sgemm_conv_new(a, conv, Columns { per: p, b_stride: 0, c_stride }, ldc, epi)
        }
    };
    let product = match weight_id {
        Some(id) => super::gemm::as_weight(id, w, product),
        None => product(),
    };
    Tensor::from_vec(product, (g.n, cout, ot, oh, ow), x.device())
}

/// The fused convolution on the bf16 tile paths (`gemm::conv_on_tiles`): `x` and the residual
/// f32 or bf16, the output bf16 where `bf16_out`; A is the weight (with `weight_id`, its cached
/// packing), the epilogue's residual taken from `residual`.
#[allow(clippy::too_many_arguments)]
fn conv_on_tiles_bf16(
    a: MatRef,
    x: &Tensor,
    g: Geometry3d,
    out: [usize; 3],
    rows: Option<FrameRows>,
    epi: Epilogue,
    residual: Option<&Tensor>,
    bf16_out: bool,
    weight_id: Option<candle_core::TensorId>,
) -> Result<Tensor> {
    let (x_storage, x_layout) = x.storage_and_layout();
    let input = match x.dtype() {
        DType::BF16 => Activations::Bf16(cpu_bf16(&x_storage, x_layout)?),
        _ => Activations::F32(cpu_f32(&x_storage, x_layout)?),
    };
    let res_guard = residual.map(|r| (r.dtype(), r.storage_and_layout()));
    let epi = match &res_guard {
        Some((DType::BF16, (storage, layout))) => {
            Epilogue { residual_bf16: Some(cpu_bf16(storage, layout)?), ..epi }
        }
        Some((_, (storage, layout))) => Epilogue { residual: Some(cpu_f32(storage, layout)?), ..epi },
        None => epi,
    };
    let product = || conv_on_tiles(a, input, g, out, rows, epi, bf16_out);
    let product = match weight_id {
        Some(id) => super::gemm::as_weight(id, a.data, product),
        None => product(),
    };
    let shape = (g.n, a.rows, out[0], out[1], out[2]);
    if bf16_out {
        super::bf16_act::count_handover();
    }
    match product {
        Product::F32(v) => Tensor::from_vec(v, shape, x.device()),
        Product::Bf16(v) => Tensor::from_vec(v, shape, x.device()),
    }
}

/// act(BN(depthwise(x))) for `x` [N, C, T, H, W] and a depthwise geometry (weight [C, 1, kt,
/// kh, kw]): BN's scale folded into the taps, its bias and the ReLU applied as each channel's
/// output is written; one pass instead of three.
pub fn depthwise_bn_act_3d(
    x: &Tensor,
    g: Geometry3d,
    weight: &Tensor,
    bn: &BatchNorm2d,
    relu: bool,
) -> Result<Tensor> {
    depthwise_branches_bn_act_3d(x, g, &[(weight, bn)], relu)
}

/// act(Σ BN_b(depthwise_b(x))) over parallel depthwise branches of odd, centred kernels (each
/// padded to keep the size) no larger than `g.kernel`, same stride: the branches folded into one
/// kernel as PP-LCNetV2's `rep()` does for deployment, so one pass replaces a pass per branch and
/// the sums. The weights are [C, 1, kt, kh, kw] or [C, 1, kh, kw].
pub fn depthwise_branches_bn_act_3d(
    x: &Tensor,
    g: Geometry3d,
    branches: &[(&Tensor, &BatchNorm2d)],
    relu: bool,
) -> Result<Tensor> {
    let [kt, kh, kw] = g.kernel;
    let mut taps = vec![0f32; g.c * kt * kh * kw];
    let mut bias = vec![0f32; g.c];
    for &(weight, bn) in branches {
        let (scale, shift) = fold(g.c, None, bn)?;
        let b = match *weight.dims() {
            [c, 1, h, w] if c == g.c => [1, h, w],
            [c, 1, t, h, w] if c == g.c => [t, h, w],
            _ => candle_core::bail!("depthwise branch weight {:?} for {} channels", weight.dims(), g.c),
        };
        if (0..3).any(|a| b[a] > g.kernel[a] || (g.kernel[a] - b[a]) % 2 != 0) {
            candle_core::bail!("depthwise branch kernel {b:?} does not centre in {:?}", g.kernel)
        }
        let at = [(kt - b[0]) / 2, (kh - b[1]) / 2, (kw - b[2]) / 2];
        let w = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for (c, filter) in w.chunks_exact(b.iter().product()).enumerate() {
            for (i, v) in filter.iter().enumerate() {
                let (dt, dh, dw) = (i / (b[1] * b[2]), i / b[2] % b[1], i % b[2]);
                taps[((c * kt + dt + at[0]) * kh + dh + at[1]) * kw + dw + at[2]] += v * scale[c];
            }
            bias[c] += shift[c];
        }
    }
    // A bf16 activation handed over (`bf16_act`) read widened.
    let x = super::bf16_act::widened(x)?.contiguous()?;
    let (x_storage, x_layout) = x.storage_and_layout();
    let (y, [ot, oh, ow]) =
        depthwise_forward(cpu_f32(&x_storage, x_layout)?, &g, &taps, Some((&bias, relu)))?;
    Tensor::from_vec(y, (g.n, g.c, ot, oh, ow), x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Conv3d, Conv3dConfig};
    use candle_core::{Device, Var};
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn portable_ops_end_with_their_scope_even_on_a_panic() {
        let x = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(with_portable_ops(|| portable(&x)));
        let caught = std::panic::catch_unwind(|| with_portable_ops(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(!portable(&x), "the kernels stay off after a caught panic");
        assert!(kernel_allowed("test").is_ok());
    }

    /// Fused = conv → BN (eval) → + residual → ReLU with the separate ops, for the geometries the
    /// models use (1×1×1 direct, strided 1×1×1, (1,3,3) and (3,3,3) with padding, a bias, 7×7
    /// stems, stride 3, dilation), through the GEMM (40 output channels) and the direct kernel
    /// (≤ 16: one and two row panels).
    #[test]
    fn fused_equals_separate_ops() {
        let dev = Device::Cpu;
        for &(kernel, stride, pad, dilation, bias) in &[
            ([1, 1, 1], [1, 1, 1], [0, 0, 0], 1, false),
            ([1, 1, 1], [1, 2, 2], [0, 0, 0], 1, false),
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], 1, false),
            ([3, 3, 3], [1, 1, 1], [1, 1, 1], 1, true),
            ([3, 1, 1], [2, 1, 1], [1, 0, 0], 1, false),
            // w-strided: packed from the phase-split input (`gemm::split_w_phases`).
            ([1, 7, 7], [1, 2, 2], [0, 3, 3], 1, false),
            ([3, 3, 3], [2, 1, 3], [1, 1, 2], 1, true),
            // SlowFast's fast stem; a dilated kernel.
            ([5, 7, 7], [1, 2, 2], [2, 3, 3], 1, false),
            ([3, 3, 3], [1, 2, 2], [2, 2, 2], 2, false),
        ] {
            for cout in [8, 14, 40] {
                let vm = VarMap::new();
                let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
                let cfg = Conv3dConfig {
                    stride,
                    padding: pad,
                    dilation: [dilation; 3],
                    bias,
                    ..Default::default()
                };
                let conv = Conv3d::new(6, cout, kernel, cfg, vb.pp("c")).unwrap();
                let bn = BatchNorm2d::new(cout, vb.pp("bn")).unwrap();
                // Non-trivial BN statistics and affine parameters.
                crate::nn::randomise_params(&vm);
                // 5 × 9 × 11 positions: tiles straddling two images; 4 × 16 × 16: whole tiles; one
                // image; rows of several tiles with a partial last one.
                for shape in [(2, 6, 5, 9, 11), (2, 6, 4, 16, 16), (1, 6, 3, 7, 5), (1, 6, 2, 3, 150)] {
                    let x = crate::rng::randn(0f32, 1., shape, &dev).unwrap();
                    let y_ref = bn.forward_t(&conv.forward(&x).unwrap(), false).unwrap();
                    let res =
                        Var::from_tensor(&crate::rng::randn(0f32, 1., y_ref.shape(), &dev).unwrap()).unwrap();
                    let g = conv.geometry_of(&x).unwrap();
                    for with_res in [true, false] {
                        let (res, want) = if with_res {
                            (Some(res.as_tensor()), (&y_ref + res.as_tensor()).unwrap().relu().unwrap())
                        } else {
                            (None, y_ref.clone())
                        };
                        let got = conv_bn_act_3d(&x, g, &conv.weight, conv.bias.as_ref(), &bn, res, with_res)
                            .unwrap();
                        let d = (got - &want)
                            .unwrap()
                            .abs()
                            .unwrap()
                            .max_all()
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap();
                        // Relative to the output's scale: the fast stem sums 1470 products.
                        let top = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                        assert!(
                            d < 1e-5 * (1.0 + top),
                            "{kernel:?} {stride:?} {shape:?} {cout}: {d} (max {top})"
                        );
                    }
                }
            }
        }
    }
}
