//! Service data as archives: `ExportServiceData` and `ImportServiceData`
//! (docs/ARCHITECTURE.md, docs/SERVICE-FILES.md `[snapshot]`). This module
//! is the pure archive logic, independent of gRPC and of the container
//! runtime; `agent/data_ops.rs` runs the snapshot methods, takes the
//! service's lock and streams; `server/data.rs` maps the messages.
//!
//! - [`export`]: a tar.zst of `<root>/<service>/` written into any
//!   [`std::io::Write`], one file at a time (memory bounded by a constant,
//!   not by the data's size), with a file filter ([`Selection`]): the
//!   default set (`*.toml`, `*.db`, `*.pem`) or everything, minus the
//!   `exclude` paths. Every SQLite database (recognised by its header, not
//!   its name) is replaced by a `VACUUM INTO` copy taken outside the tree;
//!   its `-wal`, `-shm` and `-journal` files are left out. The tree is
//!   walked with `openat(O_NOFOLLOW)` like [`crate::files`]: symbolic
//!   links, fifos, sockets and devices are skipped, never followed.
//! - [`import`]: a tar.zst read from any [`std::io::Read`], every entry
//!   checked before anything is written (see [`import::extract`]), into a
//!   staging directory beside the service directory; [`import::install`]
//!   then swaps it into place atomically.

pub mod export;
pub mod import;

use std::path::PathBuf;

pub use export::{write_archive, ExportStats, Selection};
pub use import::{extract, install, ImportLimits, ImportStats, Staging};

/// Default of `[files] max_import_bytes`: the most file content one
/// import may write (10 GiB).
pub const DEFAULT_MAX_IMPORT_BYTES: u64 = 10 * 1024 * 1024 * 1024;
/// Default of `[files] max_import_file_bytes`: the largest single file
/// an import may write (4 GiB).
pub const DEFAULT_MAX_IMPORT_FILE_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// The most entries (files and directories) one archive may hold.
pub const MAX_IMPORT_ENTRIES: u64 = 1_000_000;
/// The deepest directory nesting exported or imported.
pub const MAX_DEPTH: usize = 128;
/// Size of the data chunks an export streams (64 KiB).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// The zstd level of exports.
pub const ZSTD_LEVEL: i32 = 3;

/// Why an export or an import failed or was refused. Every variant names
/// the service; entry problems name the entry as the archive spells it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("invalid service name {service:?}: not a DNS label")]
    InvalidService { service: String },

    #[error("service {service}: no data directory {}", path.display())]
    NoData { service: String, path: PathBuf },

    /// `/srv/<service>/` is a symbolic link (never followed).
    #[error("service {service}: {} is a symbolic link; links are never followed", path.display())]
    Link { service: String, path: PathBuf },

    #[error(
        "service {service}: data directory {} exists; import with force to replace it",
        path.display()
    )]
    Exists { service: String, path: PathBuf },

    #[error(
        "service {service}: containers {} are running; stop the service before importing \
         (a running container keeps the old directory mounted)",
        containers.join(", ")
    )]
    Running {
        service: String,
        containers: Vec<String>,
    },

    /// The snapshot method failed; nothing was archived.
    #[error("service {service}: snapshot method {method} failed: {message}")]
    Method {
        service: String,
        method: String,
        message: String,
    },

    /// An archive entry that is refused as such (path, type).
    #[error("service {service}: archive entry {entry:?} refused: {reason}")]
    Refused {
        service: String,
        entry: String,
        reason: String,
    },

    #[error("service {service}: {what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        service: String,
        what: String,
        size: u64,
        limit: u64,
    },

    #[error("service {service}: the archive has more than {limit} entries")]
    TooManyEntries { service: String, limit: u64 },

    /// Not a tar.zst, or a damaged one.
    #[error("service {service}: archive is not a valid tar.zst: {message}")]
    Corrupt { service: String, message: String },

    #[error(
        "service {service}: archive checksum mismatch: announced sha256 {expected} size \
         {expected_size}, received sha256 {actual} size {actual_size}"
    )]
    Checksum {
        service: String,
        expected: String,
        expected_size: u64,
        actual: String,
        actual_size: u64,
    },

    /// The message stream broke the protocol (first message, trailer).
    #[error("{message}")]
    Protocol { message: String },

    /// The export's reader went away or stopped reading.
    #[error("service {service}: export stopped: {message}")]
    Aborted { service: String, message: String },

    #[error("service {service}: {op}: {source}")]
    Io {
        service: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    pub(crate) fn io(
        service: &str,
        op: impl Into<String>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        DataError::Io {
            service: service.to_owned(),
            op: op.into(),
            source: source.into(),
        }
    }

    pub(crate) fn refused(service: &str, entry: &str, reason: impl Into<String>) -> Self {
        DataError::Refused {
            service: service.to_owned(),
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(service: &str, message: impl std::fmt::Display) -> Self {
        DataError::Corrupt {
            service: service.to_owned(),
            message: message.to_string(),
        }
    }
}

/// `sha256` as lowercase hex.
pub(crate) fn hex_digest(h: sha2::Sha256) -> String {
    use sha2::Digest;
    hex::encode(h.finalize())
}

#[cfg(test)]
pub(crate) mod tests;
