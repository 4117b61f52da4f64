//! libFuzzer target `http_request`: the body is `streamfold::fuzzing::http_request` (see its documentation),
//! shared with the stable corpus replay in tests/fuzz_corpus.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamfold::fuzzing::http_request(data));
