//! Spec ↔ protocol conversions: valid specs round-trip (also through the
//! wire encoding), and invalid messages are rejected with the loader's rules
//! and field paths.

use expect_test::{expect, Expect};
use mcp_proto::pb;
use mcp_spec::testing::arb_service_spec;
use mcp_spec::{HealthCheck, RouteSpec, ServiceSpec, SnapshotConfig};
use proptest::prelude::*;
use prost::Message;

proptest! {
    #[test]
    fn valid_specs_round_trip(spec in arb_service_spec()) {
        let msg = pb::ServiceSpec::from(&spec);
        let bytes = msg.encode_to_vec();
        let decoded = pb::ServiceSpec::decode(bytes.as_slice()).expect("decodes");
        prop_assert_eq!(&decoded, &msg);
        let back = ServiceSpec::try_from(decoded);
        prop_assert_eq!(back, Ok(spec.clone()));
        for c in &spec.components {
            prop_assert_eq!(mcp_spec::ComponentSpec::try_from(pb::ComponentSpec::from(c)), Ok(c.clone()));
        }
    }
}

/// A valid message to break in each case.
fn base() -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: "mcq".into(),
        active: true,
        tier: "worker".into(),
        node: String::new(),
        snapshot: None,
        no_rollback: false,
        components: vec![pb::ComponentSpec {
            name: "api".into(),
            image: "reg:8443/mcq:v1".into(),
            routes: vec![pb::RouteSpec {
                name: "rest".into(),
                port: 8443,
                mode: "l7".into(),
                hostname: "mcq.example.net".into(),
                public: true,
            }],
            ..Default::default()
        }],
    }
}

fn check(edit: impl FnOnce(&mut pb::ServiceSpec), expect: Expect) {
    let mut msg = base();
    edit(&mut msg);
    let actual = match ServiceSpec::try_from(msg) {
        Ok(spec) => format!("ok: {spec:?}"),
        Err(e) => e.to_string(),
    };
    expect.assert_eq(&actual);
}

#[test]
fn base_is_valid() {
    check(
        |_| {},
        expect![[
            r#"ok: ServiceSpec { name: "mcq", tier: Worker, node: None, active: true, rollback: true, snapshot: None, components: [ComponentSpec { name: "api", image: "reg:8443/mcq:v1", volumes: [], cmd: [], env: [], network: None, user: None, restart: None, routes: [RouteSpec { name: Some("rest"), port: 8443, mode: L7, hostname: Some("mcq.example.net"), public: true }], health: None }] }"#
        ]],
    );
}

#[test]
fn proto3_defaults() {
    check(
        |m| {
            m.tier.clear();
            m.components[0].routes[0].mode.clear();
            m.components[0].health = Some(pb::HealthCheckSpec {
                kind: "tcp".into(),
                ..Default::default()
            });
            m.snapshot = Some(pb::SnapshotConfig::default());
        },
        expect![[
            r#"ok: ServiceSpec { name: "mcq", tier: Worker, node: None, active: true, rollback: true, snapshot: Some(SnapshotConfig { method: Default, exclude: [] }), components: [ComponentSpec { name: "api", image: "reg:8443/mcq:v1", volumes: [], cmd: [], env: [], network: None, user: None, restart: None, routes: [RouteSpec { name: Some("rest"), port: 8443, mode: L7, hostname: Some("mcq.example.net"), public: true }], health: Some(HealthCheck { kind: Tcp, route: None, path: None, timeout: 5s, interval: 10s, status: None }) }] }"#
        ]],
    );
}

