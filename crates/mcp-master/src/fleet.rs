//! The node registry (docs/ARCHITECTURE.md): `Register` and `Heartbeat` bound to
//! the caller's identity, the health prober, and the start-up warm-up.
//!
//! - `Register`: the node name comes from the `agent-<node>` identity (a
//!   different `name` is `PermissionDenied`), the identity must be on the
//!   allowlist, a new node beyond `max_nodes` is `ResourceExhausted`;
//!   re-registering updates the address and logs the old one. (Rate limits
//!   are enforced before the handler by the auth layer.)
//! - `Heartbeat`: same name binding; stores the load figures and marks the
//!   node healthy. An unknown node gets `NotFound`, which tells the agent to
//!   register again.
//! - Prober: a node silent for `heartbeat_timeout` is asked `HealthCheck`
//!   (deadline `[timeouts] health_check`); a failure marks it unhealthy
//!   (excluded from placement; its services are left running and nothing
//!   is rescheduled).
//! - Warm-up at start: every known node is probed at once (failures are
//!   logged at info, not as alerts).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mcp_security::clock::Clock;
use mcp_security::identity::Identity;
use mcp_security::registration::RegistrationPolicy;
use tokio::task::JoinSet;
use tonic::Status;

use crate::agents::{AgentApi, AgentTarget};
use crate::config::{Config, NodeRole};
use crate::state::{self, Db, NodeStatus, Registered, StateError};

/// Registry settings, from `[registration]` and `[timeouts]`.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub policy: RegistrationPolicy,
    pub heartbeat_timeout: Duration,
    pub health_check: Duration,
}

impl FleetSettings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            policy: RegistrationPolicy::new(
                cfg.registration.allowed_agents.iter().cloned(),
                cfg.registration.max_nodes,
            ),
            heartbeat_timeout: cfg.registration.heartbeat_timeout,
            health_check: cfg.timeouts.health_check,
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub node: String,
    pub healthy: bool,
    pub detail: String,
    /// The node's status changed.
    pub changed: bool,
}

/// The registry; share it with `Arc`.
pub struct Fleet {
    state: Db,
    agents: Arc<dyn AgentApi>,
    clock: Arc<dyn Clock>,
    settings: FleetSettings,
    /// Called when a node's health changes or a node registers.
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn internal(e: StateError) -> Status {
    Status::internal(e.to_string())
}

impl Fleet {
    pub fn new(
        state: impl Into<Db>,
        agents: Arc<dyn AgentApi>,
        clock: Arc<dyn Clock>,
        settings: FleetSettings,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            state: state.into(),
            agents,
            clock,
            settings,
            on_change,
        }
    }

    /// Handles `Register(name, role, address, arch)` from `identity`.
    pub async fn register(
        &self,
        identity: &Identity,
        name: &str,
        role: &str,
        address: &str,
        arch: &str,
    ) -> Result<Registered, Status> {
        let known: BTreeSet<String> = self
            .state
            .read(|r| r.nodes())
            .await
            .map_err(internal)?
            .into_iter()
            .map(|n| n.name)
            .collect();
        let node = self
            .settings
            .policy
            .check_register(identity, name, &known)
            .map_err(|e| {
                tracing::warn!(identity = %identity.name, name, error = %e, "registration refused");
                e.to_status()
            })?;
        let role: NodeRole = role
            .parse()
            .map_err(|e: String| Status::invalid_argument(format!("register {node}: {e}")))?;
        if address.is_empty() || address.chars().any(char::is_whitespace) {
            return Err(Status::invalid_argument(format!(
                "register {node}: address must be a non-empty address without spaces, found {address:?}"
            )));
        }
        let reg = state::Registration {
            name: node.clone(),
            role,
            address: address.to_string(),
            arch: arch.to_string(),
        };
        let now = self.clock.now();
        let outcome = self
            .state
            .write(move |w| w.register_node(&reg, now))
            .await
            .map_err(internal)?;
        match &outcome {
            Registered::New => {
                tracing::info!(node = %node, role = %role, address, arch, "node registered")
            }
            Registered::Again => {
                tracing::info!(node = %node, address, "node registered again")
            }
            Registered::AddressChanged { old } => tracing::warn!(
                node = %node,
                address,
                old_address = %old,
                "node registered again with a new address"
            ),
        }
        (self.on_change)();
        Ok(outcome)
    }

