//! Arbitrary bytes as a request to the master (first byte: which message):
//! prost decoding never panics, what decodes round-trips, and the specs in
//! it convert as the loader's rules say. The body is
//! `mcp_proto::fuzzing::master_requests`, which `tests/fuzz_corpus.rs` also
//! replays over `corpus/master_requests/` on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mcp_proto::fuzzing::master_requests(data));
