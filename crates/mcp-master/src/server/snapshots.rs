//! `CreateSnapshot`, `ListSnapshots` and `Restore` over the snapshot store
//! ([`crate::snapshots`]), and the snapshot fields of `Status`.

use super::*;
use crate::snapshots::{Mirrored, SnapshotError, Snapshots, StepState as RStep};

impl MasterService {
    fn store(&self) -> Result<&Arc<Snapshots>, Status> {
        self.snapshots
            .as_ref()
            .ok_or_else(|| SnapshotError::NotConfigured.to_status())
    }

    pub(super) async fn create_snapshot_rpc(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> R<pb::CreateSnapshotResponse> {
        let name = req.get_ref().service_name.clone();
        set_audit_target(&req, target(Some(&name), None));
        let store = self.store()?;
        let t = store.take(&name).await.map_err(|e| e.to_status())?;
        // The database that lists it, mirrored with it.
        let _ = store.snapshot_db().await;
        let (mirror, mirror_error) = match t.mirrored {
            Mirrored::NotConfigured => (String::new(), String::new()),
            Mirrored::Copied(p) => (p.display().to_string(), String::new()),
            Mirrored::Failed(e) => (String::new(), e),
        };
        Ok(Response::new(pb::CreateSnapshotResponse {
            filename: store.path_of(&t.record).display().to_string(),
            size_bytes: t.record.size,
            sha256: t.record.checksum,
            node: t.record.node,
            mirror,
            mirror_error,
            removed: t.removed,
        }))
    }

    pub(super) async fn list_snapshots_rpc(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> R<pb::ListSnapshotsResponse> {
        let name = req.get_ref().service_name.clone();
        set_audit_target(&req, target(Some(&name), None));
        let store = self.store()?;
        let rows = store.list(&name).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: rows
                .into_iter()
                .map(|r| pb::SnapshotInfo {
                    service: r.service,
                    node: r.node,
                    filename: r.file,
                    size: r.size,
                    created_at: rfc3339(r.created_at),
                    checksum: r.checksum,
                })
                .collect(),
        }))
    }

    pub(super) async fn restore_rpc(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> R<pb::RestoreResponse> {
        let m = req.get_ref().clone();
        set_audit_target(&req, target(Some(&m.service_name), None));
        let store = self.store()?;
        let steps = store
            .restore(&m.service_name, opt(&m.snapshot), m.force)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::RestoreResponse {
            results: results(&steps),
        }))
    }

    pub(super) async fn migrate_rpc(
        &self,
        req: Request<pb::MigrateRequest>,
    ) -> R<pb::MigrateResponse> {
        let m = req.get_ref().clone();
        let node = if m.all {
            &m.source_node
        } else {
            &m.target_node
        };
        set_audit_target(&req, target(opt(&m.service_name), Some(node)));
        if m.target_node.is_empty() {
            return Err(Status::invalid_argument("migrate: target_node is empty"));
        }
        let store = self.store()?;
        let done = match (m.all, m.service_name.is_empty()) {
            (true, false) => {
                return Err(Status::invalid_argument(format!(
                    "migrate: all with a service name ({}): name one service or use all with source_node",
                    m.service_name
                )))
            }
            (true, true) if m.source_node.is_empty() => {
                return Err(Status::invalid_argument(
                    "migrate: all needs source_node (the node to empty)",
                ))
            }
            (true, true) => store
                .migrate_all(&m.source_node, &m.target_node, m.force)
                .await,
            (false, true) => {
                return Err(Status::invalid_argument(
                    "migrate: service_name is empty (or set all with source_node)",
                ))
            }
            (false, false) => {
                if !m.source_node.is_empty() {
                    let n = m.service_name.clone();
                    let placed = self.rec.state().read(move |r| r.placement(&n)).await;
                    if let Ok(Some(p)) = placed {
                        if p.node != m.source_node {
                            return Err(Status::failed_precondition(format!(
                                "{} runs on {}, not on {}",
                                m.service_name, p.node, m.source_node
                            )));
                        }
                    }
                }
                store
                    .migrate(&m.service_name, &m.target_node, m.force)
                    .await
            }
        }
        .map_err(|e| e.to_status())?;
        let _ = store.snapshot_db().await;
        Ok(Response::new(pb::MigrateResponse {
            results: results(&done.steps),
        }))
    }
}

fn results(steps: &[crate::snapshots::RestoreStep]) -> Vec<pb::StepResult> {
    steps
        .iter()
        .map(|s| match &s.state {
            RStep::Done => step(&s.step, StepStatus::Succeeded, "", &s.detail),
            RStep::Skipped => step(&s.step, StepStatus::Skipped, "", &s.detail),
            RStep::Failed(e) => step(&s.step, StepStatus::Failed, e, &s.detail),
        })
        .collect()
}

impl MasterService {
    /// Fills `last_snapshot` and `snapshot_stale` (and says so in
    /// `detail`) when the store is configured.
    pub(super) async fn add_snapshot_status(&self, out: &mut [pb::ServiceStatus]) {
        let Some(store) = &self.snapshots else { return };
        let fresh = match store.freshness_all().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "status: snapshot times unavailable");
                return;
            }
        };
        let interval = store.settings().interval;
        for (name, f) in fresh {
            let Some(s) = out.iter_mut().find(|s| s.name == name) else {
                continue;
            };
            s.last_snapshot = f.last.map(rfc3339).unwrap_or_default();
            s.snapshot_stale = f.stale;
            if f.stale {
                let why = match f.last {
                    Some(t) => format!(
                        "snapshot stale: the newest ({}) is older than twice [snapshots] interval ({})",
                        rfc3339(t),
                        humantime::format_duration(interval * 2)
                    ),
                    None => format!(
                        "snapshot stale: none within twice [snapshots] interval ({}) of its placement",
                        humantime::format_duration(interval * 2)
                    ),
                };
                s.detail = if s.detail.is_empty() {
                    why
                } else {
                    format!("{}; {why}", s.detail)
                };
            }
        }
    }
}
