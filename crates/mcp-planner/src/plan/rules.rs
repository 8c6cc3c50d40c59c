//! The rules for one service: placement of a new service, update, start /
//! stop, self-heal with back-off, migration, prune and the mass-deletion
//! guard.

use std::borrow::Cow;

use mcp_spec::{canonical_toml, spec_hash, ServiceSpec, Tier};

use super::network::repair_reason;
use super::{Draft, Planner};
use crate::model::{ComponentHealth, ContainerState, NodeRole, Placement, ServiceReport};
use crate::plan::{short, Action, HealMethod, Kind, Note, SpecChange, Step};

impl<'a> Planner<'a> {
    // -- the mass-deletion guard ---------------------------------------------

    /// Prune candidates: placed, not desired, not held.
    fn prune_candidates(&self) -> usize {
        self.observed
            .placements
            .keys()
            .filter(|n| {
                !self.desired.services.contains_key(*n) && !self.desired.held.contains_key(*n)
            })
            .count()
    }

    pub(super) fn guard(&mut self, notes: &mut Vec<Note>) {
        let prunes = self.prune_candidates();
        let placements = self.observed.placements.len();
        if self.policy.allow_mass_prune || prunes == 0 {
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        let too_many = prunes == placements
            || prunes as f64 > self.policy.mass_prune_fraction * placements as f64;
        if too_many {
            let note = Note::MassPruneRefused {
                prunes,
                placements,
                fraction: self.policy.mass_prune_fraction,
            };
            self.prune_refused = Some(note.to_string());
            notes.push(note);
        }
    }

    // -- per service ---------------------------------------------------------

    pub(super) fn service(&mut self, name: &'a str) -> Draft {
        let mut d = Draft::new();
        let placement = self.observed.placements.get(name);
        if let Some(held) = self.desired.held.get(name) {
            let why = match &held.reason {
                Some(r) => format!("{r}: service left as it is"),
                None => format!("file {} is unreadable: service left as it is", held.file),
            };
            d.set(Kind::Held, why);
            d.node = placement.map(|p| p.node.clone());
            d.details.clone_from(&held.errors);
            return d;
        }
        match (self.desired.services.get(name), placement) {
            (Some(spec), None) => self.new_service(&mut d, spec),
            (Some(spec), Some(p)) => self.placed(&mut d, spec, p),
            (None, Some(p)) => self.prune(&mut d, name, p),
            (None, None) => {
                self.stale_edges(&mut d, name);
                self.stale_dns(&mut d, name);
            }
        }
        // Steps of integrations that are not configured alone make no entry:
        // a converged fleet without a DNS or edge adapter plans nothing.
        if d.kind.is_none() && d.steps.iter().all(|s| s.skipped_reason().is_some()) {
            d.steps.clear();
        }
        if d.kind.is_none() && !d.steps.is_empty() {
            d.kind = Some(Kind::Repair);
            d.reason = repair_reason(&d.steps);
            if d.node.is_none() {
                d.node = placement.map(|p| p.node.clone());
            }
        }
        d
    }

    pub(super) fn choose_node(&self, spec: &ServiceSpec) -> Result<(String, String), String> {
        if let Some(pin) = &spec.node {
            return match self.observed.nodes.get(pin) {
                None => Err(format!("pinned node {pin} is not registered")),
                Some(n) if n.role == NodeRole::Edge => Err(format!(
                    "pinned node {pin} is an edge node (edge nodes run no application containers)"
                )),
                Some(_) => match self.usable(pin) {
                    Ok(()) => Ok((pin.clone(), format!("pinned to {pin}"))),
                    Err(why) => Err(format!("pinned node {pin} is {why}")),
                },
            };
        }
        // A master that died between an agent's deploy and recording the
        // placement left the service running there: place it there again
        // rather than start a second copy elsewhere.
        let role = match spec.tier {
            Tier::Core => NodeRole::Master,
            Tier::Worker => NodeRole::Worker,
        };
        if let Some(n) = self.already_running(&spec.name, role) {
            return Ok((
                n.to_string(),
                format!("already running on {n} (its placement was not recorded)"),
            ));
        }
        match spec.tier {
            Tier::Core => self
                .master
                .map(|n| (n.to_string(), format!("core tier: master node {n}")))
                .ok_or_else(|| "core tier: no healthy master node".to_string()),
            Tier::Worker => self
                .workers
                .first()
                .map(|&(load, n)| {
                    (
                        n.to_string(),
                        format!("least containers among healthy workers ({n} has {load})"),
                    )
                })
                .ok_or_else(|| "no healthy worker node".to_string()),
        }
    }

    /// The first usable node of `role` whose agent reports `service`, which
    /// has no placement (the only services a node is chosen for).
    fn already_running(&self, service: &str, role: NodeRole) -> Option<&'a str> {
        self.unplaced.get(service)?.iter().copied().find(|n| {
            self.observed.nodes.get(*n).is_some_and(|x| x.role == role) && self.usable(n).is_ok()
        })
    }

