//! plan + render_text of 1,000 services over 50 nodes with 10% changed.
//!
//! Fleet: 1 master, 45 workers, 4 edge nodes; 1,000 services (20 core, a
//! third with a public route, one or two components each), converged with the
//! simulator. Then 100 services change: 40 image bumps (updates with diffs),
//! 20 stops, 20 new services, 10 prunes, 10 exited components (self-heal).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mcp_planner::{
    plan, render_text, sim, AgentStatus, ContainerState, Desired, Node, NodeHealth, NodeRole,
    Observed, Policy, Timestamp,
};
use mcp_spec::{ComponentSpec, RouteMode, RouteSpec, ServiceSpec, Tier};

const NOW: Timestamp = Timestamp(1_700_000_000);

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

fn service(i: usize) -> ServiceSpec {
    let name = format!("svc{i:04}");
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
        tier: if i < 20 { Tier::Core } else { Tier::Worker },
        node: None,
        active: true,
        snapshot: None,
        components,
    }
}

fn fleet() -> (Desired, Observed, Policy) {
    let policy = Policy::default();
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
    for w in 0..45 {
        add(format!("worker{w:02}"), NodeRole::Worker, w + 1);
    }
    for e in 0..4 {
        add(format!("edge{e}"), NodeRole::Edge, e + 46);
    }
    let mut d = Desired {
        source: Some("4f2a9c1e".into()),
        ..Desired::default()
    };
    for i in 0..1000 {
        let s = service(i);
        d.services.insert(s.name.clone(), s);
    }
    let mut o = sim::converge(&d, &o, &policy, NOW);

    // 10% changed.
    for i in 100..140 {
        let s = d.services.get_mut(&format!("svc{i:04}")).expect("svc");
        s.components[0].image = format!("registry.example:8443/{}:v2.0.0", s.name);
    }
    for i in 200..220 {
        d.services
            .get_mut(&format!("svc{i:04}"))
            .expect("svc")
            .active = false;
    }
    for i in 1000..1020 {
        let s = service(i);
        d.services.insert(s.name.clone(), s);
    }
    for i in 300..310 {
        d.services.remove(&format!("svc{i:04}"));
    }
    for i in 400..410 {
        let name = format!("svc{i:04}");
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

fn bench(c: &mut Criterion) {
    let (d, o, policy) = fleet();
    let p = plan(&d, &o, &policy, NOW);
    assert_eq!(p.entries.len(), 100, "{}", render_text(&p, false));
    c.bench_function(
        "plan + render_text, 1000 services / 50 nodes / 10% changed",
        |b| {
            b.iter(|| {
                let p = plan(black_box(&d), black_box(&o), &policy, NOW);
                black_box(render_text(&p, false))
            });
        },
    );
    c.bench_function("plan only, 1000 services / 50 nodes / 10% changed", |b| {
        b.iter(|| black_box(plan(black_box(&d), black_box(&o), &policy, NOW)));
    });
    c.bench_function("render_text only, 100 entries", |b| {
        b.iter(|| black_box(render_text(black_box(&p), false)));
    });
    c.bench_function("spec_hash x1000 (part of plan)", |b| {
        b.iter(|| {
            for s in d.services.values() {
                black_box(mcp_spec::spec_hash(black_box(s)));
            }
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
