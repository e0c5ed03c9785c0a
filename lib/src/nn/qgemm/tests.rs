use super::*;
use crate::rng::Rng;

fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
}

fn random_u7(n: usize, rng: &mut Rng) -> Vec<u8> {
    (0..n).map(|_| (rng.uniform() * 128.0).min(127.0) as u8).collect()
}

/// Every kernel's f32 output for the same quantized operands.
fn outputs(
    a: &QuantizedMatrix,
    b: &[u8],
    n: usize,
    bq: ActivationQuant,
    epi: QEpilogue,
) -> Vec<(Option<QIsa>, Vec<f32>)> {
    let isas = [Some(QIsa::Amx), Some(QIsa::Avx512Vnni), Some(QIsa::Avx2), None]
        .into_iter()
        .filter(|i| i.is_none_or(|i| i.supported()));
    isas.map(|isa| {
        let mut c = vec![f32::NAN; a.rows() * n];
        qgemm(isa, a, b, n, n, bq, &mut c, n, epi);
        (isa, c)
    })
    .collect()
}

/// The product in f64 from the quantized values: what the i32 sums and the f32 epilogue give
/// up to the epilogue's rounding.
fn reference(a: &QuantizedMatrix, b: &[u8], n: usize, bq: ActivationQuant, epi: QEpilogue) -> Vec<f64> {
    let (m, k) = (a.rows(), a.cols());
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: i64 =
                (0..k).map(|p| a.value(i, p) as i64 * (b[p * n + j] as i64 - bq.zero_point as i64)).sum();
            let v = s as f64 * a.scales()[i] as f64 * bq.scale as f64
                + epi.bias.map_or(0.0, |b| b[i] as f64)
                + match epi.residual {
                    Some(QResidual::F32(r)) => r[i * n + j] as f64,
                    Some(QResidual::U8(r, q)) => q.dequantize(r[((i / 4) * n + j) * 4 + i % 4]) as f64,
                    None => 0.0,
                };
            c[i * n + j] = if epi.relu { v.max(0.0) } else { v };
        }
    }
    c
}

