//! The service-file size limit: the master (reading git blobs), `mcp
//! validate`, `mcp sync` and `mcp deploy` refuse the same files with the
//! same message.

use std::path::Path;

/// The largest service file MCP reads: the master (from git), `mcp
/// validate`, `mcp sync` and `mcp deploy` all refuse a larger one with
/// [`file_size_problem`]'s message.
pub const MAX_SERVICE_FILE_BYTES: u64 = 1024 * 1024;

/// The problem with a service file of `size` bytes, when it is too large.
pub fn file_size_problem(size: u64) -> Option<String> {
    (size > MAX_SERVICE_FILE_BYTES).then(|| {
        format!(
            "file is {size} bytes, larger than the {MAX_SERVICE_FILE_BYTES} bytes a service file may have"
        )
    })
}

/// Reads a service file, refusing one larger than
/// [`MAX_SERVICE_FILE_BYTES`] (without reading more than that); the error
/// is the message for a diagnostic.
pub fn read_service_bytes(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read file: {e}"))?;
    if let Some(p) = file_size_problem(meta.len()) {
        return Err(p);
    }
    let mut bytes = Vec::new();
    file.take(MAX_SERVICE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read file: {e}"))?;
    // Grown since the size was read.
    if let Some(p) = file_size_problem(bytes.len() as u64) {
        return Err(p);
    }
    Ok(bytes)
}
