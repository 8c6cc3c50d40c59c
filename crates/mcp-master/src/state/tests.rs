#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_spec::{ComponentSpec, ServiceSpec, Tier};

use super::*;
use crate::config::NodeRole;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn open() -> (tempfile::TempDir, State) {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(&dir.path().join("master.db")).unwrap();
    (dir, state)
}

fn spec(name: &str, image: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        tier: Tier::Worker,
        node: None,
        active: true,
        rollback: true,
        snapshot: None,
        components: vec![ComponentSpec {
            name: "api".to_string(),
            image: image.to_string(),
            volumes: vec![format!("/srv/{name}:/srv/{name}")],
            cmd: vec!["server".to_string()],
            env: vec![],
            network: None,
            user: None,
            restart: None,
            routes: vec![],
            health: None,
        }],
    }
}

fn placement(service: &str, node: &str, at: u64) -> Placement {
    let spec = spec(service, "registry.example/x:v1");
    Placement {
        service: service.to_string(),
        node: node.to_string(),
        tier: Tier::Worker,
        spec_hash: mcp_spec::spec_hash(&spec),
        spec,
        deployed_at: t(at),
    }
}

#[test]
fn open_sets_wal_full_sync_and_schema_version() {
    let (dir, state) = open();
    assert_eq!(state.schema_version().unwrap(), SCHEMA_VERSION);
    {
        let conn = state.lock();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL");
    }
    drop(state);
    // Reopening an up-to-date database is a no-op.
    let state = State::open(&dir.path().join("master.db")).unwrap();
    assert_eq!(state.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = State::open(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "database {} has schema version {}, newer than this master supports ({}); run a newer mcp-master",
            path.display(),
            SCHEMA_VERSION + 1,
            SCHEMA_VERSION
        )
    );
}

#[test]
fn a_failed_migration_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    {
        // A table named like one the migration creates makes it fail.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE audit (x INTEGER);")
            .unwrap();
    }
    let err = State::open(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "database {}: migrating to schema version 1:",
            path.display()
        )),
        "{err}"
    );
    let conn = Connection::open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), 0);
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'nodes'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the partial migration must be rolled back");
}

#[test]
fn unopenable_path_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("master.db");
    let err = State::open(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot open database {}", path.display())),
        "{err}"
    );
}

#[test]
fn nodes_register_heartbeat_and_health() {
    let (_d, state) = open();
    let reg = Registration {
        name: "orion".into(),
        role: NodeRole::Worker,
        address: "https://100.64.0.2:9444".into(),
        arch: "amd64".into(),
    };
    assert_eq!(
        state.write(|w| w.register_node(&reg, t(0))).unwrap(),
        Registered::New
    );
    assert_eq!(
        state.write(|w| w.register_node(&reg, t(5))).unwrap(),
        Registered::Again
    );
    let moved = Registration {
        address: "https://100.64.0.9:9444".into(),
        ..reg.clone()
    };
    assert_eq!(
        state.write(|w| w.register_node(&moved, t(10))).unwrap(),
        Registered::AddressChanged {
            old: "https://100.64.0.2:9444".into()
        }
    );

    state
        .write(|w| w.set_node_status("orion", NodeStatus::Unhealthy))
        .unwrap();
    let hb = Heartbeat {
        cpu_millicores: 1500,
        memory_bytes: 2 << 30,
        disk_bytes: 40 << 30,
        containers: 7,
    };
    state
        .write(|w| w.record_heartbeat("orion", &hb, t(20)))
        .unwrap();
    let n = state.read(|r| r.node("orion")).unwrap().unwrap();
    assert_eq!(
        n,
        Node {
            name: "orion".into(),
            role: NodeRole::Worker,
            address: "https://100.64.0.9:9444".into(),
            arch: "amd64".into(),
            status: NodeStatus::Healthy,
            containers: 7,
            cpu_millicores: 1500,
            memory_bytes: 2 << 30,
            disk_bytes: 40 << 30,
            last_heartbeat: Some(t(20)),
            registered_at: Some(t(10)),
            address_changed_at: Some(t(10)),
        }
    );

    let err = state
        .write(|w| w.record_heartbeat("vega", &hb, t(20)))
        .unwrap_err();
    assert_eq!(err.to_string(), "node vega is not registered");
    let err = state
        .write(|w| w.set_node_status("vega", NodeStatus::Healthy))
        .unwrap_err();
    assert!(matches!(err, StateError::UnknownNode(n) if n == "vega"));

    state.write(|w| w.reset_node_statuses()).unwrap();
    assert_eq!(
        state.read(|r| r.node("orion")).unwrap().unwrap().status,
        NodeStatus::Unknown
    );
    assert!(state.write(|w| w.remove_node("orion")).unwrap());
    assert!(!state.write(|w| w.remove_node("orion")).unwrap());
    assert!(state.read(|r| r.nodes()).unwrap().is_empty());
}

