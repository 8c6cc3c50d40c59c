//! Arbitrary bytes as an archive to ImportServiceData: the extraction never
//! panics, never writes outside the service directory, leaves the data as
//! it was when it refuses, and extracts only files and directories. The body
//! is `mcp_agent::fuzzing::import_archive`, which
//! `crates/mcp-agent/tests/fuzz_corpus.rs` also replays over
//! `corpus/import_archive/` on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mcp_agent::fuzzing::import_archive(data));
