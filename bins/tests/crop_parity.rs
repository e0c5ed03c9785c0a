//! The three test crops, box by box against the references (`scripts/crop_boxes_ref.py`):
//! `--crop three` against PaddleVideo's `UniformCrop` (PP-TimeSformer's test crops; the same
//! boxes as mmaction2's `ThreeCrop`), `--crop uniform` against pytorchvideo's `uniform_crop`
//! (PySlowFast's, TimeSformer's), on image sizes with even and odd margins.

mod common;
use common::{cached_fixture, models_peers_python, paddle_peers_python, workspace_root};
use std::path::{Path, PathBuf};
use vidkit::transform::{three_crop_boxes, uniform_crop_boxes, CropBox};

fn boxes(implementation: &str, python: fn() -> Option<PathBuf>) -> Option<serde_json::Value> {
    let root = workspace_root();
    let script = root.join("scripts/crop_boxes_ref.py");
    let args = vec!["--impl".to_string(), implementation.to_string()];
    let dir = cached_fixture(
        &format!("crop_boxes_{implementation}"),
        &[script.clone()],
        "boxes",
        python,
        &script,
        &args,
    )?;
    Some(serde_json::from_slice(&std::fs::read(dir.join("boxes.json")).unwrap()).unwrap())
}

fn compare(rows: &serde_json::Value, ours: fn(u32, u32, u32, u32) -> Vec<CropBox>, what: &Path) {
    let rows = rows.as_array().unwrap();
    assert!(rows.len() >= 8, "{}: {} sizes", what.display(), rows.len());
    for r in rows {
        let (w, h, c) = (
            r["w"].as_u64().unwrap() as u32,
            r["h"].as_u64().unwrap() as u32,
            r["crop"].as_u64().unwrap() as u32,
        );
        let want: Vec<[usize; 4]> = serde_json::from_value(r["boxes"].clone()).unwrap();
        let got: Vec<[usize; 4]> = ours(w, h, c, c).iter().map(|b| [b.x, b.y, b.w, b.h]).collect();
        assert_eq!(got, want, "{}: {w}x{h}, crop {c}", what.display());
    }
}

#[test]
fn three_is_paddlevideos_uniform_crop() {
    let Some(rows) = boxes("ppvideo", paddle_peers_python) else { return };
    compare(&rows, three_crop_boxes, Path::new("PaddleVideo UniformCrop"));
}

#[test]
fn uniform_is_pytorchvideos_uniform_crop() {
    let Some(rows) = boxes("pytorchvideo", models_peers_python) else { return };
    compare(&rows, uniform_crop_boxes, Path::new("pytorchvideo uniform_crop"));
}
