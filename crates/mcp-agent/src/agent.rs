//! The agent's operations (docs/ARCHITECTURE.md), independent of gRPC: deploy,
//! undeploy, stop / start / restart, bulk status, adopt, logs, events,
//! health, start-up convergence and the monitor loop.
//!
//! [`Agent`] is generic over the [`ContainerRuntime`] (podman in
//! production, [`mcp_runtime::FakeRuntime`] in unit tests). The registry
//! connection is not `Sync`: it sits behind a mutex and is only used from
//! blocking tasks ([`tokio::task::spawn_blocking`]).
//!
//! # Rules
//!
//! - **One operation per service at a time.** Deploy, undeploy, stop,
//!   start, restart, adopt and start-up convergence take the service's
//!   lock. The monitor never waits for it: it leaves busy services out of
//!   its round and drops what it saw of a service whose lock was taken
//!   while it looked (a per-service generation counter).
//! - **Deploy changes only what changed.** Every container carries the
//!   label [`LABEL_CONFIG_HASH`], a hash of the complete container
//!   configuration (image, env including `$PORT`s, volumes, command, user,
//!   network, restart policy, published ports, labels). A component whose
//!   container exists with the same hash is not recreated (only started or
//!   stopped to match its desired state); a changed or missing one is
//!   pulled, removed and created again. Containers of components that left
//!   the spec are removed. Images are pulled before anything is touched, so
//!   a failing pull changes nothing.
//! - **Ports are host ports, published as themselves.** Every route gets a
//!   host port from the registry ([`Registry::allocate_service_ports`]),
//!   passed as `$PORT` / `$PORT_<NAME>`; the container listens on it and
//!   podman publishes `bind_address:port:port`. With `network = "host"`
//!   or `"none"` nothing is published.
//! - **`active = false`** creates changed containers and stops them again
//!   (the runtime only has create-and-start), and stops unchanged running
//!   ones.
//! - Components desired `ignore` are left alone by deploy, stop/start of
//!   the whole service, convergence and the monitor.
//! - A container the agent does not manage (no `mcp.*` labels and not
//!   recorded by `adopt`) is never removed by a deploy: the deploy fails
//!   and says to adopt or remove it.
//! - The agent records what it did as events (`deploy`, `remove`, `stop`,
//!   `start`, `restart`, `undeploy`, `adopt`) and sets the observed state
//!   right after acting, so the monitor does not count intended changes as
//!   transitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use mcp_runtime::{
    ContainerConfig, ContainerInfo, ContainerRuntime, LogLine, LogOptions, PortBinding,
    RuntimeError,
};
use mcp_spec::{ComponentSpec, LoadOptions, ServiceSpec, Tier, Violation};
use sha2::{Digest, Sha256};
use tokio_stream::{Stream, StreamExt, StreamMap};

use crate::alert::Alerter;
use crate::clock::Timestamp;
use crate::config::{Config, NodeRole};
use crate::files::{self, FileError};
use crate::monitor::{observe, Finding, MonitorInput, MonitorPolicy, ObservedContainer};
use crate::ports::{PortAssignment, PortProbe, PortRange};
use crate::registry::{
    ComponentRecord, DesiredState, Event, EventKind, EventQuery, NewEvent, ObservedState, Registry,
    RegistryError, ServiceRecord,
};

/// Label holding the hash of a container's whole configuration (see the
/// module docs).
pub const LABEL_CONFIG_HASH: &str = "mcp.config-hash";

/// How long `stop` waits after SIGTERM before SIGKILL, by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The wall clock the agent reads (injected in tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What the agent needs from its configuration.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// This node's name (the `mcp.node` label of its containers).
    pub node: String,
    pub role: NodeRole,
    pub port_range: PortRange,
    /// Where containers publish their ports.
    pub bind_address: IpAddr,
    /// Parent of every `<service>/` data directory.
    pub files_root: PathBuf,
    pub stop_timeout: Duration,
    pub monitor: MonitorPolicy,
}

impl AgentSettings {
    /// Defaults for `node`: worker, ports 10000-60000 on 127.0.0.1, data
    /// under `/srv`, 10 s stop timeout, default monitor policy.
    pub fn new(node: impl Into<String>) -> AgentSettings {
        AgentSettings {
            node: node.into(),
            role: NodeRole::Worker,
            port_range: PortRange::new(10000, 60000).expect("10000-60000 is a valid port range"),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            files_root: PathBuf::from("/srv"),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            monitor: MonitorPolicy::default(),
        }
    }

    /// The settings of a validated configuration.
    pub fn from_config(c: &Config) -> Result<AgentSettings, AgentError> {
        let port_range = c
            .ports
            .port_range()
            .ok_or_else(|| AgentError::InvalidArgument {
                message: format!(
                    "ports.range [{}, {}] is not a range",
                    c.ports.range.0, c.ports.range.1
                ),
            })?;
        Ok(AgentSettings {
            node: c.node.name.clone(),
            role: c.node.role,
            port_range,
            bind_address: c.ports.bind_address,
            files_root: c.files.root.clone(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            monitor: MonitorPolicy::from_config(c),
        })
    }
}

/// Everything an agent operation can fail with. Messages name the node,
/// service and component concerned.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("service {service}: invalid spec: {}", list_violations(violations))]
    InvalidSpec {
        service: String,
        violations: Vec<Violation>,
    },
    #[error("{message}")]
    InvalidArgument { message: String },
    #[error("service {service} is not deployed on node {node}")]
    ServiceNotFound { service: String, node: String },
    #[error("service {service} has no component {component} on node {node}")]
    ComponentNotFound {
        service: String,
        component: String,
        node: String,
    },
    /// The request cannot be carried out in the current state (wrong node,
    /// edge node, unmanaged container in the way, already managed...).
    #[error("{message}")]
    FailedPrecondition { message: String },
    #[error("{what} is not supported by this agent yet")]
    Unsupported { what: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{context}: {source}")]
    Runtime {
        context: String,
        #[source]
        source: RuntimeError,
    },
    #[error(transparent)]
    Files(#[from] FileError),
    #[error("{message}")]
    Internal { message: String },
}

fn list_violations(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl AgentError {
    fn runtime(context: impl Into<String>, source: RuntimeError) -> AgentError {
        AgentError::Runtime {
            context: context.into(),
            source,
        }
    }

    fn precondition(message: impl Into<String>) -> AgentError {
        AgentError::FailedPrecondition {
            message: message.into(),
        }
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// Outcome of one step of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    /// Nothing to do (already in the wanted state, not applicable...).
    Skipped,
    Failed(String),
}

/// One step of an operation, e.g. `create web-api`, with a detail for the
/// operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub step: String,
    pub outcome: StepOutcome,
    pub detail: String,
}

impl Step {
    fn done(step: impl Into<String>, detail: impl Into<String>) -> Step {
        Step {
            step: step.into(),
            outcome: StepOutcome::Done,
            detail: detail.into(),
        }
    }

    fn skipped(step: impl Into<String>, detail: impl Into<String>) -> Step {
        Step {
            step: step.into(),
            outcome: StepOutcome::Skipped,
            detail: detail.into(),
        }
    }

    fn failed(step: impl Into<String>, error: impl Into<String>) -> Step {
        Step {
            step: step.into(),
            outcome: StepOutcome::Failed(error.into()),
            detail: String::new(),
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.outcome, StepOutcome::Failed(_))
    }
}

/// A component as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentStatus {
    pub name: String,
    pub container: String,
    /// What runs (the container's image), or the spec's image when there is
    /// no container.
    pub image: String,
    pub version: String,
    pub desired: DesiredState,
    pub observed: ObservedState,
    pub restart_count: u32,
    /// When the container started, if it is running.
    pub started: Option<SystemTime>,
    /// Route name (`""` for the unnamed route) → host port.
    pub ports: BTreeMap<String, u16>,
    /// The container's id, if it exists.
    pub container_id: Option<String>,
}

/// A service as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub active: bool,
    pub spec_hash: String,
    pub tier: Tier,
    pub components: Vec<ComponentStatus>,
}

/// [`Agent::list_services`]: every service, and managed containers of this
/// node that belong to no registered service or component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub services: Vec<ServiceStatus>,
    pub orphans: Vec<String>,
}

