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
