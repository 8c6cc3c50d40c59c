//! The control loop (docs/ARCHITECTURE.md): load the desired state, observe the
//! fleet, run [`mcp_planner::plan()`], execute the plan's ready actions, and
//! record every step in the journal.
//!
//! - **One pass at a time.** Passes (the periodic timer, a new commit,
//!   `Sync`, `Deploy`, `Undeploy`, a registration) are serialized by one
//!   lock, so two passes never plan from the same stale observation.
//! - **Per-service lock, bounded concurrency.** Within a pass, services
//!   proceed concurrently up to `[reconcile] concurrency`, core tier before
//!   workers; one service's steps run in order under its own lock (which
//!   the lifecycle pass-through RPCs take too). A failing step stops the
//!   rest of *its* service's steps only; the next pass retries (self-heals
//!   with the planner's back-off) — unless the agent refused the spec as
//!   such (a permanent error, `failed`): then the service is held until its
//!   spec changes.
//! - **Journal.** Each service's operation is journaled before its first
//!   side effect and at every step; a master that dies mid-apply leaves a
//!   `running` entry, which the next start marks `abandoned` and reports
//!   ([`Reconciler::recover_journal`]) before re-planning (every action is
//!   idempotent).
//! - **Adapters not configured.** The planner is told which integrations
//!   exist ([`mcp_planner::Integrations`], from the config): it plans the
//!   DNS and edge-route steps of a missing one as skipped, with the reason,
//!   and leaves out entries that would only hold such steps, so a converged
//!   fleet plans nothing. Skipped steps are reported as skipped (never as
//!   success) and nothing is recorded as created.
//!
//! Files: this one holds the settings, the pass's types, desired state and
//! one pass (desired → observed → plan → apply); `observe` the observed
//! state, `failed` the specs agents refused, `execute` applying a plan (journal, per-service order, the
//! actions), `locks` the per-service locks and the journal recovery at
//! start-up, `run` the loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_planner::{
    Action, AgentStatus, ContainerState, Desired, Entry, HealMethod, Held, Integration,
    Integrations, Observed, Plan, Policy, Step, Timestamp,
};
use mcp_security::clock::Clock;
use mcp_spec::{LoadOptions, ServiceSpec, Tier};
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::agents::{AgentApi, AgentTarget};
use crate::config::Config;
use crate::gitsource::GitSource;
use crate::state::{self, Db, JournalEntry, JournalStatus, NodeStatus, StateError};

mod dns;
mod execute;
mod failed;
mod locks;
mod observe;
mod run;

pub use dns::{dns_adapter, DNS_TIMEOUT};
pub use failed::held_for;
pub use locks::{MoveGuard, ServiceLocks};
pub use observe::address_host;

/// Why a pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("desired state: {0}")]
    Desired(String),
    #[error("{0}")]
    Refused(String),
}

/// Where desired state comes from.
#[derive(Debug, Clone)]
pub enum DesiredSource {
    /// GitOps: the committed tree at `HEAD`.
    Git {
        source: GitSource,
        options: LoadOptions,
    },
    /// Push mode: the specs last sent by `Sync` (table `desired_specs`).
    Push,
}

/// The loop's settings, taken from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Policy,
    pub concurrency: usize,
    /// Deadline of each agent's `ListServices` during observation.
    pub list_timeout: Duration,
    /// A healed component that stays up this long has its heal record
    /// cleared.
    pub heal_settle: Duration,
    /// Periodic pass.
    pub interval: Duration,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        let rc = &cfg.reconcile;
        let base = rc.heal_backoff.as_secs().max(1);
        Settings {
            policy: Policy {
                internal_zone: cfg.edge.internal_zone.clone(),
                allow_auto_migrate: rc.allow_auto_migrate,
                allow_mass_prune: false,
                heal_backoff_base_secs: base,
                heal_backoff_max_secs: base.saturating_mul(32).max(600),
                heal_max_attempts: rc.heal_max_attempts,
                integrations: integrations(cfg),
                ..Policy::default()
            },
            concurrency: rc.concurrency.max(1),
            list_timeout: cfg.timeouts.health_check,
            heal_settle: rc.heal_backoff,
            interval: rc.interval,
        }
    }
}

/// The integrations the master can act through, for the planner. DNS is
/// configured with `[dns] adapter = "rfc2136"` (the loop then gets its
/// adapter, [`Reconciler::with_dns`]); without `[dns]` its steps are
/// skipped. Edge routes, proxy routes and certificates have no adapter in
/// this build.
pub fn integrations(cfg: &Config) -> Integrations {
    Integrations {
        dns: match &cfg.dns {
            None => Integration::not_configured("DNS adapter not configured"),
            Some(crate::config::DnsConfig::Rfc2136(_)) => Integration::Configured,
            // Refused by the config's validation; kept skipped if it gets here.
            Some(crate::config::DnsConfig::Mcns(_)) => {
                Integration::not_configured("the mcns DNS adapter is not available in this build")
            }
        },
        edge: Integration::not_configured("edge route adapter not available in this build yet"),
        proxy: Integration::not_configured("proxy routes not available in this build yet"),
        certificates: Integration::not_configured("certificates not available in this build yet"),
    }
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Succeeded,
    Failed,
    /// Its adapter is not configured; nothing was done.
    Skipped,
}

