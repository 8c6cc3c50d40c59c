//! Restore (`mcp restore <svc> [--snapshot FILE] [--force]`): stop the
//! service on its node, import the chosen snapshot (default: the newest),
//! start it again. Each step is reported; a failed import still starts the
//! service (on its old data), so a refused restore does not leave it down.

use std::path::PathBuf;

use tokio::io::AsyncReadExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{files, SnapshotError, Snapshots};
use crate::agents::{AgentTarget, ImportData};
use crate::state::SnapshotRecord;

/// How a restore step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    Done,
    Failed(String),
    /// Not tried (an earlier step failed).
    Skipped,
}

/// One step of a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreStep {
    pub step: String,
    pub state: StepState,
    pub detail: String,
}

impl RestoreStep {
    pub fn ok(&self) -> bool {
        !matches!(self.state, StepState::Failed(_))
    }
}

/// Streams `path` in pieces (one piece in memory at a time).
fn file_pieces(path: PathBuf) -> ReceiverStream<Result<Vec<u8>, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tx
                    .send(Err(format!("cannot open {}: {e}", path.display())))
                    .await;
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; files::PIECE];
            match f.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(buf)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(format!("cannot read {}: {e}", path.display())))
                        .await;
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

impl Snapshots {
    /// The row of `file` (`None`: the newest) of `service`.
    pub async fn choose(
        &self,
        service: &str,
        file: Option<&str>,
    ) -> Result<SnapshotRecord, SnapshotError> {
        let all = self.list(service).await?;
        match file {
            None => all
                .into_iter()
                .next()
                .ok_or_else(|| SnapshotError::NoSnapshots(service.to_string())),
            Some(f) => {
                // A path (`svc/<file>` or a full path) names its last component.
                let name = f.rsplit('/').next().unwrap_or(f);
                all.into_iter()
                    .find(|r| r.file == name)
                    .ok_or_else(|| SnapshotError::NoSnapshot {
                        service: service.to_string(),
                        file: f.to_string(),
                    })
            }
        }
    }

    /// The stored copy of `r`: the store's, or the mirror's when the
    /// store's is missing.
    pub(super) fn readable(&self, r: &SnapshotRecord) -> Result<PathBuf, SnapshotError> {
        let local = self.path_of(r);
        if local.is_file() {
            return Ok(local);
        }
        if let Some(m) = &self.settings.mirror {
            let p = m.join(&r.service).join(&r.file);
            if p.is_file() {
                return Ok(p);
            }
        }
        Err(SnapshotError::NoSnapshot {
            service: r.service.clone(),
            file: format!("{} (recorded, but the file is missing)", local.display()),
        })
    }

    /// Restores `service` on the node it is placed on.
    pub async fn restore(
        &self,
        service: &str,
        file: Option<&str>,
        force: bool,
    ) -> Result<Vec<RestoreStep>, SnapshotError> {
        let name = service.to_string();
        let p = self
            .rec
            .state()
            .read(move |r| r.placement(&name))
            .await?
            .ok_or_else(|| SnapshotError::NotPlaced(service.to_string()))?;
        let t = self.rec.target(&p.node).await?;
        let r = self.choose(service, file).await?;
        let path = self.readable(&r)?;
        let _lock = self.rec.locks().lock(service).await;
        Ok(self.restore_to(&t, &r, path, force).await)
    }

    /// Stop, import `r` (read from `path`), start, on `t`.
    pub async fn restore_to(
        &self,
        t: &AgentTarget,
        r: &SnapshotRecord,
        path: PathBuf,
        force: bool,
    ) -> Vec<RestoreStep> {
        let service = &r.service;
        let agents = self.rec.agents();
        let mut steps = Vec::new();
        let stop = agents.stop(t, service, None).await;
        steps.push(RestoreStep {
            step: format!("stop {service} on {}", t.node),
            state: match &stop {
                Ok(_) => StepState::Done,
                Err(e) => StepState::Failed(e.to_string()),
            },
            detail: String::new(),
        });
        if stop.is_err() {
            steps.push(RestoreStep {
                step: format!("import {} into {service} on {}", r.file, t.node),
                state: StepState::Skipped,
                detail: "not tried: the service did not stop".to_string(),
            });
            return steps;
        }
        steps.push(self.import_into(t, r, path, force).await);
        let start = agents.start(t, service, None).await;
        steps.push(RestoreStep {
            step: format!("start {service} on {}", t.node),
            state: match start {
                Ok(_) => StepState::Done,
                Err(e) => StepState::Failed(e.to_string()),
            },
            detail: String::new(),
        });
        steps
    }

    /// Imports the stored snapshot `r` (read from `path`) into its service
    /// on `t`, checked against the row's SHA-256.
    pub(super) async fn import_into(
        &self,
        t: &AgentTarget,
        r: &SnapshotRecord,
        path: PathBuf,
        force: bool,
    ) -> RestoreStep {
        let service = &r.service;
        let agents = self.rec.agents();
        let import_step = format!("import {} into {service} on {}", r.file, t.node);
        let data = ImportData {
            force,
            sha256: r.checksum.clone(),
            size: r.size,
            chunks: Box::pin(file_pieces(path.clone())),
        };
        let imported = tokio::time::timeout(
            self.settings.timeout,
            agents.import_service_data(t, service, data),
        )
        .await;
        match imported {
            Ok(Ok(o)) if o.sha256 == r.checksum => RestoreStep {
                step: import_step,
                state: StepState::Done,
                detail: format!(
                    "{} bytes, {} entries written from {} (sha256 {})",
                    o.bytes_written,
                    o.entries,
                    path.display(),
                    o.sha256
                ),
            },
            Ok(Ok(o)) => RestoreStep {
                step: import_step,
                state: StepState::Failed(format!(
                    "the agent received sha256 {}, the snapshot has {}",
                    o.sha256, r.checksum
                )),
                detail: String::new(),
            },
            Ok(Err(e)) => {
                let hint = if e.code() == Some(tonic::Code::FailedPrecondition) && !force {
                    " (restore with --force to replace the service's data)"
                } else {
                    ""
                };
                RestoreStep {
                    step: import_step,
                    state: StepState::Failed(format!("{e}{hint}")),
                    detail: String::new(),
                }
            }
            Err(_) => RestoreStep {
                step: import_step,
                state: StepState::Failed(format!(
                    "not done within {} ([timeouts] snapshot)",
                    humantime::format_duration(self.settings.timeout)
                )),
                detail: String::new(),
            },
        }
    }
}
