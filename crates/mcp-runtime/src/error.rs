//! The runtime's error type.

use std::time::Duration;

/// Everything a [`crate::ContainerRuntime`] call can fail with.
///
/// `target` is the container name (or the image reference for image
/// operations); `stderr` is what podman printed, trimmed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The named container does not exist.
    #[error("container {name}: no such container")]
    NotFound { name: String },

    /// A container with that name already exists.
    #[error("container {name}: name already in use")]
    AlreadyExists { name: String },

    /// The image is not present locally (creation never pulls implicitly).
    #[error("image {image}: not present locally (pull it first)")]
    ImageNotFound { image: String },

    /// The container is in the wrong state for the operation, e.g. `exec`
    /// on a stopped container or `remove` without `force` on a running one.
    #[error("container {name}: wrong state for {op}: {detail}")]
    WrongState {
        name: String,
        op: &'static str,
        detail: String,
    },

    /// The request was rejected before podman was run (bad name, env entry
    /// without `=`, empty argv, ...).
    #[error("{target}: invalid {what}: {reason}")]
    Invalid {
        target: String,
        what: &'static str,
        reason: String,
    },

    /// podman ran and failed.
    #[error("{target}: podman {op} failed ({status}): {stderr}")]
    Command {
        target: String,
        op: &'static str,
        /// Exit status, or `killed by signal`.
        status: String,
        stderr: String,
    },

    /// podman could not be started at all (binary missing, not executable).
    #[error("{target}: cannot run {binary} for {op}: {source}")]
    Spawn {
        target: String,
        op: &'static str,
        binary: String,
        #[source]
        source: std::io::Error,
    },

    /// podman did not finish in time; it was killed.
    #[error("{target}: podman {op} timed out after {after:?}")]
    Timeout {
        target: String,
        op: &'static str,
        after: Duration,
    },

    /// podman's output could not be understood.
    #[error("{target}: unexpected output of podman {op}: {reason}")]
    Parse {
        target: String,
        op: &'static str,
        reason: String,
    },
}

impl RuntimeError {
    /// True for [`RuntimeError::NotFound`]; handy for idempotent removal.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound { .. })
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
