use super::*;
use crate::rng::Rng;

fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
}

fn naive(a: &MatRef, b: &MatRef) -> Vec<f64> {
    let mut c = vec![0f64; a.rows * b.cols];
    for i in 0..a.rows {
        for j in 0..b.cols {
            c[i * b.cols + j] = (0..a.cols)
                .map(|p| a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64)
                .sum();
        }
    }
    c
}

/// Every edge case of the blocking: tiles cut in M and N, several K blocks, strided
/// (transposed) operands, accumulation and the epilogue.
#[test]
fn matches_naive_product_on_edge_shapes() {
    eprintln!("paths: {:?}", Isa::paths());
    for isa in Isa::paths() {
        matches_naive_product_on_edge_shapes_with(isa);
    }
}

fn matches_naive_product_on_edge_shapes_with(isa: Option<Isa>) {
    let mut rng = Rng::new(7);
    for &(m, k, n) in &[
        (1, 1, 1),
        (12, 256, 32),
        (13, 257, 33),
        (150, 600, 70),
        // Split by columns on 2+ threads: A packed once for both parts (two M blocks, a
        // short last panel, two K blocks).
        (150, 300, 1100),
        (5, 3, 2100),
        (40, 20, 2200),
        (8, 24, 64),
        (23, 9, 96),
    ] {
        for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
            let ad = random(m * k, &mut rng);
            let bd = random(k * n, &mut rng);
            let a = if ta { MatRef::row_major(&ad, k, m).t() } else { MatRef::row_major(&ad, m, k) };
            let b = if tb { MatRef::row_major(&bd, n, k).t() } else { MatRef::row_major(&bd, k, n) };
            let want = naive(&a, &b);
            let bias = random(m, &mut rng);
            let scale = random(m, &mut rng);
            let init = random(m * n, &mut rng);
            for &(accumulate, with_bias, relu) in
                &[(false, false, false), (true, true, true), (false, true, false)]
            {
                let mut c = init.clone();
                let epi = Epilogue { row_bias: with_bias.then_some(&bias[..]), relu, ..Default::default() };
                let epi = Epilogue { row_scale: with_bias.then_some(&scale[..]), ..epi };
                sgemm_impl(a, b, Columns::single(n), Out::of(&mut c), n, accumulate, epi, isa);
                for i in 0..m {
                    for j in 0..n {
                        let ab = want[i * n + j] * if with_bias { scale[i] as f64 } else { 1.0 };
                        let mut v = ab + if accumulate { init[i * n + j] as f64 } else { 0.0 };
                        if with_bias {
                            v += bias[i] as f64;
                        }
                        if relu {
                            v = v.max(0.0);
                        }
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - v).abs() <= 1e-4 * (1.0 + v.abs()),
                            "{isa:?} {m}x{k}x{n} ({i},{j}): {got} vs {v}"
                        );
                    }
                }
                let mut c2 = init.clone();
                fallback(a, b, &mut c2, n, accumulate, epi);
                for (x, y) in c.iter().zip(&c2) {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()));
                }
            }
        }
    }
}

