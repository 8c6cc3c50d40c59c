//! `mcp-agent snapshot`: a consistent copy of the agent's own database.
//!
//! The copy is made with `VACUUM INTO` from a read-only connection, so it
//! works while the agent runs (WAL: the copy is one read transaction) and
//! never creates or migrates a database. It is written under a temporary
//! name, checked (`PRAGMA quick_check`), then renamed to
//! `<dir>/mcp-agent-<YYYYmmddTHHMMSSZ>.db` (`-<n>` is appended when two
//! snapshots fall in the same second). Then all but the newest `keep`
//! snapshots are deleted. Only files with exactly that name pattern are ever
//! deleted.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::clock::Timestamp;
use crate::registry::{self, RegistryError};

const PREFIX: &str = "mcp-agent-";
const SUFFIX: &str = ".db";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("database {} does not exist", path.display())]
    NoDatabase { path: PathBuf },
    #[error("cannot open database {} for a snapshot: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("snapshot {} failed its integrity check: {message}", path.display())]
    Check { path: PathBuf, message: String },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot keep must be at least 1")]
    KeepZero,
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A snapshot file found in the snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotFile {
    pub time: Timestamp,
    /// 0, or the `-<n>` suffix of same-second snapshots.
    pub seq: u32,
    pub path: PathBuf,
}

/// What [`snapshot_database`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOutcome {
    pub path: PathBuf,
    pub size: u64,
    /// Older snapshots deleted by retention.
    pub removed: Vec<PathBuf>,
}

/// Backs up the database at `db` into `dir` (created if missing), keeping the
/// newest `keep` snapshots.
pub fn snapshot_database(
    db: &Path,
    dir: &Path,
    keep: usize,
    now: Timestamp,
) -> Result<SnapshotOutcome, SnapshotError> {
    if keep == 0 {
        return Err(SnapshotError::KeepZero);
    }
    if !db.is_file() {
        return Err(SnapshotError::NoDatabase {
            path: db.to_path_buf(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io("cannot create snapshot directory", dir))?;

    let (final_path, tmp_path) = free_name(dir, now);
    if tmp_path.exists() {
        std::fs::remove_file(&tmp_path).map_err(io("cannot remove stale", &tmp_path))?;
    }

    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| SnapshotError::Open {
        path: db.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|source| SnapshotError::Open {
            path: db.to_path_buf(),
            source,
        })?;
    let made = registry::vacuum_into(&conn, &tmp_path)
        .map_err(SnapshotError::from)
        .and_then(|()| check(&tmp_path));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e);
    }
    drop(conn);

    std::fs::rename(&tmp_path, &final_path).map_err(io("cannot rename snapshot", &final_path))?;
    // Make the rename durable (best effort: not every file system allows it).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let size = std::fs::metadata(&final_path)
        .map_err(io("cannot stat snapshot", &final_path))?
        .len();

    let mut all = list_snapshots(dir)?;
    let mut removed = Vec::new();
    if all.len() > keep {
        let excess = all.len() - keep;
        for old in all.drain(..excess) {
            std::fs::remove_file(&old.path).map_err(io("cannot delete old snapshot", &old.path))?;
            removed.push(old.path);
        }
    }
    Ok(SnapshotOutcome {
        path: final_path,
        size,
        removed,
    })
}

/// Snapshots in `dir`, oldest first. Other files are ignored.
pub fn list_snapshots(dir: &Path) -> Result<Vec<SnapshotFile>, SnapshotError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io("cannot list snapshot directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(io("cannot list snapshot directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((time, seq)) = parse_name(name) else {
            continue;
        };
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            out.push(SnapshotFile {
                time,
                seq,
                path: entry.path(),
            });
        }
    }
    out.sort();
    Ok(out)
}

/// `mcp-agent-<stamp>[-<n>].db` → (time, n).
fn parse_name(name: &str) -> Option<(Timestamp, u32)> {
    let middle = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (stamp, seq) = match middle.split_once('-') {
        Some((stamp, digits)) => {
            let n: u32 = digits.parse().ok().filter(|n| *n > 0)?;
            // Canonical form only (no "+1", no leading zeros).
            if n.to_string() != digits {
                return None;
            }
            (stamp, n)
        }
        None => (middle, 0),
    };
    Some((Timestamp::parse_compact(stamp)?, seq))
}

fn file_name(now: Timestamp, seq: u32) -> String {
    if seq == 0 {
        format!("{PREFIX}{}{SUFFIX}", now.to_compact())
    } else {
        format!("{PREFIX}{}-{seq}{SUFFIX}", now.to_compact())
    }
}

/// First unused final name for `now`, and its temporary name.
fn free_name(dir: &Path, now: Timestamp) -> (PathBuf, PathBuf) {
    let mut seq = 0;
    loop {
        let name = file_name(now, seq);
        let path = dir.join(&name);
        if !path.exists() {
            return (path, dir.join(format!(".{name}.partial")));
        }
        seq += 1;
    }
}

fn check(path: &Path) -> Result<(), SnapshotError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            SnapshotError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let result: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| SnapshotError::Check {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if result == "ok" {
        Ok(())
    } else {
        Err(SnapshotError::Check {
            path: path.to_path_buf(),
            message: result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let t = Timestamp::from_unix(1_714_564_800);
        assert_eq!(file_name(t, 0), "mcp-agent-20240501T120000Z.db");
        assert_eq!(file_name(t, 2), "mcp-agent-20240501T120000Z-2.db");
        assert_eq!(parse_name("mcp-agent-20240501T120000Z.db"), Some((t, 0)));
        assert_eq!(parse_name("mcp-agent-20240501T120000Z-2.db"), Some((t, 2)));
        for bad in [
            "mcp-agent-20240501T120000Z-0.db",
            "mcp-agent-20240501T120000Z-x.db",
            "mcp-agent-20240501T120000Z.db-wal",
            ".mcp-agent-20240501T120000Z.db.partial",
            "mcp-agent-latest.db",
            "agent.db",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
