//! Permanent errors: a spec an agent refused as such
//! ([`AgentError::is_permanent`]) is recorded against its hash
//! (`failed_specs`) and held from then on — no attempt on this node or
//! another — until the service's spec changes (the record is then dropped
//! by the next pass), a deploy of it succeeds, or an operator asks for it
//! explicitly (`mcp deploy`). Transient errors are not recorded: the next
//! pass retries, self-heals with the planner's back-off.

use super::*;
use crate::agents::AgentError;
use crate::state::FailedSpec;

/// The planner's hold of a service whose spec `f` records as refused.
pub fn held_for(f: &FailedSpec) -> Held {
    Held {
        file: format!("{}.toml", f.service),
        errors: vec![f.error.clone()],
        reason: Some(format!(
            "spec rejected by the agent on {} ({}), not retried until the spec changes",
            f.node, f.code
        )),
    }
}

impl Reconciler {
    /// Holds every service whose desired spec is one an agent refused.
    /// With `forget`, records that no longer apply (the spec changed, the
    /// service left the desired state) are dropped; a service held because
    /// its file cannot be read keeps its record.
    pub async fn hold_failed(
        &self,
        desired: &mut Desired,
        forget: bool,
    ) -> Result<(), ReconcileError> {
        let failed = self.state.read(|r| r.failed_specs()).await?;
        let mut stale = Vec::new();
        for f in failed {
            if desired.held.contains_key(&f.service) {
                continue;
            }
            match desired.services.get(&f.service) {
                Some(spec) if mcp_spec::spec_hash(spec) == f.spec_hash => {
                    desired.held.insert(f.service.clone(), held_for(&f));
                }
                _ => stale.push(f.service),
            }
        }
        if forget && !stale.is_empty() {
            for s in &stale {
                tracing::info!(service = %s, "its spec changed: the refused spec's failure is forgotten, it is deployed again");
            }
            self.state
                .write(move |w| {
                    for s in &stale {
                        w.clear_failed_spec(s)?;
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }

    /// Forgets the failure of `service` (an explicit deploy retries it).
    pub async fn clear_failed(&self, service: &str) -> Result<bool, ReconcileError> {
        let s = service.to_string();
        Ok(self.state.write(move |w| w.clear_failed_spec(&s)).await?)
    }

    /// The message of a failed agent call carrying `spec` to `node`; a
    /// permanent error is recorded (and alerted) so the service is held.
    pub(super) async fn spec_call_failed(
        &self,
        spec: &ServiceSpec,
        node: &str,
        e: AgentError,
    ) -> String {
        if !e.is_permanent() {
            return e.to_string();
        }
        // A rollback is said in the agent's words, without the call's
        // prefix: "v2 failed its health check (...), rolled back to v1 ...".
        let error = match &e {
            AgentError::Rpc { message, .. } if message.contains(mcp_proto::ROLLED_BACK) => message
                .strip_prefix(&format!("service {}: ", spec.name))
                .unwrap_or(message)
                .to_string(),
            _ => e.to_string(),
        };
        let f = FailedSpec {
            service: spec.name.clone(),
            spec_hash: mcp_spec::spec_hash(spec),
            node: node.to_string(),
            code: format!("{:?}", e.code().unwrap_or(tonic::Code::Unknown)),
            error,
            failed_at: self.now(),
        };
        tracing::warn!(
            target: "mcp::alert",
            event = "failed",
            service = %f.service,
            node = %f.node,
            code = %f.code,
            error = %f.error,
            "the agent refused the service's spec: marked failed, not retried until its spec changes"
        );
        let rec = f.clone();
        let outcome = crate::state::DeployOutcome {
            service: f.service.clone(),
            spec_hash: f.spec_hash.clone(),
            outcome: if f.error.contains(mcp_proto::ROLLED_BACK) {
                crate::state::Outcome::RolledBack
            } else {
                crate::state::Outcome::Failed
            },
            node: f.node.clone(),
            detail: f.error.clone(),
            at: f.failed_at,
        };
        let recorded = self
            .state
            .write(move |w| {
                w.record_failed_spec(&rec)?;
                w.record_deploy_outcome(&outcome)
            })
            .await;
        if let Err(err) = recorded {
            tracing::error!(service = %f.service, error = %err, "cannot record the failed spec; it is retried on the next pass");
        }
        format!(
            "{e}; {} is marked failed and not retried until its spec changes",
            f.service
        )
    }
}

#[cfg(test)]
mod tests;
