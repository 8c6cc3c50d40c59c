//! The planner's laws as property tests.
//!
//! Fleets are generated from a seed by a small deterministic generator (a
//! chaotic mix of nodes in every health, specs with pins, tiers and public
//! routes, stale placements, reports with wrong hashes and dead components,
//! stray DNS records and edge routes, heal histories, held files). Proptest
//! drives the seeds and the policy switches.

use std::collections::BTreeMap;

use mcp_planner::{
    plan, render_json, render_text, sim, Action, AgentStatus, ContainerState, Desired, EdgeRoute,
    HealRecord, Held, Integration, Integrations, Kind, NodeHealth, NodeRole, Observed, Placement,
    Plan, Policy, StepState, Timestamp,
};
use mcp_spec::{spec_hash, ServiceSpec, Tier};
use proptest::prelude::*;

use crate::support::{component, node, NOW};

/// SplitMix64: enough randomness for fixtures, fully determined by the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NAMES: [&str; 7] = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"];
const NODES: [&str; 7] = ["m1", "w1", "w2", "w3", "e1", "e2", "gone"];

fn gen_spec(r: &mut Rng, name: &str, pins_ok_only: bool) -> ServiceSpec {
    let mut s = ServiceSpec {
        name: name.to_string(),
        tier: if r.chance(20) {
            Tier::Core
        } else {
            Tier::Worker
        },
        node: None,
        active: r.chance(80),
        rollback: true,
        snapshot: None,
        components: Vec::new(),
    };
    if r.chance(20) {
        let pins: &[&str] = if pins_ok_only {
            &["m1", "w1", "w2"]
        } else {
            &NODES
        };
        s.node = Some(r.pick(pins).to_string());
    }
    for i in 0..1 + r.below(2) {
        let tag = r.pick(&["v1", "v2"]);
        let mut c = component(&format!("c{i}"), &format!("registry.example/{name}:{tag}"));
        c.routes[0].port = 8000 + i as u16;
        if r.chance(40) {
            c.routes[0].public = true;
            c.routes[0].hostname = Some(format!("{name}{i}.example.net"));
        }
        s.components.push(c);
    }
    s
}

fn gen_nodes(r: &mut Rng, o: &mut Observed, all_healthy: bool) {
    for (n, role, addr) in [
        ("m1", NodeRole::Master, "100.64.0.1"),
        ("w1", NodeRole::Worker, "100.64.0.2"),
        ("w2", NodeRole::Worker, "100.64.0.3"),
        ("w3", NodeRole::Worker, "100.64.0.4"),
        ("e1", NodeRole::Edge, "100.64.0.8"),
        ("e2", NodeRole::Edge, "100.64.0.9"),
    ] {
        if !all_healthy && r.chance(20) && n != "m1" {
            continue;
        }
        let mut nd = node(role, addr);
        nd.containers = r.below(4) as u32;
        if !all_healthy {
            nd.health = match r.below(6) {
                0 => NodeHealth::Unhealthy,
                1 => NodeHealth::Unknown,
                _ => NodeHealth::Healthy,
            };
        }
        o.nodes.insert(n.to_string(), nd);
        let status = if all_healthy || r.chance(85) {
            Some(AgentStatus::empty())
        } else if r.chance(50) {
            Some(AgentStatus::Unreachable {
                error: "timeout".to_string(),
            })
        } else {
            None
        };
        if let Some(s) = status {
            o.agents.insert(n.to_string(), s);
        }
    }
}

/// A matching fleet: desired specs all placeable, every node healthy,
/// observed built by converging from nothing with every integration.
fn matching_fleet(seed: u64) -> (Desired, Observed) {
    matching_fleet_with(seed, Integrations::all_configured())
}

/// As [`matching_fleet`], converged by a master with `integrations`.
fn matching_fleet_with(seed: u64, integrations: Integrations) -> (Desired, Observed) {
    let mut r = Rng(seed);
    let mut o = Observed::default();
    gen_nodes(&mut r, &mut o, true);
    let mut d = Desired::default();
    for name in NAMES {
        if r.chance(60) {
            d.services
                .insert(name.to_string(), gen_spec(&mut r, name, true));
        }
    }
    let policy = Policy {
        allow_mass_prune: true,
        integrations,
        ..Policy::default()
    };
    let o = sim::converge(&d, &o, &policy, NOW);
    (d, o)
}