#[test]
fn configured_roles_overwrite_recorded_ones() {
    let (_d, state) = open();
    let reg = Registration {
        name: "w1".into(),
        role: NodeRole::Master,
        address: "https://w1:1".into(),
        arch: "amd64".into(),
    };
    state.write(|w| w.register_node(&reg, t(0))).unwrap();
    let roles = [
        ("w1".to_string(), NodeRole::Worker),
        ("w9".to_string(), NodeRole::Edge),
    ]
    .into();
    assert_eq!(
        state.write(|w| w.apply_configured_roles(&roles)).unwrap(),
        [("w1".to_string(), NodeRole::Master)]
    );
    assert_eq!(
        state.read(|r| r.node("w1")).unwrap().unwrap().role,
        NodeRole::Worker
    );
    // Unknown nodes are not created; a second run changes nothing.
    assert!(state.read(|r| r.node("w9")).unwrap().is_none());
    assert!(state
        .write(|w| w.apply_configured_roles(&roles))
        .unwrap()
        .is_empty());
}

#[test]
fn bootstrap_nodes_do_not_overwrite_registered_ones() {
    let (_d, state) = open();
    assert!(state
        .write(|w| w.add_bootstrap_node("orion", NodeRole::Master, "https://a:1"))
        .unwrap());
    let n = state.read(|r| r.node("orion")).unwrap().unwrap();
    assert_eq!(n.status, NodeStatus::Unknown);
    assert_eq!(n.registered_at, None);
    assert_eq!(n.last_heartbeat, None);

    // First registration of a bootstrap node is "new".
    let reg = Registration {
        name: "orion".into(),
        role: NodeRole::Master,
        address: "https://b:1".into(),
        arch: "arm64".into(),
    };
    assert_eq!(
        state.write(|w| w.register_node(&reg, t(1))).unwrap(),
        Registered::New
    );
    // ... but its address differs from the bootstrap entry's: a change.
    let n = state.read(|r| r.node("orion")).unwrap().unwrap();
    assert_eq!(n.address_changed_at, Some(t(1)));
    assert!(!state
        .write(|w| w.add_bootstrap_node("orion", NodeRole::Master, "https://a:1"))
        .unwrap());
    assert_eq!(
        state.read(|r| r.node("orion")).unwrap().unwrap().address,
        "https://b:1"
    );
}

#[test]
fn placements_round_trip_with_their_spec() {
    let (_d, state) = open();
    let a = placement("mcq", "orion", 1);
    let mut b = placement("abc", "vega", 2);
    b.tier = Tier::Core;
    state
        .write(|w| {
            w.put_placement(&a)?;
            w.put_placement(&b)
        })
        .unwrap();
    assert_eq!(state.read(|r| r.placement("mcq")).unwrap(), Some(a.clone()));
    assert_eq!(
        state.read(|r| r.placements()).unwrap(),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(state.read(|r| r.placements_on("vega")).unwrap(), vec![b]);

    // Redeploy replaces.
    let mut a2 = a.clone();
    a2.spec = spec("mcq", "registry.example/x:v2");
    a2.spec_hash = mcp_spec::spec_hash(&a2.spec);
    a2.deployed_at = t(100);
    state.write(|w| w.put_placement(&a2)).unwrap();
    assert_eq!(state.read(|r| r.placement("mcq")).unwrap(), Some(a2));

    assert!(state.write(|w| w.remove_placement("mcq")).unwrap());
    assert_eq!(state.read(|r| r.placement("mcq")).unwrap(), None);

    let mut bad = placement("x", "orion", 1);
    bad.spec.name = "y".into();
    let err = state.write(|w| w.put_placement(&bad)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot store placement of x: its spec is for service \"y\""
    );
}

#[test]
fn a_failing_write_rolls_back_everything_in_it() {
    let (_d, state) = open();
    let err = state
        .write(|w| {
            w.put_placement(&placement("mcq", "orion", 1))?;
            w.put_dns_record("mcq.svc.internal", "100.64.0.2", t(1))?;
            w.record_heartbeat("nobody", &Heartbeat::default(), t(1))
        })
        .unwrap_err();
    assert!(matches!(err, StateError::UnknownNode(_)));
    assert!(state.read(|r| r.placements()).unwrap().is_empty());
    assert!(state.read(|r| r.dns_records()).unwrap().is_empty());
}

#[test]
fn committed_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    let p = placement("mcq", "orion", 1);
    {
        let state = State::open(&path).unwrap();
        state.write(|w| w.put_placement(&p)).unwrap();
        let id = state
            .write(|w| w.journal_begin("migrate", "mcq", "stop-source", "{}", t(2)))
            .unwrap();
        state.write(|w| w.journal_step(id, "export", None)).unwrap();
        // Dropped without any shutdown step, as in a crash after commit.
    }
    let state = State::open(&path).unwrap();
    assert_eq!(state.read(|r| r.placement("mcq")).unwrap(), Some(p));
    let open = state.read(|r| r.journal_unfinished()).unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].step, "export");
}