/// [`Agent::deploy`]'s result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOutcome {
    pub service: String,
    pub spec_hash: String,
    pub steps: Vec<Step>,
    /// Components (re)created by this deploy.
    pub replaced: Vec<String>,
    pub status: ServiceStatus,
}

/// [`Agent::health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Healthy,
    Degraded,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub status: HealthStatus,
    /// Managed containers on this node.
    pub containers: u32,
    /// `<service>/<component>: desired running, observed <state>`.
    pub problems: Vec<String>,
}

/// What one monitor round found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorReport {
    pub time: Timestamp,
    pub drift: Vec<Finding>,
    pub flapping: Vec<Finding>,
    /// Events recorded this round.
    pub events: Vec<NewEvent>,
    /// Keys of alerts sent this round.
    pub alerts_sent: Vec<String>,
    /// Keys of alerts held back by their cooldown.
    pub suppressed: Vec<String>,
    /// `key: error` of alerts that could not be sent (retried next round).
    pub alert_errors: Vec<String>,
    /// Services left out because an operation held their lock.
    pub skipped_services: Vec<String>,
}

/// A stream of `(component, line)` from [`Agent::logs`].
pub type ComponentLogStream =
    Pin<Box<dyn Stream<Item = Result<(String, LogLine), AgentError>> + Send + 'static>>;

// ---------------------------------------------------------------------------
// Per-service locks

#[derive(Default)]
struct ServiceLocks {
    map: Mutex<HashMap<String, Arc<ServiceLock>>>,
}

#[derive(Default)]
struct ServiceLock {
    mutex: Arc<tokio::sync::Mutex<()>>,
    /// Bumped when an operation releases the lock.
    generation: AtomicU64,
}

struct ServiceGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    lock: Arc<ServiceLock>,
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        self.lock.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// `(busy, generation)` of one service.
type LockState = (bool, u64);

impl ServiceLocks {
    fn entry(&self, service: &str) -> Arc<ServiceLock> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(service.to_string()).or_default().clone()
    }

    async fn lock(&self, service: &str) -> ServiceGuard {
        let lock = self.entry(service);
        let guard = lock.mutex.clone().lock_owned().await;
        ServiceGuard {
            _guard: guard,
            lock,
        }
    }

    fn state(&self, service: &str) -> LockState {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(service) {
            None => (false, 0),
            Some(l) => (
                l.mutex.try_lock().is_err(),
                l.generation.load(Ordering::SeqCst),
            ),
        }
    }

    fn snapshot(&self) -> HashMap<String, LockState> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(k, l)| {
                (
                    k.clone(),
                    (
                        l.mutex.try_lock().is_err(),
                        l.generation.load(Ordering::SeqCst),
                    ),
                )
            })
            .collect()
    }

    /// Busy now, or an operation ran since `before` was taken.
    fn changed_since(&self, before: &HashMap<String, LockState>, service: &str) -> bool {
        let (busy, generation) = self.state(service);
        let old = before.get(service).map_or(0, |s| s.1);
        busy || generation != old
    }
}

// ---------------------------------------------------------------------------
// The agent

/// The node agent's core. See the module documentation.
pub struct Agent<R> {
    runtime: R,
    registry: Arc<Mutex<Registry>>,
    settings: AgentSettings,
    probe: Arc<dyn PortProbe + Send + Sync>,
    alerter: Option<Alerter>,
    clock: Clock,
    locks: ServiceLocks,
    last_monitor: Mutex<Option<MonitorReport>>,
}

