//! The master's snapshot store (docs/ARCHITECTURE.md, issue 11 items 3–4).
//!
//! - **Store.** A service's data is exported live by its agent
//!   (`ExportServiceData`, a tar.zst of `/srv/<service>/`) and written to
//!   `<dir>/<service>/.tmp-<name>` while hashed (one piece in memory at a
//!   time), synced, checked against the SHA-256 and size the agent
//!   announced (else deleted: the snapshot failed), renamed to
//!   `<dir>/<service>/<time>.tar.zst` ([`files`] for the name) and recorded
//!   as a `snapshots` row (service, node, file, size, sha256, time). The
//!   file is a plain tar.zst: the checksum lives in the row only.
//! - **Retention.** Keep-last-N per service (`retain`): older rows and the
//!   files they name (in the store and the mirror) are deleted; nothing
//!   MCP did not record is touched.
//! - **Mirror.** Every stored snapshot, and every database snapshot, is
//!   copied to `[snapshots] mirror` with the same layout, read back and
//!   checked against the row's SHA-256. A master rebuilt from the mirror
//!   (the newest `_master/*.db` as its database, the mirror as its store)
//!   lists and restores every snapshot.
//! - **Schedule** (`schedule`): every `interval`, services whose newest
//!   snapshot is older are snapshotted, one at a time, under the
//!   per-service lock; a service with no snapshot within twice the interval
//!   is stale ([`Snapshots::freshness`], shown by `mcp status`).
//! - **Restore** (`restore`): stop, import the chosen snapshot, start.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::agents::{AgentError, AgentTarget, DataChunk};
use crate::config::Config;
use crate::reconcile::{ReconcileError, Reconciler};
use crate::state::{NewSnapshot, SnapshotRecord, StateError};

pub mod files;
mod migrate;
mod restore;
mod schedule;

pub use files::{snapshot_database, DbSnapshot, MASTER_DIR};
pub use migrate::{MigrateRequest, Migration, Pending, MIGRATE_OP};
pub use restore::{RestoreStep, StepState};

/// A snapshot operation that failed, naming the service and file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshots are not configured on this master (no [snapshots] section)")]
    NotConfigured,
    #[error("service {0} has no placement: the master does not know where it runs")]
    NotPlaced(String),
    #[error("service {service} has no snapshot {file}")]
    NoSnapshot { service: String, file: String },
    #[error("service {0} has no snapshots")]
    NoSnapshots(String),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Reconcile(String),
    /// A migration refused before anything was touched (its validation).
    #[error("{0}")]
    Refused(String),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Mismatch { path: PathBuf, detail: String },
    #[error("snapshot of {service} from {node}: {detail}")]
    Export {
        service: String,
        node: String,
        detail: String,
    },
    #[error("database {} does not exist", .0.display())]
    NoDatabase(PathBuf),
    #[error("database snapshot of {}: {detail}", path.display())]
    Database { path: PathBuf, detail: String },
}

impl From<ReconcileError> for SnapshotError {
    fn from(e: ReconcileError) -> Self {
        match e {
            ReconcileError::State(s) => SnapshotError::State(s),
            other => SnapshotError::Reconcile(other.to_string()),
        }
    }
}

impl SnapshotError {
    /// The gRPC status for a CLI caller.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Status;
        match self {
            SnapshotError::NotConfigured => Status::failed_precondition(self.to_string()),
            SnapshotError::NotPlaced(_)
            | SnapshotError::NoSnapshot { .. }
            | SnapshotError::NoSnapshots(_) => Status::not_found(self.to_string()),
            SnapshotError::Agent(a) => {
                let s = a.to_status();
                Status::new(s.code(), self.to_string())
            }
            SnapshotError::Reconcile(_) | SnapshotError::Refused(_) => {
                Status::failed_precondition(self.to_string())
            }
            SnapshotError::Export { .. } | SnapshotError::Mismatch { .. } => {
                Status::aborted(self.to_string())
            }
            _ => Status::internal(self.to_string()),
        }
    }
}

/// The store's settings (`[snapshots]`, `[timeouts] snapshot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub dir: PathBuf,
    pub interval: Duration,
    pub retain: u32,
    pub mirror: Option<PathBuf>,
    /// A whole export or import.
    pub timeout: Duration,
    /// The master's database, snapshotted after every pass that stored a
    /// service snapshot and after every on-demand one (`None`: never).
    pub database: Option<PathBuf>,
}

impl StoreSettings {
    /// `None` without `[snapshots]`.
    pub fn from_config(cfg: &Config) -> Option<StoreSettings> {
        cfg.snapshots.as_ref().map(|s| StoreSettings {
            dir: s.dir.clone(),
            interval: s.interval,
            retain: s.retain.max(1),
            mirror: s.mirror.clone(),
            timeout: cfg.timeouts.snapshot,
            database: Some(cfg.database.path.clone()),
        })
    }
}

