//! The int8 layers themselves: a convolution over its quantized (or handed-over) input, Linear
//! layers alone or side by side, each product through `qgemm` with its epilogue.

use super::{hand_off, ConvIn, Int8Layer, Int8Plan, Output};
use crate::nn::qgemm::{
    pack_b, pack_b_transposed, qgemm_packed, qgemm_packed_into, ActivationQuant, MatrixRows, PackedB,
    QEpilogue, QIsa, QOutput, QResidual, QuantizedMatrix, KG,
};
use crate::nn::simd::DisjointMut;
use std::borrow::Cow;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// The int8 convolution of `x` [N, C, T, H, W] over geometry `g` (`direct`: 1×1, stride 1, no
/// padding): x quantized once in channel planes, or handed over in u8 in channel groups of 4,
/// then temporally shifted by `shift` (TSM: frames as N, T = 1), its columns packed in u8
/// (padding the quantized zero); `w` [C_out, k] with the epilogue's BN `scale` per row, `bias`
/// and `residual` ([N, C_out, P]: f32, or u8 handed over, dequantized) added in f32, then ReLU.
/// Returns [N, C_out, T', H', W'] on `device`: f32, or u8 in channel groups for the
/// convolutions that read it (see [`feeds_next_conv`], [`read_by_convs`]).
#[allow(clippy::too_many_arguments)]
pub(in crate::nn) fn conv(
    layer: &Int8Layer,
    x: ConvIn,
    shift: Option<&crate::nn::shift::FrameShift>,
    g: &crate::nn::vol2col::Geometry3d,
    direct: bool,
    w: &[f32],
    (scale, bias, residual, relu): (&[f32], &[f32], Option<ConvIn>, bool),
    device: &candle_core::Device,
) -> candle_core::Result<candle_core::Tensor> {
    let (plan, index) = (&*layer.plan, layer.index);
    let cout = scale.len();
    let [ot, oh, ow] = g.out()?;
    let shape = (g.n, cout, ot, oh, ow);
    // Frames as time (`frames_as_time`): the 2D convolution over N frames as the 3D one over
    // [1, C, N, H, W], its bytes frames inside channel groups.
    let frames = g.n;
    let fold = layer.fold_frames && frames > 1;
    if fold && (g.input[0] != 1 || g.kernel[0] != 1 || g.pad[0] != 0) {
        candle_core::bail!(
            "int8: convolution {} takes its frames as time but is not a 2D one over frames",
            index + 1
        )
    }
    let folded;
    let g = match fold {
        true => {
            let [_, h, w] = g.input;
            let (stride, dilation) = ([1, g.stride[1], g.stride[2]], [1, g.dilation[1], g.dilation[2]]);
            folded = crate::nn::vol2col::Geometry3d { n: 1, input: [frames, h, w], stride, dilation, ..*g };
            &folded
        }
        false => g,
    };
    // A folded 1×1 convolution whose channels are no whole groups packs its columns.
    let direct = direct && (!fold || g.c.is_multiple_of(KG));
    let [ot, oh, ow] = g.out()?;
    let (images, positions) = (g.n, ot * oh * ow);
    let k = w.len() / cout.max(1);
    let a = plan.weights[index].get_or_init(|| {
        let folded: Vec<f32> =
            w.chunks(k.max(1)).zip(scale).flat_map(|(row, s)| row.iter().map(move |v| v * s)).collect();
        Arc::new(QuantizedMatrix::quantize(crate::nn::gemm::MatRef::row_major(&folded, cout, k)))
    });
    // The writer's u8 copy of an f32 input, quantized with this layer's range.
    let x = match &layer.shadow {
        Some(q) => ConvIn::U8(q),
        None => x,
    };
    let (aq, xq, grouped) = quantized_input(plan, index, a, (cout, k), x)?;
    // Bytes quantized with another map: each of the 128 values mapped to this layer's.
    let xq = match layer.remap {
        Some(from) => {
            let map: [u8; 256] = std::array::from_fn(|q| aq.quantize(from.dequantize(q as u8)));
            Cow::Owned(xq.iter().map(|&q| map[q as usize]).collect())
        }
        None => xq,
    };
    let image_len = g.c * g.in_volume();
    if xq.len() != images * image_len {
        candle_core::bail!(
            "int8: convolution {} got {} inputs for {images} images of {image_len}",
            index + 1,
            xq.len()
        )
    }
    if grouped && !g.c.is_multiple_of(KG) {
        candle_core::bail!("int8: convolution {} got {} channels in groups of {KG}", index + 1, g.c)
    }
    // A grouped input whose shift moves part of a group is read as channel planes.
    let grouped_shift = shift.map(|s| s.grouped(KG));
    // Folded, the frames of one image (frames inside).
    let per_frame = g.in_volume() / if fold { frames } else { 1 };
    let (xq, grouped) = match grouped && grouped_shift.as_ref().is_some_and(Option::is_none) {
        true => {
            let planes = super::columns::ungroup(&xq, images * g.c, g.in_volume());
            // Folded, [C, N, P] laid out as frames [N, C, P], as an input quantized here is.
            let planes = if fold { swap_outer(&planes, g.c, frames, per_frame) } else { planes };
            (Cow::Owned(planes), false)
        }
        false => (xq, grouped),
    };
    let xq = match (shift, grouped_shift.flatten()) {
        // Quantizing maps 0 to the zero point, so the shifted quantized input is the quantized
        // shifted input.
        // (Unfolded, `frames` is g.n and `per_frame` the volume.)
        (Some(s), _) if !grouped => Cow::Owned(s.apply_with(&xq, frames, g.c, per_frame, aq.zero_point)?),
        // Folded: whole groups' frames moved inside each group.
        (Some(_), Some(s)) if fold => {
            Cow::Owned(s.apply_frames_inside(&xq, frames, g.c / KG, per_frame * KG, aq.zero_point)?)
        }
        (Some(_), Some(s)) => {
            Cow::Owned(s.apply_with(&xq, g.n, g.c / KG, g.in_volume() * KG, aq.zero_point)?)
        }
        _ => xq,
    };
    // Channel planes whose columns need packing (a stem; a layer after a non-convolution) go in
    // channel groups, the channels padded to a whole group with the zero point (their weights
    // are 0), so that their panels are packed a block at a time with u32 copies as a handed-over
    // input's are. (Built a column row at a time, I3D-R50's 5×7×7 stem's 74 MB of columns were
    // 17 % of its forward.)
    let (xq, grouped) = match (grouped, direct, fold) {
        (false, false, false) => {
            let grouped =
                super::columns::group_channels(&xq, images, g.c, g.in_volume(), aq.zero_point, false);
            (Cow::Owned(grouped), true)
        }
        // Folded: every input quantized here, its frames' planes grouped frames inside.
        (false, _, true) => (
            Cow::Owned(super::columns::group_channels(&xq, frames, g.c, per_frame, aq.zero_point, true)),
            true,
        ),
        _ => (xq, grouped),
    };
    let image_len = match grouped {
        true => g.c.div_ceil(KG) * KG * g.in_volume(),
        false => image_len,
    };
    // A grouped input's packed columns run k as (c/4, tap, c%4): the weights' columns follow.
    let a = match grouped && !direct {
        true => plan.grouped_weights[index].get_or_init(|| Arc::new(a.grouped_taps(g.c, g.taps()))),
        false => a,
    };
    // A u8 residual: a block's input handed over for adding, dequantized with its map.
    let residual_q = match residual {
        Some(ConvIn::U8(r)) => super::residual_quant(r)?,
        _ => ActivationQuant { scale: 0.0, zero_point: 0 },
    };
    if let Some(r) = residual {
        let len = r.addr_len().1;
        if len != images * cout * positions {
            candle_core::bail!(
                "int8: convolution {} got a residual of {len} for {images} × {cout} × {positions}",
                index + 1
            )
        }
    }
    // Folded, an f32 residual ([N, C_out, P]) laid out as the output, frames inside.
    let residual_frames_inside;
    let residual = match residual {
        Some(ConvIn::F32(r)) if fold => {
            residual_frames_inside = swap_outer(r, frames, cout, positions / frames);
            Some(ConvIn::F32(&residual_frames_inside[..]))
        }
        r => r,
    };
    let isa = QIsa::detected();
    let one = crate::nn::vol2col::Geometry3d { n: 1, ..*g };
    // Image n's [C_out, P] block; its columns packed for the kernel straight from the quantized
    // volume: a grouped 1×1 stride-1 input is read in place; another grouped one is padded, then
    // packed with u32 copies (or gathers, for strided windows) a column block at a time by the
    // product's tasks, each block multiplied while it is in L2 (packed whole, 14 MB for
    // Slow-R50's res2, the columns went out to memory and back: the 3D ResNets ran 13–16 %
    // slower); channel planes (an input quantized here, 1×1 stride 1) are the B matrix itself.
    let image = |n: usize, o: QOutput| {
        let x_n = &xq[n * image_len..][..image_len];
        let epi = QEpilogue {
            bias: Some(bias),
            residual: residual.map(|r| match r {
                ConvIn::F32(r) => QResidual::F32(&r[n * cout * positions..][..cout * positions]),
                ConvIn::U8(r) => QResidual::U8(&r[n * cout * positions..][..cout * positions], residual_q),
            }),
            relu,
            transposed: false,
        };
        PACKED_B.with(|buf| {
            PADDED_GROUPED.with(|padded| {
                let (buf, padded) = (&mut buf.borrow_mut(), &mut padded.borrow_mut());
                let (columns, packer);
                let b = match (grouped, direct) {
                    (true, true) => PackedB::grouped_in_place(x_n, k, positions, buf),
                    // Packed a tile at a time by the product's tasks.
                    (true, false) => {
                        super::columns::pad_grouped(x_n, &one, aq.zero_point, padded);
                        columns = super::columns::GroupedColumns::new(padded, &one, [ot, oh, ow]);
                        packer = |panels, out: &mut [u8]| columns.pack(panels, out);
                        let (k, n) = columns.k_n();
                        PackedB::on_demand(k, n, &packer)
                    }
                    // Channel planes: a 1×1 stride-1 convolution's matrix (the others were
                    // grouped above).
                    (false, _) => pack_b(&MatrixRows { b: x_n, ldb: positions, k }, positions, buf),
                };
                qgemm_packed_into(isa, a, b, aq, o, positions, epi)
            })
        })
    };
    // u8 goes out in channel groups of 4: whole groups only.
    let output = match layer.output {
        Output::U8For(_) | Output::U8Shared(_) | Output::F32AndU8For(_) | Output::U8ForResidual(_)
            if !cout.is_multiple_of(KG) =>
        {
            Output::Learn
        }
        o => o,
    };
    let block = cout * positions;
    let len = images * block;
    // Folded, f32 goes out as [N, C_out, P] (u8 stays frames inside, for the convolutions).
    let frames_outside = |out: Vec<f32>| match fold {
        true => swap_outer(&out, cout, frames, positions / frames),
        false => out,
    };
    let (out, shadow) = match (output, plan.output_quant(output)) {
        (Output::U8For(_) | Output::U8Shared(_) | Output::U8ForResidual(_), Some(q)) => {
            let mut out = Vec::<u8>::with_capacity(len);
            let p = DisjointMut(out.as_mut_ptr());
            // SAFETY: image n writes block n of `out`'s capacity, which no other image does.
            per_image(images, |n| image(n, QOutput::U8(unsafe { uninit_block(p, n, block) }, q)));
            // SAFETY: every block was written whole.
            unsafe { out.set_len(len) };
            (candle_core::Tensor::from_vec(out, shape, device)?, None)
        }
        (Output::F32AndU8For(_), Some(q)) => {
            let (mut out, mut copy) = (Vec::<f32>::with_capacity(len), Vec::<u8>::with_capacity(len));
            let (p, pq) = (DisjointMut(out.as_mut_ptr()), DisjointMut(copy.as_mut_ptr()));
            per_image(images, |n| {
                // SAFETY: as above, for both outputs.
                let (o, oq) = unsafe { (uninit_block(p, n, block), uninit_block(pq, n, block)) };
                image(n, QOutput::Both(o, oq, q))
            });
            // SAFETY: as above.
            unsafe { (out.set_len(len), copy.set_len(len)) };
            let out = frames_outside(out);
            (candle_core::Tensor::from_vec(out, shape, device)?, Some(copy))
        }
        _ => {
            let mut out = Vec::<f32>::with_capacity(len);
            let p = DisjointMut(out.as_mut_ptr());
            // SAFETY: as above.
            per_image(images, |n| image(n, QOutput::F32(unsafe { uninit_block(p, n, block) })));
            // SAFETY: as above.
            unsafe { out.set_len(len) };
            (candle_core::Tensor::from_vec(frames_outside(out), shape, device)?, None)
        }
    };
    hand_off(layer, output, &out, shadow);
    Ok(out)
}