    /// Handles `Heartbeat`; returns true when the node was not healthy
    /// before (it is now).
    pub async fn heartbeat(
        &self,
        identity: &Identity,
        name: &str,
        hb: &state::Heartbeat,
    ) -> Result<bool, Status> {
        let node = self
            .settings
            .policy
            .check_heartbeat(identity, name)
            .map_err(|e| e.to_status())?;
        let now = self.clock.now();
        // One transaction: the status before, and the update. Committed
        // without a sync to disk: a heartbeat lost to a power loss is
        // replaced by the next one (nothing is acted on from it alone).
        let (name, hb) = (node.clone(), *hb);
        let before = self
            .state
            .write_relaxed(move |w| {
                let Some(before) = w.node(&name)?.filter(|n| n.registered_at.is_some()) else {
                    return Ok(None);
                };
                w.record_heartbeat(&name, &hb, now)?;
                Ok(Some(before.status))
            })
            .await;
        let before = match before {
            Ok(Some(status)) => status,
            Ok(None) | Err(StateError::UnknownNode(_)) => {
                return Err(Status::not_found(format!(
                    "node {node} is not registered; register again"
                )))
            }
            Err(e) => return Err(internal(e)),
        };
        let recovered = before != NodeStatus::Healthy;
        if recovered {
            tracing::info!(node = %node, "node is healthy again (heartbeat)");
            (self.on_change)();
        }
        Ok(recovered)
    }

    /// Probes one node with `HealthCheck` and records the result.
    /// `quiet`: a failure is logged at info (warm-up), not warn.
    pub async fn probe(&self, node: &state::Node, quiet: bool) -> ProbeResult {
        let t = AgentTarget {
            node: node.name.clone(),
            address: node.address.clone(),
        };
        let timeout = self.settings.health_check;
        let (healthy, detail) =
            match tokio::time::timeout(timeout, self.agents.health_check(&t)).await {
                Ok(Ok(r)) => (true, format!("{} ({} containers)", r.status, r.containers)),
                Ok(Err(e)) => (false, e.to_string()),
                Err(_) => (
                    false,
                    format!(
                        "HealthCheck timed out after {}",
                        humantime::format_duration(timeout)
                    ),
                ),
            };
        let status = if healthy {
            NodeStatus::Healthy
        } else {
            NodeStatus::Unhealthy
        };
        let changed = node.status != status;
        let name = node.name.clone();
        if let Err(e) = self
            .state
            .write(move |w| w.set_node_status(&name, status))
            .await
        {
            tracing::error!(node = %node.name, error = %e, "cannot record node health");
        }
        if changed {
            if healthy {
                tracing::info!(node = %node.name, detail, "node is healthy");
            } else if quiet {
                tracing::info!(node = %node.name, detail, "node did not answer the start-up probe: unhealthy");
            } else {
                tracing::warn!(
                    target: "mcp::alert",
                    node = %node.name,
                    detail,
                    "node missed its heartbeats and failed HealthCheck: unhealthy (excluded from placement; its services are left running)"
                );
            }
        }
        ProbeResult {
            node: node.name.clone(),
            healthy,
            detail,
            changed,
        }
    }

