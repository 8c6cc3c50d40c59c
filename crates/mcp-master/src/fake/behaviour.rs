//! What [`FakeAgents`] answers: the real agent's behaviour (steps, errors,
//! state changes, events, files), on the in-memory fleet.

use std::collections::BTreeMap;

use mcp_planner::{ComponentReport, ContainerState, ServiceReport};
use mcp_spec::{spec_hash, ComponentSpec, ServiceSpec, Tier};
use tonic::Code;

use super::files::check_file;
use super::{now, whole_seconds, Call, FakeAgents, FakeService, Inner};
use crate::agents::{
    check_steps, AgentApi, AgentError, AgentReport, AgentStep, AgentTarget, DataStream, EventRow,
    EventsQuery, FileContent, Health, HealthStatus, ImportData, ImportOutcome, LogLine, LogStream,
    LogsQuery,
};

pub(super) fn refused(t: &AgentTarget, method: &str, code: Code, message: String) -> AgentError {
    AgentError::Rpc {
        node: t.node.clone(),
        method: method.to_string(),
        code,
        message,
    }
}

/// The agent's number of events when the query has no limit.
const DEFAULT_EVENTS: u32 = 100;

fn opt(s: Option<&str>) -> Option<String> {
    s.map(str::to_string)
}

impl Inner {
    fn event(
        &mut self,
        t: &AgentTarget,
        service: &str,
        component: &str,
        kind: &str,
        detail: String,
    ) {
        self.events
            .entry(t.node.clone())
            .or_default()
            .push(EventRow {
                node: t.node.clone(),
                service: service.to_string(),
                component: component.to_string(),
                kind: kind.to_string(),
                prev_state: None,
                new_state: None,
                time: now(),
                detail,
            });
    }

    fn service(
        &mut self,
        t: &AgentTarget,
        method: &str,
        service: &str,
    ) -> Result<&mut FakeService, AgentError> {
        self.nodes
            .get_mut(&t.node)
            .and_then(|s| s.get_mut(service))
            .ok_or_else(|| {
                refused(
                    t,
                    method,
                    Code::NotFound,
                    format!("service {service} is not deployed on node {}", t.node),
                )
            })
    }