/// Anything goes.
fn chaotic_fleet(seed: u64) -> (Desired, Observed) {
    let mut r = Rng(seed);
    let mut o = Observed::default();
    gen_nodes(&mut r, &mut o, false);
    let mut d = Desired {
        source: Some(format!("{seed:x}")),
        ..Desired::default()
    };
    for name in NAMES {
        let spec = gen_spec(&mut r, name, false);
        let desired = r.chance(60);
        if desired {
            d.services.insert(name.to_string(), spec.clone());
        }
        if r.chance(15) {
            d.held.insert(
                name.to_string(),
                Held {
                    file: format!("services/{name}.toml"),
                    errors: vec![format!("services/{name}.toml:1:1: broken")],
                    reason: None,
                },
            );
        }
        if r.chance(55) {
            // Placed somewhere, with a deployed spec that may differ.
            let on = r.pick(&NODES).to_string();
            let mut deployed = if r.chance(50) {
                spec.clone()
            } else {
                gen_spec(&mut r, name, false)
            };
            if r.chance(20) {
                deployed.active = !deployed.active;
            }
            let known = r.chance(70);
            o.placements.insert(
                name.to_string(),
                Placement {
                    node: on.clone(),
                    tier: deployed.tier,
                    deployed_at: Timestamp(NOW.0 - 86_400),
                    spec: known.then(|| deployed.clone()),
                    spec_hash: known.then(|| spec_hash(&deployed)),
                },
            );
            if r.chance(85) {
                let mut rep = sim::report_for(&deployed, spec_hash(&deployed));
                for c in rep.components.values_mut() {
                    c.state = match r.below(8) {
                        0 => ContainerState::Exited,
                        1 => ContainerState::Missing,
                        2 => ContainerState::Stopped,
                        3 => ContainerState::Other,
                        _ => c.state,
                    };
                }
                if r.chance(10) {
                    rep.active = !rep.active;
                }
                if let Some(AgentStatus::Reported { services }) = o.agents.get_mut(&on) {
                    services.insert(name.to_string(), rep);
                }
            }
        }
        if r.chance(10) {
            // An orphan somewhere.
            let on = r.pick(&NODES);
            if let Some(AgentStatus::Reported { services }) = o.agents.get_mut(on) {
                services.insert(name.to_string(), sim::report_for(&spec, spec_hash(&spec)));
            }
        }
        if r.chance(40) {
            let addr = r.pick(&["100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.0.77"]);
            o.dns
                .insert(format!("{name}.mcp.internal"), addr.to_string());
        }
        if r.chance(30) {
            o.edge_routes.insert(
                format!("{name}{}.example.net", r.below(2)),
                EdgeRoute {
                    service: r.pick(&NAMES).to_string(),
                    edge_node: r.pick(&NODES).to_string(),
                    backend_hostname: format!("{name}.mcp.internal"),
                    backend_port: 8000 + r.below(2) as u16,
                },
            );
        }
        for c in ["c0", "c1"] {
            if r.chance(30) {
                let attempts = r.below(7) as u32;
                o.heal
                    .entry(name.to_string())
                    .or_insert_with(BTreeMap::new)
                    .insert(
                        c.to_string(),
                        HealRecord {
                            attempts,
                            last_attempt: Timestamp(NOW.0 - r.below(90) as u64),
                            alerted: r.chance(50),
                        },
                    );
            }
        }
    }
    (d, o)
}

/// Every integration configured.
fn policy(migrate: bool, mass: bool) -> Policy {
    Policy {
        allow_auto_migrate: migrate,
        allow_mass_prune: mass,
        integrations: Integrations::all_configured(),
        ..Policy::default()
    }
}

/// DNS and edge routes configured or not.
fn integrations(dns: bool, edge: bool) -> Integrations {
    let mut i = Integrations::all_configured();
    if !dns {
        i.dns = Integration::not_configured("no DNS here");
    }
    if !edge {
        i.edge = Integration::not_configured("no edge here");
    }
    i
}

/// 256 unless `PROPTEST_CASES` says otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// The generator is not vacuous: over a few hundred seeds it produces every
/// kind of entry, and most first plans have actions.
#[test]
fn chaotic_fleets_cover_every_kind() {
    let mut seen = std::collections::BTreeSet::new();
    let mut with_actions = 0;
    for seed in 0..400 {
        let (d, o) = chaotic_fleet(seed);
        let p = plan(&d, &o, &policy(seed % 2 == 0, seed % 5 == 0), NOW);
        seen.extend(p.entries.iter().map(|e| e.kind));
        with_actions += usize::from(p.has_actions());
    }
    let missing: Vec<_> = mcp_planner::Kind::ALL
        .iter()
        .filter(|k| !seen.contains(k))
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
    assert!(with_actions > 300, "{with_actions}");
}

fn show(p: &Plan) -> String {
    render_text(p, false)
}