    async fn probe_all(self: &Arc<Self>, nodes: Vec<state::Node>, quiet: bool) -> Vec<ProbeResult> {
        let mut set = JoinSet::new();
        for n in nodes {
            let me = self.clone();
            set.spawn(async move { me.probe(&n, quiet).await });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// Master start-up: every known node is probed at once, without alerts.
    pub async fn warm_up(self: &Arc<Self>) -> Result<Vec<ProbeResult>, StateError> {
        self.state.write(|w| w.reset_node_statuses()).await?;
        let nodes = self.state.read(|r| r.nodes()).await?;
        let results = self.probe_all(nodes, true).await;
        let healthy = results.iter().filter(|r| r.healthy).count();
        tracing::info!(
            nodes = results.len(),
            healthy,
            "warm-up: probed every known node"
        );
        Ok(results)
    }

    /// Probes the nodes whose last heartbeat is older than the timeout (or
    /// that never sent one). Returns what was probed.
    pub async fn probe_stale(self: &Arc<Self>) -> Result<Vec<ProbeResult>, StateError> {
        let now = self.clock.now();
        let stale: Vec<state::Node> = self
            .state
            .read(|r| r.nodes())
            .await?
            .into_iter()
            .filter(|n| match n.last_heartbeat {
                None => true,
                Some(t) => now
                    .duration_since(t)
                    .is_ok_and(|d| d >= self.settings.heartbeat_timeout),
            })
            .collect();
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let results = self.probe_all(stale, false).await;
        if results.iter().any(|r| r.changed) {
            (self.on_change)();
        }
        Ok(results)
    }

    /// Runs [`Fleet::probe_stale`] every `every` until `shutdown`.
    pub async fn run_prober(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.probe_stale().await {
                tracing::error!(error = %e, "health prober");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use mcp_security::clock::ManualClock;
    use mcp_security::identity::{AccountType, Identity};

    use super::*;
    use crate::fake::FakeAgents;

    #[tokio::test]
    async fn silent_node_is_probed_marked_unhealthy_and_recovers_on_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(crate::state::State::open(&dir.path().join("m.db")).unwrap());
        let agents = Arc::new(FakeAgents::new());
        let clock = ManualClock::at_unix(1_735_689_600);
        let changes = Arc::new(AtomicUsize::new(0));
        let c = changes.clone();
        let fleet = Arc::new(Fleet::new(
            state.clone(),
            agents.clone(),
            Arc::new(clock.clone()),
            FleetSettings {
                policy: RegistrationPolicy::new(["agent-vega"], 16),
                heartbeat_timeout: Duration::from_secs(90),
                health_check: Duration::from_secs(1),
            },
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }),
        ));
        let vega = Identity::new("agent-vega", AccountType::System, &[]);
        fleet
            .register(&vega, "vega", "worker", "https://vega:9444", "amd64")
            .await
            .unwrap();
        // Fresh: nothing to probe.
        assert!(fleet.probe_stale().await.unwrap().is_empty());
        // Silent for the timeout and not answering HealthCheck: unhealthy.
        clock.advance(Duration::from_secs(91));
        agents.set_unreachable("vega", true);
        let before = changes.load(Ordering::SeqCst);
        let r = fleet.probe_stale().await.unwrap();
        assert_eq!(r.len(), 1);
        assert!(!r[0].healthy);
        let node = state.read(|r| r.node("vega")).unwrap().unwrap();
        assert_eq!(node.status, NodeStatus::Unhealthy);
        assert!(changes.load(Ordering::SeqCst) > before);
        // A heartbeat marks it healthy again.
        agents.set_unreachable("vega", false);
        let recovered = fleet
            .heartbeat(&vega, "vega", &state::Heartbeat::default())
            .await
            .unwrap();
        assert!(recovered);
        let node = state.read(|r| r.node("vega")).unwrap().unwrap();
        assert_eq!(node.status, NodeStatus::Healthy);
        // Warm-up probes every node at once.
        state
            .write(|w| w.add_bootstrap_node("orion", NodeRole::Master, "https://orion:9444"))
            .unwrap();
        agents.set_unreachable("orion", true);
        let r = fleet.warm_up().await.unwrap();
        let summary: Vec<(String, bool)> = r.into_iter().map(|p| (p.node, p.healthy)).collect();
        assert_eq!(
            summary,
            [("orion".to_string(), false), ("vega".to_string(), true)]
        );
    }
}