/// The transposing ConvT packer (w stride 1 or 2) writes the same panels as the per-column
/// one, over padded, dilated, strided, temporal and 1×1 (plane-run) geometries and blocks
/// that start mid-row, cross images, and end in a partial panel.
#[cfg(target_arch = "x86_64")]
#[test]
fn conv_t_transposing_packer_equals_column_packer() {
    if !has_avx512() {
        return;
    }
    let mut rng = Rng::new(7);
    let cases: [([usize; 3], [usize; 3], [usize; 3], [usize; 3], [usize; 3]); 9] = [
        // (input t/h/w, kernel, stride, pad, dilation)
        ([1, 9, 13], [1, 3, 3], [1, 1, 1], [0, 1, 1], [1, 1, 1]),
        ([1, 7, 7], [1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1]),
        ([3, 6, 37], [3, 3, 3], [1, 2, 1], [1, 1, 1], [1, 1, 1]),
        ([2, 11, 19], [1, 3, 3], [1, 1, 1], [0, 2, 2], [1, 2, 2]),
        ([4, 5, 5], [3, 1, 1], [2, 1, 1], [1, 0, 0], [1, 1, 1]),
        ([1, 4, 3], [1, 5, 5], [1, 1, 1], [0, 2, 2], [1, 1, 1]),
        ([1, 9, 37], [1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 1, 1]),
        ([1, 8, 40], [1, 1, 1], [1, 2, 2], [0, 0, 0], [1, 1, 1]),
        ([2, 7, 71], [1, 3, 3], [1, 1, 2], [0, 2, 3], [1, 2, 2]),
    ];
    for (input, kernel, stride, pad, dilation) in cases {
        let g = crate::nn::vol2col::Geometry3d { n: 2, c: 3, input, kernel, stride, pad, dilation };
        let out = g.out().expect("geometry fits");
        let x = random(g.n * g.c * g.in_volume(), &mut rng);
        let rhs = ConvRhs { x: &x, g, out };
        let (rows, cols) = (g.n * out.iter().product::<usize>(), g.c * g.taps());
        for (p0, kc) in [(0, rows.min(KC)), (5, (rows - 5).min(40)), (rows - rows.min(17), rows.min(17))] {
            for (j0, nc) in [(0, cols), (1, cols - 1), (cols - 1, 1)] {
                let t = ConvTBlock::new(&rhs, p0, kc);
                let len = nc.div_ceil(NR) * NR * kc;
                let (mut wide, mut columns) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                pack_conv_t_columns(&t, kc, j0, nc, &mut columns);
                // SAFETY: AVX-512 checked; w stride 1 or 2 in every case; the buffer holds the panels.
                unsafe { pack_conv_t_wide(&t, kc, j0, nc, &mut wide) };
                let same = wide.iter().zip(&columns).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{input:?} {kernel:?} pad {pad:?} dil {dilation:?}: rows {p0}+{kc}, columns {j0}+{nc}"
                );
            }
        }
    }
}

/// The vector A run packer (rows contiguous along k) writes what the scalar one writes, for
/// every run length up to three transposes, partial panels and row scales.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_run_packers_agree() {
    let mut ran = vec![];
    let mut rng = Rng::new(3);
    let (ld, start) = (61, 5);
    let a = random(MR * ld, &mut rng);
    let base: [usize; MR] = std::array::from_fn(|r| r * ld);
    let s: [f32; MR] = std::array::from_fn(|r| 0.5 + r as f32 * 0.25);
    for rows in [1, 7, MR] {
        for run in 0..=ld - start {
            let mut scalar = vec![f32::NAN; run * MR];
            pack_a_run(&a, &base, rows, start, 1, &s, &mut scalar);
            for isa in [Isa::Avx512, Isa::Avx2].into_iter().filter(|i| i.supported()) {
                let mut vector = vec![f32::NAN; run * MR];
                if rows < MR {
                    // `pack_a` zeroes a partial panel first; the scalar run leaves its rows alone.
                    vector.fill(0.0);
                    scalar.iter_mut().filter(|x| x.is_nan()).for_each(|x| *x = 0.0);
                }
                // SAFETY: the CPU has the kernel's instructions (`supported`).
                unsafe {
                    match isa {
                        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                            pack_a_run_wide(&a, &base, rows, start, &s, &mut vector)
                        }
                        Isa::Avx2 => pack_a_run_avx2(&a, &base, rows, start, &s, &mut vector),
                    }
                };
                let same = vector
                    .iter()
                    .zip(&scalar)
                    .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
                assert!(same, "{isa:?}: rows {rows}, run {run}");
                ran.push(isa);
            }
        }
    }
    ran.dedup();
    println!("vector A packers: {ran:?}");
}

/// `masked_run` copies exactly lanes lo..hi and zeroes the rest of the run, for every run
/// length up to a panel row, and writes nothing past the run.
#[cfg(target_arch = "x86_64")]
#[test]
fn masked_run_copies_the_inside_and_zeroes_the_padding() {
    if !has_avx512() {
        return;
    }
    let src: Vec<f32> = (1..=NR).map(|v| v as f32).collect();
    for len in 0..=NR {
        for lo in 0..=len {
            for hi in lo..=len {
                let mut d = vec![-1f32; NR + 1];
                // SAFETY: AVX-512 checked; lanes lo..hi of `src` exist.
                unsafe { masked_run(&mut d[..len], src.as_ptr(), lo, hi) };
                for (q, &v) in d.iter().enumerate() {
                    let want = if q >= len {
                        -1.0
                    } else if (lo..hi).contains(&q) {
                        src[q]
                    } else {
                        0.0
                    };
                    assert_eq!(v, want, "len {len}, lanes {lo}..{hi}, value {q}");
                }
            }
        }
    }
}

