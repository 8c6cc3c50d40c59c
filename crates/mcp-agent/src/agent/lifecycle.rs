//! Undeploy, stop, start and restart (and recreating a missing container
//! from the stored spec).

use std::collections::BTreeSet;
use std::path::Path;

use mcp_runtime::ContainerRuntime;

use crate::registry::{ComponentRecord, DesiredState, ServiceRecord};

use super::*;

impl<R: ContainerRuntime + 'static> Agent<R> {
    // ----- undeploy ------------------------------------------------------

    /// Removes the service's containers and registry entry (releasing its
    /// ports); deletes `<files root>/<service>/` only with `remove_data`.
    pub async fn undeploy(&self, service: &str, remove_data: bool) -> Result<Vec<Step>> {
        let _guard = self.locks.lock(service).await;
        let record = self.service_record(service).await?;
        self.reset_health(service, None);
        let ctx = format!("undeploy {service}");
        let names: BTreeSet<String> = record
            .components
            .iter()
            .map(|c| c.container_name.clone())
            .collect();
        let containers = self.service_containers(service, &names).await?;
        // Routes first: the name stops answering before its backend goes.
        let mut steps = self.remove_service_routes(service).await?;
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
            format!("undeployed: removed {} container(s)", containers.len()),
        )])
        .await?;
        tracing::info!(service, remove_data, "undeployed");
        Ok(steps)
    }

    // ----- stop / start / restart ---------------------------------------

    pub(super) fn targets<'a>(
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

    pub(super) async fn set_desired(
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
        self.reset_health(service, component);
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
        self.reset_health(service, component);
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
                events.push(self.event(service, &c.name, "start", by_request("started", &step)));
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
        self.reset_health(service, component);
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
            events.push(self.event(service, &c.name, "restart", by_request("restarted", &step)));
            steps.push(step);
        }
        self.record_events(events).await?;
        self.record_observed(service).await?;
        Ok(steps)
    }

    /// Starts the component's container, recreating it from the stored
    /// spec when it is missing.
    pub(super) async fn ensure_running(
        &self,
        record: &ServiceRecord,
        c: &ComponentRecord,
    ) -> Result<Step> {
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
}

/// Deletes a service's data directory; a symlink in its place is removed,
/// never followed.
pub(super) fn remove_data_dir(dir: &Path) -> Result<Step> {
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

/// An event detail for a start or restart by request: `started by request`,
/// or with what else happened (`...; container was missing; recreated
/// from the stored spec (image)`).
pub(super) fn by_request(what: &str, step: &Step) -> String {
    match step.detail.as_str() {
        "" | "started" => format!("{what} by request"),
        other => format!("{what} by request; {other}"),
    }
}
