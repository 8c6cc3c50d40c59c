//! Fixtures: a small fleet builder and the `check` helper.

use expect_test::Expect;
use mcp_planner::{
    plan, render_text, sim, AgentStatus, ComponentHealth, ContainerState, Desired, Integrations,
    Node, NodeHealth, NodeRole, Observed, Plan, Policy, Timestamp,
};
use mcp_spec::{ComponentSpec, RouteMode, RouteSpec, ServiceSpec, Tier};

pub const NOW: Timestamp = Timestamp(1_700_000_000);

/// A one-component worker service, active, one internal route.
pub fn svc(name: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        tier: Tier::Worker,
        node: None,
        active: true,
        rollback: true,
        snapshot: None,
        components: vec![component(
            "api",
            &format!("registry.example:8443/{name}:v1"),
        )],
    }
}

pub fn component(name: &str, image: &str) -> ComponentSpec {
    ComponentSpec {
        name: name.to_string(),
        image: image.to_string(),
        volumes: vec![],
        cmd: vec![],
        env: vec![],
        network: None,
        user: None,
        restart: None,
        routes: vec![RouteSpec {
            name: None,
            port: 8443,
            mode: RouteMode::L7,
            hostname: None,
            public: false,
        }],
        health: None,
    }
}

/// `svc` with a public route `<name>.example.net`.
pub fn public_svc(name: &str) -> ServiceSpec {
    let mut s = svc(name);
    let r = &mut s.components[0].routes[0];
    r.hostname = Some(format!("{name}.example.net"));
    r.public = true;
    s
}

pub fn node(role: NodeRole, address: &str) -> Node {
    Node {
        role,
        address: address.to_string(),
        health: NodeHealth::Healthy,
        containers: 0,
    }
}

/// Desired, observed and policy, built step by step.
#[derive(Clone)]
pub struct Fleet {
    pub desired: Desired,
    pub observed: Observed,
    pub policy: Policy,
}

impl Fleet {
    /// master `m1`, workers `w1` `w2`, edge `e1`; all healthy and reporting,
    /// nothing deployed; every integration configured.
    pub fn new() -> Fleet {
        let mut f = Fleet {
            desired: Desired {
                source: Some("4f2a9c1".to_string()),
                ..Desired::default()
            },
            observed: Observed::default(),
            policy: Policy {
                integrations: Integrations::all_configured(),
                ..Policy::default()
            },
        };
        f.add_node("m1", NodeRole::Master, "100.64.0.1");
        f.add_node("w1", NodeRole::Worker, "100.64.0.2");
        f.add_node("w2", NodeRole::Worker, "100.64.0.3");
        f.add_node("e1", NodeRole::Edge, "100.64.0.9");
        f
    }

    pub fn add_node(&mut self, name: &str, role: NodeRole, address: &str) {
        self.observed
            .nodes
            .insert(name.to_string(), node(role, address));
        self.observed
            .agents
            .insert(name.to_string(), AgentStatus::empty());
    }

    pub fn want(mut self, spec: ServiceSpec) -> Fleet {
        self.desired.services.insert(spec.name.clone(), spec);
        self
    }

    /// Plans and applies (with the simulator) until converged.
    pub fn converged(mut self) -> Fleet {
        self.observed = sim::converge(&self.desired, &self.observed, &self.policy, NOW);
        self
    }

    pub fn spec_mut(&mut self, name: &str) -> &mut ServiceSpec {
        self.desired
            .services
            .get_mut(name)
            .expect("desired service")
    }

    pub fn set_health(&mut self, node: &str, health: NodeHealth) {
        self.observed.nodes.get_mut(node).expect("node").health = health;
    }

    pub fn set_state(&mut self, node: &str, service: &str, component: &str, state: ContainerState) {
        match self.observed.agents.get_mut(node) {
            Some(AgentStatus::Reported { services }) => {
                services
                    .get_mut(service)
                    .expect("reported service")
                    .components
                    .get_mut(component)
                    .expect("reported component")
                    .state = state;
            }
            _ => panic!("no report for {node}"),
        }
    }

    pub fn set_component_health(
        &mut self,
        node: &str,
        service: &str,
        component: &str,
        health: Option<ComponentHealth>,
    ) {
        match self.observed.agents.get_mut(node) {
            Some(AgentStatus::Reported { services }) => {
                let c = services
                    .get_mut(service)
                    .expect("reported service")
                    .components
                    .get_mut(component)
                    .expect("reported component");
                c.health = health;
                c.health_detail = "status 500 Internal Server Error (expected 2xx)".to_string();
            }
            _ => panic!("no report for {node}"),
        }
    }

    pub fn plan(&self) -> Plan {
        plan(&self.desired, &self.observed, &self.policy, NOW)
    }
}

/// Plans `fleet` and compares the uncoloured text render with `expect`.
/// Also checks the laws every plan obeys: applying it (simulator) and
/// planning again leaves no ready action, and it survives a JSON round trip.
pub fn check(fleet: &Fleet, expect: Expect) {
    let p = fleet.plan();
    expect.assert_eq(&render_text(&p, false));
    let after = sim::applied(&p, &fleet.desired, &fleet.observed, NOW);
    let again = plan(&fleet.desired, &after, &fleet.policy, NOW);
    assert!(
        !again.has_actions(),
        "re-plan after apply still has actions:\n{}",
        render_text(&again, false)
    );
    let json = mcp_planner::render_json(&p);
    let back: Plan = serde_json::from_str(&json).expect("plan JSON parses");
    assert_eq!(back, p);
}
