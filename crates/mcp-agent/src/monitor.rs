//! The monitor's decisions, as a pure function: no clock, no I/O.
//!
//! Every `[monitor] interval` the daemon gathers the registry's components,
//! the runtime's container list, the recent event history (at least
//! `flap_window` back) and the alert cooldown memory, calls [`observe`], and
//! then carries out the [`MonitorOutcome`]: write `updates` and `events` to
//! the registry, send `alerts` (and mark them sent), expose `drift` and
//! `flapping` in status and health answers.
//!
//! Rules:
//! - **State events**: a component whose container state differs from the
//!   registry's `observed_state` gets a `state` event (`prev` → `new`); no
//!   container at all is the state `missing`. A restart count that grew
//!   while the state stayed the same gives a `restart` event (the container
//!   went down and came back between two observations).
//! - **Drift**: desired `running` but not running, or desired `stopped` but
//!   running. Reported on every call while it lasts (`drift`); a `drift`
//!   event is recorded only when it begins.
//! - **Flapping**: `flap_threshold` or more transitions (`state` and
//!   `restart` events, not counting the first observation out of `unknown`)
//!   within `flap_window`, including this call's. Reported while it lasts; a
//!   `flapping` event is recorded at most once per window.
//! - **Alerts**: drift and flapping raise alerts keyed
//!   `drift:<service>/<component>` and `flapping:<service>/<component>`; an
//!   alert whose key was sent less than `alert_cooldown` ago is held back
//!   (`suppressed`), so a lasting problem is repeated once per cooldown.
//! - Components desired `ignore` are observed and recorded but never drift,
//!   flap or alert. Services in `skip_services` (being deployed, undeployed,
//!   ... under their per-service lock) are left out entirely.
//! - Containers that match no registry component are listed as `unmanaged`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::clock::Timestamp;
use crate::config::Config;
use crate::registry::{ComponentRecord, DesiredState, Event, EventKind, NewEvent, ObservedState};

/// A container as the runtime lists it (the runtime crate's container info
/// is mapped onto this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub name: String,
    /// From the container's labels; empty when unlabelled.
    pub service: String,
    pub component: String,
    pub state: ObservedState,
    pub restart_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorPolicy {
    pub flap_threshold: u32,
    pub flap_window: Duration,
    pub alert_cooldown: Duration,
}

impl MonitorPolicy {
    pub fn from_config(c: &Config) -> MonitorPolicy {
        MonitorPolicy {
            flap_threshold: c.monitor.flap_threshold,
            flap_window: c.monitor.flap_window,
            alert_cooldown: c.alerts.cooldown,
        }
    }
}

impl Default for MonitorPolicy {
    fn default() -> Self {
        MonitorPolicy {
            flap_threshold: 3,
            flap_window: Duration::from_secs(300),
            alert_cooldown: Duration::from_secs(900),
        }
    }
}

/// Everything [`observe`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct MonitorInput<'a> {
    pub components: &'a [ComponentRecord],
    pub containers: &'a [ObservedContainer],
    /// Recorded events, at least those since `now - flap_window`.
    pub history: &'a [Event],
    /// When each alert key was last sent.
    pub alerts_sent: &'a BTreeMap<String, Timestamp>,
    /// Services to leave alone this round.
    pub skip_services: &'a BTreeSet<String>,
    pub now: Timestamp,
}

/// A component's new observed state and restart count, to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedUpdate {
    pub service: String,
    pub component: String,
    pub observed: ObservedState,
    pub restart_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    Drift,
    Flapping,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Drift => "drift",
            FindingKind::Flapping => "flapping",
        }
    }
}

/// A problem with one component, lasting as long as it is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub service: String,
    pub component: String,
    pub detail: String,
}

impl Finding {
    /// The cooldown key of this finding's alert.
    pub fn alert_key(&self) -> String {
        format!("{}:{}/{}", self.kind.as_str(), self.service, self.component)
    }
}

/// An alert to send now (see `crate::alert::Alerter`; `MCP_EVENT` is
/// `drift` or `flapping`).
pub use mcp_alert::Alert;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorOutcome {
    pub updates: Vec<ObservedUpdate>,
    pub events: Vec<NewEvent>,
    pub drift: Vec<Finding>,
    pub flapping: Vec<Finding>,
    pub alerts: Vec<Alert>,
    /// Keys of alerts held back by their cooldown.
    pub suppressed: Vec<String>,
    pub unmanaged: Vec<ObservedContainer>,
}