    fn new_service(&mut self, d: &mut Draft, spec: &'a ServiceSpec) {
        match self.choose_node(spec) {
            Err(why) => d.set(Kind::Blocked, format!("cannot place: {why}")),
            Ok((node, why)) => {
                let hash = spec_hash(spec);
                self.add_load(&node, spec);
                d.set(Kind::Deploy, format!("new service, {why}"));
                d.steps.push(Step::ready(Action::Deploy {
                    service: spec.name.clone(),
                    node: node.clone(),
                    spec_hash: hash,
                }));
                self.dns(d, &spec.name, &node);
                self.edges(d, spec);
                d.node = Some(node);
            }
        }
    }

    fn placed(&mut self, d: &mut Draft, spec: &'a ServiceSpec, p: &'a Placement) {
        let name = spec.name.as_str();
        let node = p.node.as_str();
        d.node = Some(node.to_string());

        if let Some(pin) = spec.node.as_deref().filter(|pin| *pin != node) {
            let why = format!("node pin changed from {node} to {pin}");
            self.migrate(d, spec, p, pin, &why);
            return;
        }
        if spec.node.is_none() {
            if let Some((to, why)) = self.wrong_kind_of_node(spec, node) {
                self.migrate(d, spec, p, &to, &why);
                return;
            }
        }

        let hash = match (&p.spec, &p.spec_hash) {
            (Some(deployed), Some(h)) if deployed == spec => h.clone(),
            _ => spec_hash(spec),
        };
        let on_edge = self
            .observed
            .nodes
            .get(node)
            .is_some_and(|n| n.role == NodeRole::Edge);
        if on_edge {
            // Only possible through a bypass (`--direct`) or an old bug:
            // never (re)deploy there; the operator moves it.
            d.set(
                Kind::Blocked,
                format!("placed on edge node {node}, which runs no application containers"),
            );
            d.details
                .push(format!("move it: run `mcp migrate {name} --to <worker>`"));
            self.dns(d, name, node);
            self.edges(d, spec);
            return;
        }
        match self.usable(node) {
            Err(why) => {
                if deployed_hash(p).is_some_and(|h| *h != hash) {
                    d.set(
                        Kind::Blocked,
                        format!("spec changed but node {node} is {why}: the change waits"),
                    );
                    d.steps.push(Step::blocked(
                        Action::Deploy {
                            service: name.to_string(),
                            node: node.to_string(),
                            spec_hash: hash,
                        },
                        format!("node {node} is {why}"),
                    ));
                }
            }
            Ok(()) => match self.report(node, name).flatten() {
                None => {
                    let all: Vec<&str> = spec.components.iter().map(|c| c.name.as_str()).collect();
                    let what = format!("the agent on {node} does not run it");
                    self.heal(d, spec, node, &all, &all, false, &what);
                }
                Some(sr) if sr.spec_hash == hash || only_active_differs(spec, p, &sr.spec_hash) => {
                    self.lifecycle(d, spec, node, sr, &hash);
                }
                Some(sr) => self.update(d, spec, p, sr, hash),
            },
        }
        self.dns(d, name, node);
        self.edges(d, spec);
    }

