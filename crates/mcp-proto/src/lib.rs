//! MCP's gRPC protocol, package `mcp.v1`.

#![allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("mcp.v1");
}

/// The encoded `FileDescriptorSet` of every file under `proto/`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mcp_descriptor.bin"));