/// What a stored snapshot's copy to the mirror did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirrored {
    NotConfigured,
    Copied(PathBuf),
    Failed(String),
}

/// A snapshot just stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub record: SnapshotRecord,
    pub mirrored: Mirrored,
    /// Older snapshots deleted by retention.
    pub removed: Vec<String>,
}

/// How recent a service's newest snapshot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    pub last: Option<SystemTime>,
    /// Older than twice the interval (or none, with the service placed for
    /// longer than that).
    pub stale: bool,
}

/// The snapshot store over the reconciler (agents, locks, database).
pub struct Snapshots {
    rec: Arc<Reconciler>,
    settings: StoreSettings,
    /// Service → when its last scheduled snapshot failed (retried after
    /// `retry_after`, not every tick).
    failed: Mutex<HashMap<String, SystemTime>>,
    /// Services already reported stale (logged once until fresh again).
    stale_reported: Mutex<BTreeSet<String>>,
    /// Tests: a migration "dies" (returns, its journal left running) at
    /// this step — before its side effects, or after them with `true`.
    #[cfg(test)]
    crash_at: Mutex<Option<(&'static str, bool)>>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `<service>/<file>`, relative to the store (and the mirror).
fn rel(service: &str, file: &str) -> PathBuf {
    Path::new(service).join(file)
}

impl Snapshots {
    pub fn new(rec: Arc<Reconciler>, settings: StoreSettings) -> Self {
        Self {
            rec,
            settings,
            failed: Mutex::new(HashMap::new()),
            stale_reported: Mutex::new(BTreeSet::new()),
            #[cfg(test)]
            crash_at: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// The stored file of a row.
    pub fn path_of(&self, r: &SnapshotRecord) -> PathBuf {
        self.settings.dir.join(rel(&r.service, &r.file))
    }

    /// Snapshots of `service`, newest first.
    pub async fn list(&self, service: &str) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        let s = service.to_string();
        Ok(self.rec.state().read(move |r| r.snapshots(&s)).await?)
    }

    /// Snapshots `service` now (live), under its lock: see the module doc.
    pub async fn take(&self, service: &str) -> Result<Taken, SnapshotError> {
        let name = service.to_string();
        let p = self
            .rec
            .state()
            .read(move |r| r.placement(&name))
            .await?
            .ok_or_else(|| SnapshotError::NotPlaced(service.to_string()))?;
        let t = self.rec.target(&p.node).await?;
        let _lock = self.rec.locks().lock(service).await;
        self.store_from(service, &t).await
    }

    /// Exports `service` from `t` into the store (the caller holds the
    /// service's lock): see the module doc.
    pub(crate) async fn store_from(
        &self,
        service: &str,
        t: &AgentTarget,
    ) -> Result<Taken, SnapshotError> {
        let now = self.rec.now();
        let dir = self.settings.dir.join(service);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(files::io("cannot create snapshot directory", &dir))?;
        let file = files::free_name(&dir, "", now, files::SUFFIX);
        let path = dir.join(&file);
        let tmp = dir.join(format!(".tmp-{file}"));
        let export = |detail: String| SnapshotError::Export {
            service: service.to_string(),
            node: t.node.clone(),
            detail,
        };
        let written = tokio::time::timeout(self.settings.timeout, async {
            let mut stream = self.rec.agents().export_service_data(t, service).await?;
            let mut out = tokio::fs::File::create(&tmp)
                .await
                .map_err(files::io("cannot create", &tmp))?;
            let mut h = Sha256::new();
            let mut size = 0u64;
            let mut announced = None;
            while let Some(chunk) = stream.next().await {
                match chunk? {
                    DataChunk::Data(d) => {
                        if announced.is_some() {
                            return Err(export("data after the end of the stream".to_string()));
                        }
                        h.update(&d);
                        size += d.len() as u64;
                        out.write_all(&d).await.map_err(files::io("cannot write", &tmp))?;
                    }
                    DataChunk::End { sha256, size } => announced = Some((sha256, size)),
                }
            }
            out.flush().await.map_err(files::io("cannot write", &tmp))?;
            out.sync_all().await.map_err(files::io("cannot sync", &tmp))?;
            let (sha256, want) = announced.ok_or_else(|| {
                export("the stream ended without the archive's checksum".to_string())
            })?;
            let got = hex::encode(h.finalize());
            if got != sha256 || size != want {
                return Err(export(format!(
                    "received {size} bytes with sha256 {got}, the agent announced {want} bytes with sha256 {sha256}"
                )));
            }
            Ok((got, size))
        })
        .await
        .unwrap_or_else(|_| {
            Err(export(format!(
                "not done within {} ([timeouts] snapshot)",
                humantime::format_duration(self.settings.timeout)
            )))
        });
        let (sha256, size) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(files::io("cannot rename", &path)(e));
        }
        files::sync_dir(&dir);
        let new = NewSnapshot {
            service: service.to_string(),
            node: t.node.clone(),
            file: file.clone(),
            size,
            checksum: sha256,
            created_at: now,
        };
        let record = match self.rec.state().write(move |w| w.add_snapshot(&new)).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e.into());
            }
        };
        let mirrored = self.mirror(&record).await;
        let removed = self.apply_retention(service).await?;
        tracing::info!(service, node = %t.node, file = %file, size, "snapshot stored");
        Ok(Taken {
            record,
            mirrored,
            removed,
        })
    }

    /// Copies a stored snapshot to the mirror (verified).
    async fn mirror(&self, r: &SnapshotRecord) -> Mirrored {
        let Some(m) = self.settings.mirror.clone() else {
            return Mirrored::NotConfigured;
        };
        let (src, rel, sha, size) = (
            self.path_of(r),
            rel(&r.service, &r.file),
            r.checksum.clone(),
            r.size,
        );
        match tokio::task::spawn_blocking(move || files::copy_verified(&src, &m, &rel, &sha, size))
            .await
        {
            Ok(Ok(p)) => Mirrored::Copied(p),
            Ok(Err(e)) => {
                tracing::error!(service = %r.service, file = %r.file, error = %e, "snapshot not mirrored");
                Mirrored::Failed(e.to_string())
            }
            Err(e) => Mirrored::Failed(e.to_string()),
        }
    }

    /// Deletes the snapshots of `service` beyond the newest `retain`: the
    /// file (store and mirror), then its row. Returns their file names.
    pub async fn apply_retention(&self, service: &str) -> Result<Vec<String>, SnapshotError> {
        let (s, keep) = (service.to_string(), self.settings.retain);
        let old = self
            .rec
            .state()
            .read(move |r| r.snapshots_past_retention(&s, keep))
            .await?;
        let mut removed = Vec::new();
        for r in old {
            let mut paths = vec![self.path_of(&r)];
            if let Some(m) = &self.settings.mirror {
                paths.push(m.join(rel(&r.service, &r.file)));
            }
            for p in paths {
                match tokio::fs::remove_file(&p).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(files::io("cannot delete old snapshot", &p)(e)),
                }
            }
            let id = r.id;
            self.rec
                .state()
                .write(move |w| w.remove_snapshot(id))
                .await?;
            removed.push(r.file);
        }
        Ok(removed)
    }

    /// How recent the newest snapshot of `service` is at `now`;
    /// `placed_at`: when it was deployed (none within twice the interval
    /// of it is stale).
    pub fn freshness(
        &self,
        last: Option<SystemTime>,
        placed_at: SystemTime,
        now: SystemTime,
    ) -> Freshness {
        let limit = self.settings.interval * 2;
        let older = |t: SystemTime| now.duration_since(t).is_ok_and(|d| d > limit);
        Freshness {
            last,
            stale: match last {
                Some(t) => older(t),
                None => older(placed_at),
            },
        }
    }

    /// [`Snapshots::freshness`] of every placed service, by name.
    pub async fn freshness_all(&self) -> Result<Vec<(String, Freshness)>, SnapshotError> {
        let (placements, times) = self
            .rec
            .state()
            .read(|r| Ok((r.placements()?, r.latest_snapshot_times()?)))
            .await?;
        let times: HashMap<String, SystemTime> = times.into_iter().collect();
        let now = self.rec.now();
        Ok(placements
            .into_iter()
            .map(|p| {
                let f = self.freshness(times.get(&p.service).copied(), p.deployed_at, now);
                (p.service, f)
            })
            .collect())
    }

    /// Snapshots the master's database into the store (and the mirror).
    pub async fn snapshot_db(&self) -> Option<Result<DbSnapshot, SnapshotError>> {
        let db = self.settings.database.clone()?;
        let (dir, mirror, keep, now) = (
            self.settings.dir.clone(),
            self.settings.mirror.clone(),
            self.settings.retain,
            self.rec.now(),
        );
        let r = tokio::task::spawn_blocking(move || {
            snapshot_database(&db, &dir, mirror.as_deref(), keep, now)
        })
        .await
        .unwrap_or_else(|e| {
            Err(SnapshotError::Database {
                path: PathBuf::new(),
                detail: e.to_string(),
            })
        });
        if let Err(e) = &r {
            tracing::error!(error = %e, "master database snapshot failed");
        }
        Some(r)
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, HashMap<String, SystemTime>> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
