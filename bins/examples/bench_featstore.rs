//! HDF5 feature-store timings for `make bench`: writing a store from features held in memory,
//! and reading every video of a store back, median of N runs. Prints one JSON object;
//! scripts/bench_features.py times h5py on the same data and file beside it.
//!
//!   cargo run --example bench_featstore -- write FEATURES.vks OUT.h5 REPS
//!   cargo run --example bench_featstore -- read STORE.h5 REPS

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Instant;
use vidkit::featstore::{read_features, StoreOptions, StoreWriter};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps = |i: usize| -> Result<usize> {
        args.get(i).map(|s| s.parse()).transpose().map(|r| r.unwrap_or(3)).context("REPS")
    };
    let (mode, times, bytes) = match args.first().map(String::as_str) {
        Some("write") if args.len() >= 3 => {
            // Untimed: the features in memory, as an extractor holds them before writing.
            let videos = read_features(Path::new(&args[1]))?;
            let bytes: usize = videos.iter().flat_map(|v| &v.modalities).map(|(_, a)| a.len() * 4).sum();
            let mut times = Vec::new();
            for _ in 0..reps(3)? {
                let t = Instant::now();
                let mut w = StoreWriter::create(Path::new(&args[2]), StoreOptions::default())?;
                for v in &videos {
                    w.write(v)?;
                }
                w.finish()?;
                times.push(t.elapsed().as_secs_f64());
            }
            ("write", times, bytes)
        }
        Some("read") if args.len() >= 2 => {
            let mut times = Vec::new();
            let mut bytes = 0;
            for _ in 0..reps(2)? {
                let t = Instant::now();
                let videos = read_features(Path::new(&args[1]))?;
                times.push(t.elapsed().as_secs_f64());
                bytes = videos.iter().flat_map(|v| &v.modalities).map(|(_, a)| a.len() * 4).sum();
            }
            ("read", times, bytes)
        }
        _ => bail!("usage: bench_featstore write FEATURES.vks OUT.h5 [REPS] | read STORE.h5 [REPS]"),
    };
    let s = median(times);
    println!(
        "{}",
        serde_json::json!({"mode": mode, "seconds": s, "bytes": bytes, "mb_per_s": bytes as f64 / 1e6 / s})
    );
    Ok(())
}