impl<R> std::fmt::Debug for Agent<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<R: ContainerRuntime + 'static> Agent<R> {
    /// An agent with the production port probe (a bind test on
    /// `bind_address`), the wall clock and no alert command.
    pub fn new(runtime: R, registry: Registry, settings: AgentSettings) -> Agent<R> {
        let probe = crate::ports::BindProbe {
            addr: settings.bind_address,
        };
        Agent {
            runtime,
            registry: Arc::new(Mutex::new(registry)),
            settings,
            probe: Arc::new(probe),
            alerter: None,
            clock: Arc::new(Timestamp::now),
            locks: ServiceLocks::default(),
            last_monitor: Mutex::new(None),
        }
    }

    /// The agent of a configuration: settings and alert command from it.
    pub fn from_config(config: &Config, runtime: R, registry: Registry) -> Result<Agent<R>> {
        let settings = AgentSettings::from_config(config)?;
        let mut agent = Agent::new(runtime, registry, settings);
        agent.alerter = Alerter::from_config(config);
        Ok(agent)
    }

    pub fn with_alerter(mut self, alerter: Option<Alerter>) -> Agent<R> {
        self.alerter = alerter;
        self
    }

    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Agent<R> {
        self.clock = Arc::new(clock);
        self
    }

    pub fn with_probe(mut self, probe: impl PortProbe + Send + Sync + 'static) -> Agent<R> {
        self.probe = Arc::new(probe);
        self
    }

    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    pub fn node(&self) -> &str {
        &self.settings.node
    }

    /// The last monitor round's report, if any ran.
    pub fn last_monitor(&self) -> Option<MonitorReport> {
        self.last_monitor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Runs `f` on the registry in a blocking task.
    async fn db<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Registry) -> Result<T, RegistryError> + Send + 'static,
    {
        let reg = self.registry.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = reg.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| AgentError::Internal {
            message: format!("registry task failed: {e}"),
        })?
        .map_err(AgentError::from)
    }

    async fn record_events(&self, events: Vec<NewEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.db(move |r| r.record_events(&events)).await
    }

    fn event(&self, service: &str, component: &str, kind: &str, detail: String) -> NewEvent {
        NewEvent {
            service: service.to_string(),
            component: component.to_string(),
            prev_state: None,
            new_state: None,
            kind: EventKind::Other(kind.to_string()),
            detail,
            time: self.now(),
        }
    }

    async fn service_record(&self, service: &str) -> Result<ServiceRecord> {
        let name = service.to_string();
        self.db(move |r| r.get_service(&name))
            .await?
            .ok_or_else(|| AgentError::ServiceNotFound {
                service: service.to_string(),
                node: self.settings.node.clone(),
            })
    }

    fn is_mine(&self, info: &ContainerInfo) -> bool {
        info.node().is_none_or(|n| n == self.settings.node)
    }

    /// Managed containers of this node, plus (by name) containers of
    /// registry components that carry no labels (adopted ones).
    async fn observe_containers(
        &self,
        components: &[ComponentRecord],
    ) -> Result<Vec<ContainerInfo>> {
        let mut list: Vec<ContainerInfo> = self
            .runtime
            .list_managed()
            .await
            .map_err(|e| AgentError::runtime(format!("node {}: list containers", self.node()), e))?
            .into_iter()
            .filter(|c| self.is_mine(c))
            .collect();
        let names: BTreeSet<String> = list.iter().map(|c| c.name.clone()).collect();
        for c in components {
            if names.contains(&c.container_name) {
                continue;
            }
            match self.runtime.inspect(&c.container_name).await {
                Ok(Some(info)) if info.service().is_none_or(|s| s == c.service) => list.push(info),
                Ok(_) => {}
                Err(e) => {
                    return Err(AgentError::runtime(
                        format!("{}/{}: inspect {}", c.service, c.name, c.container_name),
                        e,
                    ))
                }
            }
        }
        Ok(list)
    }

    /// The containers that belong to `service`: labelled with it (this
    /// node), or named like one of `names`. Keyed by container name.
    async fn service_containers(
        &self,
        service: &str,
        names: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, ContainerInfo>> {
        let mut out = BTreeMap::new();
        let managed =
            self.runtime.list_managed().await.map_err(|e| {
                AgentError::runtime(format!("service {service}: list containers"), e)
            })?;
        for c in managed {
            if c.service() == Some(service) && self.is_mine(&c) {
                out.insert(c.name.clone(), c);
            }
        }
        for n in names {
            if out.contains_key(n) {
                continue;
            }
            if let Some(info) =
                self.runtime.inspect(n).await.map_err(|e| {
                    AgentError::runtime(format!("service {service}: inspect {n}"), e)
                })?
            {
                out.insert(n.clone(), info);
            }
        }
        Ok(out)
    }

    fn container_config(
        &self,
        spec: &ServiceSpec,
        comp: &ComponentSpec,
        ports: &[PortAssignment],
    ) -> ContainerConfig {
        let mut cfg = ContainerConfig::for_component(spec, comp, &self.settings.node);
        let publish = !matches!(comp.network.as_deref(), Some("host") | Some("none"));
        for p in ports.iter().filter(|p| p.component == comp.name) {
            cfg.env.push(format!("{}={}", p.env, p.port));
            if publish {
                cfg.ports
                    .push(PortBinding::tcp(self.settings.bind_address, p.port, p.port));
            }
        }
        let hash = config_hash(&cfg);
        cfg.labels.insert(LABEL_CONFIG_HASH.to_string(), hash);
        cfg
    }

    async fn pull(&self, service: &str, image: &str) -> Result<Step> {
        let out = self
            .runtime
            .pull(image)
            .await
            .map_err(|e| AgentError::runtime(format!("service {service}: pull {image}"), e))?;
        Ok(Step::done(format!("pull {image}"), format!("{out:?}")))
    }

    async fn stop_container(&self, context: &str, name: &str) -> Result<()> {
        self.runtime
            .stop(name, self.settings.stop_timeout)
            .await
            .map_err(|e| AgentError::runtime(format!("{context}: stop {name}"), e))
    }

    async fn start_container(&self, context: &str, name: &str) -> Result<()> {
        self.runtime
            .start(name)
            .await
            .map_err(|e| AgentError::runtime(format!("{context}: start {name}"), e))
    }

    async fn remove_container(&self, context: &str, name: &str) -> Result<bool> {
        match self.runtime.remove(name, true).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(AgentError::runtime(format!("{context}: remove {name}"), e)),
        }
    }

    /// Inspects every component of `service` and stores what it saw as the
    /// observed state (no events: the caller acted on purpose). Returns the
    /// containers found, for [`Self::status_from`].
    async fn record_observed(&self, service: &str) -> Result<Vec<ContainerInfo>> {
        let name = service.to_string();
        let comps = self.db(move |r| r.components(&name)).await?;
        let mut updates = Vec::new();
        let mut found = Vec::new();
        for c in comps {
            let info = self.runtime.inspect(&c.container_name).await.map_err(|e| {
                AgentError::runtime(format!("{}/{}: inspect", c.service, c.name), e)
            })?;
            let (state, restarts) = match &info {
                Some(i) => (observed_state(i), i.restart_count),
                None => (ObservedState::Missing, c.restart_count),
            };
            updates.push((c.name, state, restarts));
            found.extend(info);
        }
        let name = service.to_string();
        self.db(move |r| {
            for (comp, state, restarts) in &updates {
                r.set_component_observed(&name, comp, state, *restarts)?;
            }
            Ok(())
        })
        .await?;
        Ok(found)
    }

    /// The status of `service` from containers just inspected.
    async fn status_from(
        &self,
        service: &str,
        containers: &[ContainerInfo],
    ) -> Result<ServiceStatus> {
        let name = service.to_string();
        let (record, ports) = self
            .db(move |r| Ok((r.get_service(&name)?, r.ports(Some(&name))?)))
            .await?;
        let record = record.ok_or_else(|| AgentError::ServiceNotFound {
            service: service.to_string(),
            node: self.settings.node.clone(),
        })?;
        Ok(service_status(
            &record,
            containers,
            &ports_by_component(&ports),
        ))
    }

    /// Creates (and starts) one component's container. A new container of a
    /// pinned image is tried first and its image pulled only when missing;
    /// otherwise the image is pulled first (once per deploy). In a fresh
    /// deploy, a name clash is checked (refused when the container is not
    /// this service's) and this service's leftover container replaced.
    /// Returns the pull step, if a pull happened.
    #[allow(clippy::too_many_arguments)]
    async fn create_component(
        &self,
        svc: &str,
        ctx: &str,
        cfg: &ContainerConfig,
        optimistic: bool,
        fresh: bool,
        recorded: &BTreeSet<String>,
        pulled: &mut BTreeSet<String>,
    ) -> Result<Option<Step>> {
        let mut pull_step = None;
        if !optimistic && pulled.insert(cfg.image.clone()) {
            pull_step = Some(self.pull(svc, &cfg.image).await?);
        }
        let created = match self.runtime.create_and_start(cfg).await {
            Err(RuntimeError::ImageNotFound { .. }) if optimistic => {
                pulled.insert(cfg.image.clone());
                pull_step = Some(self.pull(svc, &cfg.image).await?);
                self.runtime.create_and_start(cfg).await
            }
            Err(RuntimeError::AlreadyExists { .. }) if fresh => {
                let name = &cfg.name;
                let info =
                    self.runtime.inspect(name).await.map_err(|e| {
                        AgentError::runtime(format!("deploy {svc}: inspect {name}"), e)
                    })?;
                if let Some(info) = &info {
                    self.check_not_in_the_way(svc, name, info, recorded)?;
                }
                // Ours (labelled with this service): the registry lost it.
                self.remove_container(ctx, name).await?;
                self.runtime.create_and_start(cfg).await
            }
            other => other,
        };
        created.map_err(|e| AgentError::runtime(format!("deploy {svc}/{}", cfg.component), e))?;
        Ok(pull_step)
    }

    /// Undoes a failed deploy of a service the registry did not know:
    /// removes the containers it created and the registry record. Best
    /// effort; failures are logged (the deploy's own error is what counts).
    async fn forget_new_service(
        &self,
        svc: &str,
        ctx: &str,
        spec: &ServiceSpec,
        created: &[String],
    ) {
        for comp in created {
            let name = spec.container_name(comp);
            if let Err(e) = self.remove_container(ctx, &name).await {
                tracing::warn!(service = svc, container = %name, error = %e, "rollback: cannot remove");
            }
        }
        let name = svc.to_string();
        if let Err(e) = self.db(move |r| r.remove_service(&name).map(|_| ())).await {
            tracing::warn!(service = svc, error = %e, "rollback: cannot forget the service");
        }
    }

    /// Refuses a deploy whose container name is taken by something that is
    /// not this service's.
    fn check_not_in_the_way(
        &self,
        svc: &str,
        name: &str,
        info: &ContainerInfo,
        recorded: &BTreeSet<String>,
    ) -> Result<()> {
        if info.service() == Some(svc) || recorded.contains(name) {
            return Ok(());
        }
        Err(AgentError::precondition(match info.service() {
            Some(other) => format!(
                "service {svc}: container {name} on node {} belongs to service {other}",
                self.node()
            ),
            None => format!(
                "service {svc}: container {name} exists on node {} and is not managed by MCP; \
                 adopt it (mcp adopt {svc}) or remove it",
                self.node()
            ),
        }))
    }

    async fn status_of(&self, service: &str) -> Result<ServiceStatus> {
        let name = service.to_string();
        let (record, ports) = self
            .db(move |r| Ok((r.get_service(&name)?, r.ports(Some(&name))?)))
            .await?;
        let record = record.ok_or_else(|| AgentError::ServiceNotFound {
            service: service.to_string(),
            node: self.settings.node.clone(),
        })?;
        let containers = self.observe_containers(&record.components).await?;
        let port_map = ports_by_component(&ports);
        Ok(service_status(&record, &containers, &port_map))
    }

    fn check_deployable(&self, spec: &ServiceSpec, only: Option<&str>) -> Result<()> {
        let violations = mcp_spec::validate(spec, &LoadOptions::default());
        if !violations.is_empty() {
            return Err(AgentError::InvalidSpec {
                service: spec.name.clone(),
                violations,
            });
        }
        if self.settings.role == NodeRole::Edge {
            return Err(AgentError::precondition(format!(
                "node {} is an edge node: it runs reverse-proxy routes only, never application \
                 containers (service {})",
                self.node(),
                spec.name
            )));
        }
        if let Some(pin) = &spec.node {
            if pin != &self.settings.node {
                return Err(AgentError::precondition(format!(
                    "service {} is pinned to node {pin}, this is node {}",
                    spec.name,
                    self.node()
                )));
            }
        }
        if let Some(c) = only {
            if spec.component(c).is_none() {
                return Err(AgentError::InvalidArgument {
                    message: format!("service {} has no component {c} in its spec", spec.name),
                });
            }
        }
        Ok(())
    }

    // ----- deploy --------------------------------------------------------

    /// Deploys `spec` (or only its component `only`). See the module docs
    /// for what is recreated.
    pub async fn deploy(&self, spec: ServiceSpec, only: Option<&str>) -> Result<DeployOutcome> {
        self.check_deployable(&spec, only)?;
        let svc = spec.name.clone();
        let _guard = self.locks.lock(&svc).await;
        let hash = mcp_spec::spec_hash(&spec);
        let ctx = format!("deploy {svc}");

        let name = svc.clone();
        let (previous, known_ports) = self
            .db(move |r| Ok((r.get_service(&name)?, r.ports(Some(&name))?)))
            .await?;
        let wanted: BTreeSet<String> = spec
            .components
            .iter()
            .map(|c| spec.container_name(&c.name))
            .collect();
        // Containers recorded for this service (adopted ones carry no
        // labels) are ours, whatever their names.
        let recorded: BTreeSet<String> = previous
            .iter()
            .flat_map(|p| p.components.iter().map(|c| c.container_name.clone()))
            .collect();
        // A service the registry has never seen has no containers of ours:
        // skip listing them (a podman call or two) and let a name clash
        // surface when the container is created (`AlreadyExists`).
        let fresh = previous.is_none();
        let current = if fresh {
            BTreeMap::new()
        } else {
            self.service_containers(&svc, &wanted.union(&recorded).cloned().collect())
                .await?
        };

        // Containers in the way that are not this service's.
        for n in &wanted {
            if let Some(info) = current.get(n) {
                self.check_not_in_the_way(&svc, n, info, &recorded)?;
            }
        }

        let in_scope: Vec<&ComponentSpec> = spec
            .components
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.name))
            .collect();

        // Pull what will be recreated, before touching anything (a new
        // container of a pinned image is tried first and pulled only if the
        // image is missing: see below).
        let prospective = prospective_ports(&spec, &known_ports, self.settings.port_range);
        let mut steps = Vec::new();
        let mut pulled = BTreeSet::new();
        for c in &in_scope {
            let name = spec.container_name(&c.name);
            let same = prospective.as_ref().is_some_and(|ports| {
                let cfg = self.container_config(&spec, c, ports);
                current.get(&name).is_some_and(|i| same_config(i, &cfg))
            });
            let lazy =
                !current.contains_key(&name) && mcp_spec::image_version(&c.image) != "latest";
            if !same && !lazy && pulled.insert(c.image.clone()) {
                steps.push(self.pull(&svc, &c.image).await?);
            }
        }

        // Record the spec and allocate ports.
        let range = self.settings.port_range;
        let probe = self.probe.clone();
        let spec_db = spec.clone();
        let hash_db = hash.clone();
        let (upsert, ports, records) = self
            .db(move |r| {
                let upsert = r.upsert_service(&spec_db, &hash_db)?;
                let ports = r.allocate_service_ports(&spec_db, range, &*probe)?;
                let records = r.components(&spec_db.name)?;
                Ok((upsert, ports, records))
            })
            .await?;
        if !upsert.released_ports.is_empty() {
            steps.push(Step::done(
                "release ports",
                format!("{:?}", upsert.released_ports),
            ));
        }

        let mut events = Vec::new();
        // Containers no longer in the spec (whole-service deploys only).
        if only.is_none() {
            for (name, info) in &current {
                if wanted.contains(name) {
                    continue;
                }
                self.remove_container(&ctx, name).await?;
                let comp = info.component().unwrap_or_default().to_string();
                steps.push(Step::done(
                    format!("remove {name}"),
                    "no longer in the spec",
                ));
                events.push(self.event(&svc, &comp, "remove", format!("container {name} removed")));
            }
        }

        let desired: BTreeMap<&str, DesiredState> = records
            .iter()
            .map(|r| (r.name.as_str(), r.desired))
            .collect();
        let mut replaced = Vec::new();
        for c in &in_scope {
            let cfg = self.container_config(&spec, c, &ports);
            let name = cfg.name.clone();
            let want = desired
                .get(c.name.as_str())
                .copied()
                .unwrap_or(DesiredState::from_active(spec.active));
            if want == DesiredState::Ignore {
                steps.push(Step::skipped(
                    format!("component {}", c.name),
                    "desired state is ignore",
                ));
                continue;
            }
            let existing = current.get(&name);
            if let Some(info) = existing.filter(|i| same_config(i, &cfg)) {
                match (want, info.is_running()) {
                    (DesiredState::Running, false) => {
                        self.start_container(&ctx, &name).await?;
                        steps.push(Step::done(
                            format!("start {name}"),
                            "unchanged, was not running",
                        ));
                    }
                    (DesiredState::Stopped, true) => {
                        self.stop_container(&ctx, &name).await?;
                        steps.push(Step::done(format!("stop {name}"), "service is inactive"));
                    }
                    _ => steps.push(Step::skipped(format!("component {}", c.name), "unchanged")),
                }
                continue;
            }
            if existing.is_some() {
                self.remove_container(&ctx, &name).await?;
            }
            let optimistic = existing.is_none() && mcp_spec::image_version(&c.image) != "latest";
            let created = self
                .create_component(&svc, &ctx, &cfg, optimistic, fresh, &recorded, &mut pulled)
                .await;
            match created {
                Ok(pull_step) => steps.extend(pull_step),
                Err(e) => {
                    if fresh {
                        // Nothing of this service existed before: leave
                        // nothing behind (containers created so far, the
                        // registry record and its ports).
                        self.forget_new_service(&svc, &ctx, &spec, &replaced).await;
                    }
                    return Err(e);
                }
            }
            let detail = format!("{} ({})", c.image, c.version());
            steps.push(Step::done(
                format!(
                    "{} {name}",
                    if existing.is_some() {
                        "recreate"
                    } else {
                        "create"
                    }
                ),
                detail.clone(),
            ));
            events.push(self.event(&svc, &c.name, "deploy", detail));
            if want == DesiredState::Stopped {
                self.stop_container(&ctx, &name).await?;
                steps.push(Step::done(format!("stop {name}"), "service is inactive"));
            }
            replaced.push(c.name.clone());
        }
        self.record_events(events).await?;
        let observed = self.record_observed(&svc).await?;
        let status = self.status_from(&svc, &observed).await?;
        tracing::info!(service = %svc, hash = %hash, replaced = ?replaced, "deployed");
        Ok(DeployOutcome {
            service: svc,
            spec_hash: hash,
            steps,
            replaced,
            status,
        })
    }

    // ----- undeploy ------------------------------------------------------

    /// Removes the service's containers and registry entry (releasing its
    /// ports); deletes `<files root>/<service>/` only with `remove_data`.
    pub async fn undeploy(&self, service: &str, remove_data: bool) -> Result<Vec<Step>> {
        let _guard = self.locks.lock(service).await;
        let record = self.service_record(service).await?;
        let ctx = format!("undeploy {service}");
        let names: BTreeSet<String> = record
            .components
            .iter()
            .map(|c| c.container_name.clone())
            .collect();
        let containers = self.service_containers(service, &names).await?;
        let mut steps = Vec::new();
        for name in containers.keys() {
            if self.remove_container(&ctx, name).await? {
                steps.push(Step::done(format!("remove {name}"), ""));
            }
        }
        let svc = service.to_string();
        let released = self.db(move |r| r.remove_service(&svc)).await?;
        steps.push(Step::done(
            "registry",
            format!("removed; released ports {released:?}"),
        ));
        let dir = self.settings.files_root.join(service);
        if remove_data {
            steps.push(remove_data_dir(&dir)?);
        } else {
            steps.push(Step::skipped(
                format!("data {}", dir.display()),
                "kept (remove_data not set)",
            ));
        }
        self.record_events(vec![self.event(
            service,
            "",
            "undeploy",
            format!("removed {} container(s)", containers.len()),
        )])
        .await?;
        tracing::info!(service, remove_data, "undeployed");
        Ok(steps)
    }

    // ----- stop / start / restart ---------------------------------------

    fn targets<'a>(
        &self,
        record: &'a ServiceRecord,
        component: Option<&str>,
    ) -> Result<Vec<&'a ComponentRecord>> {
        match component {
            Some(c) => record
                .components
                .iter()
                .find(|r| r.name == c)
                .map(|r| vec![r])
                .ok_or_else(|| AgentError::ComponentNotFound {
                    service: record.name.clone(),
                    component: c.to_string(),
                    node: self.settings.node.clone(),
                }),
            None => Ok(record
                .components
                .iter()
                .filter(|c| c.desired != DesiredState::Ignore)
                .collect()),
        }
    }

    async fn set_desired(
        &self,
        service: &str,
        component: Option<&str>,
        running: bool,
    ) -> Result<()> {
        let svc = service.to_string();
        let comp = component.map(str::to_string);
        self.db(move |r| match comp {
            None => r.set_service_active(&svc, running),
            Some(c) => r.set_component_desired(&svc, &c, DesiredState::from_active(running)),
        })
        .await
    }

    /// Stops the service (every component not `ignore`) or one component,
    /// and records it as desired stopped.
    pub async fn stop(&self, service: &str, component: Option<&str>) -> Result<Vec<Step>> {
        let _guard = self.locks.lock(service).await;
        let record = self.service_record(service).await?;
        let targets = self.targets(&record, component)?;
        self.set_desired(service, component, false).await?;
        let ctx = format!("stop {service}");
        let mut steps = Vec::new();
        let mut events = Vec::new();
        for c in targets {
            let name = &c.container_name;
            match self.runtime.stop(name, self.settings.stop_timeout).await {
                Ok(()) => {
                    steps.push(Step::done(format!("stop {name}"), ""));
                    events.push(self.event(service, &c.name, "stop", "stopped by request".into()));
                }
                Err(e) if e.is_not_found() => {
                    steps.push(Step::skipped(format!("stop {name}"), "no such container"))
                }
                Err(e) => return Err(AgentError::runtime(format!("{ctx}/{}", c.name), e)),
            }
        }
        self.record_events(events).await?;
        self.record_observed(service).await?;
        Ok(steps)
    }

    /// Starts the service or one component (recreating missing containers
    /// from the stored spec) and records it as desired running.
    pub async fn start(&self, service: &str, component: Option<&str>) -> Result<Vec<Step>> {
        let _guard = self.locks.lock(service).await;
        let record = self.service_record(service).await?;
        let targets: Vec<ComponentRecord> = self
            .targets(&record, component)?
            .into_iter()
            .cloned()
            .collect();
        self.set_desired(service, component, true).await?;
        let mut steps = Vec::new();
        let mut events = Vec::new();
        for c in &targets {
            let step = self.ensure_running(&record, c).await?;
            if step.outcome == StepOutcome::Done {
                events.push(self.event(service, &c.name, "start", step.detail.clone()));
            }
            steps.push(step);
        }
        self.record_events(events).await?;
        self.record_observed(service).await?;
        Ok(steps)
    }

    /// Stops and starts the service or one component; desired running.
    pub async fn restart(&self, service: &str, component: Option<&str>) -> Result<Vec<Step>> {
        let _guard = self.locks.lock(service).await;
        let record = self.service_record(service).await?;
        let targets: Vec<ComponentRecord> = self
            .targets(&record, component)?
            .into_iter()
            .cloned()
            .collect();
        self.set_desired(service, component, true).await?;
        let ctx = format!("restart {service}");
        let mut steps = Vec::new();
        let mut events = Vec::new();
        for c in &targets {
            match self
                .runtime
                .stop(&c.container_name, self.settings.stop_timeout)
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(AgentError::runtime(format!("{ctx}/{}", c.name), e)),
            }
            let mut step = self.ensure_running(&record, c).await?;
            step.step = format!("restart {}", c.container_name);
            events.push(self.event(service, &c.name, "restart", step.detail.clone()));
            steps.push(step);
        }
        self.record_events(events).await?;
        self.record_observed(service).await?;
        Ok(steps)
    }

    /// Starts the component's container, recreating it from the stored
    /// spec when it is missing.
    async fn ensure_running(&self, record: &ServiceRecord, c: &ComponentRecord) -> Result<Step> {
        let name = &c.container_name;
        let ctx = format!("{}/{}", record.name, c.name);
        let info = self
            .runtime
            .inspect(name)
            .await
            .map_err(|e| AgentError::runtime(format!("{ctx}: inspect {name}"), e))?;
        match info {
            Some(i) if i.is_running() => {
                Ok(Step::skipped(format!("start {name}"), "already running"))
            }
            Some(_) => {
                self.start_container(&ctx, name).await?;
                Ok(Step::done(format!("start {name}"), "started"))
            }
            None => {
                let spec = record.spec.clone();
                let Some(comp) = spec.component(&c.name).cloned() else {
                    return Err(AgentError::Internal {
                        message: format!(
                            "{ctx}: the stored spec of {} has no component {}",
                            record.name, c.name
                        ),
                    });
                };
                let range = self.settings.port_range;
                let probe = self.probe.clone();
                let spec_db = spec.clone();
                let ports = self
                    .db(move |r| r.allocate_service_ports(&spec_db, range, &*probe))
                    .await?;
                let cfg = self.container_config(&spec, &comp, &ports);
                let exists =
                    self.runtime.image_exists(&comp.image).await.map_err(|e| {
                        AgentError::runtime(format!("{ctx}: image {}", comp.image), e)
                    })?;
                if !exists {
                    self.pull(&record.name, &comp.image).await?;
                }
                self.runtime
                    .create_and_start(&cfg)
                    .await
                    .map_err(|e| AgentError::runtime(format!("{ctx}: create {name}"), e))?;
                Ok(Step::done(
                    format!("start {name}"),
                    format!(
                        "container was missing; recreated from the stored spec ({})",
                        comp.image
                    ),
                ))
            }
        }
    }

    // ----- status ----------------------------------------------------------

    /// Every service with its components' desired and observed state,
    /// versions, restart counts and ports; and the orphans.
    pub async fn list_services(&self) -> Result<Inventory> {
        let (records, ports) = self
            .db(|r| Ok((r.list_services()?, r.ports(None)?)))
            .await?;
        let all: Vec<ComponentRecord> = records
            .iter()
            .flat_map(|r| r.components.iter().cloned())
            .collect();
        let containers = self.observe_containers(&all).await?;
        let port_map = ports_by_component(&ports);
        let services: Vec<ServiceStatus> = records
            .iter()
            .map(|r| service_status(r, &containers, &port_map))
            .collect();
        let known: BTreeSet<(&str, &str)> = all
            .iter()
            .map(|c| (c.service.as_str(), c.name.as_str()))
            .collect();
        let known_names: BTreeSet<&str> = all.iter().map(|c| c.container_name.as_str()).collect();
        let mut orphans: Vec<String> = containers
            .iter()
            .filter(|c| c.is_managed())
            .filter(|c| {
                let labelled = (
                    c.service().unwrap_or_default(),
                    c.component().unwrap_or_default(),
                );
                !known.contains(&labelled) && !known_names.contains(c.name.as_str())
            })
            .map(|c| c.name.clone())
            .collect();
        orphans.sort();
        Ok(Inventory { services, orphans })
    }

    /// One service's status.
    pub async fn service_status(&self, service: &str) -> Result<ServiceStatus> {
        self.status_of(service).await
    }

    /// `healthy` unless a component desired running is not running.
    pub async fn health(&self) -> Result<Health> {
        let comps = self.db(|r| r.all_components()).await?;
        let containers = self.observe_containers(&comps).await?;
        let mut problems = Vec::new();
        for c in &comps {
            if c.desired != DesiredState::Running {
                continue;
            }
            let state = find_container(&containers, &c.service, &c.name, &c.container_name)
                .map_or(ObservedState::Missing, observed_state);
            if !state.is_running() {
                problems.push(format!(
                    "{}/{}: desired running, observed {state}",
                    c.service, c.name
                ));
            }
        }
        Ok(Health {
            status: if problems.is_empty() {
                HealthStatus::Healthy
            } else {
                HealthStatus::Degraded
            },
            containers: u32::try_from(containers.iter().filter(|c| c.is_managed()).count())
                .unwrap_or(u32::MAX),
            problems,
        })
    }

    /// Recorded events (see [`EventQuery`]).
    pub async fn events(&self, query: EventQuery) -> Result<Vec<Event>> {
        self.db(move |r| r.events(&query)).await
    }

    // ----- adopt -----------------------------------------------------------

    /// Takes over containers named `<service>-*` (component = the suffix)
    /// or exactly `<service>` (component `<service>`) that no registered
    /// service owns: records them as a service with desired running. The
    /// containers are not touched; a later deploy of the real spec replaces
    /// them.
    pub async fn adopt(&self, service: &str) -> Result<Vec<Step>> {
        if !mcp_spec::names::is_dns_label(service) {
            return Err(AgentError::InvalidArgument {
                message: format!("invalid service name {service:?}: not a DNS label"),
            });
        }
        let _guard = self.locks.lock(service).await;
        let svc = service.to_string();
        let (existing, all) = self
            .db(move |r| Ok((r.get_service(&svc)?, r.all_components()?)))
            .await?;
        if existing.is_some() {
            return Err(AgentError::precondition(format!(
                "service {service} is already managed on node {}; adopt is for containers MCP \
                 does not manage yet",
                self.node()
            )));
        }
        let known: BTreeSet<String> = all.into_iter().map(|c| c.container_name).collect();
        let prefix = format!("{service}-");
        let mut found = self
            .runtime
            .list_by_prefix(&prefix)
            .await
            .map_err(|e| AgentError::runtime(format!("adopt {service}: list {prefix}*"), e))?;
        if let Some(exact) =
            self.runtime.inspect(service).await.map_err(|e| {
                AgentError::runtime(format!("adopt {service}: inspect {service}"), e)
            })?
        {
            found.push(exact);
        }
        let mut steps = Vec::new();
        let mut components: Vec<(String, ContainerInfo)> = Vec::new();
        for info in found {
            let name = info.name.clone();
            if known.contains(&name) {
                continue; // another registered service's container
            }
            if info.service().is_some_and(|s| s != service) || !self.is_mine(&info) {
                steps.push(Step::skipped(
                    format!("adopt {name}"),
                    "labelled for another service or node",
                ));
                continue;
            }
            let comp = if name == service {
                service.to_string()
            } else {
                name[prefix.len()..].to_string()
            };
            if !mcp_spec::names::is_dns_label(&comp) {
                steps.push(Step::failed(
                    format!("adopt {name}"),
                    format!("component name {comp:?} is not a DNS label"),
                ));
                continue;
            }
            components.push((comp, info));
        }
        if components.is_empty() {
            return Err(AgentError::ServiceNotFound {
                service: format!("{service} (no containers named {service} or {prefix}* to adopt)"),
                node: self.settings.node.clone(),
            });
        }
        if components.len() > 1 && components.iter().any(|(_, i)| i.name == service) {
            return Err(AgentError::precondition(format!(
                "adopt {service}: both {service} and {prefix}* containers exist; a service's \
                 containers are either all {prefix}<component> or the single {service}"
            )));
        }
        components.sort_by(|a, b| a.0.cmp(&b.0));
        let spec = ServiceSpec {
            name: service.to_string(),
            tier: Tier::Worker,
            node: None,
            active: true,
            snapshot: None,
            components: components
                .iter()
                .map(|(name, info)| ComponentSpec {
                    name: name.clone(),
                    image: info.image.clone(),
                    volumes: Vec::new(),
                    cmd: Vec::new(),
                    env: Vec::new(),
                    network: None,
                    user: None,
                    restart: None,
                    routes: Vec::new(),
                    health: None,
                })
                .collect(),
        };
        let violations = mcp_spec::validate(&spec, &LoadOptions::default());
        if !violations.is_empty() {
            return Err(AgentError::InvalidSpec {
                service: service.to_string(),
                violations,
            });
        }
        let hash = mcp_spec::spec_hash(&spec);
        let spec_db = spec.clone();
        self.db(move |r| r.upsert_service(&spec_db, &hash).map(|_| ()))
            .await?;
        let mut events = Vec::new();
        for (comp, info) in &components {
            let detail = format!("{} ({}, {})", info.name, info.image, info.state);
            steps.push(Step::done(
                format!("adopt {}", info.name),
                format!("component {comp}: {detail}"),
            ));
            events.push(self.event(service, comp, "adopt", detail));
        }
        self.record_events(events).await?;
        self.record_observed(service).await?;
        tracing::info!(service, components = components.len(), "adopted");
        Ok(steps)
    }

    // ----- logs --------------------------------------------------------------

    /// The output of one component, or of every component of the service
    /// merged (each line tagged with its component).
    pub async fn logs(
        &self,
        service: &str,
        component: Option<&str>,
        opts: LogOptions,
    ) -> Result<ComponentLogStream> {
        let record = self.service_record(service).await?;
        let targets: Vec<&ComponentRecord> = match component {
            Some(_) => self.targets(&record, component)?,
            None => record.components.iter().collect(),
        };
        let mut streams = StreamMap::new();
        for c in targets {
            let s = self
                .runtime
                .logs(&c.container_name, opts)
                .await
                .map_err(|e| AgentError::runtime(format!("logs {service}/{}", c.name), e))?;
            streams.insert(c.name.clone(), s);
        }
        let svc = service.to_string();
        Ok(Box::pin(streams.map(move |(comp, item)| {
            item.map(|line| (comp.clone(), line))
                .map_err(|e| AgentError::runtime(format!("logs {svc}/{comp}"), e))
        })))
    }

    // ----- files -------------------------------------------------------------

    /// Writes one file under `<files root>/<service>/` (see [`files`]).
    pub async fn push_file(
        &self,
        service: &str,
        path: &str,
        content: Vec<u8>,
        mode: u32,
    ) -> Result<()> {
        let root = self.settings.files_root.clone();
        let (svc, rel) = (service.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || files::push_file(&root, &svc, &rel, &content, mode))
            .await
            .map_err(|e| AgentError::Internal {
                message: format!("push file task failed: {e}"),
            })?
            .map_err(AgentError::from)
    }

    /// Reads one file under `<files root>/<service>/`: content and mode.
    pub async fn pull_file(&self, service: &str, path: &str) -> Result<(Vec<u8>, u32)> {
        let root = self.settings.files_root.clone();
        let (svc, rel) = (service.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || files::pull_file(&root, &svc, &rel))
            .await
            .map_err(|e| AgentError::Internal {
                message: format!("pull file task failed: {e}"),
            })?
            .map_err(AgentError::from)
    }

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

    async fn ensure_stopped(&self, record: &ServiceRecord, c: &ComponentRecord) -> Result<Step> {
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
        for e in &outcome.events {
            tracing::info!(
                service = %e.service, component = %e.component, kind = %e.kind,
                prev = e.prev_state.as_deref().unwrap_or(""), new = e.new_state.as_deref().unwrap_or(""),
                detail = %e.detail, "monitor event"
            );
        }

        let mut report = MonitorReport {
            time: now,
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

    /// Runs [`Agent::monitor_once`] every `interval` until `shutdown`
    /// resolves. Errors are logged; the loop goes on.
    pub async fn run_monitor(
        &self,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {
                    if let Err(e) = self.monitor_once().await {
                        tracing::error!(error = %e, "monitor round failed");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// The observed state of a container. podman reports a finished process as
/// `stopped` until it has cleaned up and `exited` afterwards (and `dead`
/// when cleanup failed); all of them are `exited` here, so one crash is
/// one transition.
fn observed_state(info: &ContainerInfo) -> ObservedState {
    if info.state.has_finished() {
        ObservedState::Exited
    } else {
        ObservedState::parse(info.state.as_str())
    }
}

/// SHA-256 (hex) of the container configuration without the hash label.
pub fn config_hash(cfg: &ContainerConfig) -> String {
    let mut c = cfg.clone();
    c.labels.remove(LABEL_CONFIG_HASH);
    let json = serde_json::to_vec(&c).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

fn same_config(info: &ContainerInfo, cfg: &ContainerConfig) -> bool {
    match (
        info.labels.get(LABEL_CONFIG_HASH),
        cfg.labels.get(LABEL_CONFIG_HASH),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The ports the spec's routes would get if every one of them already has
/// a port in range; `None` when a route needs a new one.
fn prospective_ports(
    spec: &ServiceSpec,
    known: &[crate::ports::PortAllocation],
    range: PortRange,
) -> Option<Vec<PortAssignment>> {
    let mut out = Vec::new();
    for c in &spec.components {
        for r in &c.routes {
            let port = known
                .iter()
                .find(|p| p.component == c.name && p.route == r.name && range.contains(p.port))?
                .port;
            out.push(PortAssignment {
                component: c.name.clone(),
                route: r.name.clone(),
                port,
                env: r.port_env(),
            });
        }
    }
    Some(out)
}

type PortMap = BTreeMap<(String, String), BTreeMap<String, u16>>;

fn ports_by_component(ports: &[crate::ports::PortAllocation]) -> PortMap {
    let mut map: PortMap = BTreeMap::new();
    for p in ports {
        map.entry((p.service.clone(), p.component.clone()))
            .or_default()
            .insert(p.route.clone().unwrap_or_default(), p.port);
    }
    map
}

/// The container of a component: by its labels, else by its name (as the
/// monitor matches).
fn find_container<'a>(
    containers: &'a [ContainerInfo],
    service: &str,
    component: &str,
    container_name: &str,
) -> Option<&'a ContainerInfo> {
    containers
        .iter()
        .find(|i| i.service() == Some(service) && i.component() == Some(component))
        .or_else(|| containers.iter().find(|i| i.name == container_name))
}

fn service_status(
    record: &ServiceRecord,
    containers: &[ContainerInfo],
    ports: &PortMap,
) -> ServiceStatus {
    let components = record
        .components
        .iter()
        .map(|c| {
            let info = find_container(containers, &c.service, &c.name, &c.container_name);
            let (image, version) = match info {
                Some(i) => (i.image.clone(), i.version()),
                None => (c.image.clone(), c.version.clone()),
            };
            ComponentStatus {
                name: c.name.clone(),
                container: c.container_name.clone(),
                image,
                version,
                desired: c.desired,
                observed: info.map_or(ObservedState::Missing, observed_state),
                restart_count: info.map_or(c.restart_count, |i| i.restart_count),
                started: info.filter(|i| i.is_running()).and_then(|i| i.started_at),
                ports: ports
                    .get(&(c.service.clone(), c.name.clone()))
                    .cloned()
                    .unwrap_or_default(),
                container_id: info.map(|i| i.id.clone()),
            }
        })
        .collect();
    ServiceStatus {
        name: record.name.clone(),
        active: record.active,
        spec_hash: record.spec_hash.clone(),
        tier: record.tier,
        components,
    }
}

/// Deletes a service's data directory; a symlink in its place is removed,
/// never followed.
fn remove_data_dir(dir: &Path) -> Result<Step> {
    let step = format!("data {}", dir.display());
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Step::skipped(step, "does not exist"))
        }
        Err(e) => Err(AgentError::Internal {
            message: format!("remove data {}: {e}", dir.display()),
        }),
        Ok(m) => {
            let result = if m.is_dir() {
                std::fs::remove_dir_all(dir)
            } else {
                std::fs::remove_file(dir)
            };
            result.map_err(|e| AgentError::Internal {
                message: format!("remove data {}: {e}", dir.display()),
            })?;
            Ok(Step::done(step, "removed"))
        }
    }
}

#[cfg(test)]
mod tests;
