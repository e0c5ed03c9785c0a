//! Replays the fuzz corpora (issue 23) on stable: every file in `testdata/fuzz/<target>/` and
//! `testdata/fuzz/regressions/<target>/` goes through the same harness (`vidkit::fuzzing`) as the
//! cargo-fuzz target of that name, and must come back without a panic. The seeds are written by
//! `cargo test -p vidkit-cli --test fuzz_replay -- --ignored write_seed_corpora`; `make fuzz`
//! grows the corpora (minimise them with `cargo fuzz cmin` before committing).

mod common;

use std::path::{Path, PathBuf};
use vidkit::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    common::workspace_root().join("testdata/fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Runs `harness` over each file, naming the file whose input panicked.
fn replay(target: &str, harness: fn(&[u8]), inputs: &[PathBuf]) {
    for path in inputs {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| harness(&data)).is_err() {
            panic!("{target}: {} panics", path.display());
        }
    }
}

#[test]
fn corpora_replay_without_panics() {
    let dir = fuzz_dir();
    assert!(dir.is_dir(), "{}: the fuzz corpora are missing", dir.display());
    for (target, harness) in TARGETS {
        let corpus = files(&dir.join(target));
        assert!(!corpus.is_empty(), "{}: no corpus for {target}", dir.join(target).display());
        replay(target, harness, &corpus);
    }
}

#[test]
fn regressions_replay_without_panics() {
    let dir = fuzz_dir().join("regressions");
    assert!(dir.is_dir(), "{}: the fuzz regressions are missing", dir.display());
    for (target, harness) in TARGETS {
        replay(target, harness, &files(&dir.join(target)));
    }
}

