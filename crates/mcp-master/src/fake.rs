//! [`FakeAgents`]: an in-memory fleet of agents implementing [`AgentApi`],
//! for tests of the control loop and the server. It records every call,
//! reports what was deployed (built with [`mcp_planner::sim::report_for`],
//! as the planner's own simulator does) and can be told to fail, to be
//! unreachable, to keep a component down, or to hang (a master crash in
//! the middle of an apply is simulated by dropping the hanging future).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use mcp_planner::{ContainerState, ServiceReport};
use mcp_proto::pb;
use mcp_spec::{spec_hash, ServiceSpec};

use crate::agents::{AgentApi, AgentError, AgentReport, AgentTarget, LogStream};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Deploy {
        node: String,
        service: String,
        active: bool,
        spec_hash: String,
    },
    Undeploy {
        node: String,
        service: String,
    },
    Stop {
        node: String,
        service: String,
        component: String,
    },
    Start {
        node: String,
        service: String,
        component: String,
    },
    Restart {
        node: String,
        service: String,
        component: String,
    },
    ListServices {
        node: String,
    },
    HealthCheck {
        node: String,
    },
    Events {
        node: String,
    },
}

impl Call {
    /// True for calls that change something on the node.
    pub fn is_mutation(&self) -> bool {
        !matches!(
            self,
            Call::ListServices { .. } | Call::HealthCheck { .. } | Call::Events { .. }
        )
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// node → service → report.
    nodes: BTreeMap<String, BTreeMap<String, ServiceReport>>,
    calls: Vec<Call>,
    unreachable: BTreeSet<String>,
    /// (method, node) → how many of the next calls fail.
    failures: BTreeMap<(String, String), u32>,
    /// Components that go back to `Exited` right after a start.
    crashing: BTreeSet<(String, String)>,
    /// Mutating calls after this many (counted from when it was set) never
    /// return.
    hang_after: Option<usize>,
    mutations_since_hang_set: usize,
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
        self.lock().calls.clear();
    }

