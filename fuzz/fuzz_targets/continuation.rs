//! libFuzzer target `continuation`: the body is `streamfold::fuzzing::continuation` (see its documentation),
//! shared with the stable corpus replay in tests/fuzz_corpus.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamfold::fuzzing::continuation(data));
