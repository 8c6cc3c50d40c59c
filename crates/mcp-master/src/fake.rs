//! [`FakeAgents`]: an in-memory fleet of agents implementing [`AgentApi`],
//! for tests of the control loop and the server (feature `testing`; never
//! in the shipped binary).
//!
//! It answers as the real agent does — the same steps, errors (gRPC codes),
//! state changes, events, files and health — and `tests/agent_api_suite.rs`
//! runs one suite against it and against [`crate::agents::GrpcAgents`]
//! talking to a real agent server, so the two cannot drift apart. On top,
//! it records every call and can be told to fail, to be unreachable, to
//! keep a component down, or to hang (a master crash in the middle of an
//! apply is simulated by dropping the hanging future).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_planner::{ContainerState, ServiceReport};
use mcp_spec::{spec_hash, ComponentSpec, ServiceSpec};

use crate::agents::{AgentError, AgentTarget, EventRow, FileContent, LogSource};

mod behaviour;
mod data;
mod files;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Deploy {
        node: String,
        service: String,
        active: bool,
        spec_hash: String,
        /// Only this component.
        component: Option<String>,
    },
    Undeploy {
        node: String,
        service: String,
    },
    Stop {
        node: String,
        service: String,
        component: Option<String>,
    },
    Start {
        node: String,
        service: String,
        component: Option<String>,
    },
    Restart {
        node: String,
        service: String,
        component: Option<String>,
    },
    ListServices {
        node: String,
    },
    HealthCheck {
        node: String,
    },
    Logs {
        node: String,
        service: String,
    },
    Events {
        node: String,
    },
    PushFile {
        node: String,
        service: String,
        path: String,
    },
    PullFile {
        node: String,
        service: String,
        path: String,
    },
    Adopt {
        node: String,
        service: String,
    },
    ExportServiceData {
        node: String,
        service: String,
    },
    ImportServiceData {
        node: String,
        service: String,
        force: bool,
    },
}

impl Call {
    /// True for calls that change something on the node.
    pub fn is_mutation(&self) -> bool {
        !matches!(
            self,
            Call::ListServices { .. }
                | Call::HealthCheck { .. }
                | Call::Events { .. }
                | Call::Logs { .. }
                | Call::PullFile { .. }
                | Call::ExportServiceData { .. }
        )
    }
}

/// One service on one fake node.
#[derive(Debug, Clone)]
struct FakeService {
    /// The recorded spec (what a start recreates a missing container from).
    spec: ServiceSpec,
    report: ServiceReport,
    /// The component spec each container was created from; `None` for an
    /// adopted container (a deploy of the real spec replaces it).
    built: BTreeMap<String, Option<ComponentSpec>>,
}

/// A line of output and when it was written.
type WrittenLine = (SystemTime, LogSource, String);

#[derive(Debug, Default)]
struct Inner {
    /// node → service → what runs.
    nodes: BTreeMap<String, BTreeMap<String, FakeService>>,
    /// node → containers no service owns: name → image.
    unmanaged: BTreeMap<String, BTreeMap<String, String>>,
    /// (node, service, path) → file.
    files: BTreeMap<(String, String, String), FileContent>,
    /// (node, service, component) → lines, with when they were written.
    logs: BTreeMap<(String, String, String), Vec<WrittenLine>>,
    /// node → events, oldest first.
    events: BTreeMap<String, Vec<EventRow>>,
    calls: Vec<Call>,
    /// The agent address of every call, in order.
    addresses: Vec<String>,
    unreachable: BTreeSet<String>,
    /// (method, node) → how many of the next calls fail.
    failures: BTreeMap<(String, String), u32>,
    /// Image → the refusal every deploy of a spec using it gets.
    rejected_images: BTreeMap<String, (tonic::Code, String)>,
    /// Components that go back to `Exited` right after a start.
    crashing: BTreeSet<(String, String)>,
    /// Mutating calls after this many (counted from when it was set) never
    /// return.
    hang_after: Option<usize>,
    mutations_since_hang_set: usize,
    /// Archives imports accepted: (node, service, bytes).
    imports: Vec<(String, String, Vec<u8>)>,
}

/// The fake fleet; share it with `Arc`.
#[derive(Debug, Default)]
pub struct FakeAgents {
    inner: Mutex<Inner>,
}

