//! The clip stream is plain JSON + NPY: numpy reads what vidkit writes and vidkit reads what
//! numpy writes (the recipe of man/vidkit-stream.5), through the pinned peers' numpy.

mod common;
use common::*;
use std::process::Command;
use vidkit::stream::{Array, StreamReader};

const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");

const NUMPY_READS: &str = r#"
import json, sys, numpy as np
f = open(sys.argv[1], "rb")
out = []
while True:
    line = f.readline()
    if not line:
        break
    h = json.loads(line)
    a = np.lib.format.read_array(f)
    out.append([h["video"], h["clip"], h["view"], h["indices"], list(a.shape), str(a.dtype), int(a.astype(np.int64).sum())])
print(json.dumps(out))
"#;

const NUMPY_WRITES: &str = r#"
import json, sys, numpy as np
with open(sys.argv[1], "wb") as f:
    a = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    f.write((json.dumps({"kind": "frames", "video": "np.mp4", "label": 4, "layout": "THWC", "mine": [1, 2]}) + "\n").encode())
    np.lib.format.write_array(f, a)
    f.write(b'{"kind": "features", "video": "np.mp4", "layout": "TC"}\n')
    np.lib.format.write_array(f, np.asfortranarray(np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)))
    f.write(b'{"kind": "features", "video": "half"}\n')
    np.lib.format.write_array(f, np.array([0.5, -2.0], dtype=np.float16))
"#;

#[test]
fn numpy_reads_vsample_output_and_vidkit_reads_numpy_output() {
    let Some(py) = decode_peers_python() else { return };
    let d = tempfile::tempdir().unwrap();
    testsrc(&d.path().join("v.mp4"), "64x48", 25, 30, &[]);
    let o = run(
        VSAMPLE,
        &["v.mp4", "--frames", "3", "--size", "48", "--crop", "three", "--crop-size", "48", "-o", "v.vks"],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // What vidkit itself reads back, to compare with numpy's view.
    let ours: Vec<_> = StreamReader::new(
        std::io::BufReader::new(std::fs::File::open(d.path().join("v.vks")).unwrap()),
        "v.vks",
    )
    .collect::<anyhow::Result<_>>()
    .unwrap();
    let out = Command::new(&py).args(["-c", NUMPY_READS]).arg(d.path().join("v.vks")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen.len(), 3);
    for (rec, np) in ours.iter().zip(&seen) {
        let Array::U8(a) = &rec.array else { panic!("uint8 expected") };
        let sum: i64 = a.iter().map(|&v| v as i64).sum();
        let want = serde_json::json!([
            "v.mp4",
            rec.header.clip,
            rec.header.view,
            rec.header.indices,
            [3, 48, 48, 3],
            "uint8",
            sum
        ]);
        assert_eq!(np, &want);
    }

    let written = d.path().join("np.vks");
    let out = Command::new(&py).args(["-c", NUMPY_WRITES]).arg(&written).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs: Vec<_> =
        StreamReader::new(std::io::BufReader::new(std::fs::File::open(&written).unwrap()), "np.vks")
            .collect::<anyhow::Result<_>>()
            .unwrap();
    assert_eq!(recs.len(), 3);
    let Array::U8(a) = &recs[0].array else { panic!() };
    assert_eq!(a.shape(), &[2, 3, 4, 3]);
    assert_eq!(a[[1, 2, 3, 2]], 71);
    assert_eq!(recs[0].header.label, Some(vidkit::stream::Label::Single(4)));
    assert_eq!(recs[0].header.extra["mine"], serde_json::json!([1, 2]));
    let Array::F32(f) = &recs[1].array else { panic!() };
    assert_eq!(f.shape(), &[2, 5]);
    assert!((f[[0, 1]] - (-1.0 + 2.0 / 9.0)).abs() < 1e-6, "Fortran order read in logical order");
    let Array::F16(h) = &recs[2].array else { panic!() };
    assert_eq!(h.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), vec![0.5, -2.0]);
}
