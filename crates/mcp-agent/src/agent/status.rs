//! Read-outs: the bulk inventory, one service's status, health, events and
//! logs.

use std::collections::BTreeSet;

use mcp_runtime::{ContainerRuntime, LogOptions};
use tokio_stream::{StreamExt, StreamMap};

use crate::registry::{ComponentRecord, DesiredState, Event, EventQuery, ObservedState};

use super::*;

impl<R: ContainerRuntime + 'static> Agent<R> {
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
        let mut services: Vec<ServiceStatus> = records
            .iter()
            .map(|r| service_status(r, &containers, &port_map))
            .collect();
        self.attach_routes(&mut services).await?;
        self.attach_health(&mut services);
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
        problems.extend(self.unhealthy_components());
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
}
