//! Proptest strategies that generate valid specs (every value passes
//! [`crate::validate::validate`] with default options). Available with the
//! `testing` feature:
//!
//! ```toml
//! [dev-dependencies]
//! mcp-spec = { workspace = true, features = ["testing"] }
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::collection::{btree_set, vec};
use proptest::option;
use proptest::prelude::*;

use crate::model::{
    ComponentSpec, HealthCheck, HealthKind, RouteMode, RouteSpec, ServiceSpec, SnapshotConfig,
    SnapshotMethod, Tier,
};

/// A DNS label (short, to keep cases readable).
pub fn arb_label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,8}[a-z0-9]|[a-z]"
}

/// A hostname of 2–3 labels.
pub fn arb_hostname() -> impl Strategy<Value = String> {
    vec(arb_label(), 2..4).prop_map(|labels| labels.join("."))
}

/// An image reference with an optional registry port, tag or digest.
pub fn arb_image() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(String::new()),
            Just("registry.example:8443/".to_string()),
            Just("reg/".to_string())
        ],
        arb_label(),
        prop_oneof![
            Just(String::new()),
            "[a-z0-9][a-z0-9.]{0,7}".prop_map(|t| format!(":{t}")),
            "[0-9a-f]{64}".prop_map(|d| format!("@sha256:{d}")),
        ],
    )
        .prop_map(|(reg, name, tag)| format!("{reg}{name}{tag}"))
}

fn arb_duration() -> impl Strategy<Value = Duration> {
    (1u64..600_000).prop_map(Duration::from_millis)
}

/// A free-form argument (exercises quoting in `exec:` and in TOML).
fn arb_arg() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ./='\"$\\\\-]{0,10}"
}

/// A snapshot section.
pub fn arb_snapshot() -> impl Strategy<Value = SnapshotConfig> {
    let method = prop_oneof![
        Just(SnapshotMethod::Default),
        Just(SnapshotMethod::Grpc),
        Just(SnapshotMethod::Cli),
        Just(SnapshotMethod::Full),
        vec(arb_arg(), 1..4).prop_map(SnapshotMethod::Exec),
    ];
    let exclude = vec(
        "[a-z0-9_]{1,6}(/[a-z0-9_]{1,6}(\\.[a-z]{1,3})?){0,2}/?",
        0..3,
    );
    (method, exclude).prop_map(|(method, exclude)| SnapshotConfig { method, exclude })
}

/// The routes of one component: unique names, at most one unnamed, public
/// ones with a hostname.
pub fn arb_routes() -> impl Strategy<Value = Vec<RouteSpec>> {
    (btree_set(arb_label(), 0..3), any::<bool>()).prop_flat_map(|(names, unnamed)| {
        let mut names: Vec<Option<String>> = names.into_iter().map(Some).collect();
        if unnamed {
            names.insert(0, None);
        }
        names
            .into_iter()
            .map(|name| {
                (
                    1u16..=65535,
                    prop_oneof![Just(RouteMode::L4), Just(RouteMode::L7)],
                    option::of(arb_hostname()),
                    any::<bool>(),
                )
                    .prop_map(move |(port, mode, hostname, public)| RouteSpec {
                        name: name.clone(),
                        port,
                        mode,
                        public: public && hostname.is_some(),
                        hostname,
                    })
            })
            .collect::<Vec<_>>()
    })
}

fn arb_health(routes: &[RouteSpec]) -> BoxedStrategy<Option<HealthCheck>> {
    if routes.is_empty() {
        return Just(None).boxed();
    }
    let names: Vec<Option<String>> = std::iter::once(None)
        .chain(routes.iter().filter_map(|r| r.name.clone()).map(Some))
        .collect();
    option::of(
        (
            prop_oneof![
                Just(HealthKind::Tcp),
                Just(HealthKind::Http),
                Just(HealthKind::Grpc)
            ],
            proptest::sample::select(names),
            option::of("/[a-z0-9/_-]{0,10}"),
            arb_duration(),
            arb_duration(),
            option::of(100u16..600),
        )
            .prop_map(
                |(kind, route, path, timeout, interval, status)| HealthCheck {
                    kind,
                    route,
                    path: if kind == HealthKind::Http { path } else { None },
                    timeout,
                    interval,
                    status: if kind == HealthKind::Http {
                        status
                    } else {
                        None
                    },
                },
            ),
    )
    .boxed()
}

/// One component named `name`.
pub fn arb_component(name: String) -> impl Strategy<Value = ComponentSpec> {
    (
        arb_image(),
        vec("/[a-z]{1,5}:/[a-z]{1,5}(:ro|:z)?", 0..3),
        vec(arb_arg(), 0..4),
        vec("[A-Z_][A-Z0-9_]{0,6}=[a-z0-9 =]{0,6}", 0..3),
        option::of("[a-z]{1,8}"),
        option::of(prop_oneof![
            Just("0:0".to_string()),
            Just("1000".to_string())
        ]),
        option::of(prop_oneof![
            Just("no".to_string()),
            Just("always".to_string()),
            Just("on-failure".to_string()),
            Just("on-failure:3".to_string()),
            Just("unless-stopped".to_string()),
        ]),
        arb_routes(),
    )
        .prop_flat_map(
            move |(image, volumes, cmd, env, network, user, restart, routes)| {
                let c = ComponentSpec {
                    name: name.clone(),
                    image,
                    volumes,
                    cmd,
                    env,
                    network,
                    user,
                    restart,
                    health: None,
                    routes,
                };
                arb_health(&c.routes).prop_map(move |health| ComponentSpec {
                    health,
                    ..c.clone()
                })
            },
        )
}

/// A valid service spec with 1–3 components.
pub fn arb_service_spec() -> impl Strategy<Value = ServiceSpec> {
    (
        arb_label(),
        prop_oneof![Just(Tier::Core), Just(Tier::Worker)],
        option::of(arb_label()),
        any::<bool>(),
        option::of(arb_snapshot()),
        btree_set(arb_label(), 1..4),
        any::<bool>(),
    )
        .prop_flat_map(|(name, tier, node, active, snapshot, names, rollback)| {
            let names: BTreeSet<String> = names;
            let comps: Vec<_> = names.into_iter().map(arb_component).collect();
            comps.prop_map(move |mut components| {
                // Host paths under the service's own data directory.
                for c in &mut components {
                    for v in &mut c.volumes {
                        *v = format!("/srv/{name}{v}");
                    }
                }
                ServiceSpec {
                    name: name.clone(),
                    tier,
                    node: node.clone(),
                    active,
                    rollback,
                    snapshot: snapshot.clone(),
                    components,
                }
            })
        })
}
