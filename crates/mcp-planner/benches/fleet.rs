//! The benchmark fleet, shared by `benches/plan.rs` and
//! `examples/plan_scale.rs`: `n` services over `nodes` nodes, converged with
//! the simulator, then 10% changed (see `benches/plan.rs` for the mix).

use mcp_planner::{
    sim, AgentStatus, ContainerState, Desired, Integrations, Node, NodeHealth, NodeRole, Observed,
    Policy, Timestamp,
};
use mcp_spec::{ComponentSpec, RouteMode, RouteSpec, ServiceSpec, Tier};

pub const NOW: Timestamp = Timestamp(1_700_000_000);

fn component(name: &str, image: String, public_host: Option<String>) -> ComponentSpec {
    ComponentSpec {
        name: name.to_string(),
        image,
        volumes: vec![format!("/srv/{name}:/srv/{name}")],
        cmd: vec!["server".into(), "--config".into(), "/srv/app.toml".into()],
        env: vec!["LOG_LEVEL=info".into()],
        network: None,
        user: Some("0:0".into()),
        restart: Some("unless-stopped".into()),
        routes: vec![RouteSpec {
            name: None,
            port: 8443,
            mode: RouteMode::L7,
            public: public_host.is_some(),
            hostname: public_host,
        }],
        health: None,
    }
}

fn name(i: usize) -> String {
    format!("svc{i:05}")
}

fn service(i: usize, core: usize) -> ServiceSpec {
    let name = name(i);
    let public = i.is_multiple_of(3).then(|| format!("{name}.example.net"));
    let mut components = vec![component(
        "api",
        format!("registry.example:8443/{name}:v1.0.{}", i % 7),
        public,
    )];
    if i.is_multiple_of(4) {
        components.push(component(
            "worker",
            format!("registry.example:8443/{name}-worker:v1"),
            None,
        ));
    }
    ServiceSpec {
        name,
        tier: if i < core { Tier::Core } else { Tier::Worker },
        node: None,
        active: true,
        rollback: true,
        snapshot: None,
        components,
    }
}

/// `n` services over `nodes` nodes, converged, then 10% changed.
pub fn fleet(n: usize, nodes: usize) -> (Desired, Observed, Policy) {
    let policy = Policy {
        integrations: Integrations::all_configured(),
        ..Policy::default()
    };
    let edges = (nodes * 7 / 100).max(4);
    let workers = nodes - 1 - edges;
    let core = n / 50;
    let pct = |p: usize| n * p / 100;
    let mut o = Observed::default();
    let mut add = |name: String, role, i: usize| {
        o.nodes.insert(
            name.clone(),
            Node {
                role,
                address: format!("100.64.{}.{}", i / 200, i % 200 + 1),
                health: NodeHealth::Healthy,
                containers: 0,
            },
        );
        o.agents.insert(name, AgentStatus::empty());
    };
    add("master".into(), NodeRole::Master, 0);
    for w in 0..workers {
        add(format!("worker{w:03}"), NodeRole::Worker, w + 1);
    }
    for e in 0..edges {
        add(format!("edge{e:02}"), NodeRole::Edge, workers + 1 + e);
    }
    let mut d = Desired {
        source: Some("4f2a9c1e".into()),
        ..Desired::default()
    };
    for i in 0..n {
        let s = service(i, core);
        d.services.insert(s.name.clone(), s);
    }
    let mut o = sim::converge(&d, &o, &policy, NOW);

    // 10% changed, in disjoint ranges of services.
    let at = |p: usize| pct(p);
    for i in at(10)..at(10) + pct(4) {
        let s = d.services.get_mut(&name(i)).expect("svc");
        s.components[0].image = format!("registry.example:8443/{}:v2.0.0", s.name);
    }
    for i in at(20)..at(20) + pct(2) {
        d.services.get_mut(&name(i)).expect("svc").active = false;
    }
    for i in n..n + pct(2) {
        let s = service(i, core);
        d.services.insert(s.name.clone(), s);
    }
    for i in at(30)..at(30) + pct(1) {
        d.services.remove(&name(i));
    }
    for i in at(40)..at(40) + pct(1) {
        let name = name(i);
        let node = o.placements[&name].node.clone();
        if let Some(AgentStatus::Reported { services }) = o.agents.get_mut(&node) {
            if let Some(c) = services
                .get_mut(&name)
                .and_then(|s| s.components.get_mut("api"))
            {
                c.state = ContainerState::Exited;
            }
        }
    }
    (d, o, policy)
}
