//! Arbitrary strings through the edge and registration validators: no
//! panics, and whatever is accepted really is under the domain. The body is
//! `mcp_security::fuzzing::hostname`, which `tests/fuzz_corpus.rs` also
//! replays over `corpus/hostname/` on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mcp_security::fuzzing::hostname(data));
