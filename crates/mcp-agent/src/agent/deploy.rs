//! Deploy: container configurations, the config hash, pulls before anything
//! is touched, create / recreate, and the rollback of a failed new service.

use std::collections::{BTreeMap, BTreeSet};

use mcp_runtime::{ContainerConfig, ContainerInfo, ContainerRuntime, PortBinding, RuntimeError};
use mcp_spec::{volumes, ComponentSpec, LoadOptions, ServiceSpec};
use sha2::{Digest, Sha256};

use crate::config::NodeRole;
use crate::files;
use crate::ports::{PortAssignment, PortRange};
use crate::registry::DesiredState;

use super::*;

impl<R: ContainerRuntime + 'static> Agent<R> {
    pub(super) fn container_config(
        &self,
        spec: &ServiceSpec,
        comp: &ComponentSpec,
        ports: &[PortAssignment],
    ) -> ContainerConfig {
        let mut cfg = ContainerConfig::for_component(spec, comp, &self.settings.node);
        cfg.volumes = cfg.volumes.iter().map(|v| self.host_volume(v)).collect();
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

    /// A volume as podman gets it: a host path under `/srv` is moved onto
    /// the files root (the identity when the root is `/srv`), normalised.
    /// Anything else is returned as it is (the spec was checked before).
    pub(super) fn host_volume(&self, volume: &str) -> String {
        let Some((host, rest)) = volumes::split_host(volume) else {
            return volume.to_string();
        };
        let Ok(path) = volumes::normalize(host) else {
            return volume.to_string();
        };
        let host = match path.strip_prefix(volumes::DATA_ROOT) {
            Some(below) if below.is_empty() || below.starts_with('/') => {
                format!("{}{below}", self.settings.files_root.display())
            }
            _ => path,
        };
        format!("{host}{rest}")
    }

    /// Prepares the host side of the spec's volumes under the files root:
    /// `/srv/<service>` is created when missing, and a path that passes
    /// through a symbolic link below the files root is refused (see
    /// [`files::prepare_mount`]).
    pub(super) async fn prepare_mounts(&self, spec: &ServiceSpec) -> Result<()> {
        let own = volumes::service_dir(&spec.name);
        let mut rels = BTreeSet::new();
        for c in &spec.components {
            for v in &c.volumes {
                let host = volumes::split_host(v).map_or(v.as_str(), |(h, _)| h);
                let Ok(path) = volumes::normalize(host) else {
                    continue;
                };
                if let Some(rel) = path.strip_prefix(own.as_str()) {
                    if rel.is_empty() || rel.starts_with('/') {
                        rels.insert(rel.trim_start_matches('/').to_string());
                    }
                }
            }
        }
        if rels.is_empty() {
            return Ok(());
        }
        let root = self.settings.files_root.clone();
        let svc = spec.name.clone();
        tokio::task::spawn_blocking(move || {
            rels.iter()
                .try_for_each(|rel| files::prepare_mount(&root, &svc, rel))
        })
        .await
        .map_err(|e| AgentError::Internal {
            message: format!("prepare volumes task failed: {e}"),
        })?
        .map_err(|e| AgentError::InvalidArgument {
            message: format!("deploy {}: volume: {e}", spec.name),
        })
    }

    /// Creates (and starts) one component's container. A new container of a
    /// pinned image is tried first and its image pulled only when missing;
    /// otherwise the image is pulled first (once per deploy). In a fresh
    /// deploy, a name clash is checked (refused when the container is not
    /// this service's) and this service's leftover container replaced.
    /// Returns the pull step, if a pull happened.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_component(
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
    pub(super) async fn forget_new_service(
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
    pub(super) fn check_not_in_the_way(
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

    pub(super) fn check_deployable(&self, spec: &ServiceSpec, only: Option<&str>) -> Result<()> {
        // The node's own confinement rule for volumes (the master checked
        // the file against its configuration; this node may allow less).
        let opts = LoadOptions {
            allowed_host_paths: self.settings.allowed_host_paths.clone(),
            ..LoadOptions::default()
        };
        let violations = mcp_spec::validate(spec, &opts);
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
    ///
    /// Health-gated: when components in scope have a health check, the
    /// deploy succeeds only once each has passed (within `[health]
    /// deploy_timeout`). When they do not, and the service ran another
    /// spec before (and `rollback` is on), that spec is deployed again and
    /// the deploy fails with [`AgentError::Unhealthy`] naming both.
    pub async fn deploy(&self, spec: ServiceSpec, only: Option<&str>) -> Result<DeployOutcome> {
        self.check_deployable(&spec, only)?;
        let svc = spec.name.clone();
        let _guard = self.locks.lock(&svc).await;
        let name = svc.clone();
        let before = self.db(move |r| r.get_service(&name)).await?;
        let mut outcome = self.deploy_locked(spec.clone(), only).await?;
        let checks = self.deploy_checks(&spec, only, &outcome.status);
        if checks.is_empty() {
            return Ok(outcome);
        }
        let names: Vec<String> = checks.iter().map(|(c, _, _)| c.clone()).collect();
        match self.await_healthy(&svc, checks).await {
            Ok(()) => {
                outcome.steps.push(Step::done(
                    "health check",
                    format!("{} healthy", names.join(", ")),
                ));
                let mut status = [outcome.status];
                self.attach_health(&mut status);
                let [status] = status;
                outcome.status = status;
                Ok(outcome)
            }
            Err(why) => Err(self.roll_back(&spec, only, before, &why).await),
        }
    }

    /// After a failed health gate: brings the previous spec back when
    /// there is one (and `rollback` is on), and says what happened.
    async fn roll_back(
        &self,
        spec: &ServiceSpec,
        only: Option<&str>,
        before: Option<ServiceRecord>,
        why: &str,
    ) -> AgentError {
        let svc = &spec.name;
        let new = spec_versions(spec);
        let hash = mcp_spec::spec_hash(spec);
        let previous = before.filter(|b| b.spec_hash != hash);
        let unhealthy = |message: String, rolled_back_to: Option<String>| {
            tracing::warn!(service = %svc, %message, "deploy failed its health check");
            AgentError::Unhealthy {
                message,
                rolled_back_to,
            }
        };
        let Some(prev) = previous.filter(|_| spec.rollback && only.is_none()) else {
            let why_not = if !spec.rollback {
                "rollback = false: left as deployed"
            } else if only.is_some() {
                "a one-component deploy is not rolled back"
            } else {
                "no previous version to roll back to"
            };
            return unhealthy(
                format!("service {svc}: {new} failed its health check ({why}); {why_not}"),
                None,
            );
        };
        let mut old_spec = prev.spec.clone();
        old_spec.active = prev.active;
        let old = spec_versions(&old_spec);
        let short = &prev.spec_hash[..prev.spec_hash.len().min(12)];
        match self.deploy_locked(old_spec, None).await {
            Ok(_) => {
                let name = svc.clone();
                let _ = self
                    .record_events(vec![self.event(
                        &name,
                        "",
                        "rollback",
                        format!("{new} failed its health check ({why}); rolled back to {old}"),
                    )])
                    .await;
                unhealthy(
                    format!(
                        "service {svc}: {new} failed its health check ({why}), {} {old} \
                         (spec {short}); commit a fix or run `mcp rollback {svc}`",
                        mcp_proto::ROLLED_BACK
                    ),
                    Some(prev.spec_hash.clone()),
                )
            }
            Err(e) => unhealthy(
                format!(
                    "service {svc}: {new} failed its health check ({why}); rolling back to \
                     {old} failed too: {e}"
                ),
                None,
            ),
        }
    }

    /// The checks a deploy waits for: components in scope, desired
    /// running, with a check and a port.
    fn deploy_checks(
        &self,
        spec: &ServiceSpec,
        only: Option<&str>,
        status: &ServiceStatus,
    ) -> Vec<(String, crate::health::Probe, std::time::Duration)> {
        spec.components
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.name))
            .filter_map(|c| {
                let st = status.components.iter().find(|s| s.name == c.name)?;
                if st.desired != DesiredState::Running {
                    return None;
                }
                let (probe, interval) = self.probe_of(c, &st.ports)?;
                Some((c.name.clone(), probe, interval))
            })
            .collect()
    }

    /// The body of [`Self::deploy`], under the service's lock, without
    /// the health gate.
    async fn deploy_locked(&self, spec: ServiceSpec, only: Option<&str>) -> Result<DeployOutcome> {
        let svc = spec.name.clone();
        self.prepare_mounts(&spec).await?;
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

        // Routes: conflicts refused before anything changes.
        let planned = self.planned_routes(&spec, only)?;
        self.check_route_conflicts(&svc, &planned).await?;

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

        // Certificates of L7 routes, before any container is touched: a
        // failure fails the deploy and changes nothing.
        steps.extend(self.ensure_certificates(&svc, &planned).await?);

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
                events.push(self.event(
                    &svc,
                    &comp,
                    "remove",
                    format!("container {name} removed: no longer in the spec"),
                ));
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
                        self.reset_health(&svc, Some(&c.name));
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
            self.reset_health(&svc, Some(&c.name));
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
            let verb = if existing.is_some() {
                "recreate"
            } else {
                "create"
            };
            steps.push(Step::done(format!("{verb} {name}"), detail.clone()));
            events.push(self.event(
                &svc,
                &c.name,
                "deploy",
                format!("deployed {detail}: {verb}d container {name}"),
            ));
            if want == DesiredState::Stopped {
                self.stop_container(&ctx, &name).await?;
                steps.push(Step::done(format!("stop {name}"), "service is inactive"));
            }
            replaced.push(c.name.clone());
        }
        steps.extend(self.register_routes(&svc, &planned, &ports, only).await?);
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
}

/// What a spec runs, for messages: the version (image tag) its components
/// share (`v2`), else each component's (`web v2, db v3`).
pub(super) fn spec_versions(spec: &ServiceSpec) -> String {
    let versions: BTreeSet<String> = spec.components.iter().map(|c| c.version()).collect();
    if versions.len() == 1 {
        versions.into_iter().next().unwrap_or_default()
    } else {
        spec.components
            .iter()
            .map(|c| format!("{} {}", c.name, c.version()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// SHA-256 (hex) of the container configuration without the hash label.
pub fn config_hash(cfg: &ContainerConfig) -> String {
    let mut c = cfg.clone();
    c.labels.remove(LABEL_CONFIG_HASH);
    let json = serde_json::to_vec(&c).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

pub(super) fn same_config(info: &ContainerInfo, cfg: &ContainerConfig) -> bool {
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
pub(super) fn prospective_ports(
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