/// The result of one step of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    pub service: String,
    pub action: Action,
    pub status: StepStatus,
    pub error: String,
    pub detail: String,
}

impl StepOutcome {
    /// `deploy mcq on orion (spec 1a2b..)`: the step's name for the CLI.
    pub fn step(&self) -> String {
        self.action.to_string()
    }
}

/// What a pass may do.
#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    /// `mcp sync --allow-mass-prune`.
    pub allow_mass_prune: bool,
    /// Plan and apply for this service only (`Deploy`, `Undeploy`).
    pub only: Option<String>,
    /// Plan only.
    pub dry_run: bool,
    /// Plan these instead of the configured source (dry runs of a working
    /// tree).
    pub desired: Option<Desired>,
    /// Why the pass runs, for the log.
    pub reason: String,
}

/// The result of a pass.
#[derive(Debug, Clone)]
pub struct PassOutcome {
    pub plan: Plan,
    pub results: Vec<StepOutcome>,
    pub applied: bool,
}

impl PassOutcome {
    /// True when no executed step failed.
    pub fn ok(&self) -> bool {
        self.results.iter().all(|r| r.status != StepStatus::Failed)
    }
}

/// The control loop's state: share it with `Arc`.
pub struct Reconciler {
    state: Db,
    agents: Arc<dyn AgentApi>,
    clock: Arc<dyn Clock>,
    source: DesiredSource,
    settings: Settings,
    pass_lock: Mutex<()>,
    locks: ServiceLocks,
    kick: Notify,
    /// The DNS adapter ([`Reconciler::with_dns`]) and the TTL it writes.
    dns: Option<Arc<dyn mcp_net::DnsRecords>>,
    dns_ttl: u32,
    /// Services being migrated, and when each last finished moving: a pass
    /// leaves them alone ([`Reconciler::begin_move`]).
    moves: StdMutex<locks::Moves>,
    /// Runs the plan's `migrate` steps (the snapshot store; weak: the
    /// store holds the reconciler).
    migrator: std::sync::OnceLock<std::sync::Weak<dyn Migrator>>,
    /// `[alerts]` ([`Reconciler::with_alerts`]; default: logged only).
    alerts: Arc<crate::alerts::Alerts>,
}

