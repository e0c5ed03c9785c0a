//! Cluster batch jobs (issue 23, point 2): recipes/cluster.mk runs a list through
//! `vsample --shard K/N | vclassify` (and `| vfeat`) as N shards under GNU parallel and as a Slurm
//! array on a local single-node cluster (scripts/slurm-local.sh), and the merged output equals
//! the unsharded run's byte for byte (the feature store: the same videos and values). Slurm's own
//! parser checks the generated scripts (`sbatch --test-only`) before they run for real.
//!
//! One test function on purpose: the Slurm daemons it starts would inherit the descriptors of
//! HDF5 stores another test has open (HDF5 opens without close-on-exec) and hold their locks.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vsample")).parent().unwrap().to_path_buf()
}

/// A random 2-class TSN-R18, 8 wide, sampling 3 frames at 32 px.
fn tiny_model(path: &Path) {
    let mut cfg = vidkit::model::ModelConfig::defaults("tsn_r18");
    (cfg.num_classes, cfg.base_width, cfg.frames, cfg.short_side, cfg.crop_size) = (2, 8, 3, 32, 32);
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
    vidkit::model::build(&cfg, vb).unwrap();
    vidkit::model::init_weights(&varmap, 7).unwrap();
    vidkit::model::save_model(&varmap, &cfg, path).unwrap();
}

fn make(p: &Path, vars: &[&str], target: &str, env: &[(&str, &str)]) -> std::process::Output {
    Command::new("make")
        .args(["-s", "-f", workspace_root().join("recipes/cluster.mk").to_str().unwrap()])
        .arg(format!("BIN={}", bin_dir().display()))
        .args(["LIST=syn/all.list", "ROOT=syn", "MODEL=m.safetensors"])
        .args(vars)
        .arg(target)
        .envs(env.iter().copied())
        .current_dir(p)
        .output()
        .expect("make runs")
}

/// The unsharded run: the whole list through one `vsample | tool`.
fn unsharded(p: &Path, tool: &str, out: &str) {
    let cmd = format!(
        "set -o pipefail; {b}/vsample --list syn/all.list --root syn --spec-from m.safetensors -q \
         | {b}/{tool} --model m.safetensors -q -o {out}",
        b = bin_dir().display()
    );
    let o = Command::new("bash").args(["-c", &cmd]).current_dir(p).output().unwrap();
    assert!(o.status.success(), "{tool}: {}", stderr(&o));
}

