//! MCP's gRPC protocol, package `mcp.v1`.
//!
//! - [`pb`]: the generated prost messages and tonic clients/servers.
//! - [`convert`]: conversions between the spec types of `mcp-spec` and their
//!   messages; protocol → domain re-validates with the loader's rules.
//!
//! This is the only crate that knows prost types.

pub mod convert;

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