/// The seeds: small valid files from the library's own writers, and a few broken ones.
#[test]
#[ignore = "writes testdata/fuzz; run by hand to regenerate the seeds"]
fn write_seed_corpora() {
    use candle_core::{DType, Device};
    use ndarray::{ArrayD, IxDyn};
    use vidkit::stream::{Array, RecordHeader, StreamWriter};

    let dir = fuzz_dir();
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };

    // Clip streams: u8 frames, f32 features, f16; one cut short.
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::new(&mut buf);
        let mut h = RecordHeader::frames("a.mp4");
        h.clip = Some(0);
        h.indices = Some(vec![0, 4]);
        h.layout = Some("THWC".into());
        let frames = ArrayD::from_shape_fn(IxDyn(&[2, 3, 2, 3]), |i| (i[0] * 7 + i[1] * 3 + i[3]) as u8);
        w.write_record(&h, &Array::U8(frames)).unwrap();
        let feats = ArrayD::from_shape_fn(IxDyn(&[2, 4]), |i| i[0] as f32 - 0.25 * i[1] as f32);
        w.write_record(&RecordHeader::features("b"), &Array::F32(feats.clone())).unwrap();
        w.write_record(&RecordHeader::features("c"), &Array::F16(feats.mapv(half::f16::from_f32))).unwrap();
    }
    put("fuzz_stream", "three_records.vks", &buf);
    put("fuzz_stream", "truncated.vks", &buf[..buf.len() - 7]);
    let dict = "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }";
    let mut fortran = b"{\"kind\":\"frames\"}\n\x93NUMPY\x01\x00".to_vec();
    fortran.extend_from_slice(&(dict.len() as u16 + 1).to_le_bytes());
    fortran.extend_from_slice(dict.as_bytes());
    fortran.extend_from_slice(b"\n\x00\x03\x01\x04\x02\x05");
    put("fuzz_stream", "fortran.vks", &fortran);

    // List files.
    put("fuzz_list", "labels.txt", b"a/b.mp4 3\n# comment\n\ndir with space/v.mp4 1,4,9\nonly.mp4\n");
    put("fuzz_list", "bad_label.txt", b"v.mp4 cat\nw.mp4 -1\n");

    // Predictions: veval's records, vpropose's segments, ActivityNet results.
    put(
        "fuzz_predictions",
        "records.jsonl",
        br#"{"video":"a/b.mp4","label":3,"scores":[0.1,0.7,0.2],"top":[{"class":1,"name":"run","score":0.7}],"clip":2}
{"video":"c.mp4","label":[0,2],"scores":[0.9,0.1,0.6]}
"#,
    );
    put(
        "fuzz_predictions",
        "segments.jsonl",
        br#"{"video":"v1","segments":[{"segment":[0.5,2.0],"score":0.9,"label":"run"}]}
{"video":"v2","segments":[]}
"#,
    );
    put(
        "fuzz_predictions",
        "activitynet.json",
        br#"{"version":"1.3","results":{"v_a":[{"segment":[1,3.5],"score":0.4,"label":"x"}]},"external_data":{}}"#,
    );

    // Model files: a tiny TSN-R18 (base width 1), and its config over the wrong tensors.
    let mut cfg = vidkit::model::ModelConfig::defaults("tsn_r18");
    cfg.num_classes = 2;
    cfg.frames = 2;
    cfg.base_width = 1;
    let varmap = candle_nn::VarMap::new();
    vidkit::model::build(&cfg, candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.safetensors");
    vidkit::model::save_model(&varmap, &cfg, &model).unwrap();
    put("fuzz_safetensors", "tsn_r18_width1.safetensors", &std::fs::read(&model).unwrap());
    let t = candle_core::Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    vidkit::model::save_tensors(&[("head.fc.weight".into(), t)], &cfg, &model).unwrap();
    put("fuzz_safetensors", "wrong_tensors.safetensors", &std::fs::read(&model).unwrap());

    // Pickles: the refused os.system file, protocol 0 arrays (Python 2 and 3), a protocol 2
    // state dict with a Fortran-order big-endian array.
    put("fuzz_pdparams", "malicious.pdparams", &std::fs::read(dir.join("../malicious.pdparams")).unwrap());
    put("fuzz_pdparams", "py3_protocol0.pkl", b"cnumpy._core.multiarray\n_reconstruct\np0\n(cnumpy\nndarray\np1\n(I0\ntp2\nc_codecs\nencode\np3\n(Vb\np4\nVlatin1\np5\ntp6\nRp7\ntp8\nRp9\n(I1\n(I2\nI2\ntp10\ncnumpy\ndtype\np11\n(Vf4\np12\nI00\nI01\ntp13\nRp14\n(I3\nV<\np15\nNNNI-1\nI-1\nI0\ntp16\nbI00\ng3\n(V\\u0000\\u0000\xc0?\\u0000\\u0000\\u0000\xc0\\u0000\\u0000\x80>\\u0000\\u0000\xe0@\np17\ng5\ntp18\nRp19\ntp20\nb.");
    put("fuzz_pdparams", "py2_protocol0.pkl", b"cnumpy.core.multiarray\n_reconstruct\np0\n(cnumpy\nndarray\np1\n(I0\ntp2\nS'b'\np3\ntp4\nRp5\n(I1\n(I2\nI2\ntp6\ncnumpy\ndtype\np7\n(S'f4'\np8\nI0\nI1\ntp9\nRp10\n(I3\nS'<'\np11\nNNNI-1\nI-1\nI0\ntp12\nbI00\nS'\\x00\\x00\\xc0?\\x00\\x00\\x00\\xc0\\x00\\x00\\x80>\\x00\\x00\\xe0@'\np13\ntp14\nb.");
    let mut p = vec![0x80, 2, b'}', b'(', 0x8c, 1, b'w'];
    p.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R");
    p.extend_from_slice(b"(K\x01K\x02K\x03\x86cnumpy\ndtype\n\x8c\x02f4\x89\x88\x87R(K\x03\x8c\x01>NNNJ");
    p.extend_from_slice(&(-1i32).to_le_bytes());
    p.push(b'J');
    p.extend_from_slice(&(-1i32).to_le_bytes());
    p.extend_from_slice(b"K\x00tb\x88C\x18");
    for v in [0f32, 3., 1., 4., 2., 5.] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    p.extend_from_slice(b"tbu.");
    put("fuzz_pdparams", "fortran_big_endian.pdparams", &p);

    // PyTorch checkpoints: candle's own test files (candle-core 0.11 `tests/`, written by its
    // `pth.py`), when the registry copy is at hand.
    let candle_tests = std::env::var("CANDLE_TESTS").map(PathBuf::from).unwrap_or_default();
    for name in ["test.pt", "test_with_key.pt", "fortran_tensor_3d.pth"] {
        if let Ok(bytes) = std::fs::read(candle_tests.join(name)) {
            put("fuzz_pth", name, &bytes);
        }
    }
    std::fs::create_dir_all(dir.join("regressions")).unwrap();
}

/// The valid seeds parse, so the fuzzers start from the parsers' success paths.
#[test]
fn valid_seeds_parse() {
    let dir = fuzz_dir();
    let model = dir.join("fuzz_safetensors/tsn_r18_width1.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    vidkit::model::load_model_bytes(&bytes, &model, &candle_core::Device::Cpu).unwrap();
    let pdparams = std::fs::read(dir.join("fuzz_pdparams/fortran_big_endian.pdparams")).unwrap();
    assert_eq!(vidkit::model::parse_pdparams(&pdparams).unwrap().len(), 1);
    for name in ["py2_protocol0.pkl", "py3_protocol0.pkl"] {
        let bytes = std::fs::read(dir.join("fuzz_pdparams").join(name)).unwrap();
        assert_eq!(vidkit::model::pickled_array_from_bytes(&bytes).unwrap().dim(), (2, 2), "{name}");
    }
    let pth = dir.join("fuzz_pth/test.pt");
    let (tensors, _) =
        vidkit::model::torch_state_dict_from_bytes(&std::fs::read(&pth).unwrap(), &pth).unwrap();
    assert_eq!(tensors[0].1.dims(), [2, 4]);
    let stream = std::fs::read(dir.join("fuzz_stream/three_records.vks")).unwrap();
    assert_eq!(vidkit::stream::StreamReader::new(&stream[..], "s").count(), 3);
}