    /// The components a lifecycle call applies to.
    fn targets(
        &mut self,
        t: &AgentTarget,
        method: &str,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<String>, AgentError> {
        let s = self.service(t, method, service)?;
        match component {
            Some(c) if s.report.components.contains_key(c) => Ok(vec![c.to_string()]),
            Some(c) => Err(refused(
                t,
                method,
                Code::NotFound,
                format!("service {service} has no component {c} on node {}", t.node),
            )),
            None => Ok(s.report.components.keys().cloned().collect()),
        }
    }

    fn deploy(
        &mut self,
        t: &AgentTarget,
        spec: &ServiceSpec,
        only: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        if let Some(c) = only {
            if spec.component(c).is_none() {
                return Err(refused(
                    t,
                    "Deploy",
                    Code::InvalidArgument,
                    format!("service {} has no component {c} in its spec", spec.name),
                ));
            }
        }
        let mut svc = self
            .nodes
            .get(&t.node)
            .and_then(|s| s.get(&spec.name))
            .cloned()
            .unwrap_or_else(|| FakeService {
                spec: spec.clone(),
                report: ServiceReport {
                    spec_hash: String::new(),
                    active: spec.active,
                    components: BTreeMap::new(),
                },
                built: BTreeMap::new(),
            });
        svc.spec = spec.clone();
        svc.report.spec_hash = spec_hash(spec);
        svc.report.active = spec.active;
        let mut steps = Vec::new();
        let mut events = Vec::new();
        if only.is_none() {
            let gone: Vec<String> = svc
                .report
                .components
                .keys()
                .filter(|n| spec.component(n).is_none())
                .cloned()
                .collect();
            for n in gone {
                svc.report.components.remove(&n);
                svc.built.remove(&n);
                steps.push(AgentStep::done(
                    format!("remove {}", spec.container_name(&n)),
                    "no longer in the spec",
                ));
                events.push((
                    n.clone(),
                    "remove",
                    format!("container {} removed", spec.container_name(&n)),
                ));
            }
        }
        for c in spec
            .components
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.name))
        {
            let container = spec.container_name(&c.name);
            let crashing = self.crashing.contains(&(spec.name.clone(), c.name.clone()));
            let exists = svc
                .report
                .components
                .get(&c.name)
                .is_some_and(|r| r.state != ContainerState::Missing);
            let same = exists && svc.built.get(&c.name) == Some(&Some(c.clone()));
            if let Some(r) = svc.report.components.get_mut(&c.name).filter(|_| same) {
                let running = r.state == ContainerState::Running;
                match (spec.active, running) {
                    (true, false) => {
                        start_component(r, crashing);
                        steps.push(AgentStep::done(
                            format!("start {container}"),
                            "unchanged, was not running",
                        ));
                    }
                    (false, true) => {
                        r.state = ContainerState::Stopped;
                        steps.push(AgentStep::done(
                            format!("stop {container}"),
                            "service is inactive",
                        ));
                    }
                    _ => steps.push(AgentStep::skipped(
                        format!("component {}", c.name),
                        "unchanged",
                    )),
                }
                continue;
            }
            let state = match (spec.active, crashing) {
                (false, _) => ContainerState::Stopped,
                (true, true) => ContainerState::Exited,
                (true, false) => ContainerState::Running,
            };
            svc.report.components.insert(
                c.name.clone(),
                ComponentReport {
                    image: c.image.clone(),
                    version: c.version(),
                    state,
                    restarts: 0,
                    ports: Default::default(),
                    routes: Vec::new(),
                    health: None,
                    health_detail: String::new(),
                },
            );
            svc.built.insert(c.name.clone(), Some(c.clone()));
            steps.push(AgentStep::done(
                format!("{} {container}", if exists { "recreate" } else { "create" }),
                format!("{} ({})", c.image, c.version()),
            ));
            events.push((
                c.name.clone(),
                "deploy",
                format!("{} ({})", c.image, c.version()),
            ));
            if !spec.active {
                steps.push(AgentStep::done(
                    format!("stop {container}"),
                    "service is inactive",
                ));
            }
        }
        self.nodes
            .entry(t.node.clone())
            .or_default()
            .insert(spec.name.clone(), svc);
        for (component, kind, detail) in events {
            self.event(t, &spec.name, &component, kind, detail);
        }
        Ok(steps)
    }

    fn undeploy(
        &mut self,
        t: &AgentTarget,
        service: &str,
        remove_data: bool,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let svc = self.service(t, "Undeploy", service)?.clone();
        let mut steps: Vec<AgentStep> = svc
            .report
            .components
            .iter()
            .filter(|(_, c)| c.state != ContainerState::Missing)
            .map(|(n, _)| AgentStep::done(format!("remove {}", svc.spec.container_name(n)), ""))
            .collect();
        steps.push(AgentStep::done("registry", "removed"));
        if remove_data {
            self.files
                .retain(|(n, s, _), _| !(n == &t.node && s == service));
            steps.push(AgentStep::done(format!("data /srv/{service}"), "removed"));
        } else {
            steps.push(AgentStep::skipped(
                format!("data /srv/{service}"),
                "kept (remove_data not set)",
            ));
        }
        if let Some(s) = self.nodes.get_mut(&t.node) {
            s.remove(service);
        }
        let removed = steps
            .iter()
            .filter(|s| s.step.starts_with("remove "))
            .count();
        self.event(
            t,
            service,
            "",
            "undeploy",
            format!("removed {removed} container(s)"),
        );
        Ok(steps)
    }

    fn lifecycle(
        &mut self,
        t: &AgentTarget,
        method: &str,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let targets = self.targets(t, method, service, component)?;
        let crashing = self.crashing.clone();
        let svc = self.service(t, method, service)?;
        if component.is_none() {
            svc.report.active = method != "Stop";
        }
        let mut steps = Vec::new();
        let mut events = Vec::new();
        for name in targets {
            let container = svc.spec.container_name(&name);
            let crashes = crashing.contains(&(service.to_string(), name.clone()));
            let Some(r) = svc.report.components.get_mut(&name) else {
                continue;
            };
            match method {
                "Stop" if r.state == ContainerState::Missing => steps.push(AgentStep::skipped(
                    format!("stop {container}"),
                    "no such container",
                )),
                "Stop" => {
                    r.state = ContainerState::Stopped;
                    steps.push(AgentStep::done(format!("stop {container}"), ""));
                    events.push((name, "stop", "stopped by request".to_string()));
                }
                "Start" if r.state == ContainerState::Running => steps.push(AgentStep::skipped(
                    format!("start {container}"),
                    "already running",
                )),
                "Start" => {
                    start_component(r, crashes);
                    steps.push(AgentStep::done(format!("start {container}"), "started"));
                    events.push((name, "start", "started".to_string()));
                }
                _ => {
                    start_component(r, crashes);
                    steps.push(AgentStep::done(format!("restart {container}"), "started"));
                    events.push((name, "restart", "started".to_string()));
                }
            }
        }
        for (component, kind, detail) in events {
            self.event(t, service, &component, kind, detail);
        }
        Ok(steps)
    }

    fn health(&self, t: &AgentTarget) -> Health {
        let comps: Vec<&ComponentReport> = self
            .nodes
            .get(&t.node)
            .into_iter()
            .flat_map(|s| s.values())
            .flat_map(|s| s.report.components.values())
            .collect();
        let down = comps.iter().any(|c| {
            matches!(
                c.state,
                ContainerState::Exited | ContainerState::Missing | ContainerState::Other
            )
        });
        // Managed containers: adopted ones carry no labels and do not count.
        let containers = self
            .nodes
            .get(&t.node)
            .into_iter()
            .flat_map(|s| s.values())
            .flat_map(|s| {
                s.report.components.iter().filter(|(n, c)| {
                    c.state != ContainerState::Missing
                        && s.built.get(*n).is_some_and(Option::is_some)
                })
            })
            .count();
        Health {
            status: if down {
                HealthStatus::Degraded
            } else {
                HealthStatus::Healthy
            },
            containers: u32::try_from(containers).unwrap_or(u32::MAX),
        }
    }

    fn logs(&mut self, t: &AgentTarget, q: &LogsQuery) -> Result<Vec<LogLine>, AgentError> {
        let targets = self.targets(t, "Logs", &q.service, q.component.as_deref())?;
        let mut out = Vec::new();
        for c in targets {
            let key = (t.node.clone(), q.service.clone(), c.clone());
            let since = q.since.map(whole_seconds);
            let lines: Vec<LogLine> = self
                .logs
                .get(&key)
                .into_iter()
                .flatten()
                .filter(|(at, _, _)| since.is_none_or(|s| whole_seconds(*at) >= s))
                .map(|(_, source, line)| LogLine {
                    component: c.clone(),
                    line: line.clone(),
                    source: *source,
                })
                .collect();
            let tail = q.tail.map_or(lines.len(), |n| n as usize);
            let skip = lines.len().saturating_sub(tail);
            out.extend(lines.into_iter().skip(skip));
        }
        Ok(out)
    }

    fn events(&self, t: &AgentTarget, q: &EventsQuery) -> Result<Vec<EventRow>, AgentError> {
        if q.service.is_none() && q.component.is_some() {
            return Err(refused(
                t,
                "Events",
                Code::InvalidArgument,
                "events: a component needs its service_name".to_string(),
            ));
        }
        let mut rows: Vec<EventRow> = self
            .events
            .get(&t.node)
            .into_iter()
            .flatten()
            .filter(|e| q.service.as_ref().is_none_or(|s| *s == e.service))
            .filter(|e| q.component.as_ref().is_none_or(|c| *c == e.component))
            .filter(|e| q.since.is_none_or(|s| e.time >= s))
            .cloned()
            .collect();
        let limit = q.limit.filter(|l| *l > 0).unwrap_or(DEFAULT_EVENTS) as usize;
        let drop = rows.len().saturating_sub(limit);
        rows.drain(..drop);
        Ok(rows)
    }

    fn adopt(&mut self, t: &AgentTarget, service: &str) -> Result<Vec<AgentStep>, AgentError> {
        if !mcp_spec::names::is_dns_label(service) {
            return Err(refused(
                t,
                "Adopt",
                Code::InvalidArgument,
                format!("invalid service name {service:?}: not a DNS label"),
            ));
        }
        if self
            .nodes
            .get(&t.node)
            .is_some_and(|s| s.contains_key(service))
        {
            return Err(refused(
                t,
                "Adopt",
                Code::FailedPrecondition,
                format!(
                    "service {service} is already managed on node {}; adopt is for containers \
                     MCP does not manage yet",
                    t.node
                ),
            ));
        }
        let prefix = format!("{service}-");
        let found: Vec<(String, String, String)> = self
            .unmanaged
            .get(&t.node)
            .into_iter()
            .flatten()
            .filter_map(|(name, image)| {
                let comp = if name == service {
                    service.to_string()
                } else {
                    name.strip_prefix(&prefix)?.to_string()
                };
                Some((comp, name.clone(), image.clone()))
            })
            .collect();
        if found.is_empty() {
            return Err(refused(
                t,
                "Adopt",
                Code::NotFound,
                format!(
                    "service {service} (no containers named {service} or {prefix}* to adopt) is \
                     not deployed on node {}",
                    t.node
                ),
            ));
        }
        if found.len() > 1 && found.iter().any(|(_, n, _)| n == service) {
            return Err(refused(
                t,
                "Adopt",
                Code::FailedPrecondition,
                format!("adopt {service}: both {service} and {prefix}* containers exist"),
            ));
        }
        let spec = ServiceSpec {
            name: service.to_string(),
            tier: Tier::Worker,
            node: None,
            active: true,
            rollback: true,
            snapshot: None,
            components: found
                .iter()
                .map(|(comp, _, image)| ComponentSpec {
                    name: comp.clone(),
                    image: image.clone(),
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
        let mut report = mcp_planner::sim::report_for(&spec, spec_hash(&spec));
        for c in report.components.values_mut() {
            c.state = ContainerState::Running;
        }
        let built = found.iter().map(|(c, _, _)| (c.clone(), None)).collect();
        if let Some(u) = self.unmanaged.get_mut(&t.node) {
            for (_, name, _) in &found {
                u.remove(name);
            }
        }
        self.nodes.entry(t.node.clone()).or_default().insert(
            service.to_string(),
            FakeService {
                spec,
                report,
                built,
            },
        );
        let mut steps = Vec::new();
        for (comp, name, image) in &found {
            steps.push(AgentStep::done(
                format!("adopt {name}"),
                format!("component {comp}: {name} ({image}, running)"),
            ));
            self.event(
                t,
                service,
                comp,
                "adopt",
                format!("{name} ({image}, running)"),
            );
        }
        Ok(steps)
    }
}

fn start_component(r: &mut ComponentReport, crashing: bool) {
    r.state = if crashing {
        r.restarts += 1;
        ContainerState::Exited
    } else {
        ContainerState::Running
    };
}

#[tonic::async_trait]
impl AgentApi for FakeAgents {
    async fn deploy(
        &self,
        t: &AgentTarget,
        spec: &ServiceSpec,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let call = Call::Deploy {
            node: t.node.clone(),
            service: spec.name.clone(),
            active: spec.active,
            spec_hash: spec_hash(spec),
            component: opt(component),
        };
        self.gate(t, "Deploy", call).await?;
        if let Some(e) = self.rejection(t, spec) {
            return Err(e);
        }
        let steps = self.lock().deploy(t, spec, component)?;
        check_steps(t, "Deploy", steps)
    }

    async fn undeploy(
        &self,
        t: &AgentTarget,
        service: &str,
        remove_data: bool,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let call = Call::Undeploy {
            node: t.node.clone(),
            service: service.to_string(),
        };
        self.gate(t, "Undeploy", call).await?;
        self.lock().undeploy(t, service, remove_data)
    }

    async fn stop(
        &self,
        t: &AgentTarget,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let call = Call::Stop {
            node: t.node.clone(),
            service: service.to_string(),
            component: opt(component),
        };
        self.gate(t, "Stop", call).await?;
        self.lock().lifecycle(t, "Stop", service, component)
    }

    async fn start(
        &self,
        t: &AgentTarget,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let call = Call::Start {
            node: t.node.clone(),
            service: service.to_string(),
            component: opt(component),
        };
        self.gate(t, "Start", call).await?;
        self.lock().lifecycle(t, "Start", service, component)
    }

    async fn restart(
        &self,
        t: &AgentTarget,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let call = Call::Restart {
            node: t.node.clone(),
            service: service.to_string(),
            component: opt(component),
        };
        self.gate(t, "Restart", call).await?;
        self.lock().lifecycle(t, "Restart", service, component)
    }

    async fn list_services(&self, t: &AgentTarget) -> Result<AgentReport, AgentError> {
        let call = Call::ListServices {
            node: t.node.clone(),
        };
        self.gate(t, "ListServices", call).await?;
        Ok(AgentReport {
            services: self.services_on(&t.node),
            orphans: Vec::new(),
        })
    }

    async fn health_check(&self, t: &AgentTarget) -> Result<Health, AgentError> {
        let call = Call::HealthCheck {
            node: t.node.clone(),
        };
        self.gate(t, "HealthCheck", call).await?;
        Ok(self.lock().health(t))
    }

    async fn logs(&self, t: &AgentTarget, q: LogsQuery) -> Result<LogStream, AgentError> {
        let call = Call::Logs {
            node: t.node.clone(),
            service: q.service.clone(),
        };
        self.gate(t, "Logs", call).await?;
        let lines = self.lock().logs(t, &q)?;
        let now = tokio_stream::iter(lines.into_iter().map(Ok));
        if q.follow {
            // Following: the stream stays open after the lines so far, as
            // `podman logs --follow` does.
            use tokio_stream::StreamExt;
            Ok(Box::pin(now.chain(tokio_stream::pending())))
        } else {
            Ok(Box::pin(now))
        }
    }

    async fn events(&self, t: &AgentTarget, q: EventsQuery) -> Result<Vec<EventRow>, AgentError> {
        let call = Call::Events {
            node: t.node.clone(),
        };
        self.gate(t, "Events", call).await?;
        self.lock().events(t, &q)
    }

    async fn push_file(
        &self,
        t: &AgentTarget,
        service: &str,
        path: &str,
        file: FileContent,
    ) -> Result<(), AgentError> {
        let call = Call::PushFile {
            node: t.node.clone(),
            service: service.to_string(),
            path: path.to_string(),
        };
        self.gate(t, "PushFile", call).await?;
        check_file(
            t,
            "PushFile",
            service,
            path,
            Some(file.mode),
            file.content.len(),
        )?;
        let mode = if file.mode == 0 { 0o644 } else { file.mode };
        self.lock().files.insert(
            (t.node.clone(), service.to_string(), path.to_string()),
            FileContent {
                content: file.content,
                mode,
            },
        );
        Ok(())
    }

    async fn pull_file(
        &self,
        t: &AgentTarget,
        service: &str,
        path: &str,
    ) -> Result<FileContent, AgentError> {
        let call = Call::PullFile {
            node: t.node.clone(),
            service: service.to_string(),
            path: path.to_string(),
        };
        self.gate(t, "PullFile", call).await?;
        check_file(t, "PullFile", service, path, None, 0)?;
        self.lock()
            .files
            .get(&(t.node.clone(), service.to_string(), path.to_string()))
            .cloned()
            .ok_or_else(|| {
                refused(
                    t,
                    "PullFile",
                    Code::NotFound,
                    format!("{service}: {path}: no such file"),
                )
            })
    }

    async fn adopt(&self, t: &AgentTarget, service: &str) -> Result<Vec<AgentStep>, AgentError> {
        let call = Call::Adopt {
            node: t.node.clone(),
            service: service.to_string(),
        };
        self.gate(t, "Adopt", call).await?;
        let steps = self.lock().adopt(t, service)?;
        check_steps(t, "Adopt", steps)
    }

    async fn export_service_data(
        &self,
        t: &AgentTarget,
        s: &str,
    ) -> Result<DataStream, AgentError> {
        self.export_data(t, s).await
    }

    async fn import_service_data(
        &self,
        t: &AgentTarget,
        s: &str,
        data: ImportData,
    ) -> Result<ImportOutcome, AgentError> {
        self.import_data(t, s, data).await
    }
}
