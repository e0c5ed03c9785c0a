//! `recipes/tacos.mk` end to end on `vsynth --segments` videos and the grounding queries vsynth
//! writes (issue 21, point 7): features → `vtrain --arch tall` → `vground` → `veval --grounding`
//! as file targets, with a random extractor and a small, briefly trained TALL; the second `make`
//! has nothing to do.

mod common;
use common::*;
use std::path::Path;

fn make(p: &Path, target: &str) -> std::process::Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_vsample")).parent().unwrap().display().to_string();
    std::process::Command::new("make")
        .args(["-s", "-f", workspace_root().join("recipes/tacos.mk").to_str().unwrap(), target])
        .arg(format!("BIN={bin}"))
        .args(["DATA=u", "OUT=tacos", "EXTRACTOR=tsn.safetensors", "INTERVAL=8", "SIZE=64", "CROP=48", "JOBS=2"])
        .arg("TALL_OPTS=-o epochs=2 -o batch_size=4 -o semantic_size=16 -o hidden_size=16 -o windows=[32,64] -o train_windows=[32,64,128] -o context_size=32")
        .current_dir(p)
        .output()
        .unwrap()
}

#[test]
fn tacos_recipe_runs_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    synth_untrimmed(p, "12", "10-14", "3");
    write_random_tsn(&p.join("tsn.safetensors"), 8, 1);
    let o = make(p, "ground");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = std::fs::read_to_string(p.join("tacos/grounding.jsonl")).unwrap();
    let queries = std::fs::read_to_string(p.join("u/validation.queries.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), queries.lines().count());
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(
        first["candidates"].as_array().is_some_and(|c| !c.is_empty()) && first["gt"].is_array(),
        "{first}"
    );
    // vground sharded by video and merged equals one run.
    let args = [
        "--model",
        "tacos/tall/best.safetensors",
        "--queries",
        "u/validation.queries.jsonl",
        "tacos/validation.h5",
    ];
    assert_shards_merge(env!("CARGO_BIN_EXE_vground"), &args, 2, p);
    // The metric step needs veval --grounding.
    let help = run(env!("CARGO_BIN_EXE_veval"), &["--help"], p);
    if String::from_utf8_lossy(&help.stdout).contains("--grounding") {
        let o = make(p, "all");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(p.join("tacos/metrics.json").is_file());
    }
    let again = make(p, "ground");
    assert!(again.status.success() && again.stderr.is_empty(), "{}", String::from_utf8_lossy(&again.stderr));
}
