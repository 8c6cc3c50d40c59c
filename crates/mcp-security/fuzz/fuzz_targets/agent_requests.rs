//! Arbitrary bytes as a request to the agent (first byte: which message):
//! prost decoding never panics, what decodes round-trips, and a spec in it
//! converts as the loader's rules say. The body is
//! `mcp_proto::fuzzing::agent_requests`, which `tests/fuzz_corpus.rs` also
//! replays over `corpus/agent_requests/` on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mcp_proto::fuzzing::agent_requests(data));