/// `x` [a, b, p] as [b, a, p].
pub(super) fn swap_outer<T: Copy + Send + Sync>(x: &[T], a: usize, b: usize, p: usize) -> Vec<T> {
    assert_eq!(x.len(), a * b * p, "swap_outer: {} values for {a} × {b} × {p}", x.len());
    let mut out = Vec::with_capacity(x.len());
    for j in 0..b {
        for i in 0..a {
            out.extend_from_slice(&x[(i * b + j) * p..][..p]);
        }
    }
    out
}

/// Block n (`block` values) of the buffer at `p`.
///
/// # Safety
/// The buffer holds block n; no one else uses it while the slice lives.
unsafe fn uninit_block<'a, T>(p: DisjointMut<T>, n: usize, block: usize) -> &'a mut [MaybeUninit<T>] {
    std::slice::from_raw_parts_mut(p.at(n * block) as *mut MaybeUninit<T>, block)
}

/// `image(n)` for every image n: one image per task on the pool's threads where they share out
/// evenly enough, in turn otherwise (each then split over the threads by the product).
fn per_image(images: usize, image: impl Fn(usize) + Sync) {
    let threads = crate::nn::simd::pool_threads();
    if threads > 1 && images >= threads && (images % threads == 0 || images >= 4 * threads) {
        // A batch of images (TSN's and TSM's frames): one image per task, each packed and
        // multiplied on its own thread, rather than every image split over the threads (a fork
        // and join per image and step, and each core's columns read by the other).
        use rayon::prelude::*;
        (0..images).into_par_iter().for_each(|n| crate::nn::simd::sequential(|| image(n)));
    } else {
        (0..images).for_each(image);
    }
}

