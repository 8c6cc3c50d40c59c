//! MCP's gRPC protocol, package `mcp.v1`.
//!
//! - [`pb`]: the generated prost messages and tonic clients/servers.
//! - [`convert`]: conversions between the spec types of `mcp-spec` and their
//!   messages; protocol → domain re-validates with the loader's rules.
//! - [`fuzzing`]: the bodies of its cargo-fuzz targets (in the workspace's
//!   fuzz crate, `crates/mcp-security/fuzz`).
//!
//! This is the only crate that knows prost types.

pub mod convert;
pub mod fuzzing;

#[allow(clippy::all, clippy::pedantic)]
#[allow(
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links,
    rustdoc::bare_urls
)]
pub mod pb {
    tonic::include_proto!("mcp.v1");
}

pub use convert::InvalidSpec;

/// The encoded `FileDescriptorSet` of every file under `proto/`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mcp_descriptor.bin"));

/// The largest file `PushFile`/`PullFile` carry (64 MiB): the agent refuses
/// larger ones with a message naming this limit.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

/// The gRPC message limit (decoding and encoding) that every MCP server and
/// client sets: a file at [`MAX_FILE_BYTES`] plus room for the rest of the
/// message. Use it on every `*Server` and `*Client`, so no hop refuses what
/// another accepts.
pub const MAX_MESSAGE_BYTES: usize = MAX_FILE_BYTES + 1024 * 1024;

/// The words of an agent's `Deploy` refusal (`FailedPrecondition`) when the
/// new spec failed its health check and the previous one was brought back:
/// "service hello: v2 failed its health check (...), rolled back to v1
/// (spec 3f2a...); ...". The master tells a rollback by them.
pub const ROLLED_BACK: &str = "rolled back to";
