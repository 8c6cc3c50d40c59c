#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use mcp_security::clock::ManualClock;
use mcp_security::identity::{AccountType, Identity};
use mcp_security::pki::{Ca, Validity};
use tonic::Code;

use super::*;
use crate::fake::{Call, FakeAgents};

/// A registry over a fresh database and the fake fleet.
struct Setup {
    dir: tempfile::TempDir,
    state: Arc<crate::state::State>,
    agents: Arc<FakeAgents>,
    clock: ManualClock,
    fleet: Arc<Fleet>,
    changes: Arc<AtomicUsize>,
    ca: Ca,
}

fn setup(allowed: &[&str], settings: FleetSettings) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(crate::state::State::open(&dir.path().join("m.db")).unwrap());
    let agents = Arc::new(FakeAgents::new());
    let clock = ManualClock::at_unix(1_735_689_600);
    let changes = Arc::new(AtomicUsize::new(0));
    let c = changes.clone();
    let fleet = Arc::new(Fleet::new(
        state.clone(),
        agents.clone(),
        Arc::new(clock.clone()),
        FleetSettings {
            policy: RegistrationPolicy::new(allowed.iter().copied(), 16),
            health_check: Duration::from_secs(1),
            ..settings
        },
        Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }),
    ));
    Setup {
        dir,
        state,
        agents,
        clock,
        fleet,
        changes,
        ca: Ca::generate("fleet").unwrap(),
    }
}

impl Setup {
    /// The DER of a client certificate of the fleet CA naming `names`.
    fn cert(&self, names: &[&str]) -> Vec<u8> {
        let leaf = self
            .ca
            .write_leaf(self.dir.path(), names[0], names, Validity::Days(1))
            .unwrap();
        let certs = mcp_security::tls::load_certs("test certificate", &leaf.cert).unwrap();
        certs[0].as_ref().to_vec()
    }

    fn node(&self, name: &str) -> state::Node {
        self.state.read(|r| r.node(name)).unwrap().unwrap()
    }

    async fn register(
        &self,
        node: &str,
        leaf: Option<&[u8]>,
        role: &str,
        address: &str,
    ) -> Result<RegisterOutcome, Status> {
        let id = Identity::new(format!("agent-{node}"), AccountType::System, &[]);
        self.fleet
            .register(&id, leaf, node, role, address, "amd64")
            .await
    }
}

#[tokio::test]
async fn silent_node_is_probed_marked_unhealthy_and_recovers_on_heartbeat() {
    let s = setup(&["agent-vega"], FleetSettings::default());
    let (state, agents, clock, fleet) = (&s.state, &s.agents, &s.clock, &s.fleet);
    let cert = s.cert(&["vega"]);
    s.register("vega", Some(&cert), "worker", "https://vega:9444")
        .await
        .unwrap();
    // Fresh: nothing to probe.
    assert!(fleet.probe_stale().await.unwrap().is_empty());
    // Silent for the timeout and not answering HealthCheck: unhealthy.
    clock.advance(Duration::from_secs(91));
    agents.set_unreachable("vega", true);
    let before = s.changes.load(Ordering::SeqCst);
    let r = fleet.probe_stale().await.unwrap();
    assert_eq!(r.len(), 1);
    assert!(!r[0].healthy);
    assert_eq!(s.node("vega").status, NodeStatus::Unhealthy);
    assert!(s.changes.load(Ordering::SeqCst) > before);
    // A heartbeat marks it healthy again.
    agents.set_unreachable("vega", false);
    let vega = Identity::new("agent-vega", AccountType::System, &[]);
    let recovered = fleet
        .heartbeat(&vega, "vega", &state::Heartbeat::default())
        .await
        .unwrap();
    assert!(recovered);
    assert_eq!(s.node("vega").status, NodeStatus::Healthy);
    // Warm-up probes every node at once.
    state
        .write(|w| w.add_bootstrap_node("orion", NodeRole::Master, "https://orion:9444"))
        .unwrap();
    agents.set_unreachable("orion", true);
    let r = fleet.warm_up().await.unwrap();
    let summary: Vec<(String, bool)> = r.into_iter().map(|p| (p.node, p.healthy)).collect();
    assert_eq!(
        summary,
        [("orion".to_string(), false), ("vega".to_string(), true)]
    );
}