/// Linear layers `layers` (numbers and plan from `next_conv`) that read one input `x`
/// [rows, k] (one layer, or attention's q, k and v), with weights `weights` ([out_i, k] each,
/// quantized once per plan, symmetric per output feature) and `biases`: [rows, Σ out_i], their
/// outputs side by side. They observed the same input, so calibrated one range: x is quantized
/// per tensor and packed once, and one product runs over their stacked weights (quantized per
/// row, so the same values as each layer's own), the biases in the epilogue, written transposed.
/// None when the ranges differ.
pub(in crate::nn) fn linears(
    layers: &[Int8Layer],
    x: &[f32],
    rows: usize,
    weights: &[&[f32]],
    biases: &[Option<Vec<f32>>],
) -> candle_core::Result<Option<Vec<f32>>> {
    let Some(first) = layers.first() else { return Ok(Some(vec![])) };
    let (plan, index) = (&*first.plan, first.index);
    let range = plan.calibration.ranges[index];
    if layers.iter().any(|l| plan.calibration.ranges[l.index] != range) {
        return Ok(None);
    }
    let k = x.len() / rows.max(1);
    let total: usize = weights.iter().map(|w| w.len() / k.max(1)).sum();
    let quantize =
        |w: &[f32], rows| Arc::new(QuantizedMatrix::quantize(crate::nn::gemm::MatRef::row_major(w, rows, k)));
    let a = if let [w] = weights {
        plan.weights[index].get_or_init(|| quantize(w, total)).clone()
    } else {
        let mut stacked =
            plan.stacked.lock().map_err(|_| candle_core::Error::Msg("int8 plan poisoned".into()))?;
        stacked.entry(index).or_insert_with(|| quantize(&weights.concat(), total)).clone()
    };
    let bias: Option<Vec<f32>> = biases.iter().any(Option::is_some).then(|| {
        let zeros = |w: &&[f32]| vec![0.0; w.len() / k.max(1)];
        biases.iter().zip(weights).flat_map(|(b, w)| b.clone().unwrap_or_else(|| zeros(w))).collect()
    });
    linear_product(plan, index, &a, x, rows, bias.as_deref()).map(Some)
}