/// The names an action touches: its service, DNS name or edge hostname.
fn touches(a: &Action, held: &str, o: &Observed) -> bool {
    let dns = format!("{held}.mcp.internal");
    match a {
        Action::SetDns { name, .. } | Action::RemoveDns { name } => *name == dns,
        Action::SetEdgeRoute { hostname, .. } | Action::RemoveEdgeRoute { hostname, .. } => {
            a.service() == Some(held)
                || o.edge_routes
                    .get(hostname)
                    .is_some_and(|r| r.service == held)
        }
        _ => a.service() == Some(held),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn matching_fleet_gives_an_empty_plan(seed in any::<u64>(), migrate: bool, mass: bool) {
        let (d, o) = matching_fleet(seed);
        let p = plan(&d, &o, &policy(migrate, mass), NOW);
        prop_assert!(p.entries.is_empty() && p.notes.is_empty(), "{}", show(&p));
        prop_assert!(!p.has_changes());
    }

    #[test]
    fn matching_fleet_plans_nothing_whatever_integrations(
        seed in any::<u64>(), migrate: bool, dns: bool, edge: bool, converged_with_all: bool,
    ) {
        // Converged by a master that had every adapter, or one that has the
        // same as now (no DNS records or edge routes recorded then).
        let now = integrations(dns, edge);
        let (d, o) = if converged_with_all {
            matching_fleet(seed)
        } else {
            matching_fleet_with(seed, now.clone())
        };
        let pol = Policy { integrations: now, ..policy(migrate, true) };
        let p = plan(&d, &o, &pol, NOW);
        prop_assert!(p.entries.is_empty() && p.notes.is_empty(), "{}", show(&p));
    }

    #[test]
    fn steps_of_missing_integrations_are_skipped(
        seed in any::<u64>(), migrate: bool, mass: bool, dns: bool, edge: bool,
    ) {
        let (d, o) = chaotic_fleet(seed);
        let pol = Policy { integrations: integrations(dns, edge), ..policy(migrate, mass) };
        let p = plan(&d, &o, &pol, NOW);
        for e in &p.entries {
            for s in &e.steps {
                let missing = pol.integrations.skip_reason(&s.action);
                match missing {
                    Some(why) => prop_assert_eq!(&s.state, &StepState::Skipped(why.to_string())),
                    None => prop_assert!(s.skipped_reason().is_none(), "{}", show(&p)),
                }
            }
            // An entry is never made of skipped steps alone.
            prop_assert!(
                e.kind != Kind::Repair || e.steps.iter().any(|s| s.skipped_reason().is_none()),
                "{}", show(&p)
            );
        }
        for a in p.actions() {
            prop_assert!(pol.integrations.skip_reason(a).is_none(), "{a} is ready");
        }
        let o2 = sim::applied(&p, &d, &o, NOW);
        let p2 = plan(&d, &o2, &pol, NOW);
        prop_assert!(!p2.has_actions(), "first:\n{}\nsecond:\n{}", show(&p), show(&p2));
        let back: Plan = serde_json::from_str(&render_json(&p)).expect("json");
        prop_assert_eq!(back, p);
    }

    #[test]
    fn apply_then_replan_has_nothing_to_do(seed in any::<u64>(), migrate: bool, mass: bool) {
        let (d, o) = chaotic_fleet(seed);
        let pol = policy(migrate, mass);
        let p1 = plan(&d, &o, &pol, NOW);
        let o2 = sim::applied(&p1, &d, &o, NOW);
        let p2 = plan(&d, &o2, &pol, NOW);
        prop_assert!(!p2.has_actions(), "first:\n{}\nsecond:\n{}", show(&p1), show(&p2));
        // Same inputs, same plan; and the JSON form round-trips.
        prop_assert_eq!(&plan(&d, &o, &pol, NOW), &p1);
        let back: Plan = serde_json::from_str(&render_json(&p1)).expect("json");
        prop_assert_eq!(back, p1);
    }

    #[test]
    fn held_services_are_never_touched(seed in any::<u64>(), migrate: bool, mass: bool) {
        let (d, o) = chaotic_fleet(seed);
        let p = plan(&d, &o, &policy(migrate, mass), NOW);
        for held in d.held.keys() {
            let e = p.entry(held).expect("held services are reported");
            prop_assert!(e.kind == mcp_planner::Kind::Held && e.steps.is_empty());
            for a in p.actions() {
                prop_assert!(!touches(a, held, &o), "{a} touches held {held}\n{}", show(&p));
            }
        }
    }

    #[test]
    fn no_plan_breaks_the_mass_deletion_guard(seed in any::<u64>(), migrate: bool) {
        let (d, o) = chaotic_fleet(seed);
        let pol = policy(migrate, false);
        let p = plan(&d, &o, &pol, NOW);
        let prunes = p.actions().filter(|a| matches!(a, Action::Undeploy { .. })).count();
        let total = o.placements.len();
        prop_assert!(
            prunes == 0 || (prunes < total && prunes as f64 <= pol.mass_prune_fraction * total as f64),
            "{prunes} of {total}\n{}", show(&p)
        );
    }

    #[test]
    fn nothing_is_placed_on_edge_or_unavailable_nodes(seed in any::<u64>(), migrate: bool, mass: bool) {
        let (d, o) = chaotic_fleet(seed);
        let p = plan(&d, &o, &policy(migrate, mass), NOW);
        for a in p.actions() {
            let Some(target) = a.placement_target() else { continue };
            let n = o.nodes.get(target);
            prop_assert!(n.is_some_and(|n| n.role != NodeRole::Edge && n.health == NodeHealth::Healthy), "{a}");
            prop_assert!(matches!(o.agents.get(target), Some(AgentStatus::Reported { .. })), "{a}");
        }
    }
}