#[test]
fn writes_see_their_own_reads() {
    let (_d, state) = open();
    let n = state
        .write(|w| {
            w.put_placement(&placement("a", "orion", 1))?;
            Ok(w.placements()?.len())
        })
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn edge_routes() {
    let (_d, state) = open();
    let r1 = EdgeRoute {
        hostname: "mcq.example.net".into(),
        service: "mcq".into(),
        edge_node: "edge1".into(),
        backend_hostname: "mcq.svc.internal".into(),
        backend_port: 8443,
        created_at: t(1),
    };
    let r2 = EdgeRoute {
        hostname: "api.example.net".into(),
        backend_port: 9443,
        ..r1.clone()
    };
    state
        .write(|w| {
            w.put_edge_route(&r1)?;
            w.put_edge_route(&r2)
        })
        .unwrap();
    assert_eq!(
        state.read(|r| r.edge_routes()).unwrap(),
        vec![r2.clone(), r1.clone()]
    );
    assert_eq!(state.read(|r| r.edge_routes_of("mcq")).unwrap().len(), 2);
    assert_eq!(state.read(|r| r.edge_routes_of("other")).unwrap(), vec![]);
    assert_eq!(
        state.read(|r| r.edge_route("mcq.example.net")).unwrap(),
        Some(r1)
    );
    assert!(state
        .write(|w| w.remove_edge_route("api.example.net"))
        .unwrap());
    assert_eq!(
        state.read(|r| r.edge_route("api.example.net")).unwrap(),
        None
    );
    let bad = EdgeRoute {
        backend_port: 0,
        ..r2
    };
    assert!(state.write(|w| w.put_edge_route(&bad)).is_err());
}

#[test]
fn snapshots_newest_first_and_retention() {
    let (_d, state) = open();
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let rec = state
            .write(|w| {
                w.add_snapshot(&NewSnapshot {
                    service: "mcq".into(),
                    node: "orion".into(),
                    file: format!("mcq/{i}.tar.zst"),
                    size: 1000 + i,
                    checksum: format!("sha256:{i}"),
                    created_at: t(i * 100),
                })
            })
            .unwrap();
        ids.push(rec.id);
    }
    let all = state.read(|r| r.snapshots("mcq")).unwrap();
    assert_eq!(
        all.iter().map(|s| s.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(all[0].size, 1004);
    assert_eq!(
        state
            .read(|r| r.latest_snapshot("mcq"))
            .unwrap()
            .unwrap()
            .id,
        ids[4]
    );
    let old = state
        .read(|r| r.snapshots_past_retention("mcq", 3))
        .unwrap();
    assert_eq!(
        old.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![ids[0], ids[1]]
    );
    assert!(state
        .read(|r| r.snapshots_past_retention("mcq", 7))
        .unwrap()
        .is_empty());
    assert_eq!(
        state.read(|r| r.latest_snapshot_times()).unwrap(),
        vec![("mcq".to_string(), t(400))]
    );
    assert!(state.write(|w| w.remove_snapshot(ids[0])).unwrap());
    assert_eq!(state.read(|r| r.snapshots("mcq")).unwrap().len(), 4);
    assert_eq!(state.read(|r| r.latest_snapshot("none")).unwrap(), None);

    // The same file cannot be recorded twice.
    let dup = state.write(|w| {
        w.add_snapshot(&NewSnapshot {
            service: "mcq".into(),
            node: "orion".into(),
            file: "mcq/4.tar.zst".into(),
            size: 1,
            checksum: String::new(),
            created_at: t(0),
        })
    });
    let err = dup.unwrap_err().to_string();
    assert!(
        err.starts_with("database: recording snapshot mcq/4.tar.zst of mcq:"),
        "{err}"
    );
}

#[test]
fn desired_specs_replace_all_keeps_unchanged_rows() {
    let (_d, state) = open();
    let a = spec("a", "img:v1");
    let b = spec("b", "img:v1");
    state
        .write(|w| w.replace_desired_specs(&[a.clone(), b.clone()], "sync by alice", t(1)))
        .unwrap();
    let b2 = spec("b", "img:v2");
    let c = spec("c", "img:v1");
    state
        .write(|w| {
            w.replace_desired_specs(&[a.clone(), b2.clone(), c.clone()], "sync by bob", t(2))
        })
        .unwrap();
    let got = state.read(|r| r.desired_specs()).unwrap();
    assert_eq!(
        got,
        vec![
            DesiredSpec {
                spec: a.clone(),
                source: "sync by alice".into(),
                updated_at: t(1)
            },
            DesiredSpec {
                spec: b2,
                source: "sync by bob".into(),
                updated_at: t(2)
            },
            DesiredSpec {
                spec: c.clone(),
                source: "sync by bob".into(),
                updated_at: t(2)
            },
        ]
    );
    state
        .write(|w| w.replace_desired_specs(std::slice::from_ref(&c), "sync by bob", t(3)))
        .unwrap();
    assert_eq!(state.read(|r| r.desired_specs()).unwrap().len(), 1);
    let err = state
        .write(|w| w.replace_desired_specs(&[a.clone(), a.clone()], "x", t(4)))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot store desired specs: service a appears twice"
    );
    // The failed replace changed nothing.
    assert_eq!(state.read(|r| r.desired_specs()).unwrap()[0].spec, c);
    state
        .write(|w| w.put_desired_spec(&a, "deploy by alice", t(5)))
        .unwrap();
    assert_eq!(
        state.read(|r| r.desired_spec("a")).unwrap().unwrap().source,
        "deploy by alice"
    );
    assert!(state.write(|w| w.remove_desired_spec("a")).unwrap());
}

#[test]
fn dns_records() {
    let (_d, state) = open();
    state
        .write(|w| w.put_dns_record("mcq.svc.internal", "100.64.0.2", t(1)))
        .unwrap();
    state
        .write(|w| w.put_dns_record("mcq.svc.internal", "100.64.0.3", t(2)))
        .unwrap();
    assert_eq!(
        state.read(|r| r.dns_records()).unwrap(),
        vec![DnsRecord {
            name: "mcq.svc.internal".into(),
            address: "100.64.0.3".into(),
            created_at: t(2)
        }]
    );
    assert!(state
        .write(|w| w.remove_dns_record("mcq.svc.internal"))
        .unwrap());
    assert_eq!(
        state.read(|r| r.dns_record("mcq.svc.internal")).unwrap(),
        None
    );
}

#[test]
fn heal_history_counts_and_resets() {
    let (_d, state) = open();
    let h = state
        .write(|w| w.record_heal_attempt("mcq", "api", t(1), None))
        .unwrap();
    assert_eq!(h.attempts, 1);
    let h = state
        .write(|w| w.record_heal_attempt("mcq", "api", t(2), Some("exit 1")))
        .unwrap();
    assert_eq!(
        h,
        HealRecord {
            service: "mcq".into(),
            component: "api".into(),
            attempts: 2,
            last_attempt: t(2),
            last_error: Some("exit 1".into()),
            alerted: false,
        }
    );
    state
        .write(|w| w.record_heal_attempt("mcq", "worker", t(2), None))
        .unwrap();
    assert_eq!(state.read(|r| r.heal_records()).unwrap().len(), 2);
    assert!(state.write(|w| w.reset_heal("mcq", "api")).unwrap());
    assert_eq!(state.read(|r| r.heal_record("mcq", "api")).unwrap(), None);
    assert_eq!(state.write(|w| w.reset_heal_of_service("mcq")).unwrap(), 1);
}

#[test]
fn journal_lifecycle() {
    let (_d, state) = open();
    let id = state
        .write(|w| w.journal_begin("migrate", "mcq", "validate", "{\"to\":\"vega\"}", t(1)))
        .unwrap();
    state.write(|w| w.journal_step(id, "export", None)).unwrap();
    let e = state.read(|r| r.journal_entry(id)).unwrap().unwrap();
    assert_eq!(e.step, "export");
    assert_eq!(e.detail, "{\"to\":\"vega\"}");
    assert_eq!(e.status, JournalStatus::Running);
    assert_eq!(state.read(|r| r.journal_unfinished()).unwrap(), vec![e]);

    state
        .write(|w| {
            w.journal_finish(
                id,
                JournalStatus::Failed,
                Some("export: vega unreachable"),
                t(9),
            )
        })
        .unwrap();
    let e = state.read(|r| r.journal_entry(id)).unwrap().unwrap();
    assert_eq!(e.status, JournalStatus::Failed);
    assert_eq!(e.detail, "export: vega unreachable");
    assert_eq!(e.finished_at, Some(t(9)));
    assert!(state.read(|r| r.journal_unfinished()).unwrap().is_empty());

    let err = state
        .write(|w| w.journal_step(id, "import", None))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("journal entry {id} (migrate mcq) is already failed")
    );
    let err = state.write(|w| w.journal_step(999, "x", None)).unwrap_err();
    assert_eq!(err.to_string(), "journal entry 999 does not exist");
    let id2 = state
        .write(|w| w.journal_begin("deploy", "abc", "deploy", "", t(10)))
        .unwrap();
    assert!(state
        .write(|w| w.journal_finish(id2, JournalStatus::Running, None, t(11)))
        .is_err());

    assert_eq!(state.read(|r| r.journal_recent(None, 10)).unwrap().len(), 2);
    let recent = state.read(|r| r.journal_recent(Some("mcq"), 10)).unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].id, id);

    // Pruning keeps running operations however old.
    assert_eq!(state.write(|w| w.journal_prune(t(100))).unwrap(), 1);
    assert_eq!(state.read(|r| r.journal_unfinished()).unwrap().len(), 1);
}