/// One monitor round. See the module documentation for the rules.
pub fn observe(input: &MonitorInput<'_>, policy: &MonitorPolicy) -> MonitorOutcome {
    let now = input.now;
    let window_start = now.minus(policy.flap_window);
    let mut out = MonitorOutcome::default();

    // Index containers by labels, then by name.
    let mut by_labels: HashMap<(&str, &str), usize> = HashMap::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, k) in input.containers.iter().enumerate() {
        if !k.service.is_empty() && !k.component.is_empty() {
            by_labels
                .entry((k.service.as_str(), k.component.as_str()))
                .or_insert(i);
        }
        by_name.entry(k.name.as_str()).or_insert(i);
    }
    let mut matched = vec![false; input.containers.len()];

    // Recent history per component.
    let mut recent: HashMap<(&str, &str), Vec<&Event>> = HashMap::new();
    for e in input.history {
        if e.time > window_start {
            recent
                .entry((e.service.as_str(), e.component.as_str()))
                .or_default()
                .push(e);
        }
    }

    let mut alert_keys = BTreeSet::new();
    for c in input.components {
        let idx = by_labels
            .get(&(c.service.as_str(), c.name.as_str()))
            .or_else(|| by_name.get(c.container_name.as_str()))
            .copied();
        if let Some(i) = idx {
            matched[i] = true;
        }
        if input.skip_services.contains(&c.service) {
            continue;
        }
        let container = idx.and_then(|i| input.containers.get(i));
        let (state, restarts) = match container {
            Some(k) => (k.state.clone(), k.restart_count),
            None => (ObservedState::Missing, c.restart_count),
        };
        let prev = &c.observed;
        let first_observation = *prev == ObservedState::Unknown;
        let event =
            |kind: EventKind, prev: Option<String>, new: Option<String>, detail: String| NewEvent {
                service: c.service.clone(),
                component: c.name.clone(),
                prev_state: prev,
                new_state: new,
                kind,
                detail,
                time: now,
            };
        let mut new_events = Vec::new();

        if state != *prev {
            let detail = if state == ObservedState::Missing {
                format!("container {} not found", c.container_name)
            } else {
                String::new()
            };
            new_events.push(event(
                EventKind::State,
                Some(prev.to_string()),
                Some(state.to_string()),
                detail,
            ));
        }
        if container.is_some() && state == *prev && restarts > c.restart_count {
            new_events.push(event(
                EventKind::Restart,
                Some(state.to_string()),
                Some(state.to_string()),
                format!("restart count {} -> {}", c.restart_count, restarts),
            ));
        }
        if state != *prev || restarts != c.restart_count {
            out.updates.push(ObservedUpdate {
                service: c.service.clone(),
                component: c.name.clone(),
                observed: state.clone(),
                restart_count: restarts,
            });
        }

        if c.desired != DesiredState::Ignore {
            // Drift.
            let drifted = |s: &ObservedState| match c.desired {
                DesiredState::Running => !s.is_running(),
                DesiredState::Stopped => s.is_running(),
                DesiredState::Ignore => false,
            };
            if drifted(&state) {
                let finding = Finding {
                    kind: FindingKind::Drift,
                    service: c.service.clone(),
                    component: c.name.clone(),
                    detail: format!("desired {}, observed {}", c.desired, state),
                };
                if first_observation || !drifted(prev) {
                    new_events.push(event(
                        EventKind::Drift,
                        Some(prev.to_string()),
                        Some(state.to_string()),
                        finding.detail.clone(),
                    ));
                }
                out.drift.push(finding);
            }

            // Flapping.
            let past = recent
                .get(&(c.service.as_str(), c.name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let is_transition = |kind: &EventKind, prev: Option<&str>| match kind {
                EventKind::State => prev != Some(ObservedState::Unknown.as_str()),
                EventKind::Restart => true,
                _ => false,
            };
            let transitions = past
                .iter()
                .filter(|e| is_transition(&e.kind, e.prev_state.as_deref()))
                .count()
                + new_events
                    .iter()
                    .filter(|e| is_transition(&e.kind, e.prev_state.as_deref()))
                    .count();
            let transitions = u32::try_from(transitions).unwrap_or(u32::MAX);
            if transitions >= policy.flap_threshold {
                let finding = Finding {
                    kind: FindingKind::Flapping,
                    service: c.service.clone(),
                    component: c.name.clone(),
                    detail: format!(
                        "{transitions} transitions in the last {}, now {state}",
                        humantime::format_duration(policy.flap_window)
                    ),
                };
                if !past.iter().any(|e| e.kind == EventKind::Flapping) {
                    new_events.push(event(
                        EventKind::Flapping,
                        Some(prev.to_string()),
                        Some(state.to_string()),
                        finding.detail.clone(),
                    ));
                }
                out.flapping.push(finding);
            }
        }
        out.events.extend(new_events);
    }

    // Alerts, with cooldown.
    for f in out.drift.iter().chain(out.flapping.iter()) {
        let key = f.alert_key();
        if !alert_keys.insert(key.clone()) {
            continue;
        }
        let cooling = input
            .alerts_sent
            .get(&key)
            .is_some_and(|last| now < last.plus(policy.alert_cooldown));
        if cooling {
            out.suppressed.push(key);
        } else {
            out.alerts.push(Alert {
                key,
                service: f.service.clone(),
                component: f.component.clone(),
                event: f.kind.as_str().to_string(),
                detail: f.detail.clone(),
                node: String::new(),
            });
        }
    }

    out.unmanaged = input
        .containers
        .iter()
        .zip(&matched)
        .filter(|(k, m)| !**m && !input.skip_services.contains(&k.service))
        .map(|(k, _)| k.clone())
        .collect();
    out
}

#[cfg(test)]
mod tests;