    fn update(
        &mut self,
        d: &mut Draft,
        spec: &ServiceSpec,
        p: &Placement,
        sr: &ServiceReport,
        hash: String,
    ) {
        let old_canonical = p
            .spec
            .as_ref()
            .filter(|_| deployed_hash(p).is_some_and(|h| *h == sr.spec_hash))
            .map(canonical_toml);
        d.set(
            Kind::Update,
            format!(
                "spec changed ({} -> {}): redeploy on the same node",
                short(&sr.spec_hash),
                short(&hash)
            ),
        );
        if old_canonical.is_none() {
            d.details
                .push("the deployed spec is not known: only hashes can be shown".to_string());
        }
        d.steps.push(Step::ready(Action::Deploy {
            service: spec.name.clone(),
            node: p.node.clone(),
            spec_hash: hash.clone(),
        }));
        d.change = Some(SpecChange {
            old_hash: sr.spec_hash.clone(),
            new_hash: hash,
            old_canonical,
            new_canonical: canonical_toml(spec),
        });
    }

    /// Start / stop / self-heal. `hash` is the desired spec hash; when it
    /// differs from the reported one (only `active` differs) the start or
    /// stop also records the desired spec on the agent.
    fn lifecycle(
        &mut self,
        d: &mut Draft,
        spec: &ServiceSpec,
        node: &str,
        sr: &ServiceReport,
        hash: &str,
    ) {
        let record = sr.spec_hash != hash;
        let name = spec.name.as_str();
        let state_of = |c: &str| {
            sr.components
                .get(c)
                .map_or(ContainerState::Missing, |r| r.state)
        };
        let svc = name.to_string();
        let nd = node.to_string();
        if spec.active && (!sr.active || record) {
            let missing = spec
                .components
                .iter()
                .any(|c| state_of(&c.name) == ContainerState::Missing);
            if missing {
                d.set(
                    Kind::Start,
                    "desired running, stopped on the agent (containers missing: redeploy)",
                );
                d.steps.push(Step::ready(Action::Deploy {
                    service: svc,
                    node: nd,
                    spec_hash: hash.to_string(),
                }));
            } else {
                d.set(Kind::Start, "desired running, stopped on the agent");
                d.steps.push(Step::ready(Action::Start {
                    service: svc,
                    node: nd,
                    spec_hash: hash.to_string(),
                }));
            }
        } else if !spec.active {
            let running: Vec<&str> = spec
                .components
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| state_of(c) == ContainerState::Running)
                .collect();
            if sr.active || record || !running.is_empty() {
                let what = if running.is_empty() {
                    "the agent has it active".to_string()
                } else {
                    format!("{} running", running.join(", "))
                };
                d.set(Kind::Stop, format!("desired stopped, {what}"));
                d.steps.push(Step::ready(Action::Stop {
                    service: svc,
                    node: nd,
                    spec_hash: hash.to_string(),
                }));
            }
        } else {
            let unhealthy = |c: &str| {
                state_of(c) == ContainerState::Running
                    && sr.components.get(c).and_then(|r| r.health)
                        == Some(ComponentHealth::Unhealthy)
            };
            let down: Vec<&str> = spec
                .components
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| state_of(c) != ContainerState::Running || unhealthy(c))
                .collect();
            let missing: Vec<&str> = down
                .iter()
                .copied()
                .filter(|c| state_of(c) == ContainerState::Missing)
                .collect();
            if !down.is_empty() {
                let what = down
                    .iter()
                    .map(|c| {
                        if unhealthy(c) {
                            format!("{c} unhealthy")
                        } else {
                            format!("{c} {}", state_of(c).as_str())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let restart = down.iter().all(|c| unhealthy(c));
                self.heal(d, spec, node, &down, &missing, restart, &what);
            }
        }
    }

    /// Self-heal of the `down` components (`missing` ones need a redeploy),
    /// with exponential back-off and a degraded state after too many tries.
    #[allow(clippy::too_many_arguments)]
    fn heal(
        &mut self,
        d: &mut Draft,
        spec: &ServiceSpec,
        node: &str,
        down: &[&str],
        missing: &[&str],
        restart: bool,
        what: &str,
    ) {
        let name = spec.name.as_str();
        let records = self.observed.heal.get(name);
        let max = self.policy.heal_max_attempts;
        let mut due: Vec<String> = Vec::new();
        let mut redeploy = false;
        let mut alerts = Vec::new();
        let mut degraded = false;
        let mut waiting = false;
        for c in down {
            let rec = records.and_then(|r| r.get(*c)).cloned().unwrap_or_default();
            if rec.attempts >= max {
                degraded = true;
                d.details.push(format!(
                    "{c}: degraded after {} heal attempts{}",
                    rec.attempts,
                    if rec.alerted { " (alerted)" } else { "" }
                ));
                if !rec.alerted {
                    alerts.push(Action::Alert {
                        service: name.to_string(),
                        node: node.to_string(),
                        component: (*c).to_string(),
                        detail: format!("{c} still down after {} heal attempts", rec.attempts),
                    });
                }
                continue;
            }
            let due_at = rec
                .last_attempt
                .plus_secs(self.policy.heal_delay_secs(rec.attempts));
            if rec.attempts > 0 && self.now < due_at {
                waiting = true;
                d.details.push(format!(
                    "{c}: heal attempt {} of {max} due in {}s",
                    rec.attempts + 1,
                    due_at.0 - self.now.0
                ));
                continue;
            }
            if missing.contains(c) {
                redeploy = true;
            }
            due.push((*c).to_string());
        }
        let healing = !due.is_empty();
        if healing {
            d.steps.push(Step::ready(Action::Heal {
                service: name.to_string(),
                node: node.to_string(),
                components: due,
                method: if redeploy {
                    HealMethod::Redeploy
                } else if restart {
                    HealMethod::Restart
                } else {
                    HealMethod::Start
                },
            }));
        }
        let raise = !alerts.is_empty();
        d.steps.extend(alerts.into_iter().map(Step::ready));
        if healing {
            d.set(Kind::Heal, format!("self-heal: {what}"));
        } else if raise || (degraded && !waiting) {
            d.set(Kind::Degraded, format!("degraded: {what}"));
        } else if waiting {
            d.set(Kind::Waiting, format!("self-heal backing off: {what}"));
        }
    }

    /// A service running on a node of the wrong kind for its tier (a
    /// worker-tier service on the master node, a core one on a worker —
    /// e.g. its tier changed while it ran): where it belongs and why. An
    /// unknown node, or nowhere to go, is left to the other rules.
    fn wrong_kind_of_node(&self, spec: &ServiceSpec, node: &str) -> Option<(String, String)> {
        let role = self.observed.nodes.get(node)?.role;
        let fits = match spec.tier {
            Tier::Core => role == NodeRole::Master,
            Tier::Worker => role == NodeRole::Worker,
        };
        if fits || role == NodeRole::Edge {
            return None;
        }
        let to = match spec.tier {
            Tier::Core => self.master?.to_string(),
            Tier::Worker => self.workers.first()?.1.to_string(),
        };
        let kind = match spec.tier {
            Tier::Core => "core services run on the master node",
            Tier::Worker => "worker services run on worker nodes",
        };
        Some((
            to,
            format!(
                "tier is {} but it runs on {} node {node} ({kind})",
                spec.tier.as_str(),
                role.as_str()
            ),
        ))
    }

    fn migrate(
        &mut self,
        d: &mut Draft,
        spec: &'a ServiceSpec,
        p: &'a Placement,
        pin: &str,
        why: &str,
    ) {
        let name = spec.name.as_str();
        let from = p.node.as_str();
        let action = Action::Migrate {
            service: name.to_string(),
            from: from.to_string(),
            to: pin.to_string(),
        };
        let target = match self.observed.nodes.get(pin) {
            None => Err("not registered".to_string()),
            Some(n) if n.role == NodeRole::Edge => {
                Err("an edge node (edge nodes run no application containers)".to_string())
            }
            Some(_) => self.usable(pin),
        };
        let hint = format!("run `mcp migrate {name} --to {pin}`");
        match target {
            Err(not) => {
                d.set(Kind::Blocked, format!("{why}, but {pin} is {not}"));
                d.steps
                    .push(Step::blocked(action, format!("{pin} is {not}")));
            }
            Ok(()) if !self.policy.allow_auto_migrate => {
                d.set(
                    Kind::Blocked,
                    format!("{why}: automatic migration is disabled"),
                );
                d.details.push(format!("to move it, {hint}"));
                d.steps.push(Step::blocked(
                    action,
                    format!("automatic migration disabled: {hint}"),
                ));
            }
            Ok(()) => {
                d.set(Kind::Migrate, why.to_string());
                self.add_load(pin, spec);
                d.steps.push(Step::ready(action));
                d.node = Some(pin.to_string());
                self.dns(d, name, pin);
                self.edges(d, spec);
                return;
            }
        }
        // Blocked: keep the current placement's records right.
        self.dns(d, name, from);
        self.edges(d, spec);
    }

    fn prune(&mut self, d: &mut Draft, name: &str, p: &Placement) {
        let node = p.node.as_str();
        d.node = Some(node.to_string());
        d.steps.push(Step::ready(Action::Undeploy {
            service: name.to_string(),
            node: node.to_string(),
        }));
        self.stale_edges(d, name);
        self.stale_dns(d, name);
        if self.prune_refused.is_some() {
            d.set(
                Kind::Refused,
                "no longer desired; prune refused by the mass-deletion guard",
            );
            d.block_all("mass-deletion guard");
        } else if let Err(why) = self.usable(node) {
            d.set(
                Kind::Blocked,
                format!("not desired, but node {node} is {why}: the prune waits"),
            );
            d.block_all(&format!("node {node} is {why}"));
        } else {
            d.set(Kind::Undeploy, "no longer desired: prune");
        }
    }
}

/// True when `spec` with `active` flipped has hash `deployed`: the deployed
/// spec differs from the desired one only in `active` (`mcp stop`/`start`
/// edited the file), which is a stop or start, not a redeploy.
///
/// When the placement records the deployed spec, comparing it with `spec`
/// answers without hashing; otherwise (or when they differ elsewhere, which
/// the canonical form may still render alike) the flipped spec is hashed.
fn only_active_differs(spec: &ServiceSpec, p: &Placement, deployed: &str) -> bool {
    let recorded = p
        .spec
        .as_ref()
        .filter(|_| deployed_hash(p).is_some_and(|h| *h == *deployed));
    if let Some(old) = recorded {
        if old.active != spec.active && old.name == spec.name {
            let mut flipped = old.clone();
            flipped.active = spec.active;
            if flipped == *spec {
                return true;
            }
        }
    }
    let mut flipped = spec.clone();
    flipped.active = !spec.active;
    spec_hash(&flipped) == deployed
}

/// The hash of the spec the placement records: its recorded hash, or the
/// spec hashed when no hash was recorded with it.
fn deployed_hash(p: &Placement) -> Option<Cow<'_, str>> {
    match (&p.spec, &p.spec_hash) {
        (Some(_), Some(h)) => Some(Cow::Borrowed(h.as_str())),
        (Some(s), None) => Some(Cow::Owned(spec_hash(s))),
        (None, _) => None,
    }
}
