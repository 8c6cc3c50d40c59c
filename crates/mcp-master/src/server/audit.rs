//! `ListAudit`: the audit table for `mcp audit` (operators only, as the
//! authorization table says).

use super::*;

/// How many rows `ListAudit` returns when the request says 0.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;
/// The most rows one `ListAudit` returns.
pub const MAX_AUDIT_LIMIT: u32 = 10_000;

fn audit_pb(a: state::AuditEntry) -> pb::AuditRow {
    pb::AuditRow {
        time: humantime::format_rfc3339_millis(a.time).to_string(),
        caller: a.caller,
        class: a.class,
        method: a.method,
        target: a.target,
        outcome: a.outcome,
        duration_ms: a.duration_ms,
    }
}

impl MasterService {
    pub(super) async fn list_audit_rpc(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> R<pb::ListAuditResponse> {
        if !req.get_ref().caller.is_empty() {
            set_audit_target(&req, format!("caller={}", req.get_ref().caller));
        }
        let req = req.into_inner();
        let query = state::AuditQuery {
            since: parse_since(&req.since)?,
            caller: opt(&req.caller).map(str::to_string),
            limit: match req.limit {
                0 => DEFAULT_AUDIT_LIMIT,
                n => n.min(MAX_AUDIT_LIMIT),
            },
        };
        let rows = self
            .rec
            .state()
            .read(move |r| r.audit_list(&query))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListAuditResponse {
            rows: rows.into_iter().map(audit_pb).collect(),
        }))
    }
}

impl MasterService {
    /// `DeployHistory`: the recorded outcome of each spec of a service,
    /// and the hash of its desired spec now.
    pub(super) async fn deploy_history_rpc(
        &self,
        req: Request<pb::DeployHistoryRequest>,
    ) -> R<pb::DeployHistoryResponse> {
        let service = req.get_ref().service.clone();
        set_audit_target(&req, target(Some(&service), None));
        if !mcp_spec::names::is_dns_label(&service) {
            return Err(Status::invalid_argument(format!(
                "{service:?} is not a service name (a DNS label)"
            )));
        }
        let s = service.clone();
        let rows = self
            .rec
            .state()
            .read(move |r| r.deploy_outcomes(&s))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let desired_hash = match self.rec.desired().await {
            Ok(d) => d
                .services
                .get(&service)
                .map(mcp_spec::spec_hash)
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        Ok(Response::new(pb::DeployHistoryResponse {
            outcomes: rows
                .into_iter()
                .map(|o| pb::DeployOutcome {
                    spec_hash: o.spec_hash,
                    outcome: o.outcome.as_str().to_string(),
                    node: o.node,
                    detail: o.detail,
                    at: humantime::format_rfc3339_seconds(o.at).to_string(),
                })
                .collect(),
            desired_hash,
        }))
    }
}