#[test]
fn audit_log() {
    let (_d, state) = open();
    for i in 0..3u64 {
        state
            .write(|w| {
                w.audit(&AuditEntry {
                    time: t(i),
                    method: "McpMasterService/Deploy".into(),
                    caller: "alice".into(),
                    class: "operator".into(),
                    target: format!("svc{i}"),
                    outcome: "ok".into(),
                    duration_ms: 12 + i,
                })
            })
            .unwrap();
    }
    let recent = state.read(|r| r.audit_recent(2)).unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].target, "svc2");
    assert_eq!(recent[0].duration_ms, 14);
    assert_eq!(state.write(|w| w.audit_prune(t(2))).unwrap(), 2);
    assert_eq!(state.read(|r| r.audit_recent(10)).unwrap().len(), 1);
}

#[test]
fn corrupt_rows_are_typed_errors() {
    let (_d, state) = open();
    state
        .write(|w| w.put_placement(&placement("mcq", "orion", 1)))
        .unwrap();
    state
        .lock()
        .execute(
            "UPDATE placements SET spec = '{nope' WHERE service = 'mcq'",
            [],
        )
        .unwrap();
    let err = state.read(|r| r.placement("mcq")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("database: stored spec of placement mcq is invalid:"),
        "{err}"
    );
}

