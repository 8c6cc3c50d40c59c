//! `[snapshots]`: the master's snapshot store (docs/CONFIG.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{d_24h, humantime_serde};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsConfig {
    /// `<dir>/<service>/<time>.tar.zst` and `<dir>/_master/` (the master's
    /// database); default (empty) `snapshots/` beside the database.
    #[serde(default)]
    pub dir: PathBuf,
    /// Scheduled snapshots: a service whose newest is older is snapshotted
    /// (live); older than twice this, it is flagged stale.
    #[serde(default = "d_24h", with = "humantime_serde")]
    pub interval: Duration,
    /// Snapshots kept per service (keep-last-N); also `keep`.
    #[serde(default = "default_retain", alias = "keep")]
    pub retain: u32,
    /// A second place every stored snapshot and database snapshot is
    /// copied to (checksum-verified), with the same layout.
    #[serde(default)]
    pub mirror: Option<PathBuf>,
}

impl SnapshotsConfig {
    /// The settings without a `[snapshots]` section, for a database at `db`
    /// (`mcp-master snapshot`).
    pub fn defaults_for(db: &Path) -> SnapshotsConfig {
        SnapshotsConfig {
            dir: default_snapshot_dir(db),
            interval: d_24h(),
            retain: default_retain(),
            mirror: None,
        }
    }
}

/// `snapshots/` in the database's directory.
pub fn default_snapshot_dir(db: &Path) -> PathBuf {
    match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join("snapshots"),
        _ => PathBuf::from("snapshots"),
    }
}

fn default_retain() -> u32 {
    7
}
