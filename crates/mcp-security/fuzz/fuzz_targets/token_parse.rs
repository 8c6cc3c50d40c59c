//! Arbitrary bytes as an `authorization` header and as a bearer token: the
//! parser and the Ed25519 JWT verifier must never panic, and must never
//! accept a token not signed by the key. The body is
//! `mcp_security::fuzzing::token_parse`, which `tests/fuzz_corpus.rs` also
//! replays over `corpus/token_parse/` on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mcp_security::fuzzing::token_parse(data));
