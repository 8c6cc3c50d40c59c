//! The agent's operations (docs/ARCHITECTURE.md), independent of gRPC: deploy,
//! undeploy, stop / start / restart, bulk status, adopt, logs, events,
//! health, start-up convergence and the monitor loop.
//!
//! [`Agent`] is generic over the [`ContainerRuntime`] (podman in
//! production, `mcp_runtime::FakeRuntime` in unit tests). The registry
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
//!
//! # Files
//!
//! `types` (settings, errors, steps, statuses, the monitor report),
//! `locks` (per-service locks), this module (the [`Agent`] value and the
//! helpers every operation shares), `deploy`, `lifecycle` (undeploy, stop,
//! start, restart), `status` (inventory, status, health, events, logs),
//! `adopt`, `file_ops` (PushFile / PullFile), `data_ops`
//! (ExportServiceData / ImportServiceData), `converge` (start-up
//! convergence) and `monitor_loop` (the monitor round, its loop and event
//! pruning).

mod adopt;
mod converge;

/// Delays between the rounds of start-up convergence while a step fails:
/// 1 s doubling to 30 s, then 30 s, about three minutes in all.
pub const STARTUP_RETRIES: [std::time::Duration; 8] = {
    use std::time::Duration;
    [
        Duration::from_secs(1),
        Duration::from_secs(2),
        Duration::from_secs(4),
        Duration::from_secs(8),
        Duration::from_secs(16),
        Duration::from_secs(30),
        Duration::from_secs(30),
        Duration::from_secs(30),
    ]
};
mod data_ops;
mod deploy;
mod file_ops;
mod health;
mod lifecycle;
mod locks;
mod monitor_loop;
mod net;
mod status;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use mcp_runtime::{ContainerInfo, ContainerRuntime};

use crate::alert::Alerter;
use crate::clock::Timestamp;
use crate::config::Config;
use crate::ports::PortProbe;
use crate::registry::{
    ComponentRecord, EventKind, NewEvent, ObservedState, Registry, RegistryError, ServiceRecord,
};

pub use data_ops::{ExportChunk, ImportOutcome, ImportPiece, METHOD_TIMEOUT, SEND_TIMEOUT};
pub use deploy::config_hash;
use locks::ServiceLocks;
pub use net::{Networking, ProxyCheck, RouteStatus, DEFAULT_RENEW_BEFORE};
pub use types::*;

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
    net: Networking,
    renew_backoff: Mutex<net::RenewBackoff>,
    health_book: Mutex<health::HealthBook>,
    /// Wakes the monitor loop (a container event).
    monitor_wake: tokio::sync::Notify,
    /// Services whose state a monitor round saw change, for the master.
    changes: Option<tokio::sync::mpsc::Sender<String>>,
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
            net: Networking::default(),
            renew_backoff: Mutex::default(),
            health_book: Mutex::default(),
            monitor_wake: tokio::sync::Notify::new(),
            changes: None,
        }
    }

    /// The agent of a configuration: settings and alert command from it.
    pub fn from_config(config: &Config, runtime: R, registry: Registry) -> Result<Agent<R>> {
        let settings = AgentSettings::from_config(config)?;
        let mut agent = Agent::new(runtime, registry, settings);
        agent.alerter = crate::alert::from_config(config);
        Ok(agent)
    }

    /// Where monitor rounds send the names of services whose state
    /// changed (the master is told: see `register`).
    pub fn with_change_sink(mut self, tx: tokio::sync::mpsc::Sender<String>) -> Agent<R> {
        self.changes = Some(tx);
        self
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
        let mut status = [service_status(
            &record,
            containers,
            &ports_by_component(&ports),
        )];
        self.attach_routes(&mut status).await?;
        self.attach_health(&mut status);
        let [status] = status;
        Ok(status)
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
        let mut status = [service_status(&record, &containers, &port_map)];
        self.attach_routes(&mut status).await?;
        self.attach_health(&mut status);
        let [status] = status;
        Ok(status)
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
                routes: Vec::new(),
                health: None,
                health_detail: String::new(),
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

#[cfg(test)]
mod tests;