/// Kernels agree bit for bit and match the exact sums, over shapes that leave partial panels,
/// partial k groups, several column blocks and blocks that split into uneven tiles (4 panels:
/// 2 + 2; 13: 2 + 3 + 2 + 3 + 3) and a wide B (38 panels), with a bias and ReLU; written as
/// f32, transposed, or requantized to u8.
#[test]
fn int8_kernels_agree_with_the_exact_sums() {
    let mut rng = Rng::new(11);
    let mut ran = vec![];
    for (m, k, n) in [
        (1, 1, 1),
        (5, 7, 17),
        (13, 64, 40),
        (8, 4099, 70),
        (37, 300, 33),
        (9, 20, 64),
        (16, 40, 200),
        (6, 300, 600),
        (70, 200, 100),
    ] {
        let a = QuantizedMatrix::quantize(MatRef::row_major(&random(m * k, &mut rng), m, k));
        let b = random_u7(k * n, &mut rng);
        let (bias, residual) = (random(m, &mut rng), random(m * n, &mut rng));
        // A u8 residual in groups of 4 rows (a block's input handed over in u8).
        let residual_q = random_u7(m.div_ceil(4) * 4 * n, &mut rng);
        let rq = ActivationQuant { scale: 0.05, zero_point: 20 };
        let bq = ActivationQuant { scale: 0.02, zero_point: 37 };
        for epi in [
            QEpilogue::default(),
            QEpilogue {
                bias: Some(&bias),
                residual: Some(QResidual::F32(&residual)),
                relu: true,
                transposed: false,
            },
            QEpilogue {
                bias: Some(&bias),
                residual: Some(QResidual::U8(&residual_q, rq)),
                relu: true,
                transposed: false,
            },
            QEpilogue { bias: Some(&bias), residual: None, relu: true, transposed: false },
        ] {
            let want = reference(&a, &b, n, bq, epi);
            let outs = outputs(&a, &b, n, bq, epi);
            for (isa, got) in &outs {
                for (w, g) in want.iter().zip(got) {
                    assert!(
                        (w - *g as f64).abs() <= 1e-5 * w.abs().max(1.0),
                        "{isa:?} {m}×{k}×{n}: {w} vs {g}"
                    );
                }
                ran.push(*isa);
            }
            assert!(outs.windows(2).all(|p| p[0].1 == p[1].1), "{m}×{k}×{n}: the kernels differ");
            // Requantized to u8 for the next layer, in groups of 4 rows: the bytes that
            // quantizing the f32 C gives (this range clamps some values at both ends), the rows
            // past m in the last group 0.
            let oq = ActivationQuant { scale: 0.03, zero_point: 40 };
            let grouped_len = m.div_ceil(4) * 4 * n;
            for (isa, want) in &outs {
                use std::mem::MaybeUninit;
                for both in [false, true] {
                    let mut cq = vec![MaybeUninit::new(0xAAu8); grouped_len];
                    let mut c = vec![MaybeUninit::new(f32::NAN); m * n];
                    let mut buf = vec![];
                    let packed = pack_b_matrix(&b, n, k, n, &mut buf);
                    let out = match both {
                        false => QOutput::U8(&mut cq, oq),
                        true => QOutput::Both(&mut c, &mut cq, oq),
                    };
                    qgemm_packed_into(*isa, &a, packed, bq, out, n, epi);
                    for i in 0..m.div_ceil(4) * 4 {
                        for j in 0..n {
                            // SAFETY: every value was initialised above.
                            let q = unsafe { cq[((i / 4) * n + j) * 4 + i % 4].assume_init() };
                            let w = if i < m { oq.quantize(want[i * n + j]) } else { 0 };
                            assert_eq!(q, w, "{isa:?} {m}×{k}×{n} requantized, element ({i}, {j})");
                            // SAFETY: as above.
                            let f = (i < m).then(|| unsafe { c[i * n + j].assume_init() });
                            assert!(
                                !both || f.is_none_or(|f| f == want[i * n + j]),
                                "{isa:?} {m}×{k}×{n} f32 beside u8"
                            );
                        }
                    }
                }
            }
            // B read in place from its rows in groups of 4 (a grouped u8 activation; the last
            // partial panel packed apart): the same values.
            let mut grouped = vec![0u8; k.div_ceil(4) * 4 * n];
            for p in 0..k {
                for j in 0..n {
                    grouped[((p / 4) * n + j) * 4 + p % 4] = b[p * n + j];
                }
            }
            for (isa, want) in &outs {
                let mut c = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
                let mut tail = vec![];
                let in_place = PackedB::grouped_in_place(&grouped, k, n, &mut tail);
                qgemm_packed(*isa, &a, in_place, bq, &mut c, n, epi);
                // SAFETY: qgemm_packed wrote every value.
                let got: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
                assert_eq!(&got, want, "{isa:?} {m}×{k}×{n}: B in place");
            }
            // Panels packed on demand, by each task (one thread) or whole first (tasks sharing
            // column blocks): the same values.
            let mut whole = vec![];
            let panels = pack_b_matrix(&b, n, k, n, &mut whole).data;
            let panel_len = k.div_ceil(KG) * QNR * KG;
            let packer = |range: std::ops::Range<usize>, out: &mut [u8]| {
                out.copy_from_slice(&panels[range.start * panel_len..range.end * panel_len])
            };
            for ((isa, want), one_thread) in outs.iter().flat_map(|o| [(o, true), (o, false)]) {
                let mut c = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
                let mut product =
                    || qgemm_packed(*isa, &a, PackedB::on_demand(k, n, &packer), bq, &mut c, n, epi);
                match one_thread {
                    true => crate::nn::simd::sequential(product),
                    false => product(),
                }
                // SAFETY: qgemm_packed wrote every value.
                let got: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
                assert_eq!(&got, want, "{isa:?} {m}×{k}×{n}: B packed on demand (one thread: {one_thread})");
            }
            if epi.residual.is_some() {
                continue;
            }
            // Written transposed (a Linear layer's output): the same values, C's rows as columns.
            for (isa, want) in &outs {
                let mut ct = vec![f32::NAN; m * n];
                qgemm(*isa, &a, &b, n, n, bq, &mut ct, m, QEpilogue { transposed: true, ..epi });
                for i in 0..m {
                    for j in 0..n {
                        assert_eq!(
                            ct[j * m + i],
                            want[i * n + j],
                            "{isa:?} {m}×{k}×{n} transposed ({i}, {j})"
                        );
                    }
                }
            }
        }
    }
    ran.sort_by_key(|i| format!("{i:?}"));
    ran.dedup();
    println!("int8 kernels: {ran:?}");
}

