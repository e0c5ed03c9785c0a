//! The localization recipes end to end on `vsynth --segments` videos (issue 19, point 9):
//! `recipes/activitynet.mk` from the ActivityNet JSON vsynth writes, and `recipes/thumos14.mk`
//! from the same videos re-annotated in THUMOS14's form (per-class `<Class>_val.txt` /
//! `<Class>_test.txt` files of `video start end` lines, no durations: they come from the
//! features). Each runs features → BMN → proposals → metrics as file targets with a random
//! extractor and a narrow, briefly trained BMN; the second `make` has nothing to do.

mod common;
use common::*;
use std::path::Path;

fn make(p: &Path, recipe: &str, vars: &[String]) -> std::process::Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_vsample")).parent().unwrap().display().to_string();
    std::process::Command::new("make")
        .args(["-s", "-f", workspace_root().join(format!("recipes/{recipe}.mk")).to_str().unwrap()])
        .arg(format!("BIN={bin}"))
        .args(["EXTRACTOR=tsn.safetensors", "INTERVAL=8", "SIZE=64", "CROP=48", "TSCALE=16", "JOBS=2"])
        .arg("BMN_OPTS=-o num_sample=4 -o hidden_1d=16 -o hidden_2d=8 -o hidden_3d=16")
        .arg("TRAIN_OPTS=-o epochs=2 -o batch_size=4")
        .args(vars)
        .current_dir(p)
        .output()
        .unwrap()
}

fn metrics(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn activitynet_and_thumos14_recipes_run_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    synth_untrimmed(p, "12", "10-14", "3");
    write_random_tsn(&p.join("tsn.safetensors"), 8, 1);
    // ActivityNet: training/validation lists and activity_net.json as vsynth writes them.
    let o = make(p, "activitynet", &["DATA=u".into(), "OUT=anet".into()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = metrics(&p.join("anet/metrics.json"));
    assert!((0.0..=1.0).contains(&m["auc"].as_f64().unwrap()) && m["videos"] == 3, "{m}");
    assert!(p.join("anet/ar_an.svg").is_file());
    let again = make(p, "activitynet", &["DATA=u".into(), "OUT=anet".into()]);
    assert!(again.status.success() && again.stderr.is_empty(), "{}", String::from_utf8_lossy(&again.stderr));
    // The same features through BSN (proposals) and C-TCN (labelled detections, scored by mAP).
    for (localizer, opts) in [
        ("bsn", "-o tem_epochs=1 -o pem_epochs=1 -o batch_size=4 -o tem_hidden_dim=16 -o pem_hidden_dim=8"),
        ("ctcn", "-o epochs=1 -o batch_size=4 -o width=4 -o img_size=32"),
    ] {
        let out = format!("anet_{localizer}");
        std::fs::create_dir_all(p.join(&out)).unwrap();
        for f in ["training.h5", "validation.h5"] {
            let o = std::process::Command::new("cp")
                .args(["-p", &format!("anet/{f}"), &format!("{out}/{f}")])
                .current_dir(p)
                .output()
                .unwrap();
            assert!(o.status.success());
        }
        let vars = [
            "DATA=u".to_string(),
            format!("OUT={out}"),
            format!("LOCALIZER={localizer}"),
            format!("TRAIN_OPTS={opts}"),
        ];
        let o = make(p, "activitynet", &vars);
        assert!(o.status.success(), "{localizer}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(p.join(&out).join(localizer).join("best.safetensors").is_file());
        let m = metrics(&p.join(&out).join("metrics.json"));
        let key = if localizer == "ctcn" { "map" } else { "auc" };
        assert!((0.0..=1.0).contains(&m[key].as_f64().unwrap()), "{localizer}: {m}");
    }
    // THUMOS14: the validation subset trains, the test subset is scored.
    let db: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("u/activity_net.json")).unwrap()).unwrap();
    std::fs::create_dir_all(p.join("u/annotations")).unwrap();
    let mut files: std::collections::BTreeMap<String, String> = Default::default();
    let (mut val, mut test) = (String::new(), String::new());
    for (id, v) in db["database"].as_object().unwrap() {
        // vsynth's training videos play THUMOS's validation videos, its validation the test ones.
        let (subset, list) = if v["subset"] == "training" { ("val", &mut val) } else { ("test", &mut test) };
        list.push_str(&format!("{}\n", v["url"].as_str().unwrap()));
        for a in v["annotations"].as_array().unwrap() {
            let class = a["label"].as_str().unwrap();
            let (t0, t1) = (a["segment"][0].as_f64().unwrap(), a["segment"][1].as_f64().unwrap());
            files
                .entry(format!("{class}_{subset}.txt"))
                .or_default()
                .push_str(&format!("{id} {t0:.1} {t1:.1}\n"));
        }
    }
    for (name, text) in files {
        std::fs::write(p.join("u/annotations").join(name), text).unwrap();
    }
    std::fs::write(p.join("u/validation.list"), val).unwrap();
    std::fs::write(p.join("u/test.list"), test).unwrap();
    let o = make(p, "thumos14", &["DATA=u".into(), "ANNOTATIONS=u/annotations".into(), "OUT=thumos".into()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = metrics(&p.join("thumos/metrics.json"));
    assert!((0.0..=1.0).contains(&m["auc"].as_f64().unwrap()) && m["videos"] == 3, "{m}");
}
