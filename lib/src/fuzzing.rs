//! Fuzz harnesses: one function per parser that reads untrusted bytes (issue 23). The cargo-fuzz
//! targets in `fuzz/` call these, and `bins/tests/fuzz_replay.rs` replays the corpora in
//! `testdata/fuzz/` through the same functions on stable, so both run identical code.
//!
//! A harness feeds the bytes to the parser and drops the result: an error is a correct answer to
//! bad input; a panic, a hang or an allocation beyond what the bytes justify is a bug.

use std::io::Cursor;
use std::path::Path;

/// The clip stream: every record until the end or the first error.
pub fn stream(data: &[u8]) {
    let reader = crate::stream::StreamReader::new(Cursor::new(data), "fuzz");
    for record in reader {
        if record.is_err() {
            break;
        }
    }
}

/// List files (`path label[,label...]` lines), as `read_list` parses them.
pub fn list(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::data::parse_list_text(text, Path::new("fuzz"));
    }
}

/// Predictions: veval's JSON Lines records and the segment predictions (ActivityNet `results`
/// JSON or vpropose's JSON Lines).
pub fn predictions(data: &[u8]) {
    let reader = crate::stream::prediction::PredictionReader::new(Cursor::new(data), "fuzz");
    for p in reader {
        if p.is_err() {
            break;
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::data::parse_segment_predictions(text, "fuzz");
    }
}

/// A vidkit model file: safetensors with the config in its metadata, loaded on the CPU.
pub fn safetensors(data: &[u8]) {
    let _ = crate::model::load_model_bytes(data, Path::new("fuzz"), &candle_core::Device::Cpu);
}

/// Paddle `.pdparams` (and the protocol 0 pickled arrays the same interpreter reads).
pub fn pdparams(data: &[u8]) {
    let _ = crate::model::parse_pdparams(data);
    let _ = crate::model::pickled_array_from_bytes(data);
}

/// A PyTorch `.pth` zip checkpoint.
pub fn pth(data: &[u8]) {
    let _ = crate::model::torch_state_dict_from_bytes(data, Path::new("fuzz.pth"));
}

/// The harness of each fuzz target, by target name (the folder names under `testdata/fuzz/`).
pub const TARGETS: [(&str, fn(&[u8])); 6] = [
    ("fuzz_stream", stream),
    ("fuzz_list", list),
    ("fuzz_predictions", predictions),
    ("fuzz_safetensors", safetensors),
    ("fuzz_pdparams", pdparams),
    ("fuzz_pth", pth),
];