/// What executes a `migrate` step: the whole migration flow, with the
/// service's lock already held by the pass.
#[tonic::async_trait]
pub trait Migrator: Send + Sync {
    async fn migrate_locked(&self, service: &str, to: &str) -> Result<String, String>;
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("source", &self.source)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> Timestamp {
    Timestamp(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

impl Reconciler {
    pub fn new(
        state: impl Into<Db>,
        agents: Arc<dyn AgentApi>,
        clock: Arc<dyn Clock>,
        source: DesiredSource,
        settings: Settings,
    ) -> Self {
        let logged_clock = clock.clone();
        Self {
            state: state.into(),
            agents,
            clock,
            source,
            settings,
            pass_lock: Mutex::new(()),
            locks: ServiceLocks::default(),
            kick: Notify::new(),
            dns: None,
            dns_ttl: 60,
            moves: StdMutex::new(locks::Moves::default()),
            migrator: std::sync::OnceLock::new(),
            alerts: Arc::new(crate::alerts::Alerts::logged_only(logged_clock)),
        }
    }

    /// Sends the alerts of passes (and of the snapshot store) this way.
    pub fn with_alerts(mut self, alerts: Arc<crate::alerts::Alerts>) -> Self {
        self.alerts = alerts;
        self
    }

    pub fn alerts(&self) -> &Arc<crate::alerts::Alerts> {
        &self.alerts
    }

    /// Who runs `migrate` steps (set once, by the daemon, to the store).
    pub fn set_migrator(&self, m: std::sync::Weak<dyn Migrator>) {
        let _ = self.migrator.set(m);
    }

    pub fn state(&self) -> &Db {
        &self.state
    }

    pub fn agents(&self) -> &Arc<dyn AgentApi> {
        &self.agents
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn source(&self) -> &DesiredSource {
        &self.source
    }

    pub fn gitops(&self) -> bool {
        matches!(self.source, DesiredSource::Git { .. })
    }

    pub fn locks(&self) -> &ServiceLocks {
        &self.locks
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Asks the loop for a pass soon (a registration, a node coming back).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// The agent address of `node`.
    pub async fn target(&self, node: &str) -> Result<AgentTarget, ReconcileError> {
        let name = node.to_string();
        let n = self
            .state
            .read(move |r| r.node(&name))
            .await?
            .ok_or_else(|| StateError::UnknownNode(node.to_string()))?;
        Ok(AgentTarget {
            node: n.name,
            address: n.address,
        })
    }

    /// Loads the desired state from the configured source.
    pub async fn desired(&self) -> Result<Desired, ReconcileError> {
        match &self.source {
            DesiredSource::Git { source, options } => {
                let (source, options) = (source.clone(), options.clone());
                let tree = tokio::task::spawn_blocking(move || source.load(&options))
                    .await
                    .map_err(|e| ReconcileError::Desired(e.to_string()))?
                    .map_err(|e| ReconcileError::Desired(e.to_string()))?;
                Ok(Desired::new(
                    tree.commit.as_ref().map(|c| c.as_str().to_string()),
                    tree.loaded.services.into_values(),
                    &tree.loaded.unreadable,
                ))
            }
            DesiredSource::Push => {
                let specs = self.state.read(|r| r.desired_specs()).await?;
                Ok(Desired::new(
                    Some("push".to_string()),
                    specs.into_iter().map(|d| d.spec),
                    &[],
                ))
            }
        }
    }

    /// Push mode: stores what `Sync` sent as the desired state. Services
    /// whose file the client could not read keep their stored spec.
    pub async fn store_pushed(
        &self,
        specs: &[ServiceSpec],
        held: &[String],
        source: &str,
    ) -> Result<(), ReconcileError> {
        let now = self.now();
        let (mut all, held, source) = (specs.to_vec(), held.to_vec(), source.to_string());
        self.state
            .write(move |w| {
                for name in &held {
                    if all.iter().any(|s| &s.name == name) {
                        continue;
                    }
                    if let Some(old) = w.desired_spec(name)? {
                        all.push(old.spec);
                    }
                }
                w.replace_desired_specs(&all, &source, now)
            })
            .await?;
        Ok(())
    }

    /// Plans `desired` against `observed` with the settings' policy (and
    /// its integrations: steps without an adapter come back skipped).
    pub fn plan(&self, desired: &Desired, observed: &Observed, allow_mass_prune: bool) -> Plan {
        let policy = Policy {
            allow_mass_prune,
            ..self.settings.policy.clone()
        };
        mcp_planner::plan(desired, observed, &policy, unix(self.now()))
    }

    /// One pass: desired, observed, plan, and (unless a dry run) apply.
    pub async fn reconcile(
        self: &Arc<Self>,
        opts: PassOptions,
    ) -> Result<PassOutcome, ReconcileError> {
        let _pass = self.pass_lock.lock().await;
        let mut desired = match opts.desired {
            Some(d) => d,
            None => self.desired().await?,
        };
        self.hold_failed(&mut desired, !opts.dry_run).await?;
        let epoch = self.move_epoch();
        let mut observed = self.observe().await?;
        let (desired, allow_mass_prune) = match &opts.only {
            None => (desired, opts.allow_mass_prune),
            Some(svc) => {
                restrict(&desired, &mut observed, svc);
                // An explicit request about one service is never a mass prune.
                (restricted_desired(&desired, svc), true)
            }
        };
        let plan = self.plan(&desired, &observed, allow_mass_prune);
        log_plan(&plan, &opts.reason);
        if let (Some(r), false) = (&plan.refused, opts.dry_run) {
            self.alerts.raise(crate::alerts::alert(
                "plan_refused",
                "plan_refused".to_string(),
                "",
                "",
                r.clone(),
            ));
        }
        if opts.dry_run {
            return Ok(PassOutcome {
                plan,
                results: Vec::new(),
                applied: false,
            });
        }
        let results = self.apply_since(&plan, &desired, epoch).await;
        Ok(PassOutcome {
            plan,
            results,
            applied: true,
        })
    }
}

/// Limits `observed` to what concerns `service`.
fn restrict(_desired: &Desired, observed: &mut Observed, service: &str) {
    observed.placements.retain(|k, _| k == service);
    observed.heal.retain(|k, _| k == service);
    for status in observed.agents.values_mut() {
        if let AgentStatus::Reported { services } = status {
            services.retain(|k, _| k == service);
        }
    }
    observed.edge_routes.retain(|_, r| r.service == service);
}

fn restricted_desired(desired: &Desired, service: &str) -> Desired {
    Desired {
        source: desired.source.clone(),
        services: desired
            .services
            .iter()
            .filter(|(k, _)| *k == service)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        held: desired
            .held
            .iter()
            .filter(|(k, _)| *k == service)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<String, Held>>(),
    }
}

fn log_plan(plan: &Plan, reason: &str) {
    let actions = plan.actions().count();
    if plan.entries.is_empty() {
        tracing::debug!(
            reason,
            source = plan.source.as_deref().unwrap_or("-"),
            "plan: nothing to do"
        );
    } else {
        tracing::info!(
            reason,
            source = plan.source.as_deref().unwrap_or("-"),
            entries = plan.entries.len(),
            actions,
            "plan"
        );
    }
    if let Some(r) = &plan.refused {
        tracing::warn!(reason, refused = %r, "plan refused by the mass-deletion guard; nothing applied");
    }
    for n in &plan.notes {
        tracing::info!(note = %n, "plan note");
    }
}

#[cfg(test)]
mod tests;