#[test]
fn copy_run_copies_every_length_up_to_a_panel_row() {
    let src: Vec<f32> = (0..NR).map(|i| i as f32 + 1.0).collect();
    for len in 0..=NR {
        let mut dst = vec![0f32; NR + 1];
        copy_run(&mut dst[..len], &src[..len]);
        assert_eq!(&dst[..len], &src[..len], "length {len}");
        assert!(dst[len..].iter().all(|&v| v == 0.0), "length {len}: wrote past the run");
    }
}

/// A batch of column blocks (as a convolution over N images) with a residual: equal to one
/// product per batch item.
#[test]
fn batched_columns_equal_per_item_products() {
    for isa in Isa::paths() {
        with_isa(isa, batched_columns_equal_per_item_products_on_this_path);
    }
}

fn batched_columns_equal_per_item_products_on_this_path() {
    let mut rng = Rng::new(9);
    for &(m, k, per, items) in &[(20, 30, 49, 3), (13, 300, 7, 5), (40, 8, 64, 2), (5, 17, 100, 3)] {
        let ad = random(m * k, &mut rng);
        let a = MatRef::row_major(&ad, m, k);
        // B as [k][items][per] (vol2col's layout): within an item rs = items·per.
        let bd = random(k * items * per, &mut rng);
        let b = MatRef { data: &bd, rows: k, cols: items * per, rs: items * per, cs: 1 };
        let cols = Columns { per, b_stride: per, c_stride: m * per };
        let bias = random(m, &mut rng);
        let res = random(items * m * per, &mut rng);
        let epi = Epilogue {
            row_scale: Some(&bias),
            row_bias: Some(&bias),
            residual: Some(&res),
            relu: true,
            ..Default::default()
        };
        let mut c = vec![0f32; items * m * per];
        sgemm_columns(a, b, cols, &mut c, per, false, epi);
        let mut c_portable = vec![0f32; items * m * per];
        sgemm_impl(a, b, cols, Out::of(&mut c_portable), per, false, epi, None);
        for (x, y) in c.iter().zip(&c_portable) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()));
        }
        // Into new, unzeroed buffers: the same values, on both paths.
        assert_eq!(sgemm_columns_new(a, b, cols, per, epi), c);
        let n = items * per;
        let portable_new = new_product(m, n, cols, per, |o| sgemm_impl(a, b, cols, o, per, false, epi, None));
        assert_eq!(portable_new, c_portable);
        // Accumulating: the previous C added before the epilogue, on both paths.
        let prev = random(items * m * per, &mut rng);
        let (mut acc, mut acc_portable) = (prev.clone(), prev.clone());
        sgemm_columns(a, b, cols, &mut acc, per, true, epi);
        sgemm_impl(a, b, cols, Out::of(&mut acc_portable), per, true, epi, None);
        for (i, (x, y)) in acc.iter().zip(&acc_portable).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "accumulated {i}");
        }
        // [m, N·per]: the items side by side in each row.
        let wide = Columns { c_stride: per, ..cols };
        let plain = Epilogue { residual: None, ..epi };
        let mut c_wide = vec![f32::NAN; m * n];
        sgemm_columns(a, b, wide, &mut c_wide, n, false, plain);
        assert_eq!(sgemm_columns_new(a, b, wide, n, plain), c_wide);
        assert!(!covers(m, n, Columns { c_stride: (m + 1) * per, ..cols }, per), "a gap between items");
        assert!(!covers(m, n, cols, per + 1), "a gap between rows");
        for item in 0..items {
            let bi = MatRef { data: &bd[item * per..], rows: k, cols: per, rs: items * per, cs: 1 };
            let want = naive(&a, &bi);
            for i in 0..m {
                for j in 0..per {
                    let at = item * m * per + i * per + j;
                    let v = (want[i * per + j] * bias[i] as f64 + bias[i] as f64 + res[at] as f64).max(0.0);
                    assert!(
                        (c[at] as f64 - v).abs() <= 1e-4 * (1.0 + v.abs()),
                        "{m}x{k} item {item} ({i},{j})"
                    );
                    let v = (prev[at] as f64
                        + want[i * per + j] * bias[i] as f64
                        + bias[i] as f64
                        + res[at] as f64)
                        .max(0.0);
                    assert!(
                        (acc_portable[at] as f64 - v).abs() <= 1e-4 * (1.0 + v.abs()),
                        "{m}x{k} item {item} ({i},{j}) accumulated"
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_op_matches_candle_with_gradients() {
    use candle_core::{Device, Var};
    let dev = Device::Cpu;
    let a = Var::from_tensor(&crate::rng::randn(0f32, 1., (37, 70), &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&crate::rng::randn(0f32, 1., (70, 45), &dev).unwrap()).unwrap();
    let r = crate::rng::randn(0f32, 1., (37, 45), &dev).unwrap();
    let ours = matmul(a.as_tensor(), b.as_tensor()).unwrap();
    let theirs = a.as_tensor().matmul(b.as_tensor()).unwrap();
    let d = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "{d}");
    let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for v in [&a, &b] {
        let x = g1.get(v.as_tensor()).unwrap();
        let y = g2.get(v.as_tensor()).unwrap();
        let d = (x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "{d}");
    }
    // Transposed operands (strided views) give the same product.
    let t = matmul(&b.as_tensor().t().unwrap(), &a.as_tensor().t().unwrap()).unwrap();
    let tt = b.as_tensor().t().unwrap().matmul(&a.as_tensor().t().unwrap()).unwrap();
    let d = (t - tt).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "{d}");
}

/// Under bf16 autocast every path (blocked kernels, the `gemm` crate's) multiplies A (after BN's
/// row scale) and B rounded to bf16 and accumulates in f32: equal to the exact product of the
/// rounded operands to f32 accumulation, and measurably off the f32 product.
#[test]
fn bf16_autocast_rounds_both_operands_on_every_path() {
    use crate::nn::simd::bf16_round;
    let mut rng = Rng::new(5);
    // Amx and Avx512Bf16: the bf16 products on AMX tiles and on VDPBF16PS, where this machine
    // has them.
    eprintln!("bf16 paths: {:?}", Isa::paths());
    for isa in Isa::paths() {
        for &(m, k, n, shared) in
            &[(13, 300, 70, false), (150, 300, 1100, true), (5, 17, 33, false), (70, 1100, 600, true)]
        {
            let (ad, bd) = (random(m * k, &mut rng), random(k * n, &mut rng));
            let scale = random(m, &mut rng);
            let bias = random(m, &mut rng);
            let (a, b) = (MatRef::row_major(&ad, m, k), MatRef::row_major(&bd, k, n));
            let epi = Epilogue { row_scale: Some(&scale), row_bias: Some(&bias), ..Default::default() };
            let mut c = vec![0f32; m * n];
            let half = Some(candle_core::DType::BF16);
            with_isa(isa, || crate::nn::with_autocast(half, || sgemm(a, b, &mut c, n, false, epi)));
            let (mut off_rounded, mut off_f32) = (0f64, 0f64);
            for i in 0..m {
                for j in 0..n {
                    let (mut exact, mut unrounded) = (bias[i] as f64, bias[i] as f64);
                    for p in 0..k {
                        let (av, bv) = (ad[i * k + p] * scale[i], bd[p * n + j]);
                        exact += bf16_round(av) as f64 * bf16_round(bv) as f64;
                        unrounded += av as f64 * bv as f64;
                    }
                    off_rounded = off_rounded.max((c[i * n + j] as f64 - exact).abs());
                    off_f32 = off_f32.max((c[i * n + j] as f64 - unrounded).abs());
                }
            }
            // f32 accumulation of k products of magnitude ≤ 1, rounded once or (VDPBF16PS, which
            // rounds after each of a pair's two products) twice each, by half an ulp of running
            // sums of √k size: a random walk of k to 2k steps of ≤ 6e-8·√k. Measured worst of the
            // 42 000 sums at k = 1100: 2.4e-5 on VDPBF16PS (Zen 4), 8e-6 on the other paths;
            // k·1e-7 bounds that with room and stays ~1000× under the rounding's effect.
            let bound = k as f64 * 1e-7;
            assert!(
                off_rounded <= bound,
                "{isa:?} {m}x{k}x{n} (shared A {shared}): {off_rounded} off (bound {bound})"
            );
            assert!(off_f32 >= 1e-3, "{isa:?} {m}x{k}x{n}: {off_f32} off the f32 product: not rounded?");
        }
    }
}

/// On the bf16 tile paths a convolution reads bf16 input and residuals (`act`) as the f32 ones
/// holding the same values, and writes bf16 output as the f32 output rounded to nearest even:
/// bit for bit, for 1×1 (B read in place, rows shifted or not), 3×3 padded past one K block
/// (partial sums between K blocks), w-strided (phased) and temporal kernels, edge rows.
#[test]
fn bf16_activations_read_and_write_as_rounded_f32() {
    use crate::nn::simd::bf16_round;
    use crate::nn::vol2col::Geometry3d;
    let paths: Vec<Isa> = Isa::paths().into_iter().flatten().filter(|i| i.bf16_pairs()).collect();
    if paths.is_empty() {
        eprintln!("no bf16 tile path on this CPU: bf16 activations not checked");
        return;
    }
    let mut rng = Rng::new(21);
    let geometry =
        |c, input, kernel, stride, pad| Geometry3d { n: 2, c, input, kernel, stride, pad, dilation: [1; 3] };
    for (g, m, shifted) in [
        (geometry(24, [1, 9, 7], [1, 1, 1], [1, 1, 1], [0, 0, 0]), 40, false),
        (geometry(24, [1, 9, 7], [1, 1, 1], [1, 1, 1], [0, 0, 0]), 40, true),
        (geometry(70, [1, 11, 9], [1, 3, 3], [1, 1, 1], [0, 1, 1]), 33, false),
        (geometry(20, [3, 13, 11], [1, 3, 3], [1, 2, 2], [0, 1, 1]), 64, false),
        (geometry(30, [6, 5, 7], [3, 1, 1], [2, 1, 1], [1, 0, 0]), 17, false),
    ] {
        let out = g.out().unwrap();
        let (k, p) = (g.c * g.taps(), out.iter().product::<usize>());
        let rounded = |v: Vec<f32>| v.into_iter().map(bf16_round).collect::<Vec<f32>>();
        let bits = |v: &[f32]| v.iter().map(|x| (x.to_bits() >> 16) as u16).collect::<Vec<u16>>();
        let x = rounded(random(g.n * g.c * g.in_volume(), &mut rng));
        let w = random(m * k, &mut rng);
        let (scale, bias) = (random(m, &mut rng), random(m, &mut rng));
        let res = rounded(random(g.n * m * p, &mut rng));
        let (x16, res16) = (bits(&x), bits(&res));
        let delta: Vec<i8> = (0..k).map(|c| (c % 3) as i8 - 1).collect();
        let shift = shifted.then_some(FrameRows { segments: 2, delta: &delta });
        let a = MatRef::row_major(&w, m, k);
        let epi =
            Epilogue { row_scale: Some(&scale), row_bias: Some(&bias), relu: true, ..Default::default() };
        let f32s = |p: Product| match p {
            Product::F32(v) => v,
            Product::Bf16(_) => panic!("bf16 asked for f32"),
        };
        for isa in &paths {
            crate::nn::with_autocast(Some(candle_core::DType::BF16), || {
                with_isa(Some(*isa), || {
                    let run = |x, epi, bf16_out| conv_on_tiles(a, x, g, out, shift, epi, bf16_out);
                    let epi32 = Epilogue { residual: Some(&res), ..epi };
                    let want = f32s(run(Activations::F32(&x), epi32, false));
                    let from16 = f32s(run(Activations::Bf16(&x16), epi32, false));
                    assert!(from16 == want, "{isa:?} {g:?}: bf16 input read otherwise");
                    let epi16 = Epilogue { residual_bf16: Some(&res16), ..epi };
                    let res_from16 = f32s(run(Activations::F32(&x), epi16, false));
                    assert!(res_from16 == want, "{isa:?} {g:?}: bf16 residual read otherwise");
                    let Product::Bf16(out16) = run(Activations::Bf16(&x16), epi16, true) else {
                        panic!("f32 asked for bf16")
                    };
                    let want16: Vec<u16> =
                        want.iter().map(|&v| (bf16_round(v).to_bits() >> 16) as u16).collect();
                    assert!(super::super::bf16_act::bits(&out16) == want16, "{isa:?} {g:?}: bf16 output");
                })
            });
        }
    }
}
