//! Start-up convergence: restoring the registry's desired state.

use mcp_runtime::ContainerRuntime;
use mcp_spec::Tier;

use crate::registry::{ComponentRecord, DesiredState, ServiceRecord};

use super::*;

impl<R: ContainerRuntime + 'static> Agent<R> {
    // ----- start-up convergence ----------------------------------------------

    /// Restores the registry's desired state by itself (after a reboot or
    /// an agent restart): components desired running that are not running
    /// are started (missing containers recreated from the stored spec),
    /// running components desired stopped are stopped. Core-tier services
    /// first, then workers, each by name. Running containers are not
    /// touched. A failing component does not stop the others; its step
    /// says why.
    pub async fn converge(&self) -> Result<Vec<Step>> {
        let mut records = self.db(|r| r.list_services()).await?;
        records.sort_by_key(|r| (r.tier != Tier::Core, r.name.clone()));
        let mut steps = Vec::new();
        for record in &records {
            let _guard = self.locks.lock(&record.name).await;
            let mut events = Vec::new();
            for c in &record.components {
                let result = match c.desired {
                    DesiredState::Ignore => continue,
                    DesiredState::Running => self.ensure_running(record, c).await,
                    DesiredState::Stopped => self.ensure_stopped(record, c).await,
                };
                match result {
                    Ok(step) => {
                        if step.outcome == StepOutcome::Done {
                            events.push(self.event(
                                &record.name,
                                &c.name,
                                if c.desired == DesiredState::Running {
                                    "start"
                                } else {
                                    "stop"
                                },
                                format!("agent start-up: {}", step.detail),
                            ));
                        }
                        steps.push(step);
                    }
                    Err(e) => {
                        tracing::error!(service = %record.name, component = %c.name, error = %e, "start-up convergence failed");
                        steps.push(Step::failed(
                            format!("converge {}", c.container_name),
                            e.to_string(),
                        ));
                    }
                }
            }
            self.record_events(events).await?;
            if let Err(e) = self.record_observed(&record.name).await {
                tracing::warn!(service = %record.name, error = %e, "cannot record observed state");
            }
        }
        Ok(steps)
    }

    /// [`Agent::converge`], retried while a step fails: after each of
    /// `delays` (1 s doubling to 30 s at start-up) it runs again — what
    /// already converged is left alone — until nothing fails or the delays
    /// run out. Returns every round's steps, the last round last. A start
    /// refused once at boot (an address still allocated from before a power
    /// loss) is not left for the master to find.
    pub async fn converge_until_done(
        &self,
        delays: &[std::time::Duration],
    ) -> Result<Vec<Vec<Step>>> {
        let mut rounds = vec![self.converge().await?];
        for (i, d) in delays.iter().enumerate() {
            let failed: Vec<String> = rounds
                .last()
                .into_iter()
                .flatten()
                .filter(|s| s.is_failed())
                .map(|s| s.step.clone())
                .collect();
            if failed.is_empty() {
                break;
            }
            tracing::warn!(retry = i + 1, in_ = %humantime::format_duration(*d), steps = ?failed, "start-up convergence: retrying the failed steps");
            tokio::time::sleep(*d).await;
            rounds.push(self.converge().await?);
        }
        Ok(rounds)
    }

    pub(super) async fn ensure_stopped(
        &self,
        record: &ServiceRecord,
        c: &ComponentRecord,
    ) -> Result<Step> {
        let name = &c.container_name;
        let ctx = format!("{}/{}", record.name, c.name);
        match self.runtime.inspect(name).await {
            Ok(Some(i)) if i.is_running() => {
                self.stop_container(&ctx, name).await?;
                Ok(Step::done(format!("stop {name}"), "desired stopped"))
            }
            Ok(_) => Ok(Step::skipped(format!("stop {name}"), "not running")),
            Err(e) => Err(AgentError::runtime(format!("{ctx}: inspect {name}"), e)),
        }
    }
}
