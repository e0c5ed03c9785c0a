use super::*;

/// `cargo test -p vidkit --lib gemm_rate -- --ignored --nocapture`: GFLOP/s on conv shapes.
#[test]
#[ignore]
fn gemm_rate() {
    for &(m, k, n) in
        &[(256, 576, 3136 * 8), (64, 64, 3136 * 8), (512, 4608, 392), (2048, 512, 392), (64, 576, 3136)]
    {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        let (am, bm) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        sgemm(am, bm, &mut c, n, false, Epilogue::default());
        let t = std::time::Instant::now();
        for _ in 0..5 {
            sgemm(am, bm, &mut c, n, false, Epilogue::default());
        }
        let ours = 2.0 * (m * k * n) as f64 * 5.0 / t.elapsed().as_secs_f64() / 1e9;
        let t = std::time::Instant::now();
        for _ in 0..5 {
            fallback(am, bm, &mut c, n, false, Epilogue::default());
        }
        let theirs = 2.0 * (m * k * n) as f64 * 5.0 / t.elapsed().as_secs_f64() / 1e9;
        eprintln!("{m}x{k}x{n}: ours {ours:.0} GFLOP/s, gemm crate {theirs:.0}");
    }
}
