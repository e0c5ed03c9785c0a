//! Golden files for the clip-stream format, and the man page's numpy recipe run verbatim.
//! Regenerate the goldens with `VIDKIT_BLESS=1 cargo test --test golden` and review the diff.

mod common;
use common::*;
use std::process::Command;
use vidkit::stream::StreamReader;

const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");

#[test]
fn record_headers_match_the_golden_file() {
    let root = workspace_root();
    let o = Command::new(VSAMPLE)
        .args([
            "testdata/clip.mp4",
            "--frames",
            "4",
            "--size",
            "64",
            "--crop",
            "three",
            "--crop-size",
            "64",
            "-q",
        ])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut lines = String::new();
    for rec in StreamReader::new(&o.stdout[..], "vsample") {
        let rec = rec.unwrap();
        let mut v = serde_json::to_value(&rec.header).unwrap();
        v["_array"] = serde_json::json!({"dtype": rec.array.dtype().descr(), "shape": rec.array.shape()});
        lines.push_str(&serde_json::to_string(&v).unwrap());
        lines.push('\n');
    }
    let golden = root.join("testdata/golden/clip_three.headers.jsonl");
    if std::env::var_os("VIDKIT_BLESS").is_some() {
        std::fs::write(&golden, &lines).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (VIDKIT_BLESS=1 to create)");
    assert_eq!(lines, want, "stream headers changed; if intended, re-bless and review");
}

#[test]
fn man_page_numpy_recipe_reads_vsample_output() {
    let Some(py) = decode_peers_python() else { return };
    let root = workspace_root();
    let script = format!(
        "{VSAMPLE} testdata/clip.mp4 --indices 0,10,20 --crop none -q | {} -c 'import io, sys, json, numpy as np\n\
         f = io.BytesIO(sys.stdin.buffer.read()); h = json.loads(f.readline()); a = np.lib.format.read_array(f); print(h[\"indices\"], a.shape, a.dtype)'",
        py.display()
    );
    let o = Command::new("sh").args(["-c", &script]).current_dir(&root).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[0, 10, 20] (3, 72, 96, 3) uint8");
}
