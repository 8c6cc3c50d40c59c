//! The checks [`super::FakeAgents`] makes of a file request, as the real
//! agent does.

use tonic::Code;

use super::behaviour::refused;
use crate::agents::{AgentError, AgentTarget};

/// The agent's checks of a file request (service name, relative path,
/// permission bits, size).
pub(super) fn check_file(
    t: &AgentTarget,
    method: &str,
    service: &str,
    path: &str,
    mode: Option<u32>,
    size: usize,
) -> Result<(), AgentError> {
    let invalid = |m: String| refused(t, method, Code::InvalidArgument, m);
    if !mcp_spec::names::is_dns_label(service) {
        return Err(invalid(format!("invalid service name {service:?}")));
    }
    let bad_path = |why: &str| invalid(format!("{service}: path {path:?}: {why}"));
    if path.is_empty() {
        return Err(bad_path("path is empty"));
    }
    if path.starts_with('/') {
        return Err(bad_path("absolute paths are not allowed"));
    }
    for c in path.split('/') {
        match c {
            "" => return Err(bad_path("empty component")),
            "." | ".." => return Err(bad_path("'.' and '..' components are not allowed")),
            _ => {}
        }
    }
    if let Some(m) = mode {
        if m & !0o777 != 0 {
            return Err(invalid(format!(
                "{service}: {path}: mode {m:o}: only permission bits (0o777) may be set"
            )));
        }
    }
    if size > mcp_proto::MAX_FILE_BYTES {
        return Err(refused(
            t,
            method,
            Code::ResourceExhausted,
            format!(
                "{service}: {path}: {size} bytes is larger than the limit of {} bytes",
                mcp_proto::MAX_FILE_BYTES
            ),
        ));
    }
    Ok(())
}