/// The extremes do not saturate: every activation 127 against weights all +127 or all -127, the
/// pairs `vpmaddubsw` sums at their largest.
#[test]
fn the_extremes_do_not_saturate() {
    let (m, k, n) = (2, 256, 16);
    let mut q = vec![WEIGHT_MAX; k];
    q.extend(vec![-WEIGHT_MAX; k]);
    let a = QuantizedMatrix::from_quantized(&q, m, k, vec![1.0; m]);
    let b = vec![ACT_MAX; k * n];
    let bq = ActivationQuant { scale: 1.0, zero_point: 0 };
    for (isa, c) in outputs(&a, &b, n, bq, QEpilogue::default()) {
        let want = (k * 127 * 127) as f32;
        assert!(c[..n].iter().all(|&v| v == want) && c[n..].iter().all(|&v| v == -want), "{isa:?}");
    }
}

/// Quantizing both operands costs what their resolution allows: the product of quantized
/// operands stays within a few quantization steps' worth of the f32 product.
#[test]
fn quantized_product_is_close_to_the_f32_product() {
    let mut rng = Rng::new(5);
    let (m, k, n) = (16, 256, 48);
    let (w, x) = (
        random(m * k, &mut rng),
        random(k * n, &mut rng).iter().map(|v| v.max(0.0) * 3.0).collect::<Vec<_>>(),
    );
    let a = QuantizedMatrix::quantize(MatRef::row_major(&w, m, k));
    let bq = ActivationQuant::from_range(0.0, 3.0);
    let b = bq.quantize_slice(&x);
    let mut c = vec![0f32; m * n];
    qgemm(QIsa::detected(), &a, &b, n, n, bq, &mut c, n, QEpilogue::default());
    let mut worst = 0f32;
    let mut scale = 0f32;
    for i in 0..m {
        for j in 0..n {
            let exact: f32 = (0..k).map(|p| w[i * k + p] * x[p * n + j]).sum();
            worst = worst.max((exact - c[i * n + j]).abs());
            scale = scale.max(exact.abs());
        }
    }
    // Rounding errors of ±half a step on each operand add up like a random walk over k terms.
    assert!(worst < 0.02 * scale, "worst {worst} against products up to {scale}");
}

#[test]
fn activation_ranges_keep_zero_exact() {
    for (lo, hi) in [(0.0, 6.0), (-1.0, 3.0), (-2.0, -1.0), (0.5, 2.0), (0.0, 0.0)] {
        let q = ActivationQuant::from_range(lo, hi);
        assert_eq!(q.dequantize(q.quantize(0.0)), 0.0, "{lo}..{hi}: {q:?}");
        assert!(q.quantize(hi.max(0.0)) <= ACT_MAX);
    }
    let q = ActivationQuant::from_range(0.0, 127.0);
    assert_eq!((q.quantize(-5.0), q.quantize(1e9), q.quantize(2.5), q.quantize(3.5)), (0, 127, 2, 4));
}

