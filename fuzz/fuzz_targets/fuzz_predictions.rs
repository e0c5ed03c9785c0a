#![no_main]
// The harness is vidkit::fuzzing::predictions, replayed on stable by bins/tests/fuzz_replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vidkit::fuzzing::predictions(data));