/// x [rows, k] quantized with layer `index`'s range, times `a`ᵀ (+ bias): [rows, a.rows()].
fn linear_product(
    plan: &Int8Plan,
    index: usize,
    a: &QuantizedMatrix,
    x: &[f32],
    rows: usize,
    bias: Option<&[f32]>,
) -> candle_core::Result<Vec<f32>> {
    let (out_features, k) = (a.rows(), x.len() / rows.max(1));
    let (aq, xq, _) = quantized_input(plan, index, a, (out_features, k), ConvIn::F32(x))?;
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

/// Layer `index`'s input `x` quantized with its calibrated range (a u8 `x` already is), once
/// its quantized weights `a` are checked to be `shape` (rows × k), and whether it is in channel
/// groups (a u8 `x`) or channel planes (quantized here).
fn quantized_input<'x>(
    plan: &Int8Plan,
    index: usize,
    a: &QuantizedMatrix,
    (rows, k): (usize, usize),
    x: ConvIn<'x>,
) -> candle_core::Result<(ActivationQuant, Cow<'x, [u8]>, bool)> {
    if (a.rows(), a.cols()) != (rows, k) {
        candle_core::bail!("int8: layer {} is {rows}×{k}, quantized as {}×{}", index + 1, a.rows(), a.cols())
    }
    let (lo, hi) = plan.calibration.ranges[index];
    let aq = ActivationQuant::from_range(lo, hi);
    Ok(match x {
        ConvIn::F32(x) => (aq, Cow::Owned(aq.quantize_slice(x)), false),
        ConvIn::U8(x) => (aq, Cow::Borrowed(x), true),
    })
}

thread_local! {
    /// The packed columns of the convolution running on this thread, kept between calls.
    static PACKED_B: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Or, in channel groups, padded so (`columns::pad_grouped`).
    static PADDED_GROUPED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}