#[tokio::test]
async fn the_role_comes_from_the_configuration_or_the_first_registration() {
    let s = setup(
        &["agent-w1", "agent-w2", "agent-m1"],
        FleetSettings {
            roles: [
                ("w1".to_string(), NodeRole::Worker),
                ("m1".to_string(), NodeRole::Master),
            ]
            .into(),
            ..FleetSettings::default()
        },
    );
    let cert = s.cert(&["w1", "127.0.0.1"]);
    // A configured worker asking to be the master: refused, nothing stored.
    let e = s
        .register("w1", Some(&cert), "master", "https://127.0.0.1:9444")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(
        e.message(),
        "node w1 asked to register as master, but its role is worker (set by the master's \
         configuration); a node cannot change its own role: change it in the master's configuration"
    );
    assert!(s.state.read(|r| r.node("w1")).unwrap().is_none());
    assert_eq!(s.changes.load(Ordering::SeqCst), 0);
    // As a worker: accepted.
    let o = s
        .register("w1", Some(&cert), "worker", "https://127.0.0.1:9444")
        .await
        .unwrap();
    assert_eq!(o.role, NodeRole::Worker);
    assert_eq!(o.registered, Registered::New);

    // A node configured nowhere: its first registration fixes the role.
    let cert2 = s.cert(&["w2", "127.0.0.2"]);
    s.register("w2", Some(&cert2), "edge", "https://127.0.0.2:9444")
        .await
        .unwrap();
    s.clock.advance(Duration::from_secs(3600));
    for role in ["master", "worker"] {
        let e = s
            .register("w2", Some(&cert2), role, "https://127.0.0.2:9444")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("set by its first registration"),
            "{e:?}"
        );
    }
    assert_eq!(s.node("w2").role, NodeRole::Edge);
    s.register("w2", Some(&cert2), "edge", "https://127.0.0.2:9444")
        .await
        .unwrap();
    // Forgotten by the master (removed), it registers afresh.
    s.state.write(|w| w.remove_node("w2")).unwrap();
    s.register("w2", Some(&cert2), "worker", "https://127.0.0.2:9444")
        .await
        .unwrap();
    assert_eq!(s.node("w2").role, NodeRole::Worker);
}

#[tokio::test]
async fn an_address_must_be_named_by_the_certificate_and_changes_cool_down() {
    let s = setup(
        &["agent-w1"],
        FleetSettings {
            address_change_cooldown: Duration::from_secs(600),
            ..FleetSettings::default()
        },
    );
    // The bootstrap entry's address (configuration) is trusted as it is.
    s.state
        .write(|w| w.add_bootstrap_node("w1", NodeRole::Worker, "https://10.0.0.1:9444"))
        .unwrap();
    let cert = s.cert(&["w1", "10.0.0.1", "10.0.0.2", "w1.example.net"]);
    let other = s.cert(&["w2", "10.0.0.66"]);
    s.register("w1", None, "worker", "https://10.0.0.1:9444")
        .await
        .unwrap();
    assert_eq!(s.node("w1").address_changed_at, None);

    // An address its certificate does not name, one only another node's
    // certificate names, or no certificate: refused; the old address is kept.
    for (leaf, addr) in [
        (Some(&cert), "https://10.0.0.66:9444"),
        (Some(&other), "https://10.0.0.2:9444"),
        (None, "https://10.0.0.2:9444"),
        (Some(&cert), "https://evil.example.net:9444"),
    ] {
        let r = s
            .register("w1", leaf.map(Vec::as_slice), "worker", addr)
            .await;
        let e = r.expect_err(addr);
        assert_eq!(e.code(), Code::PermissionDenied, "{addr}: {e:?}");
        assert!(
            e.message().contains("its client certificate does not name"),
            "{e:?}"
        );
        assert!(
            e.message()
                .contains("the master keeps calling https://10.0.0.1:9444"),
            "{e:?}"
        );
        assert_eq!(s.node("w1").address, "https://10.0.0.1:9444");
    }
    // Garbage is not an address.
    let e = s
        .register("w1", Some(&cert), "worker", "10.0.0.2")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // One its certificate names: accepted, stamped.
    let o = s
        .register("w1", Some(&cert), "worker", "https://10.0.0.2:9444")
        .await
        .unwrap();
    assert_eq!(o.moved_from.as_deref(), Some("https://10.0.0.1:9444"));
    assert_eq!(
        o.registered,
        Registered::AddressChanged {
            old: "https://10.0.0.1:9444".into()
        }
    );
    let n = s.node("w1");
    assert_eq!(n.address, "https://10.0.0.2:9444");
    assert_eq!(n.address_changed_at, Some(s.clock.now()));

    // Another change within the cool-down: refused, even though named.
    s.clock.advance(Duration::from_secs(300));
    let e = s
        .register("w1", Some(&cert), "worker", "https://w1.example.net:9444")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        e.message(),
        "node w1: address change to https://w1.example.net:9444 refused: its address changed \
         5m ago, less than the cool-down (10m); the master keeps calling https://10.0.0.2:9444"
    );
    // Re-registering at the current address is fine meanwhile.
    s.register("w1", Some(&cert), "worker", "https://10.0.0.2:9444")
        .await
        .unwrap();
    // After the cool-down: accepted (DNS names compared case-insensitively).
    s.clock.advance(Duration::from_secs(300));
    s.register("w1", Some(&cert), "worker", "https://W1.example.net:9444")
        .await
        .unwrap();
    assert_eq!(s.node("w1").address, "https://W1.example.net:9444");

    // The master only ever called addresses it accepted.
    s.clock.advance(Duration::from_secs(91));
    s.fleet.probe_stale().await.unwrap();
    assert!(s
        .agents
        .calls()
        .iter()
        .any(|c| matches!(c, Call::HealthCheck { node } if node == "w1")));
    let called = s.agents.addresses();
    assert!(!called.is_empty());
    assert!(
        called
            .iter()
            .all(|a| !a.contains("10.0.0.66") && !a.contains("evil")),
        "{called:?}"
    );
}

