//! The store's files: names, writing an export while hashing it, checked
//! copies to the mirror, and the master database's own snapshot.
//!
//! Names: `<service>/<time>.tar.zst` with `<time>` a filesystem-safe
//! RFC 3339 UTC form, `2026-12-03T15-04-05Z` (the colons of
//! `2026-12-03T15:04:05Z` as dashes; `-<n>` appended when two fall in one
//! second). The database's: `_master/mcp-master-<time>.db` (`_` cannot
//! begin a service name).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use super::SnapshotError;

/// Where the master's database snapshots go, under the store and the mirror.
pub const MASTER_DIR: &str = "_master";
const DB_PREFIX: &str = "mcp-master-";
const DB_SUFFIX: &str = ".db";
/// Service snapshots end so.
pub const SUFFIX: &str = ".tar.zst";
/// Pieces read from a stored file to stream it (memory per restore).
pub const PIECE: usize = 256 * 1024;

pub(super) fn io(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}

/// `2026-12-03T15-04-05Z`.
pub fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(':', "-")
}

/// The first free name `<stamp>[-<n>]<suffix>` in `dir`.
pub fn free_name(dir: &Path, prefix: &str, t: SystemTime, suffix: &str) -> String {
    let base = format!("{prefix}{}", stamp(t));
    let mut n = 0u32;
    loop {
        let name = if n == 0 {
            format!("{base}{suffix}")
        } else {
            format!("{base}-{n}{suffix}")
        };
        if !dir.join(&name).exists() {
            return name;
        }
        n += 1;
    }
}

/// Makes a rename in `dir` durable (best effort: not every file system
/// allows syncing a directory).
/// Deletes the `.tmp-*` files (snapshots being written when a master
/// died) in every service directory of the store; returns their paths.
/// Nothing else is touched.
pub fn remove_leftovers(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(services) = std::fs::read_dir(store) else {
        return out;
    };
    for svc in services.flatten() {
        let Ok(entries) = std::fs::read_dir(svc.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let is_tmp = e.file_name().to_string_lossy().starts_with(".tmp-");
            if is_tmp
                && e.file_type().is_ok_and(|t| t.is_file())
                && std::fs::remove_file(e.path()).is_ok()
            {
                out.push(e.path());
            }
        }
    }
    out
}

pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// SHA-256 (hex) and size of a file, read in pieces.
pub fn hash_file(path: &Path) -> Result<(String, u64), SnapshotError> {
    let mut f = std::fs::File::open(path).map_err(io("cannot open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; PIECE];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io("cannot read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(h.finalize()), size))
}

/// Copies `src` to `<root>/<rel>` through a temporary name; the copy is
/// read back and must have `sha256` and `size`, else it is deleted and the
/// copy fails. Returns the copy's path.
pub fn copy_verified(
    src: &Path,
    root: &Path,
    rel: &Path,
    sha256: &str,
    size: u64,
) -> Result<PathBuf, SnapshotError> {
    let dest = root.join(rel);
    let dir = dest.parent().unwrap_or(root).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io("cannot create mirror directory", &dir))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{name}"));
    let copied = (|| {
        let mut from = std::fs::File::open(src).map_err(io("cannot open", src))?;
        let mut to = std::fs::File::create(&tmp).map_err(io("cannot create", &tmp))?;
        std::io::copy(&mut from, &mut to).map_err(io("cannot write", &tmp))?;
        to.flush().map_err(io("cannot write", &tmp))?;
        to.sync_all().map_err(io("cannot sync", &tmp))?;
        let (got, got_size) = hash_file(&tmp)?;
        if got != sha256 || got_size != size {
            return Err(SnapshotError::Mismatch {
                path: dest.clone(),
                detail: format!(
                    "the copy has {got_size} bytes with sha256 {got}, expected {size} bytes with sha256 {sha256}"
                ),
            });
        }
        std::fs::rename(&tmp, &dest).map_err(io("cannot rename", &dest))
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir);
    Ok(dest)
}

