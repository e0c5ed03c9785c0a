//! GFLOP/s of the fused eval convolution on ResNet-50 shapes (batch 8), against the bare GEMM.
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;
use vidkit::nn::{conv_bn_act_3d, BatchNorm2d, Conv3d, Conv3dConfig};

/// CPU seconds used by this process so far (all threads): wall time means little on a busy
/// machine, CPU time still says how much work a kernel costs.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    // (cin, cout, k, stride, hw)
    for &(cin, cout, k, s, hw) in &[
        (3, 64, 7, 2, 224),
        (64, 64, 1, 1, 56),
        (64, 64, 3, 1, 56),
        (64, 256, 1, 1, 56),
        (128, 128, 3, 1, 28),
        (256, 256, 3, 1, 14),
        (512, 512, 3, 1, 7),
        (2048, 512, 1, 1, 7),
        (1024, 2048, 1, 2, 14),
    ] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let cfg = Conv3dConfig { stride: [1, s, s], padding: [0, k / 2, k / 2], ..Default::default() };
        let conv = Conv3d::new(cin, cout, [1, k, k], cfg, vb.pp("c"))?;
        let bn = BatchNorm2d::new(cout, vb.pp("bn"))?;
        let x = Tensor::randn(0f32, 1., (8, cin, 1, hw, hw), &dev)?;
        let g = conv.geometry_of(&x)?;
        let o = g.out()?;
        let macs = (8 * cout * cin * k * k * o[1] * o[2]) as f64;
        conv_bn_act_3d(&x, g, &conv.weight, None, &bn, None, true)?;
        let reps = 20;
        let (t, c0) = (Instant::now(), cpu_seconds());
        for _ in 0..reps {
            conv_bn_act_3d(&x, g, &conv.weight, None, &bn, None, true)?;
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        let cpu = (cpu_seconds() - c0) / reps as f64;
        println!(
            "{cin}->{cout} k{k} s{s} {hw}px: {:.2} ms wall, {:.0} GFLOP/s per CPU-second",
            dt * 1e3,
            2.0 * macs / cpu / 1e9
        );
    }
    Ok(())
}
