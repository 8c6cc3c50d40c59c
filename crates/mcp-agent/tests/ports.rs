//! Port allocation: stability, release, persistence, host probing, and a
//! property test of the invariants.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use common::{hash, service};
use mcp_agent::{PortRange, Registry, RegistryError, Timestamp};
use proptest::prelude::*;

fn range(first: u16, last: u16) -> PortRange {
    PortRange::new(first, last).expect("range")
}

fn free(_: u16) -> bool {
    true
}

fn open(dir: &std::path::Path) -> Registry {
    Registry::open(&dir.join("agent.db"))
        .expect("open")
        .with_clock(|| Timestamp::from_unix(common::T0))
}

#[test]
fn stable_for_the_same_route_and_distinct_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let s = service("app", &[("web", &["", "admin"]), ("api", &["rest"])]);
    r.upsert_service(&s, &hash(&s)).expect("deploy");
    let rg = range(30000, 30100);
    let first = r.allocate_service_ports(&s, rg, &free).expect("first");
    let again = r.allocate_service_ports(&s, rg, &free).expect("again");
    assert_eq!(first, again, "redeploy keeps its ports");
    let ports: BTreeSet<u16> = first.iter().map(|a| a.port).collect();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        r.allocate_port("app", "api", Some("rest"), rg, &free)
            .expect("single"),
        first[2].port
    );
}

#[test]
fn survives_reopen_without_clashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rg = range(30000, 30003);
    let a = service("a", &[("web", &["", "admin"])]);
    let b = service("b", &[("web", &["", "admin"])]);
    let first_a = {
        let mut r = open(dir.path());
        r.upsert_service(&a, &hash(&a)).expect("a");
        r.allocate_service_ports(&a, rg, &free).expect("ports a")
    };
    let mut r = open(dir.path());
    r.upsert_service(&b, &hash(&b)).expect("b");
    let got_b = r.allocate_service_ports(&b, rg, &free).expect("ports b");
    let mut all: Vec<u16> = first_a.iter().chain(&got_b).map(|p| p.port).collect();
    all.sort_unstable();
    assert_eq!(all, vec![30000, 30001, 30002, 30003]);
    // Range is full now.
    let c = service("c", &[("web", &[""])]);
    r.upsert_service(&c, &hash(&c)).expect("c");
    let err = r.allocate_service_ports(&c, rg, &free).expect_err("full");
    assert!(matches!(err, RegistryError::PortsExhausted { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "no free host port for c/web route \"\" in 30000-30003: every port is allocated or in use"
    );
}

#[test]
fn ports_in_use_on_the_host_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let s = service("app", &[("web", &["", "admin"])]);
    r.upsert_service(&s, &hash(&s)).expect("deploy");
    let busy = [30000u16, 30001, 30003];
    let probed = RefCell::new(Vec::new());
    let probe = |p: u16| {
        probed.borrow_mut().push(p);
        !busy.contains(&p)
    };
    let got = r
        .allocate_service_ports(&s, range(30000, 30010), &probe)
        .expect("ports");
    let ports: Vec<u16> = got.iter().map(|a| a.port).collect();
    assert_eq!(ports, vec![30002, 30004]);
    assert_eq!(*probed.borrow(), vec![30000, 30001, 30002, 30003, 30004]);
}

#[test]
fn a_real_listener_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let s = service("app", &[("web", &[""])]);
    r.upsert_service(&s, &hash(&s)).expect("deploy");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let held = listener.local_addr().expect("addr").port();
    let probe = mcp_agent::BindProbe {
        addr: std::net::IpAddr::from([127, 0, 0, 1]),
    };
    let err = r
        .allocate_port("app", "web", None, range(held, held), &probe)
        .expect_err("the only port is held");
    assert!(matches!(err, RegistryError::PortsExhausted { .. }));
}

#[test]
fn released_ports_are_reused_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let rg = range(30000, 30003);
    let a = service("a", &[("web", &[""])]);
    let b = service("b", &[("web", &[""])]);
    r.upsert_service(&a, &hash(&a)).expect("a");
    let pa = r.allocate_port("a", "web", None, rg, &free).expect("a");
    assert_eq!(pa, 30000);
    assert_eq!(r.remove_service("a").expect("undeploy"), vec![30000]);
    r.upsert_service(&b, &hash(&b)).expect("b");
    let pb = r.allocate_port("b", "web", None, rg, &free).expect("b");
    assert_eq!(
        pb, 30001,
        "next-fit: the just-released port is not reused first"
    );
    // Wraps around once the end is reached.
    r.upsert_service(&a, &hash(&a)).expect("a again");
    let c = service("c", &[("web", &["", "x"])]);
    r.upsert_service(&c, &hash(&c)).expect("c");
    let pc = r.allocate_service_ports(&c, rg, &free).expect("c");
    assert_eq!(
        pc.iter().map(|p| p.port).collect::<Vec<_>>(),
        vec![30002, 30003]
    );
    assert_eq!(
        r.allocate_port("a", "web", None, rg, &free).expect("a"),
        30000
    );
}

