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
//!   with the planner's back-off).
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

/// The integrations the master can act through, for the planner. None has
/// an adapter in this build yet: DNS steps are skipped because `[dns]` is
/// missing or because its adapter is not built; edge routes, proxy routes
/// and certificates have no adapter at all.
pub fn integrations(cfg: &Config) -> Integrations {
    Integrations {
        dns: Integration::not_configured(match &cfg.dns {
            None => "DNS adapter not configured",
            Some(_) => "the configured DNS adapter is not available in this build yet",
        }),
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

/// Per-service locks (`tokio::sync::Mutex` per service name).
#[derive(Debug, Default)]
pub struct ServiceLocks {
    map: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl ServiceLocks {
    pub async fn lock(&self, service: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(service.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
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

/// The host of a node address (`https://100.64.0.1:9444` → `100.64.0.1`):
/// what DNS records point at.
pub fn address_host(address: &str) -> String {
    match address.parse::<tonic::codegen::http::Uri>() {
        Ok(uri) if uri.host().is_some() => uri
            .host()
            .unwrap_or(address)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        _ => address.to_string(),
    }
}

fn planner_health(s: NodeStatus) -> mcp_planner::NodeHealth {
    match s {
        NodeStatus::Healthy => mcp_planner::NodeHealth::Healthy,
        NodeStatus::Unhealthy => mcp_planner::NodeHealth::Unhealthy,
        NodeStatus::Unknown => mcp_planner::NodeHealth::Unknown,
    }
}

impl Reconciler {
    pub fn new(
        state: impl Into<Db>,
        agents: Arc<dyn AgentApi>,
        clock: Arc<dyn Clock>,
        source: DesiredSource,
        settings: Settings,
    ) -> Self {
        Self {
            state: state.into(),
            agents,
            clock,
            source,
            settings,
            pass_lock: Mutex::new(()),
            locks: ServiceLocks::default(),
            kick: Notify::new(),
        }
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

    // -- start-up ---------------------------------------------------------------

    /// Marks operations left `running` by a previous master as abandoned and
    /// returns them (they are logged; the next pass re-plans).
    pub async fn recover_journal(&self) -> Result<Vec<JournalEntry>, ReconcileError> {
        let now = self.now();
        let open = self.state.read(|r| r.journal_unfinished()).await?;
        for e in &open {
            let detail = format!(
                "abandoned at master start-up during step {:?}; the next pass re-plans",
                e.step
            );
            let id = e.id;
            self.state
                .write(move |w| w.journal_finish(id, JournalStatus::Abandoned, Some(&detail), now))
                .await?;
            tracing::warn!(
                op = %e.op,
                service = %e.service,
                step = %e.step,
                "operation interrupted by a master restart: marked abandoned; re-planning"
            );
        }
        Ok(open)
    }

    // -- desired state ----------------------------------------------------------

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

    // -- observed state ---------------------------------------------------------

    /// What the master knows about the fleet now: the registry and records
    /// from the database, and every healthy agent's bulk status (queried
    /// concurrently, each within the list timeout). Heal records of
    /// components that stayed up are cleared on the way.
    pub async fn observe(&self) -> Result<Observed, ReconcileError> {
        let (nodes, placements, dns, edges, heal) = self
            .state
            .read(|r| {
                Ok((
                    r.nodes()?,
                    r.placements()?,
                    r.dns_records()?,
                    r.edge_routes()?,
                    r.heal_records()?,
                ))
            })
            .await?;
        let mut o = Observed::default();
        let mut calls = JoinSet::new();
        for n in &nodes {
            o.nodes.insert(
                n.name.clone(),
                mcp_planner::Node {
                    role: n.role,
                    address: address_host(&n.address),
                    health: planner_health(n.status),
                    containers: n.containers,
                },
            );
            if n.status != NodeStatus::Healthy {
                continue;
            }
            let agents = self.agents.clone();
            let t = AgentTarget {
                node: n.name.clone(),
                address: n.address.clone(),
            };
            let timeout = self.settings.list_timeout;
            calls.spawn(async move {
                let status = match tokio::time::timeout(timeout, agents.list_services(&t)).await {
                    Ok(Ok(r)) => r.into_status(),
                    Ok(Err(e)) => AgentStatus::Unreachable {
                        error: e.to_string(),
                    },
                    Err(_) => AgentStatus::Unreachable {
                        error: format!(
                            "ListServices timed out after {}",
                            humantime::format_duration(timeout)
                        ),
                    },
                };
                (t.node, status)
            });
        }
        while let Some(r) = calls.join_next().await {
            if let Ok((node, status)) = r {
                o.agents.insert(node, status);
            }
        }
        for p in placements {
            o.placements.insert(
                p.service.clone(),
                mcp_planner::Placement {
                    node: p.node,
                    tier: p.tier,
                    deployed_at: unix(p.deployed_at),
                    spec: Some(p.spec),
                    spec_hash: Some(p.spec_hash),
                },
            );
        }
        o.dns = dns.into_iter().map(|d| (d.name, d.address)).collect();
        o.edge_routes = edges
            .into_iter()
            .map(|r| {
                (
                    r.hostname,
                    mcp_planner::EdgeRoute {
                        service: r.service,
                        edge_node: r.edge_node,
                        backend_hostname: r.backend_hostname,
                        backend_port: r.backend_port,
                    },
                )
            })
            .collect();
        let now = self.now();
        for h in heal {
            if self.heal_settled(&o, &h, now) {
                let (s, c) = (h.service.clone(), h.component.clone());
                self.state.write(move |w| w.reset_heal(&s, &c)).await?;
                tracing::info!(service = %h.service, component = %h.component, "component stayed up after self-heal: heal record cleared");
                continue;
            }
            o.heal.entry(h.service.clone()).or_default().insert(
                h.component.clone(),
                mcp_planner::HealRecord {
                    attempts: h.attempts,
                    last_attempt: unix(h.last_attempt),
                    alerted: h.alerted,
                },
            );
        }
        Ok(o)
    }

    /// True when the component of `h` runs and its last heal attempt is at
    /// least the settle time ago, or its service is no longer placed.
    fn heal_settled(&self, o: &Observed, h: &state::HealRecord, now: SystemTime) -> bool {
        let Some(p) = o.placements.get(&h.service) else {
            return true;
        };
        let state = o
            .agents
            .get(&p.node)
            .and_then(AgentStatus::services)
            .and_then(|s| s.get(&h.service))
            .and_then(|s| s.components.get(&h.component))
            .map(|c| c.state);
        let quiet = now
            .duration_since(h.last_attempt)
            .is_ok_and(|d| d >= self.settings.heal_settle);
        state == Some(ContainerState::Running) && quiet
    }

    // -- planning ---------------------------------------------------------------

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
        let desired = match opts.desired {
            Some(d) => d,
            None => self.desired().await?,
        };
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
        if opts.dry_run {
            return Ok(PassOutcome {
                plan,
                results: Vec::new(),
                applied: false,
            });
        }
        let results = self.apply(&plan, &desired).await;
        Ok(PassOutcome {
            plan,
            results,
            applied: true,
        })
    }

    /// Executes the plan's ready steps: core tier first, then workers; up to
    /// `concurrency` services at a time; each service's steps in order under
    /// its lock. Skipped steps are reported as skipped.
    pub async fn apply(self: &Arc<Self>, plan: &Plan, desired: &Desired) -> Vec<StepOutcome> {
        if plan.refused.is_some() {
            return Vec::new();
        }
        let mut all: Vec<(usize, Vec<StepOutcome>)> = Vec::new();
        for tier in [Tier::Core, Tier::Worker] {
            let sem = Arc::new(Semaphore::new(self.settings.concurrency));
            let mut set = JoinSet::new();
            for (i, e) in plan.entries.iter().enumerate() {
                if e.tier != tier || !e.steps.iter().any(Step::is_ready) {
                    continue;
                }
                let me = self.clone();
                let entry = e.clone();
                let spec = desired.spec(&e.service).cloned();
                let source = plan.source.clone();
                let sem = sem.clone();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    (i, me.apply_entry(entry, spec, source).await)
                });
            }
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(x) => all.push(x),
                    Err(e) => tracing::error!(error = %e, "a service's apply task failed"),
                }
            }
        }
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().flat_map(|(_, r)| r).collect()
    }

    async fn apply_entry(
        self: Arc<Self>,
        entry: Entry,
        spec: Option<ServiceSpec>,
        source: Option<String>,
    ) -> Vec<StepOutcome> {
        let _lock = self.locks.lock(&entry.service).await;
        let service = entry.service.clone();
        let steps: Vec<_> = entry.steps.iter().filter(runnable).collect();
        let mut out = Vec::new();
        let first = steps
            .iter()
            .find(|s| s.is_ready())
            .map(|s| s.action.to_string());
        let journal = match first {
            None => None,
            Some(first) => {
                let detail = format!(
                    "{}; source {}",
                    entry.reason,
                    source.as_deref().unwrap_or("-")
                );
                let now = self.now();
                let (kind, svc) = (entry.kind.as_str(), service.clone());
                match self
                    .state
                    .write(move |w| w.journal_begin(kind, &svc, &first, &detail, now))
                    .await
                {
                    Ok(id) => Some(id),
                    Err(e) => {
                        tracing::error!(service = %service, error = %e, "cannot journal; not applying");
                        return vec![StepOutcome {
                            service: service.clone(),
                            action: steps[0].action.clone(),
                            status: StepStatus::Failed,
                            error: format!("cannot journal the operation: {e}"),
                            detail: String::new(),
                        }];
                    }
                }
            }
        };
        let mut failed: Option<String> = None;
        for s in steps {
            if let Some(why) = s.skipped_reason() {
                out.push(StepOutcome {
                    service: service.clone(),
                    action: s.action.clone(),
                    status: StepStatus::Skipped,
                    error: String::new(),
                    detail: why.to_string(),
                });
                continue;
            }
            if let Some(f) = &failed {
                out.push(StepOutcome {
                    service: service.clone(),
                    action: s.action.clone(),
                    status: StepStatus::Failed,
                    error: format!("not run: an earlier step failed ({f})"),
                    detail: String::new(),
                });
                continue;
            }
            let step_name = s.action.to_string();
            if let Some(id) = journal {
                let name = step_name.clone();
                if let Err(e) = self
                    .state
                    .write(move |w| w.journal_step(id, &name, None))
                    .await
                {
                    tracing::error!(service = %service, error = %e, "cannot journal step");
                }
            }
            let r = self.execute(&s.action, spec.as_ref()).await;
            match r {
                Ok(detail) => {
                    tracing::info!(service = %service, step = %step_name, "step succeeded");
                    out.push(StepOutcome {
                        service: service.clone(),
                        action: s.action.clone(),
                        status: StepStatus::Succeeded,
                        error: String::new(),
                        detail,
                    });
                }
                Err(error) => {
                    tracing::warn!(service = %service, step = %step_name, error = %error, "step failed; retried on the next pass");
                    failed = Some(error.clone());
                    out.push(StepOutcome {
                        service: service.clone(),
                        action: s.action.clone(),
                        status: StepStatus::Failed,
                        error,
                        detail: String::new(),
                    });
                }
            }
        }
        if let Some(id) = journal {
            let now = self.now();
            let (status, detail) = match &failed {
                None => (JournalStatus::Succeeded, None),
                Some(e) => (JournalStatus::Failed, Some(e.clone())),
            };
            if let Err(e) = self
                .state
                .write(move |w| w.journal_finish(id, status, detail.as_deref(), now))
                .await
            {
                tracing::error!(service = %service, error = %e, "cannot journal the end of an operation");
            }
        }
        out
    }

    /// Executes one action; `Ok` carries a detail for the operator.
    async fn execute(&self, action: &Action, spec: Option<&ServiceSpec>) -> Result<String, String> {
        let now = self.now();
        let need_spec =
            |service: &str| spec.ok_or_else(|| format!("no desired spec of {service} to deploy"));
        match action {
            Action::Deploy {
                service,
                node,
                spec_hash,
            } => {
                let spec = need_spec(service)?;
                let t = self.target(node).await.map_err(|e| e.to_string())?;
                self.agents
                    .deploy(&t, spec, None)
                    .await
                    .map_err(|e| e.to_string())?;
                self.record_placement(spec, node, spec_hash, now, true)
                    .await?;
                Ok(format!("deployed on {node}"))
            }
            Action::Start {
                service,
                node,
                spec_hash,
            }
            | Action::Stop {
                service,
                node,
                spec_hash,
            } => {
                // The agent is sent the new desired spec: it differs from the
                // deployed one only in `active`, so the agent records it (and
                // its hash) and starts or stops the components.
                let spec = need_spec(service)?;
                let t = self.target(node).await.map_err(|e| e.to_string())?;
                self.agents
                    .deploy(&t, spec, None)
                    .await
                    .map_err(|e| e.to_string())?;
                self.record_placement(spec, node, spec_hash, now, false)
                    .await?;
                Ok(format!(
                    "{} on {node}",
                    if spec.active { "started" } else { "stopped" }
                ))
            }
            Action::Undeploy { service, node } => {
                let t = self.target(node).await.map_err(|e| e.to_string())?;
                self.agents
                    .undeploy(&t, service)
                    .await
                    .map_err(|e| e.to_string())?;
                let s = service.clone();
                self.state
                    .write(move |w| {
                        w.remove_placement(&s)?;
                        w.reset_heal_of_service(&s)
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!("undeployed from {node} (data kept)"))
            }
            Action::Heal {
                service,
                node,
                components,
                method,
            } => {
                let (s, cs) = (service.clone(), components.clone());
                self.state
                    .write(move |w| {
                        for c in &cs {
                            w.record_heal_attempt(&s, c, now, None)?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let t = self.target(node).await.map_err(|e| e.to_string())?;
                let r = match method {
                    HealMethod::Start => {
                        let mut r = Ok(());
                        for c in components {
                            if let Err(e) = self.agents.start(&t, service, Some(c)).await {
                                r = Err(e.to_string());
                                break;
                            }
                        }
                        r
                    }
                    HealMethod::Redeploy => {
                        let spec = need_spec(service)?;
                        match self.agents.deploy(&t, spec, None).await {
                            Ok(_) => {
                                self.record_placement(
                                    spec,
                                    node,
                                    &mcp_spec::spec_hash(spec),
                                    now,
                                    false,
                                )
                                .await
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    }
                };
                if let Err(e) = &r {
                    for c in components {
                        let (s, c, e) = (service.clone(), c.clone(), e.clone());
                        let _ = self
                            .state
                            .write(move |w| w.record_heal_error(&s, &c, &e))
                            .await;
                    }
                }
                r.map(|()| format!("self-heal attempt for {}", components.join(", ")))
            }
            Action::Alert {
                service,
                node,
                component,
                detail,
            } => {
                tracing::warn!(
                    target: "mcp::alert",
                    event = "degraded",
                    service = %service,
                    node = %node,
                    component = %component,
                    detail = %detail,
                    "service degraded: self-heal gave up"
                );
                let (s, c) = (service.clone(), component.clone());
                self.state
                    .write(move |w| w.mark_heal_alerted(&s, &c))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok("alert logged (no alert command is configured)".to_string())
            }
            Action::Migrate { service, from, to } => Err(format!(
                "migrating {service} from {from} to {to} is not available yet; the service stays on {from}"
            )),
            Action::SetDns { .. }
            | Action::RemoveDns { .. }
            | Action::SetEdgeRoute { .. }
            | Action::RemoveEdgeRoute { .. } => {
                Err("no adapter is available for this step".to_string())
            }
        }
    }

    /// Records that `spec` now runs on `node` after a deploy outside a pass
    /// (one component, `Deploy` with `component`); heal records are kept.
    pub async fn record_deployed(&self, spec: &ServiceSpec, node: &str) -> Result<(), String> {
        let hash = mcp_spec::spec_hash(spec);
        self.record_placement(spec, node, &hash, self.now(), false)
            .await
    }

    async fn record_placement(
        &self,
        spec: &ServiceSpec,
        node: &str,
        spec_hash: &str,
        now: SystemTime,
        reset_heal: bool,
    ) -> Result<(), String> {
        let (spec, node, spec_hash) = (spec.clone(), node.to_string(), spec_hash.to_string());
        self.state
            .write(move |w| {
                let deployed_at = match w.placement(&spec.name)? {
                    Some(p) if !reset_heal && p.node == node => p.deployed_at,
                    _ => now,
                };
                w.put_placement(&state::Placement {
                    service: spec.name.clone(),
                    node: node.to_string(),
                    tier: spec.tier,
                    spec_hash: spec_hash.to_string(),
                    spec: spec.clone(),
                    deployed_at,
                })?;
                if reset_heal {
                    w.reset_heal_of_service(&spec.name)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| format!("deployed, but recording the placement failed: {e}"))
    }

    // -- the loop -----------------------------------------------------------------

    /// Runs passes on every trigger until `shutdown` turns true: the periodic
    /// timer, [`Reconciler::kick`], and new commits from `heads` (GitOps).
    /// A pass in progress finishes before the loop returns.
    pub async fn run(
        self: Arc<Self>,
        mut heads: Option<tokio::sync::mpsc::Receiver<crate::watch::HeadEvent>>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reason = tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => "periodic".to_string(),
                _ = self.kick.notified() => "fleet change".to_string(),
                ev = recv_head(&mut heads) => match ev {
                    Some(ev) => format!(
                        "new commit {}",
                        ev.commit.as_ref().map_or("(none)", |c| c.short())
                    ),
                    None => { heads = None; continue; }
                },
            };
            if *shutdown.borrow() {
                break;
            }
            let opts = PassOptions {
                reason,
                ..PassOptions::default()
            };
            if let Err(e) = self.reconcile(opts).await {
                tracing::error!(error = %e, "reconcile pass failed; nothing applied");
            }
        }
        tracing::info!("control loop stopped");
    }
}

async fn recv_head(
    heads: &mut Option<tokio::sync::mpsc::Receiver<crate::watch::HeadEvent>>,
) -> Option<crate::watch::HeadEvent> {
    match heads {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Ready or skipped (reported as skipped); blocked steps are left out.
fn runnable(s: &&Step) -> bool {
    s.blocked_reason().is_none()
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