#[tokio::test]
async fn overlay_addresses_are_accepted_only_when_configured() {
    let overlay: Vec<Cidr> = vec!["100.64.0.0/10".parse().unwrap()];
    for allow in [false, true] {
        let s = setup(
            &["agent-w1"],
            FleetSettings {
                overlay_addresses: allow.then(|| overlay.clone()),
                ..FleetSettings::default()
            },
        );
        let cert = s.cert(&["w1"]);
        let r = s
            .register("w1", Some(&cert), "worker", "https://100.64.0.7:9444")
            .await;
        assert_eq!(r.is_ok(), allow, "allow_overlay_addresses = {allow}: {r:?}");
        // Outside the overlay: never.
        s.clock.advance(Duration::from_secs(3600));
        let e = s
            .register("w1", Some(&cert), "worker", "https://192.0.2.7:9444")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        if allow {
            assert!(
                e.message().contains("not inside the overlay networks"),
                "{e:?}"
            );
        }
    }
}

/// Issue 12 item 8: an agent that registers again (it restarted: a reboot
/// is not a crash loop) does not inherit its services' heal back-off.
#[tokio::test]
async fn a_registration_clears_the_heal_back_off_of_the_nodes_services() {
    let s = setup(&["agent-vega"], FleetSettings::default());
    let cert = s.cert(&["vega"]);
    s.register("vega", Some(&cert), "worker", "https://vega:9444")
        .await
        .unwrap();
    let spec = mcp_spec::parse_service(
        "mcq.toml",
        "mcq",
        "name = \"mcq\"\n[[components]]\nname = \"api\"\nimage = \"r/mcq:v1\"\n",
        &mcp_spec::LoadOptions::default(),
    )
    .unwrap();
    let now = s.clock.now();
    s.state
        .write(|w| {
            w.put_placement(&state::Placement {
                service: "mcq".into(),
                node: "vega".into(),
                tier: mcp_spec::Tier::Worker,
                spec_hash: mcp_spec::spec_hash(&spec),
                spec: spec.clone(),
                deployed_at: now,
            })?;
            w.record_heal_attempt("mcq", "api", now, None)?;
            w.record_heal_attempt("mcq", "api", now, None)
        })
        .unwrap();
    assert_eq!(
        s.state
            .read(|r| r.heal_record("mcq", "api"))
            .unwrap()
            .unwrap()
            .attempts,
        2
    );
    s.register("vega", Some(&cert), "worker", "https://vega:9444")
        .await
        .unwrap();
    assert!(s
        .state
        .read(|r| r.heal_record("mcq", "api"))
        .unwrap()
        .is_none());
}
