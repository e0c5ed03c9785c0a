//! `veval --proposals` and `--detection` against ActivityNet's evaluation code (restated with
//! numpy in scripts/anet_eval_ref.py) on random ground truth and predictions; the vpropose JSON
//! Lines form scores as the ActivityNet result JSON does; THUMOS14 annotation directories score
//! as the same segments in ActivityNet form; bad files are one-line errors.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use vidkit::rng::Rng;

const VEVAL: &str = env!("CARGO_BIN_EXE_veval");
const CLASSES: [&str; 3] = ["Long jump", "Archery", "Cricket"];

/// Ground truth (12 validation videos, 2 training ones) and 30 detections per video plus a
/// video without ground truth: jittered copies of the true segments among random ones, scores
/// all distinct.
fn random_set(rng: &mut Rng) -> (Value, Vec<(String, Vec<Value>)>) {
    let mut db = serde_json::Map::new();
    let mut preds = Vec::new();
    for v in 0..15 {
        let id = format!("v_{v:03}");
        let duration = rng.uniform_range(60.0, 200.0);
        let subset = if v < 12 { "validation" } else { "training" };
        let mut anns = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let t0 = rng.uniform_range(0.0, duration * 0.7);
            let t1 = (t0 + rng.uniform_range(3.0, duration * 0.3)).min(duration);
            let label = CLASSES[rng.below(3)];
            anns.push(json!({"segment": [t0, t1], "label": label}));
        }
        if v < 14 {
            db.insert(id.clone(), json!({"subset": subset, "duration": duration, "annotations": anns}));
        }
        let mut segs = Vec::new();
        for k in 0..30 {
            let (t0, t1, label) = if k < anns.len() * 3 {
                let a = &anns[k % anns.len()];
                let (s, e) = (a["segment"][0].as_f64().unwrap(), a["segment"][1].as_f64().unwrap());
                let j = (e - s) * 0.3;
                let label =
                    if rng.below(4) == 0 { CLASSES[rng.below(3)] } else { a["label"].as_str().unwrap() };
                (s + rng.uniform_range(-j, j), e + rng.uniform_range(-j, j), label)
            } else {
                let t0 = rng.uniform_range(0.0, duration * 0.8);
                (t0, t0 + rng.uniform_range(1.0, duration * 0.4), CLASSES[rng.below(3)])
            };
            let (t0, t1) = (t0.max(0.0), t1.max(t0 + 0.5));
            let score = rng.uniform_range(0.0, 1.0) + k as f64 * 1e-9;
            segs.push(json!({"segment": [t0, t1], "score": score, "label": label}));
        }
        preds.push((id, segs));
    }
    (json!({"version": "VERSION 1.3", "taxonomy": [], "database": db}), preds)
}

fn write_anet_results(path: &Path, preds: &[(String, Vec<Value>)]) {
    let results: serde_json::Map<String, Value> = preds.iter().map(|(v, s)| (v.clone(), json!(s))).collect();
    std::fs::write(
        path,
        json!({"version": "VERSION 1.3", "results": results, "external_data": {}}).to_string(),
    )
    .unwrap();
}

