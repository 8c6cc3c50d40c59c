//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so no
//! system `protoc` is needed, then generates tonic/prost code from the
//! resulting descriptor set. The descriptor set is also embedded in the crate
//! (`FILE_DESCRIPTOR_SET`) so tests can enumerate every RPC.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "mcp/v1/types.proto",
        "mcp/v1/agent.proto",
        "mcp/v1/master.proto",
        "mcp/v1/snapshot.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("mcp_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
