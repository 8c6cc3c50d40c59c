//! Adopt: recording containers MCP did not create as a service.

use std::collections::BTreeSet;

use mcp_runtime::{ContainerInfo, ContainerRuntime};
use mcp_spec::{ComponentSpec, LoadOptions, ServiceSpec, Tier};

use super::*;

impl<R: ContainerRuntime + 'static> Agent<R> {
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
            rollback: true,
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
            events.push(self.event(
                service,
                comp,
                "adopt",
                format!("adopted container {detail}"),
            ));
        }
        self.record_events(events).await?;
        self.record_observed(service).await?;
        tracing::info!(service, components = components.len(), "adopted");
        Ok(steps)
    }
}