#[test]
fn service_rules() {
    check(
        |m| m.name = "MCQ".into(),
        expect![[
            r#"invalid service spec: name: name must be a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'), found "MCQ""#
        ]],
    );
    check(
        |m| m.tier = "edge".into(),
        expect![[r#"invalid service spec: tier: tier must be "core" or "worker", found "edge""#]],
    );
    check(
        |m| m.node = "orion_1".into(),
        expect![[
            r#"invalid service spec: node: node must be a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'), found "orion_1""#
        ]],
    );
    check(|m| m.components.clear(), expect!["invalid service spec: components: a service needs at least one [[components]], found none"]);
    check(
        |m| {
            let c = m.components[0].clone();
            m.components.push(c);
        },
        expect![[
            r#"invalid service spec: components[1].name: duplicate component name "api" (first defined at components[0].name)"#
        ]],
    );
}

#[test]
fn snapshot_rules() {
    check(
        |m| {
            m.snapshot = Some(pb::SnapshotConfig {
                method: "exec:".into(),
                excludes: vec!["/abs".into(), "../up".into()],
            })
        },
        expect![[
            r#"invalid service spec: snapshot.method: method "exec: <cmd>" needs a command, found "exec:"; snapshot.exclude[0]: exclude path must be relative to /srv/<service>/, found "/abs"; snapshot.exclude[1]: exclude path must not contain "..", found "../up""#
        ]],
    );
}

#[test]
fn component_rules() {
    check(
        |m| {
            let c = &mut m.components[0];
            c.name = "-api".into();
            c.image = "a b".into();
            c.volumes = vec!["nocolon".into()];
            c.env = vec!["NOEQUALS".into()];
            c.restart = "sometimes".into();
        },
        expect![[
            r#"invalid service spec: components[0].name: name must be a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'), found "-api"; components[0].image: image "a b" is not a valid image reference: must not contain whitespace; components[0].volumes[0]: volume must be "host:container[:options]" with an absolute container path, found "nocolon"; components[0].env[0]: env entry must be "KEY=value", found "NOEQUALS"; components[0].restart: restart must be "no", "always", "on-failure", "on-failure:N" or "unless-stopped", found "sometimes""#
        ]],
    );
}

#[test]
fn route_rules() {
    check(
        |m| {
            let r = &mut m.components[0].routes[0];
            r.port = 70000;
            r.mode = "l5".into();
            r.hostname.clear();
        },
        expect![[
            r#"invalid service spec: components[0].routes[0].port: port must be between 1 and 65535, found 70000; components[0].routes[0].mode: mode must be "l4" or "l7", found "l5"; components[0].routes[0].public: public route "rest" needs a hostname"#
        ]],
    );
    check(
        |m| {
            let r = m.components[0].routes[0].clone();
            m.components[0].routes.push(r);
            m.components[0].routes.push(pb::RouteSpec {
                port: 1,
                ..Default::default()
            });
            m.components[0].routes.push(pb::RouteSpec {
                port: 2,
                ..Default::default()
            });
        },
        expect![[
            r#"invalid service spec: components[0].routes[1].name: duplicate route name "rest" in component "api" (first defined at components[0].routes[0].name); components[0].routes[3]: component "api" has more than one unnamed route; name all but one (first defined at components[0].routes[2])"#
        ]],
    );
}

#[test]
fn health_rules() {
    check(
        |m| {
            m.components[0].health = Some(pb::HealthCheckSpec {
                kind: "icmp".into(),
                route: "nope".into(),
                path: "/x".into(),
                ..Default::default()
            })
        },
        expect![[
            r#"invalid service spec: components[0].health.kind: kind must be "tcp", "http" or "grpc", found "icmp"; components[0].health.route: health route must name a route of component "api" (one of "rest"), found "nope""#
        ]],
    );
    check(
        |m| {
            m.components[0].routes.clear();
            m.components[0].health = Some(pb::HealthCheckSpec {
                kind: "grpc".into(),
                path: "/x".into(),
                ..Default::default()
            })
        },
        expect![[
            r#"invalid service spec: components[0].health.path: path is only allowed with kind "http", found kind "grpc"; components[0].health: health check needs a route to probe, found component "api" without routes"#
        ]],
    );
}

#[test]
fn parts_convert_on_their_own() {
    let route = RouteSpec::try_from(pb::RouteSpec {
        name: "Rest".into(),
        port: 0,
        ..Default::default()
    });
    expect![[r#"Err(InvalidSpec { what: "route", violations: [Violation { path: "port", message: "port must be between 1 and 65535, found 0", first: None }, Violation { path: "name", message: "name must be a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'), found \"Rest\"", first: None }] })"#]].assert_eq(&format!("{route:?}"));
    let health = HealthCheck::try_from(pb::HealthCheckSpec {
        kind: "http".into(),
        path: "healthz".into(),
        timeout_ms: 1500,
        ..Default::default()
    });
    expect![[r#"Err(InvalidSpec { what: "health check", violations: [Violation { path: "path", message: "path must start with '/' and contain no whitespace, found \"healthz\"", first: None }] })"#]].assert_eq(&format!("{health:?}"));
    let snap = SnapshotConfig::try_from(pb::SnapshotConfig {
        method: "exec: dump 'a b'".into(),
        excludes: vec![],
    });
    expect![[r#"Ok(SnapshotConfig { method: Exec(["dump", "a b"]), exclude: [] })"#]]
        .assert_eq(&format!("{snap:?}"));
}
