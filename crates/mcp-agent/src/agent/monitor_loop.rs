//! The monitor round and its loop.

use std::collections::BTreeSet;
use std::sync::PoisonError;
use std::time::Duration;

use mcp_runtime::ContainerRuntime;

use crate::monitor::{observe, MonitorInput, ObservedContainer};
use crate::registry::{EventQuery, PrunedEvents, RegistryError};

use super::*;

impl<R: ContainerRuntime + 'static> Agent<R> {
    // ----- monitor -------------------------------------------------------------

    /// One monitor round: observe, record state changes and findings as
    /// events, send alerts (with cooldown). Never restarts anything.
    pub async fn monitor_once(&self) -> Result<MonitorReport> {
        let before = self.locks.snapshot();
        let skip: BTreeSet<String> = before
            .iter()
            .filter(|(_, s)| s.0)
            .map(|(k, _)| k.clone())
            .collect();
        let now = self.now();
        let policy = self.settings.monitor;
        let since = now.minus(policy.flap_window);
        let (components, history, sent) = self
            .db(move |r| {
                Ok((
                    r.all_components()?,
                    r.events(&EventQuery {
                        since: Some(since),
                        ..EventQuery::default()
                    })?,
                    r.alerts_sent()?,
                ))
            })
            .await?;
        let infos = self.observe_containers(&components).await?;
        let containers: Vec<ObservedContainer> = infos
            .iter()
            .map(|i| ObservedContainer {
                name: i.name.clone(),
                service: i.service().unwrap_or_default().to_string(),
                component: i.component().unwrap_or_default().to_string(),
                state: observed_state(i),
                restart_count: i.restart_count,
            })
            .collect();
        let mut outcome = observe(
            &MonitorInput {
                components: &components,
                containers: &containers,
                history: &history,
                alerts_sent: &sent,
                skip_services: &skip,
                now,
            },
            &policy,
        );
        // Drop what an operation changed while we looked.
        let stale: BTreeSet<String> = components
            .iter()
            .map(|c| c.service.clone())
            .filter(|s| !skip.contains(s) && self.locks.changed_since(&before, s))
            .collect();
        if !stale.is_empty() {
            outcome.updates.retain(|u| !stale.contains(&u.service));
            outcome.events.retain(|e| !stale.contains(&e.service));
            outcome.alerts.retain(|a| !stale.contains(&a.service));
            outcome.drift.retain(|f| !stale.contains(&f.service));
            outcome.flapping.retain(|f| !stale.contains(&f.service));
        }
        let updates = outcome.updates.clone();
        let events = outcome.events.clone();
        self.db(move |r| {
            for u in &updates {
                match r.set_component_observed(
                    &u.service,
                    &u.component,
                    &u.observed,
                    u.restart_count,
                ) {
                    Ok(()) | Err(RegistryError::ComponentNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            r.record_events(&events)
        })
        .await?;
        // Tell the master which services changed state (it runs a pass).
        if let Some(tx) = &self.changes {
            let changed: BTreeSet<&str> =
                outcome.updates.iter().map(|u| u.service.as_str()).collect();
            for svc in changed {
                let _ = tx.try_send(svc.to_string());
            }
        }
        for e in &outcome.events {
            tracing::info!(
                service = %e.service, component = %e.component, kind = %e.kind,
                prev = e.prev_state.as_deref().unwrap_or(""), new = e.new_state.as_deref().unwrap_or(""),
                detail = %e.detail, "monitor event"
            );
        }

        let pruned = self.prune_events().await?;
        let mut report = MonitorReport {
            time: now,
            pruned,
            drift: outcome.drift,
            flapping: outcome.flapping,
            events: outcome.events,
            suppressed: outcome.suppressed,
            skipped_services: skip.into_iter().chain(stale).collect(),
            ..MonitorReport::default()
        };
        for alert in outcome.alerts {
            let sent = match &self.alerter {
                Some(a) => match a.send(&alert).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(key = %alert.key, error = %e, "alert not sent");
                        report.alert_errors.push(format!("{}: {e}", alert.key));
                        false
                    }
                },
                None => {
                    tracing::warn!(
                        key = %alert.key, service = %alert.service, component = %alert.component,
                        event = %alert.event, detail = %alert.detail,
                        "alert (no [alerts] command configured)"
                    );
                    true
                }
            };
            if sent {
                let key = alert.key.clone();
                self.db(move |r| r.mark_alert_sent(&key, now)).await?;
                report.alerts_sent.push(alert.key);
            }
        }
        *self
            .last_monitor
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
        Ok(report)
    }

    /// Applies the event retention of the settings (`[events]`: older than
    /// `max_age` at the agent's clock, then beyond `max_rows`). Run at
    /// start and after every monitor round.
    pub async fn prune_events(&self) -> Result<PrunedEvents> {
        let retention = self.settings.events;
        let before = self.now().minus(retention.max_age);
        let pruned = self
            .db(move |r| r.prune_events_to(before, retention.max_rows))
            .await?;
        if pruned != PrunedEvents::default() {
            tracing::info!(
                by_age = pruned.by_age,
                by_count = pruned.by_count,
                "pruned events"
            );
        }
        Ok(pruned)
    }

    /// Runs [`Agent::monitor_once`] every `interval` (the safety net), and
    /// soon after the runtime reports an event of a container of this node
    /// ([`Agent::run_events`]), until `shutdown` resolves. Errors are
    /// logged; the loop goes on.
    pub async fn run_monitor(
        &self,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
                () = self.monitor_wake.notified() => {
                    // One round for a burst of events (kill → died → cleanup).
                    tokio::time::sleep(EVENT_SETTLE).await;
                }
            }
            if let Err(e) = self.monitor_once().await {
                tracing::error!(error = %e, "monitor round failed");
            }
        }
    }

    /// Follows the runtime's container events until `shutdown`: each event
    /// of a container of this node wakes the monitor. When the stream ends
    /// or cannot be opened (podman restarted) it is opened again after a
    /// back-off of 1 s doubling to 30 s, and a monitor round catches up on
    /// what was missed.
    pub async fn run_events(&self, shutdown: impl std::future::Future<Output = ()>) {
        use tokio_stream::StreamExt as _;
        tokio::pin!(shutdown);
        let mut delay = Duration::from_secs(1);
        loop {
            let opened = tokio::select! {
                () = &mut shutdown => return,
                s = self.runtime.events() => s,
            };
            match opened {
                Ok(mut stream) => {
                    tracing::debug!("following container events");
                    self.monitor_wake.notify_one();
                    loop {
                        let next = tokio::select! {
                            () = &mut shutdown => return,
                            n = stream.next() => n,
                        };
                        match next {
                            Some(Ok(e)) => {
                                delay = Duration::from_secs(1);
                                if e.labels
                                    .get(mcp_runtime::LABEL_NODE)
                                    .is_none_or(|n| *n == self.settings.node)
                                {
                                    self.monitor_wake.notify_one();
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "container event unreadable");
                            }
                            None => break,
                        }
                    }
                    tracing::warn!(retry_in = ?delay, "container event stream ended");
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot follow container events");
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

/// How long the monitor waits after an event before its round, so one
/// round sees a burst of events.
const EVENT_SETTLE: Duration = Duration::from_millis(100);

/// Runs `round` at once and then every `interval` (a late round delays
/// the next, rounds never overlap) until `shutdown` completes.
pub(super) async fn every<F, Fut>(
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => round().await,
        }
    }
}