impl FakeAgents {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls that changed something.
    pub fn mutations(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.is_mutation())
            .cloned()
            .collect()
    }

    pub fn clear_calls(&self) {
        let mut g = self.lock();
        g.calls.clear();
        g.addresses.clear();
    }

    /// The agent address every call so far was sent to, in order.
    pub fn addresses(&self) -> Vec<String> {
        self.lock().addresses.clone()
    }

    /// Services the node runs, with what it reports.
    pub fn services_on(&self, node: &str) -> BTreeMap<String, ServiceReport> {
        self.lock()
            .nodes
            .get(node)
            .map(|s| {
                s.iter()
                    .map(|(k, v)| (k.clone(), v.report.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The node running `service`, if any (the first by name).
    pub fn node_of(&self, service: &str) -> Option<String> {
        self.lock()
            .nodes
            .iter()
            .find(|(_, s)| s.contains_key(service))
            .map(|(n, _)| n.clone())
    }

    pub fn set_unreachable(&self, node: &str, unreachable: bool) {
        let mut g = self.lock();
        if unreachable {
            g.unreachable.insert(node.to_string());
        } else {
            g.unreachable.remove(node);
        }
    }

    /// The next `n` calls of `method` ("Deploy", "Start", ...) on `node` fail.
    pub fn fail_next(&self, method: &str, node: &str, n: u32) {
        self.lock()
            .failures
            .insert((method.to_string(), node.to_string()), n);
    }

    /// Every deploy (on any node) of a spec with a component using `image`
    /// is refused with `code` and `message`, as a real agent refuses a
    /// spec it cannot run (`InvalidArgument`, `FailedPrecondition`).
    pub fn reject_image(&self, image: &str, code: tonic::Code, message: &str) {
        self.lock()
            .rejected_images
            .insert(image.to_string(), (code, message.to_string()));
    }

    /// The refusal of a deploy of `spec` on `t`, if scripted.
    fn rejection(&self, t: &AgentTarget, spec: &ServiceSpec) -> Option<AgentError> {
        let g = self.lock();
        spec.components.iter().find_map(|c| {
            g.rejected_images
                .get(&c.image)
                .map(|(code, message)| AgentError::Rpc {
                    node: t.node.clone(),
                    method: "Deploy".to_string(),
                    code: *code,
                    message: message.clone(),
                })
        })
    }

    /// Sets the state of a component on a node (a crash, an OOM kill...).
    pub fn set_state(&self, node: &str, service: &str, component: &str, state: ContainerState) {
        let mut g = self.lock();
        if let Some(c) = g
            .nodes
            .get_mut(node)
            .and_then(|s| s.get_mut(service))
            .and_then(|s| s.report.components.get_mut(component))
        {
            c.state = state;
        }
    }

    /// Starting this component "works" but it exits again at once.
    pub fn set_crashing(&self, service: &str, component: &str, crashing: bool) {
        let key = (service.to_string(), component.to_string());
        let mut g = self.lock();
        if crashing {
            g.crashing.insert(key);
        } else {
            g.crashing.remove(&key);
        }
    }

    /// After `n` more mutating calls, every further mutating call hangs
    /// forever (`None`: never).
    pub fn hang_after(&self, n: Option<usize>) {
        let mut g = self.lock();
        g.hang_after = n;
        g.mutations_since_hang_set = 0;
    }

    /// Puts a service on a node as if deployed outside the master (an
    /// orphan, or the fleet as it was before a master restart).
    pub fn preload(&self, node: &str, spec: &ServiceSpec) {
        let report = mcp_planner::sim::report_for(spec, spec_hash(spec));
        let built = spec
            .components
            .iter()
            .map(|c| (c.name.clone(), Some(c.clone())))
            .collect();
        self.lock()
            .nodes
            .entry(node.to_string())
            .or_default()
            .insert(
                spec.name.clone(),
                FakeService {
                    spec: spec.clone(),
                    report,
                    built,
                },
            );
    }

    /// A running container on `node` that no service owns (what `adopt`
    /// takes over).
    pub fn add_unmanaged(&self, node: &str, container: &str, image: &str) {
        self.lock()
            .unmanaged
            .entry(node.to_string())
            .or_default()
            .insert(container.to_string(), image.to_string());
    }

    /// A line of output of a component (what `logs` returns).
    pub fn emit_log(&self, node: &str, service: &str, component: &str, line: &str) {
        self.emit_log_at(node, service, component, line, SystemTime::now());
    }

    /// [`FakeAgents::emit_log`] with the time the line was written (for
    /// `since`).
    pub fn emit_log_at(
        &self,
        node: &str,
        service: &str,
        component: &str,
        line: &str,
        at: SystemTime,
    ) {
        self.lock()
            .logs
            .entry((node.to_string(), service.to_string(), component.to_string()))
            .or_default()
            .push((at, LogSource::Stdout, line.to_string()));
    }

    /// Records `call` and decides its fate: `Err` to fail, `Ok(true)` to hang.
    fn enter(&self, t: &AgentTarget, method: &str, call: Call) -> Result<bool, AgentError> {
        let mut g = self.lock();
        let mutation = call.is_mutation();
        g.calls.push(call);
        g.addresses.push(t.address.clone());
        if g.unreachable.contains(&t.node) {
            return Err(AgentError::Unreachable {
                node: t.node.clone(),
                address: t.address.clone(),
                detail: "connection refused (fake)".to_string(),
            });
        }
        if mutation {
            if let Some(limit) = g.hang_after {
                if g.mutations_since_hang_set >= limit {
                    return Ok(true);
                }
                g.mutations_since_hang_set += 1;
            }
        }
        let key = (method.to_string(), t.node.clone());
        if let Some(n) = g.failures.get_mut(&key) {
            if *n > 0 {
                *n -= 1;
                return Err(AgentError::StepFailed {
                    node: t.node.clone(),
                    method: method.to_string(),
                    detail: "injected failure (fake)".to_string(),
                });
            }
        }
        Ok(false)
    }

    async fn gate(&self, t: &AgentTarget, method: &str, call: Call) -> Result<(), AgentError> {
        if self.enter(t, method, call)? {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Now, to the second (the agent stores event times in whole seconds).
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(whole_seconds(SystemTime::now()))
}

/// Seconds since the epoch (podman compares log times in whole seconds).
fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