#[test]
fn state_is_shareable_across_threads() {
    let (_d, state) = open();
    let state = std::sync::Arc::new(state);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = state.clone();
            std::thread::spawn(move || {
                for j in 0..10u64 {
                    s.write(|w| w.put_dns_record(&format!("n{i}-{j}"), "100.64.0.1", t(j)))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(state.read(|r| r.dns_records()).unwrap().len(), 40);
}

fn synchronous(state: &State) -> i64 {
    state
        .lock()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn relaxed_writes_commit_and_leave_full_sync_for_the_others() {
    let (dir, state) = open();
    state
        .write(|w| w.add_bootstrap_node("vega", NodeRole::Worker, "https://vega:9444"))
        .unwrap();
    state
        .write_relaxed(|w| w.set_node_status("vega", NodeStatus::Healthy))
        .unwrap();
    assert_eq!(synchronous(&state), 2, "FULL again after a relaxed write");
    // A failing relaxed write rolls back and restores FULL too.
    let err = state
        .write_relaxed(|w| {
            w.set_node_status("vega", NodeStatus::Unhealthy)?;
            w.set_node_status("nope", NodeStatus::Healthy)
        })
        .unwrap_err();
    assert!(matches!(err, StateError::UnknownNode(_)), "{err}");
    assert_eq!(synchronous(&state), 2);
    // So does a panicking one.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        state.write_relaxed(|_| -> Result<()> { panic!("boom") })
    }));
    assert!(panicked.is_err());
    assert_eq!(synchronous(&state), 2);
    drop(state);
    let state = State::open(&dir.path().join("master.db")).unwrap();
    let node = state.read(|r| r.node("vega")).unwrap().unwrap();
    assert_eq!(node.status, NodeStatus::Healthy);
}
