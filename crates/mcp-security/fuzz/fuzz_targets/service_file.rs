//! Arbitrary bytes as a service file: the loader never panics, reports
//! positions inside the file, and what it accepts is valid and survives its
//! canonical rendering. The body is `mcp_spec::fuzzing::service_file`,
//! which `tests/fuzz_corpus.rs` also replays over `corpus/service_file/` on
//! stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mcp_spec::fuzzing::service_file(data));