/// Multiply-add rates of the int8 product against the f32 one on convolution-sized products
/// (`cargo test -p vidkit --lib int8_rate -- --ignored --nocapture`; a figure, not a check).
#[test]
#[ignore]
fn int8_rate() {
    use crate::nn::gemm::{sgemm, Epilogue};
    let mut rng = Rng::new(1);
    for (m, k, n) in [(256, 576, 3136), (512, 4608, 392), (2048, 512, 392), (64, 576, 3136)] {
        let (w, x) = (random(m * k, &mut rng), random(k * n, &mut rng));
        let a = QuantizedMatrix::quantize(MatRef::row_major(&w, m, k));
        let bq = ActivationQuant::from_range(-1.0, 1.0);
        let b = bq.quantize_slice(&x);
        let mut c = vec![0f32; m * n];
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = std::time::Instant::now();
            for _ in 0..5 {
                f();
            }
            t.elapsed().as_secs_f64() / 5.0
        };
        let int8 = time(&mut || qgemm(QIsa::detected(), &a, &b, n, n, bq, &mut c, n, QEpilogue::default()));
        let f32_ = time(&mut || {
            sgemm(
                MatRef::row_major(&w, m, k),
                MatRef::row_major(&x, k, n),
                &mut c,
                n,
                false,
                Epilogue::default(),
            )
        });
        let gmacs = (m * k * n) as f64 / 1e9;
        println!(
            "{m}×{k}×{n}: int8 {:.1} GMAC/s, f32 {:.1} GMAC/s ({:?}, {} threads)",
            gmacs / int8,
            gmacs / f32_,
            QIsa::detected(),
            rayon::current_num_threads()
        );
    }
}

/// The vector quantizer writes what the scalar one does: ties to even, clamps at both ends, NaN
/// to 0, over lengths that leave a scalar tail.
#[test]
fn vector_quantizer_matches_the_scalar_one() {
    let mut rng = Rng::new(3);
    let q = ActivationQuant { scale: 0.5, zero_point: 20 };
    // Ties (k + 0.5 steps), the ends and non-finite values first, where the vectors run.
    let mut x =
        vec![0.25, 0.75, -0.25, 1.25, 53.25, -10.25, 1e9, -1e9, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    x.extend((0..1000).map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * 80.0));
    for len in [0, 7, 32, 33, 1011] {
        let got = q.quantize_slice(&x[..len]);
        let want: Vec<u8> = x[..len].iter().map(|&v| q.quantize(v)).collect();
        assert_eq!(got, want, "{len} values");
    }
    assert_eq!(q.quantize_slice(&[0.25, 0.75, f32::NAN]), [20, 22, 0]);
}

/// Packing B from its transpose (a Linear layer's input rows) gives the panels that packing B
/// does, over shapes with partial panels and k groups.
#[test]
fn packing_from_the_transpose_equals_packing_the_matrix() {
    let mut rng = Rng::new(8);
    for (k, n) in [(1, 1), (7, 17), (64, 40), (130, 33)] {
        // Bytes above 127 too: both packers clamp them.
        let b: Vec<u8> = (0..k * n).map(|_| (rng.uniform() * 256.0).min(255.0) as u8).collect();
        let bt: Vec<u8> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let (mut x, mut y) = (vec![], vec![]);
        let (from_matrix, from_transpose) = (
            pack_b_matrix(&b, n, k, n, &mut x).data.to_vec(),
            pack_b_transposed(&bt, k, n, &mut y).data.to_vec(),
        );
        assert_eq!(from_matrix, from_transpose, "{k}×{n}");
    }
}

/// The instruction-rate ceiling is a rate for every kernel this CPU runs, and none for the
/// portable one.
#[test]
fn peak_rate_is_measured_for_the_vector_kernels() {
    assert_eq!(peak_gmacs(None, 0.01), None);
    for isa in [QIsa::Avx2, QIsa::Avx512Vnni, QIsa::Amx].into_iter().filter(|i| i.supported()) {
        let rate = peak_gmacs(Some(isa), 0.02).expect("a rate");
        eprintln!("{isa:?}: {rate:.0} GMAC/s");
        assert!(rate.is_finite() && rate > 1.0, "{isa:?}: {rate} GMAC/s");
    }
}