#[test]
fn a_changed_range_moves_the_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let s = service("app", &[("web", &[""])]);
    r.upsert_service(&s, &hash(&s)).expect("deploy");
    let old = r
        .allocate_port("app", "web", None, range(30000, 30010), &free)
        .expect("old");
    let new = r
        .allocate_port("app", "web", None, range(40000, 40010), &free)
        .expect("new");
    assert_eq!((old, new), (30000, 40000));
    assert_eq!(r.ports(None).expect("ports").len(), 1);
}

#[test]
fn unknown_component_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let err = r
        .allocate_port("ghost", "web", None, range(30000, 30010), &free)
        .expect_err("not deployed");
    assert_eq!(
        err.to_string(),
        "component ghost/web is not in the registry"
    );
}

#[derive(Debug, Clone)]
enum Op {
    /// Allocate for (service, component, route) indexes.
    Alloc(usize, usize, usize),
    /// Undeploy a service, then deploy it again (ports released).
    Redeploy(usize),
    /// Close and reopen the database.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..2usize, 0..2usize).prop_map(|(s, c, r)| Op::Alloc(s, c, r)),
        1 => (0..3usize).prop_map(Op::Redeploy),
        1 => Just(Op::Reopen),
    ]
}

const SERVICES: [&str; 3] = ["s0", "s1", "s2"];
const COMPONENTS: [&str; 2] = ["c0", "c1"];
const ROUTES: [&str; 2] = ["", "r1"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Never two routes on one port, always within range, never a port the
    /// host reports busy, stable per route, exhaustion only when the range
    /// is really used up, across reopen and redeploy.
    #[test]
    fn allocation_invariants(
        width in 1u16..12,
        busy in proptest::collection::btree_set(0u16..12, 0..6),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let first = 31000u16;
        let rg = range(first, first + width - 1);
        let busy: BTreeSet<u16> = busy.into_iter().map(|b| first + b).collect();
        let probe = |p: u16| !busy.contains(&p);
        let dir = tempfile::tempdir().expect("tempdir");
        let specs: Vec<_> = SERVICES
            .iter()
            .map(|s| service(s, &[("c0", &["", "r1"]), ("c1", &["", "r1"])]))
            .collect();
        let mut r = open(dir.path());
        for s in &specs {
            r.upsert_service(s, &hash(s)).expect("deploy");
        }
        let mut model: BTreeMap<(usize, usize, usize), u16> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Alloc(s, c, k) => {
                    let route = (!ROUTES[k].is_empty()).then_some(ROUTES[k]);
                    match r.allocate_port(SERVICES[s], COMPONENTS[c], route, rg, &probe) {
                        Ok(port) => {
                            prop_assert!(rg.contains(port));
                            if let Some(prev) = model.get(&(s, c, k)) {
                                prop_assert_eq!(*prev, port, "stable");
                            } else {
                                prop_assert!(!busy.contains(&port), "busy port {} handed out", port);
                            }
                            model.insert((s, c, k), port);
                        }
                        Err(RegistryError::PortsExhausted { .. }) => {
                            prop_assert!(!model.contains_key(&(s, c, k)));
                            let used: BTreeSet<u16> = model.values().copied().collect();
                            let all_gone = (rg.first()..=rg.last())
                                .all(|p| used.contains(&p) || busy.contains(&p));
                            prop_assert!(all_gone, "exhausted while a port was free");
                        }
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
                Op::Redeploy(s) => {
                    r.remove_service(SERVICES[s]).expect("undeploy");
                    r.upsert_service(&specs[s], &hash(&specs[s])).expect("deploy");
                    model.retain(|(ms, _, _), _| *ms != s);
                }
                Op::Reopen => {
                    drop(r);
                    r = open(dir.path());
                }
            }
            // The database agrees with the model, and no port is shared.
            let stored = r.ports(None).expect("ports");
            let ports: BTreeSet<u16> = stored.iter().map(|p| p.port).collect();
            prop_assert_eq!(ports.len(), stored.len(), "a port is allocated twice");
            let mut keys = BTreeSet::new();
            for p in &stored {
                prop_assert!(keys.insert((p.service.clone(), p.component.clone(), p.route.clone())));
            }
            let model_ports: BTreeSet<u16> = model.values().copied().collect();
            prop_assert_eq!(&ports, &model_ports);
            prop_assert_eq!(model_ports.len(), model.len(), "two routes share a port");
        }
    }
}
