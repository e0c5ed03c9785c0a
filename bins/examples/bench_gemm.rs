//! GEMM throughput (GFLOP/s) of vidkit's sgemm on a few ResNet-like shapes (M × K × N), median
//! of REPS runs. For tuning the kernel: copy the binary aside, change, rebuild, and alternate the
//! two, single-threaded (`RAYON_NUM_THREADS=1`), which is steadier on a shared machine.
//!
//!   cargo run --example bench_gemm -- [REPS]
use std::time::Instant;
use vidkit::nn::gemm::{sgemm, Epilogue, MatRef};

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    for &(m, k, n) in &[
        (256, 256, 3136usize * 8),
        (64, 576, 3136 * 8),
        (512, 4608, 196 * 8),
        (1024, 1024, 1024),
        (2048, 2048, 2048),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let mut t = Vec::new();
        for _ in 0..reps + 1 {
            let s = Instant::now();
            sgemm(
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                &mut c,
                n,
                false,
                Epilogue::default(),
            );
            t.push(s.elapsed().as_secs_f64());
        }
        t.remove(0);
        t.sort_by(|x, y| x.total_cmp(y));
        let med = t[t.len() / 2];
        println!("{m}x{k}x{n}: {:.4} s, {:.1} GFLOP/s", med, 2.0 * (m * k * n) as f64 / med / 1e9);
    }
}