fn veval(dir: &Path, args: &[&str]) -> Value {
    let o = run(VEVAL, args, dir);
    assert!(o.status.success(), "veval {args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn close(a: &Value, b: &Value, what: &str) {
    let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!((x - y).abs() < 1e-9, "{what}: {x} vs {y}");
}

#[test]
fn proposals_and_detection_match_activitynets_evaluation() {
    let Some(py) = decode_peers_python() else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut rng = Rng::new(3);
    for round in 0..3 {
        let (gt, preds) = random_set(&mut rng);
        std::fs::write(p.join("gt.json"), gt.to_string()).unwrap();
        write_anet_results(&p.join("pred.json"), &preds);
        let reference = |mode: &str, extra: &[&str]| -> Value {
            let o = Command::new(&py)
                .arg(workspace_root().join("scripts/anet_eval_ref.py"))
                .args([mode, "gt.json", "pred.json", "ref.json"])
                .args(extra)
                .current_dir(p)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_str(&std::fs::read_to_string(p.join("ref.json")).unwrap()).unwrap()
        };
        for max_an in ["100", "10"] {
            let ours = veval(
                p,
                &["--proposals", "--pred", "pred.json", "--gt", "gt.json", "--max-an", max_an, "-q"],
            );
            let want = reference("proposals", &[max_an]);
            close(&ours["auc"], &want["auc"], &format!("round {round} max-an {max_an}: auc"));
            for (j, (a, b)) in
                ours["ar_an"].as_array().unwrap().iter().zip(want["ar_an"].as_array().unwrap()).enumerate()
            {
                close(a, b, &format!("round {round} max-an {max_an}: AR at budget {j}"));
            }
            if round == 0 {
                eprintln!("round 0, max AN {max_an}: AUC {} (reference {})", ours["auc"], want["auc"]);
            }
        }
        let ours = veval(p, &["--detection", "--pred", "pred.json", "--gt", "gt.json", "-q"]);
        let want = reference("detection", &[]);
        close(&ours["map"], &want["map"], &format!("round {round}: mAP"));
        for (a, b) in
            ours["map_at_tiou"].as_array().unwrap().iter().zip(want["map_at_tiou"].as_array().unwrap())
        {
            close(a, b, &format!("round {round}: mAP at a tIoU"));
        }
        for c in ours["classes"].as_array().unwrap() {
            let k = want["classes"].as_array().unwrap().iter().position(|n| *n == c["class"]).unwrap();
            for (t, a) in c["ap"].as_array().unwrap().iter().enumerate() {
                close(a, &want["ap"][t][k], &format!("round {round}: AP of {}", c["class"]));
            }
        }
        if round == 0 {
            eprintln!("round 0: detection mAP {} (reference {})", ours["map"], want["map"]);
        }
        if round == 0 {
            // The curve as an SVG: 100 points, the area in the title.
            veval(p, &["--proposals", "--pred", "pred.json", "--gt", "gt.json", "--plot", "ar_an.svg", "-q"]);
            let svg = std::fs::read_to_string(p.join("ar_an.svg")).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            let points = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
            assert_eq!(points.split(' ').count(), 100);
            assert!(svg.contains("AUC"));
            let o = run(
                VEVAL,
                &["--proposals", "--pred", "pred.json", "--gt", "gt.json", "--plot", "ar_an.png"],
                p,
            );
            assert_eq!(o.status.code(), Some(2));
        }
        // The same predictions as vpropose JSON Lines score the same.
        let lines: String =
            preds.iter().map(|(v, s)| format!("{}\n", json!({"video": v, "segments": s}))).collect();
        std::fs::write(p.join("pred.jsonl"), lines).unwrap();
        assert_eq!(veval(p, &["--detection", "--pred", "pred.jsonl", "--gt", "gt.json", "-q"]), ours);
    }
}

#[test]
fn thumos14_directories_score_as_the_same_segments_in_activitynet_form() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir(p.join("ann")).unwrap();
    std::fs::write(
        p.join("ann/BaseballPitch_val.txt"),
        "video_validation_1 1.0 4.5\nvideo_validation_2 10 12\n",
    )
    .unwrap();
    std::fs::write(p.join("ann/CliffDiving_val.txt"), "video_validation_1 20.2 23.0\n").unwrap();
    std::fs::write(p.join("ann/Ambiguous_val.txt"), "video_validation_1 30 31\n").unwrap();
    std::fs::write(p.join("ann/BaseballPitch_test.txt"), "video_test_1 1 2\n").unwrap();
    let gt = json!({"database": {
        "video_validation_1": {"subset": "validation", "annotations": [
            {"segment": [1.0, 4.5], "label": "BaseballPitch"}, {"segment": [20.2, 23.0], "label": "CliffDiving"}]},
        "video_validation_2": {"subset": "validation", "annotations": [{"segment": [10.0, 12.0], "label": "BaseballPitch"}]},
    }});
    std::fs::write(p.join("gt.json"), gt.to_string()).unwrap();
    let dets = "{\"video\":\"video_validation_1\",\"segments\":[{\"segment\":[1.2,4.4],\"score\":0.9,\"label\":\"BaseballPitch\"},{\"segment\":[20,22],\"score\":0.8,\"label\":\"CliffDiving\"},{\"segment\":[30,31],\"score\":0.7,\"label\":\"CliffDiving\"}]}\n\
                {\"video\":\"video_validation_2\",\"segments\":[{\"segment\":[9,11.5],\"score\":0.6,\"label\":\"BaseballPitch\"}]}\n";
    std::fs::write(p.join("dets.jsonl"), dets).unwrap();
    let thumos = veval(p, &["--detection", "--pred", "dets.jsonl", "--gt", "ann", "-q"]);
    // THUMOS14's thresholds by default: 0.3:0.1:0.7
    let t: Vec<f64> = thumos["tiou"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(t.len(), 5);
    assert!((t[0] - 0.3).abs() < 1e-12 && (t[4] - 0.7).abs() < 1e-12);
    let anet = veval(
        p,
        &["--detection", "--pred", "dets.jsonl", "--gt", "gt.json", "--tiou", "0.3,0.4,0.5,0.6,0.7", "-q"],
    );
    close(&thumos["map"], &anet["map"], "mAP");
    assert_eq!(thumos["videos"], 2);
    // 0.3: BaseballPitch AP 1 (both found), CliffDiving AP 1 (tIoU 1.8/3 = 0.6 first): mAP 1
    close(&thumos["map_at_tiou"][0], &json!(1.0), "mAP@0.3");
}

#[test]
fn bad_localization_inputs_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("nodb.json"), "{\"version\": 1}").unwrap();
    std::fs::write(p.join("gt.json"), json!({"database": {"a": {"subset": "validation", "annotations": [{"segment": [1, 2], "label": "x"}]}}}).to_string()).unwrap();
    std::fs::write(
        p.join("backwards.jsonl"),
        "{\"video\":\"a\",\"segments\":[{\"segment\":[5,2],\"score\":0.5}]}\n",
    )
    .unwrap();
    std::fs::write(p.join("empty.jsonl"), "\n").unwrap();
    std::fs::write(
        p.join("ok.jsonl"),
        "{\"video\":\"a\",\"segments\":[{\"segment\":[1,2],\"score\":0.5}]}\n",
    )
    .unwrap();
    for (args, what) in [
        (vec!["--proposals", "--pred", "ok.jsonl", "--gt", "nodb.json"], "nodb.json: no `database`"),
        (vec!["--proposals", "--pred", "backwards.jsonl", "--gt", "gt.json"], "starts after it ends"),
        (vec!["--proposals", "--pred", "empty.jsonl", "--gt", "gt.json"], "empty result list"),
        (
            vec!["--proposals", "--pred", "ok.jsonl", "--gt", "gt.json", "--subset", "testing"],
            "no annotated video in subset",
        ),
        (vec!["--detection", "--pred", "ok.jsonl", "--gt", "gt.json"], "without a `label`"),
    ] {
        let o = run(VEVAL, &args, p);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains(what) && e.trim().lines().count() == 1, "{args:?}: {e}");
    }
}
