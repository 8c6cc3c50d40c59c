//! The node registry (docs/ARCHITECTURE.md): `Register` and `Heartbeat` bound to
//! the caller's identity, the health prober, and the start-up warm-up.
//!
//! - `Register`: the node name comes from the `agent-<node>` identity (a
//!   different `name` is `PermissionDenied`), the identity must be on the
//!   allowlist, a new node beyond `max_nodes` is `ResourceExhausted`. What
//!   the request says about the node is checked against the master's own
//!   knowledge ([`mcp_security::registration`], docs/SECURITY.md): the role
//!   is the configured one (`[[nodes]]`, `[registration.roles]`) or, for a
//!   node configured nowhere, the one of its first registration — another
//!   is `PermissionDenied`; an address not on record must be named by the
//!   agent's client certificate (or lie inside the overlay when
//!   `allow_overlay_addresses`) — else `PermissionDenied` — and a change
//!   within `address_change_cooldown` of the previous one is
//!   `FailedPrecondition`. A refused registration changes nothing: the
//!   master keeps calling the address on record. Refusals and accepted
//!   address changes are alerts (target `mcp::alert`); every call is in
//!   the audit log with what it asked for. (Rate limits are enforced
//!   before the handler by the auth layer.)
//! - `Heartbeat`: same name binding; stores the load figures and marks the
//!   node healthy. An unknown node gets `NotFound`, which tells the agent to
//!   register again.
//! - Prober: a node silent for `heartbeat_timeout` is asked `HealthCheck`
//!   (deadline `[timeouts] health_check`); a failure marks it unhealthy
//!   (excluded from placement; its services are left running and nothing
//!   is rescheduled).
//! - Warm-up at start: every known node is probed at once (failures are
//!   logged at info, not as alerts).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcp_security::clock::Clock;
use mcp_security::edge::Cidr;
use mcp_security::identity::Identity;
use mcp_security::registration::{
    check_address, check_cooldown, check_role, RegistrationError, RegistrationPolicy,
};
use tokio::task::JoinSet;
use tonic::Status;

use crate::agents::{AgentApi, AgentTarget};
use crate::config::{Config, NodeRole};
use crate::state::{self, Db, NodeStatus, Registered, StateError};

/// Registry settings, from `[registration]`, `[[nodes]]`, `[edge]` and
/// `[timeouts]`.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub policy: RegistrationPolicy,
    pub heartbeat_timeout: Duration,
    pub health_check: Duration,
    /// The role the configuration fixes per node ([`Config::node_roles`]).
    pub roles: BTreeMap<String, NodeRole>,
    /// `Some(overlay_cidrs)` when `allow_overlay_addresses`: an address
    /// inside is accepted without the certificate naming it.
    pub overlay_addresses: Option<Vec<Cidr>>,
    pub address_change_cooldown: Duration,
}

impl Default for FleetSettings {
    /// Nobody may register; the config defaults otherwise.
    fn default() -> Self {
        Self {
            policy: RegistrationPolicy::default(),
            heartbeat_timeout: Duration::from_secs(90),
            health_check: Duration::from_secs(5),
            roles: BTreeMap::new(),
            overlay_addresses: None,
            address_change_cooldown: Duration::from_secs(600),
        }
    }
}

impl FleetSettings {
    pub fn from_config(cfg: &Config) -> Self {
        let r = &cfg.registration;
        Self {
            policy: RegistrationPolicy::new(r.allowed_agents.iter().cloned(), r.max_nodes),
            heartbeat_timeout: r.heartbeat_timeout,
            health_check: cfg.timeouts.health_check,
            roles: cfg.node_roles(),
            overlay_addresses: r
                .allow_overlay_addresses
                .then(|| cfg.edge.overlay_cidrs.clone()),
            address_change_cooldown: r.address_change_cooldown,
        }
    }

