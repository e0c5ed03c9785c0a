//! `recipes/activitynet_captions.mk` end to end on `vsynth --captions` clips (issue 21, point 7):
//! features → `vtrain --arch ets` → `vcaption` → `veval --captions` as file targets, with a
//! random extractor and a small, briefly trained ETS; the second `make` has nothing to do.

mod common;
use common::*;
use std::path::Path;

fn make(p: &Path, target: &str) -> std::process::Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_vsample")).parent().unwrap().display().to_string();
    std::process::Command::new("make")
        .args(["-s", "-f", workspace_root().join("recipes/activitynet_captions.mk").to_str().unwrap(), target])
        .arg(format!("BIN={bin}"))
        .args(["DATA=s", "OUT=caps", "EXTRACTOR=tsn.safetensors", "INTERVAL=8", "SIZE=48", "CROP=48", "JOBS=2"])
        .args(["TRAIN_CAPTIONS=s/captions.json", "EVAL_CAPTIONS=s/captions.json"])
        .arg("ETS_OPTS=-o epochs=2 -o batch_size=4 -o fc_dim=16 -o gru_hidden_dim=16 -o decoder_size=16 -o word_emb_dim=8 -o min_count=1 -o max_length=8")
        .current_dir(p)
        .output()
        .unwrap()
}

#[test]
fn activitynet_captions_recipe_runs_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let o = run(
        env!("CARGO_BIN_EXE_vsynth"),
        &[
            "-o",
            "s",
            "--classes",
            "left,grow",
            "--per-class",
            "4",
            "--size",
            "64x48",
            "--seed",
            "1",
            "--captions",
            "-q",
        ],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    write_random_tsn(&p.join("tsn.safetensors"), 8, 1);
    let o = make(p, "all");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let captions = std::fs::read_to_string(p.join("caps/captions.jsonl")).unwrap();
    assert_eq!(captions.lines().count(), 2, "{captions}");
    let first: serde_json::Value = serde_json::from_str(captions.lines().next().unwrap()).unwrap();
    assert!(
        first["caption"].is_string() && first["beams"].as_array().is_some_and(|b| b.len() == 3),
        "{first}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("caps/metrics.json")).unwrap()).unwrap();
    assert_eq!(m["videos"], 2, "{m}");
    assert!(m["cider"].is_number() && m["bleu4"].is_number(), "{m}");
    let again = make(p, "all");
    assert!(again.status.success() && again.stderr.is_empty(), "{}", String::from_utf8_lossy(&again.stderr));
}