fn store_contents(path: &Path) -> Vec<(String, Vec<f32>)> {
    let store = vidkit::featstore::FeatureStore::open(path).unwrap();
    let mut all: Vec<(String, Vec<f32>)> = store
        .iter()
        .unwrap()
        .map(|v| {
            let v = v.unwrap();
            let rows = v.modality("rgb").unwrap().iter().copied().collect();
            (v.id, rows)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Starts the local cluster, or says why it cannot (a skip, a failure under CI).
fn start_slurm(dir: &Path) -> Option<String> {
    if Command::new("sbatch").arg("--version").output().is_err() {
        skip("sbatch not found (make test-deps installs slurm-wlm); the Slurm array job is not run");
        return None;
    }
    // Two free ports, both held until both are known.
    let a = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let b = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let (ctld, slurmd) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
    drop((a, b));
    let o = Command::new("bash")
        .arg(workspace_root().join("scripts/slurm-local.sh"))
        .args(["start", dir.to_str().unwrap(), &ctld.to_string(), &slurmd.to_string()])
        .output()
        .unwrap();
    if !o.status.success() {
        skip(&format!("the local Slurm cluster did not start: {}", stderr(&o).trim()));
        return None;
    }
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Stops the local cluster when the test ends, passed or not.
struct Slurm(PathBuf);
impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(workspace_root().join("scripts/slurm-local.sh"))
            .args(["stop", self.0.to_str().unwrap()])
            .output();
    }
}

#[test]
fn sharded_jobs_under_gnu_parallel_and_slurm_merge_into_the_unsharded_output() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    synth(p, "left,right,up", "3", "32x32", "11");
    // Seven videos: three shards of 3, 2 and 2.
    let mut all: Vec<String> = synth_lines(p);
    all.truncate(7);
    assert_eq!(all.len(), 7);
    std::fs::write(p.join("syn/all.list"), all.join("\n") + "\n").unwrap();
    tiny_model(&p.join("m.safetensors"));
    unsharded(p, "vclassify", "whole.jsonl");
    unsharded(p, "vfeat", "whole.h5");
    let whole = std::fs::read(p.join("whole.jsonl")).unwrap();
    assert_eq!(whole.iter().filter(|&&b| b == b'\n').count(), 7);

    // GNU parallel on this host.
    let o = make(p, &["OUT=par", "SHARDS=3", "PARALLEL_JOBS=2"], "parallel", &[]);
    assert!(o.status.success(), "make parallel: {}", stderr(&o));
    assert_eq!(std::fs::read(p.join("par/predictions.jsonl")).unwrap(), whole);
    let parts: Vec<usize> = (0..3)
        .map(|k| std::fs::read_to_string(p.join(format!("par/part{k}.jsonl"))).unwrap().lines().count())
        .collect();
    assert_eq!(parts, [3, 2, 2]);
    // Nothing left to do the second time.
    let o = make(p, &["OUT=par", "SHARDS=3"], "parallel", &[]);
    assert!(o.status.success() && o.stdout.is_empty(), "{}", stderr(&o));
    // Parts out of order are refused, and nothing is written.
    let o = run(
        bin_dir().join("vclassify").to_str().unwrap(),
        &["--merge", "par/part1.jsonl", "par/part0.jsonl", "par/part2.jsonl", "-o", "bad.jsonl"],
        p,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("par/part"), "{}", stderr(&o));
    assert!(!p.join("bad.jsonl").exists());

    let o = make(p, &["OUT=feat", "SHARDS=2", "STEP=features"], "parallel", &[]);
    assert!(o.status.success(), "make parallel STEP=features: {}", stderr(&o));
    assert_eq!(store_contents(&p.join("feat/features.h5")), store_contents(&p.join("whole.h5")));

    // A Slurm array: the scripts pass Slurm's parser, then run, the merge after the array.
    let Some(conf) = start_slurm(&p.join("slurm")) else { return };
    let _cluster = Slurm(p.join("slurm"));
    let env = [("SLURM_CONF", conf.as_str())];
    let vars = ["OUT=sl", "SHARDS=3", "SBATCH_OPTS=--time=00:10:00"];
    let o = make(p, &vars, "slurm", &env);
    assert!(o.status.success(), "make slurm: {}", stderr(&o));
    let script = std::fs::read_to_string(p.join("sl/shard.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-2") && script.contains("--shard $K/3"), "{script}");
    for s in ["sl/shard.sbatch", "sl/merge.sbatch"] {
        let o = Command::new("sbatch")
            .args(["--test-only", s])
            .env("SLURM_CONF", &conf)
            .current_dir(p)
            .output()
            .unwrap();
        assert!(o.status.success(), "sbatch --test-only {s}: {}", stderr(&o));
    }
    let o = make(p, &vars, "submit", &env);
    assert!(o.status.success(), "make submit: {}", stderr(&o));
    eprintln!("{}", String::from_utf8_lossy(&o.stdout).trim());
    let merged = p.join("sl/predictions.jsonl");
    let start = Instant::now();
    while !merged.exists() {
        let queue =
            Command::new("squeue").args(["-h", "-o", "%i %T %r"]).env("SLURM_CONF", &conf).output().unwrap();
        let queue = String::from_utf8_lossy(&queue.stdout).to_string();
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no merged output after 180 s; queue: {queue}; logs: {:?}",
            std::fs::read_dir(p.join("sl/logs")).map(|d| d.count())
        );
        assert!(!queue.contains("DependencyNeverSatisfied"), "a shard failed: {queue}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(std::fs::read(&merged).unwrap(), whole);
}
