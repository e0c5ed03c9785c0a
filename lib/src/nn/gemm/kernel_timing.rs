use super::*;

/// `cargo test -p vidkit --lib kernel_peak -- --ignored --nocapture`: the micro-kernel alone
/// on L1-resident panels, GFLOP per thread-CPU-second.
#[test]
#[ignore]
fn kernel_peak() {
    let kc = 256;
    let a = vec![0.5f32; MR * kc];
    let b = vec![0.25f32; NR * kc];
    let mut c = vec![0f32; MR * NR];
    let reps = 200_000;
    let cpu = || {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1e9
    };
    for isa in Isa::paths().into_iter().flatten() {
        let (t0, c0) = (std::time::Instant::now(), cpu());
        let (ap, bp, cp, null) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), std::ptr::null());
        for _ in 0..reps {
            // SAFETY: the CPU runs `isa` (`paths`); the buffers hold the panels and the tile.
            unsafe {
                match isa {
                    Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                        kernel::<MR>(kc, ap, bp, cp, NR, true, null, null, false)
                    }
                    Isa::Avx2 => kernel_avx2(MR, NR, kc, ap, bp, cp, NR, true, null, null, false),
                }
            };
        }
        let flops = 2.0 * (MR * NR * kc * reps) as f64;
        eprintln!(
            "{isa:?} kernel: {:.0} GFLOP/s wall, {:.0} per CPU-second",
            flops / t0.elapsed().as_secs_f64() / 1e9,
            flops / (cpu() - c0) / 1e9
        );
    }
}