/// What [`snapshot_database`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSnapshot {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Older database snapshots deleted (keep-last-N).
    pub removed: Vec<PathBuf>,
    /// The verified copy in the mirror, if one is configured.
    pub mirrored: Option<PathBuf>,
}

/// Database snapshots in `dir`, oldest first (only names this module
/// writes).
pub fn db_snapshots(dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.starts_with(DB_PREFIX) && n.ends_with(DB_SUFFIX)
            })
            .map(|e| e.path())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("cannot list", dir)(e)),
    };
    // The stamp sorts by time; `-<n>` after the plain name of its second.
    out.sort_by_key(|p| {
        let n = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mid = n
            .trim_start_matches(DB_PREFIX)
            .trim_end_matches(DB_SUFFIX)
            .to_string();
        let (stamp, seq) = match mid.get(20..) {
            Some(rest) if rest.starts_with('-') => {
                (mid[..20].to_string(), rest[1..].parse().unwrap_or(0u32))
            }
            _ => (mid.clone(), 0),
        };
        (stamp, seq)
    });
    Ok(out)
}

/// A consistent copy of the master database at `db` (`VACUUM INTO` from a
/// read-only connection, so it works while the master runs), checked
/// (`PRAGMA quick_check`), renamed into `<store>/_master/`, keeping the
/// newest `keep`, and copied (verified) to `<mirror>/_master/`.
pub fn snapshot_database(
    db: &Path,
    store: &Path,
    mirror: Option<&Path>,
    keep: u32,
    now: SystemTime,
) -> Result<DbSnapshot, SnapshotError> {
    if !db.is_file() {
        return Err(SnapshotError::NoDatabase(db.to_path_buf()));
    }
    let dir = store.join(MASTER_DIR);
    std::fs::create_dir_all(&dir).map_err(io("cannot create snapshot directory", &dir))?;
    let name = free_name(&dir, DB_PREFIX, now, DB_SUFFIX);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".tmp-{name}"));
    let _ = std::fs::remove_file(&tmp);
    let sqlite = |e: rusqlite::Error| SnapshotError::Database {
        path: db.to_path_buf(),
        detail: e.to_string(),
    };
    let made = (|| {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sqlite)?;
        let dest = tmp.to_str().ok_or_else(|| SnapshotError::Database {
            path: tmp.clone(),
            detail: "path is not UTF-8".to_string(),
        })?;
        conn.execute("VACUUM INTO ?1", [dest]).map_err(sqlite)?;
        drop(conn);
        let check = Connection::open_with_flags(&tmp, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)))
            .map_err(|e| SnapshotError::Database {
                path: tmp.clone(),
                detail: e.to_string(),
            })?;
        if check != "ok" {
            return Err(SnapshotError::Database {
                path: tmp.clone(),
                detail: format!("integrity check: {check}"),
            });
        }
        std::fs::rename(&tmp, &path).map_err(io("cannot rename", &path))
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir);
    let (sha256, size) = hash_file(&path)?;
    let mut removed = Vec::new();
    let all = db_snapshots(&dir)?;
    let excess = all.len().saturating_sub(keep.max(1) as usize);
    for old in all.into_iter().take(excess) {
        std::fs::remove_file(&old).map_err(io("cannot delete old snapshot", &old))?;
        if let (Some(m), Some(n)) = (mirror, old.file_name()) {
            let _ = std::fs::remove_file(m.join(MASTER_DIR).join(n));
        }
        removed.push(old);
    }
    let mirrored = match mirror {
        Some(m) => Some(copy_verified(
            &path,
            m,
            &Path::new(MASTER_DIR).join(&name),
            &sha256,
            size,
        )?),
        None => None,
    };
    Ok(DbSnapshot {
        path,
        size,
        sha256,
        removed,
        mirrored,
    })
}