    /// Services the node runs, with what it reports.
    pub fn services_on(&self, node: &str) -> BTreeMap<String, ServiceReport> {
        self.lock().nodes.get(node).cloned().unwrap_or_default()
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

    /// Sets the state of a component on a node (a crash, an OOM kill...).
    pub fn set_state(&self, node: &str, service: &str, component: &str, state: ContainerState) {
        let mut g = self.lock();
        if let Some(c) = g
            .nodes
            .get_mut(node)
            .and_then(|s| s.get_mut(service))
            .and_then(|s| s.components.get_mut(component))
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
        self.lock()
            .nodes
            .entry(node.to_string())
            .or_default()
            .insert(spec.name.clone(), report);
    }

    /// Records `call` and decides its fate: `Err` to fail, `Ok(true)` to hang.
    fn enter(&self, t: &AgentTarget, method: &str, call: Call) -> Result<bool, AgentError> {
        let mut g = self.lock();
        let mutation = call.is_mutation();
        g.calls.push(call);
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

    fn set_components(&self, node: &str, service: &str, component: &str, running: bool) {
        let mut g = self.lock();
        let crashing = g.crashing.clone();
        if let Some(s) = g.nodes.get_mut(node).and_then(|s| s.get_mut(service)) {
            for (name, c) in s.components.iter_mut() {
                if !component.is_empty() && name != component {
                    continue;
                }
                if c.state == ContainerState::Missing && running {
                    continue;
                }
                c.state = if !running {
                    ContainerState::Stopped
                } else if crashing.contains(&(service.to_string(), name.clone())) {
                    c.restarts += 1;
                    ContainerState::Exited
                } else {
                    ContainerState::Running
                };
            }
        }
    }
}

fn ok_step(step: &str) -> Vec<pb::StepResult> {
    vec![pb::StepResult {
        step: step.to_string(),
        success: true,
        status: pb::StepStatus::Succeeded as i32,
        ..Default::default()
    }]
}

#[tonic::async_trait]
impl AgentApi for FakeAgents {
    async fn deploy(
        &self,
        t: &AgentTarget,
        spec: &ServiceSpec,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        let hash = spec_hash(spec);
        self.gate(
            t,
            "Deploy",
            Call::Deploy {
                node: t.node.clone(),
                service: spec.name.clone(),
                active: spec.active,
                spec_hash: hash.clone(),
            },
        )
        .await?;
        let mut report = mcp_planner::sim::report_for(spec, hash);
        {
            let g = self.lock();
            for (name, c) in report.components.iter_mut() {
                if c.state == ContainerState::Running
                    && g.crashing.contains(&(spec.name.clone(), name.clone()))
                {
                    c.state = ContainerState::Exited;
                }
            }
        }
        self.lock()
            .nodes
            .entry(t.node.clone())
            .or_default()
            .insert(spec.name.clone(), report);
        Ok(ok_step("deploy"))
    }

    async fn undeploy(
        &self,
        t: &AgentTarget,
        service: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        self.gate(
            t,
            "Undeploy",
            Call::Undeploy {
                node: t.node.clone(),
                service: service.to_string(),
            },
        )
        .await?;
        if let Some(s) = self.lock().nodes.get_mut(&t.node) {
            s.remove(service);
        }
        Ok(ok_step("undeploy"))
    }

    async fn stop(
        &self,
        t: &AgentTarget,
        service: &str,
        component: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        self.gate(
            t,
            "Stop",
            Call::Stop {
                node: t.node.clone(),
                service: service.to_string(),
                component: component.to_string(),
            },
        )
        .await?;
        self.set_components(&t.node, service, component, false);
        Ok(ok_step("stop"))
    }

    async fn start(
        &self,
        t: &AgentTarget,
        service: &str,
        component: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        self.gate(
            t,
            "Start",
            Call::Start {
                node: t.node.clone(),
                service: service.to_string(),
                component: component.to_string(),
            },
        )
        .await?;
        self.set_components(&t.node, service, component, true);
        Ok(ok_step("start"))
    }

    async fn restart(
        &self,
        t: &AgentTarget,
        service: &str,
        component: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        self.gate(
            t,
            "Restart",
            Call::Restart {
                node: t.node.clone(),
                service: service.to_string(),
                component: component.to_string(),
            },
        )
        .await?;
        self.set_components(&t.node, service, component, true);
        Ok(ok_step("restart"))
    }

    async fn list_services(&self, t: &AgentTarget) -> Result<AgentReport, AgentError> {
        self.gate(
            t,
            "ListServices",
            Call::ListServices {
                node: t.node.clone(),
            },
        )
        .await?;
        Ok(AgentReport {
            services: self.services_on(&t.node),
            orphans: Vec::new(),
        })
    }

    async fn health_check(&self, t: &AgentTarget) -> Result<pb::HealthCheckResponse, AgentError> {
        self.gate(
            t,
            "HealthCheck",
            Call::HealthCheck {
                node: t.node.clone(),
            },
        )
        .await?;
        let containers = self
            .services_on(&t.node)
            .values()
            .map(|s| s.components.len())
            .sum::<usize>();
        Ok(pb::HealthCheckResponse {
            status: "healthy".to_string(),
            containers: u32::try_from(containers).unwrap_or(u32::MAX),
        })
    }

    async fn logs(&self, t: &AgentTarget, req: pb::LogsRequest) -> Result<LogStream, AgentError> {
        let line = pb::LogLine {
            component: req.component.clone(),
            line: format!("fake log of {} on {}", req.service_name, t.node),
            stream: "stdout".to_string(),
        };
        Ok(Box::pin(tokio_stream::iter(vec![Ok(line)])))
    }

    async fn events(
        &self,
        t: &AgentTarget,
        _req: pb::EventsRequest,
    ) -> Result<pb::EventsResponse, AgentError> {
        self.gate(
            t,
            "Events",
            Call::Events {
                node: t.node.clone(),
            },
        )
        .await?;
        Ok(pb::EventsResponse { events: Vec::new() })
    }
}