    /// Checks what a registration of `node` says against what the master
    /// knows of it (`existing`); returns the role to record.
    fn check_request(
        &self,
        node: &str,
        existing: Option<&state::Node>,
        requested: NodeRole,
        address: &str,
        leaf: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<NodeRole, RegistrationError> {
        let recorded = existing
            .filter(|n| n.registered_at.is_some())
            .map(|n| n.role);
        let role = check_role(node, self.roles.get(node).copied(), recorded, requested)?;
        let kept = existing.map(|n| n.address.as_str());
        if kept != Some(address) {
            check_address(node, address, leaf, self.overlay_addresses.as_deref(), kept)?;
            if let Some(n) = existing {
                check_cooldown(
                    node,
                    address,
                    &n.address,
                    n.address_changed_at,
                    now,
                    self.address_change_cooldown,
                )?;
            }
        }
        Ok(role)
    }
}

/// An accepted registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    pub registered: Registered,
    /// The recorded role (the configured or first one).
    pub role: NodeRole,
    /// The address on record before, when this registration changed it
    /// (also for a bootstrap entry's first registration).
    pub moved_from: Option<String>,
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

mod changes;

/// The registry; share it with `Arc`.
pub struct Fleet {
    state: Db,
    agents: Arc<dyn AgentApi>,
    clock: Arc<dyn Clock>,
    settings: FleetSettings,
    /// Called when a node's health changes or a node registers.
    on_change: Box<dyn Fn() + Send + Sync>,
    /// A node turned unhealthy is alerted through these.
    alerts: Option<Arc<crate::alerts::Alerts>>,
    changes: changes::ChangeLimiter,
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
            alerts: None,
            changes: changes::ChangeLimiter::default(),
        }
    }

    /// Admits a `ReportChanges` of `name` from `identity`: the identity
    /// must be the node's (as for a heartbeat), within its bounded burst
    /// ([`changes::BURST`], then [`changes::PER_SECOND`]).
    pub fn report_changes(&self, identity: &Identity, name: &str) -> Result<(), Status> {
        let node = self
            .settings
            .policy
            .check_heartbeat(identity, name)
            .map_err(|e| e.to_status())?;
        if !self.changes.allow(&node, std::time::Instant::now()) {
            return Err(Status::resource_exhausted(format!(
                "node {node}: too many change reports (at most {} at once, then {} per second); \
                 the next pass sees the changes",
                changes::BURST,
                changes::PER_SECOND
            )));
        }
        Ok(())
    }

    /// Alerts a node turning unhealthy through `alerts`.
    pub fn with_alerts(mut self, alerts: Arc<crate::alerts::Alerts>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Handles `Register(name, role, address, arch)` from `identity`, whose
    /// connection presented the client certificate `leaf` (DER).
    pub async fn register(
        &self,
        identity: &Identity,
        leaf: Option<&[u8]>,
        name: &str,
        role: &str,
        address: &str,
        arch: &str,
    ) -> Result<RegisterOutcome, Status> {
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
        let requested: NodeRole = role
            .parse()
            .map_err(|e: String| Status::invalid_argument(format!("register {node}: {e}")))?;
        if address.is_empty() || address.chars().any(char::is_whitespace) {
            return Err(Status::invalid_argument(format!(
                "register {node}: address must be a non-empty address without spaces, found {address:?}"
            )));
        }
        let now = self.clock.now();
        let settings = self.settings.clone();
        let (n, addr, arch_s, leaf_v) = (
            node.clone(),
            address.to_string(),
            arch.to_string(),
            leaf.map(<[u8]>::to_vec),
        );
        // One transaction: what is on record, the checks, the update.
        let decided = self
            .state
            .write(move |w| {
                let existing = w.node(&n)?;
                let role = match settings.check_request(
                    &n,
                    existing.as_ref(),
                    requested,
                    &addr,
                    leaf_v.as_deref(),
                    now,
                ) {
                    Ok(role) => role,
                    Err(e) => return Ok(Err(e)),
                };
                let reg = state::Registration {
                    name: n.clone(),
                    role,
                    address: addr.clone(),
                    arch: arch_s,
                };
                let registered = w.register_node(&reg, now)?;
                // An agent registers when it starts: a reboot or a restart
                // is not a crash loop, so its services' self-heal back-off
                // starts afresh.
                for p in w.placements_on(&n)? {
                    w.reset_heal_of_service(&p.service)?;
                }
                let moved_from = existing.map(|e| e.address).filter(|a| *a != addr);
                Ok(Ok(RegisterOutcome {
                    registered,
                    role,
                    moved_from,
                }))
            })
            .await
            .map_err(internal)?;
        let outcome = decided.map_err(|e| {
            tracing::warn!(
                target: "mcp::alert",
                node = %node,
                role,
                address,
                error = %e,
                "registration refused"
            );
            e.to_status()
        })?;
        match (&outcome.registered, &outcome.moved_from) {
            (_, Some(old)) => tracing::warn!(
                target: "mcp::alert",
                node = %node,
                address,
                old_address = %old,
                "node registered with a new address (named by its certificate); the master now calls it there"
            ),
            (Registered::New, None) => {
                tracing::info!(node = %node, role = %outcome.role, address, arch, "node registered")
            }
            (_, None) => tracing::info!(node = %node, address, "node registered again"),
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
                    node = %node.name,
                    detail,
                    "node missed its heartbeats and failed HealthCheck: unhealthy (excluded from placement; its services are left running)"
                );
                if let Some(a) = &self.alerts {
                    a.raise(crate::alerts::alert(
                        "node_unhealthy",
                        format!("node_unhealthy:{}", node.name),
                        "",
                        &node.name,
                        format!("missed its heartbeats and failed HealthCheck: {detail}"),
                    ));
                }
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
mod tests;
