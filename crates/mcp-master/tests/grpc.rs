//! The master's gRPC service over real TLS on 127.0.0.1, with the real
//! `AuthLayer`, JWT tokens and a throwaway PKI (`common`); the agents are
//! the fake fleet. Also the agent's registration loop
//! (`mcp_agent::register`) against it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{hb, limits, reg, spec_pb, start};
use mcp_agent::register;
use mcp_master::fake::Call;
use mcp_master::state::NodeStatus;
use mcp_proto::pb;
use mcp_security::identity::AccountType;
use mcp_security::registration::RateLimits;
use tonic::Code;

#[tokio::test]
async fn register_and_heartbeat_are_bound_to_the_identity_and_rate_limited() {
    let m = start(&["agent-vega", "agent-deneb", "agent-altair"], 2, limits()).await;
    let mut vega = m
        .agent_client("vega", &["vega", "10.0.0.2", "10.0.0.9"])
        .await;

    let r = vega
        .register(reg("vega", "https://10.0.0.2:9444"))
        .await
        .unwrap();
    assert!(r.into_inner().accepted);
    let n = m.node("vega").unwrap();
    assert_eq!(n.status, NodeStatus::Healthy);
    assert_eq!(n.address, "https://10.0.0.2:9444");

    // Register: once a minute per identity.
    let e = vega
        .register(reg("vega", "https://10.0.0.2:9444"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    m.clock.advance(Duration::from_secs(61));
    // The name comes from the identity.
    let e = vega
        .register(reg("deneb", "https://10.0.0.3:9444"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    m.clock.advance(Duration::from_secs(61));
    // Re-registration updates the address.
    vega.register(reg("vega", "https://10.0.0.9:9444"))
        .await
        .unwrap();
    assert_eq!(m.node("vega").unwrap().address, "https://10.0.0.9:9444");

    // Heartbeat: name bound, figures stored, 1 per 10 s.
    let r = vega.heartbeat(hb("vega", 7)).await.unwrap();
    assert!(r.into_inner().acknowledged);
    let n = m.node("vega").unwrap();
    assert_eq!(n.containers, 7);
    assert_eq!(n.cpu_millicores, 250);
    let e = vega.heartbeat(hb("vega", 7)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    m.clock.advance(Duration::from_secs(11));
    let e = vega.heartbeat(hb("deneb", 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A heartbeat from a node that never registered: register first.
    let mut deneb = m.agent_client("deneb", &["10.0.0.3"]).await;
    let e = deneb.heartbeat(hb("deneb", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    deneb
        .register(reg("deneb", "https://10.0.0.3:9444"))
        .await
        .unwrap();
    // The node limit (2) is reached: a third node is refused.
    let mut altair = m.agent_client("altair", &["10.0.0.4"]).await;
    let e = altair
        .register(reg("altair", "https://10.0.0.4:9444"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Not on the allowlist.
    let mut rigel = m.agent_client("rigel", &["10.0.0.5"]).await;
    let e = rigel
        .register(reg("rigel", "https://10.0.0.5:9444"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Operators may not register; agents may not list nodes.
    let mut alice = m.client("alice", AccountType::Human).await;
    let e = alice.register(reg("vega", "x")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = vega.list_nodes(pb::ListNodesRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let nodes = alice
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["deneb", "vega"]);
    assert!(!nodes[1].last_heartbeat.is_empty());

    // Every authenticated call is in the audit table, with its target.
    m.audit.flush().await;
    let audit = m.state.read(|r| r.audit_recent(100)).unwrap();
    assert!(audit.iter().any(|a| a.method.ends_with("/Register")
        && a.caller.starts_with("agent-vega")
        && a.target == "node=vega"
        && a.outcome == "Ok"));
    assert!(audit
        .iter()
        .any(|a| a.method.ends_with("/Register") && a.outcome == "ResourceExhausted"));
}

/// Issue 9, item 2: a registration cannot change the node's role, nor move
/// it to an address its certificate does not name; the refusals are in the
/// audit log with what was asked, and the master keeps calling the address
/// on record.
#[tokio::test]
async fn a_registration_cannot_change_the_role_or_move_to_an_unnamed_address() {
    let m = start(&["agent-w1"], 16, RateLimits::new()).await;
    // w1's certificate names the node and its loopback address only.
    let mut w1 = m.agent_client("w1", &["w1", "127.0.0.1"]).await;
    w1.register(reg("w1", "https://127.0.0.1:9444"))
        .await
        .unwrap();

    let mut as_master = reg("w1", "https://127.0.0.1:9444");
    as_master.role = "master".to_string();
    let e = w1.register(as_master).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("its role is worker"), "{e:?}");

    let e = w1
        .register(reg("w1", "https://10.6.6.6:9444"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains("its client certificate does not name 10.6.6.6"),
        "{e:?}"
    );
    let n = m.node("w1").unwrap();
    assert_eq!(n.role, mcp_master::config::NodeRole::Worker);
    assert_eq!(n.address, "https://127.0.0.1:9444");

    // Work for w1 goes to the address on record only.
    let mut alice = m.client("alice", AccountType::Human).await;
    alice
        .sync(pb::SyncRequest {
            services: vec![spec_pb("mcq", "v1")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(m.agents.node_of("mcq").as_deref(), Some("w1"));
    let called = m.agents.addresses();
    assert!(!called.is_empty());
    assert!(
        called.iter().all(|a| a == "https://127.0.0.1:9444"),
        "{called:?}"
    );

    m.audit.flush().await;
    let audit = m.state.read(|r| r.audit_recent(100)).unwrap();
    let refused: Vec<&str> = audit
        .iter()
        .filter(|a| {
            a.method.ends_with("/Register")
                && a.caller.starts_with("agent-w1")
                && a.outcome == "PermissionDenied"
        })
        .map(|a| a.target.as_str())
        .collect();
    assert!(
        refused.contains(&r#"node=w1 role="master" address="https://127.0.0.1:9444""#),
        "{refused:?}"
    );
    assert!(
        refused.contains(&r#"node=w1 role="worker" address="https://10.6.6.6:9444""#),
        "{refused:?}"
    );
}

/// Issue 9, item 5 over the RPCs (push mode): a spec the agent refuses is
/// tried once, `Status` shows it failed with the agent's answer, `Sync`
/// leaves it alone, and an explicit `Deploy` is one more attempt.
#[tokio::test]
async fn a_refused_spec_is_failed_in_status_and_retried_only_on_an_explicit_deploy() {
    let m = start(&["agent-vega"], 16, RateLimits::new()).await;
    let mut vega = m.agent_client("vega", &["10.0.0.2"]).await;
    vega.register(reg("vega", "https://10.0.0.2:9444"))
        .await
        .unwrap();
    m.agents.reject_image(
        "registry.example:8443/mcq:v1",
        Code::InvalidArgument,
        "service mcq: invalid spec: components[0].image: refused by this node",
    );
    let deploys = || {
        m.agents
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Deploy { .. }))
            .count()
    };
    let mut alice = m.client("alice", AccountType::Human).await;
    let sync = pb::SyncRequest {
        services: vec![spec_pb("mcq", "v1")],
        ..Default::default()
    };
    let r = alice.sync(sync.clone()).await.unwrap().into_inner();
    assert!(r
        .results
        .iter()
        .any(|s| !s.success && s.error.contains("InvalidArgument")));
    assert_eq!(deploys(), 1);
    for _ in 0..3 {
        alice.sync(sync.clone()).await.unwrap();
    }
    assert_eq!(deploys(), 1);
    let st = alice
        .status(pb::StatusRequest {
            service_name: "mcq".to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(st[0].status, "failed");
    assert!(
        st[0].detail.contains("refused by this node") && st[0].detail.contains("mcp deploy mcq"),
        "{}",
        st[0].detail
    );

    // `mcp deploy mcq`: tried again (and refused again).
    let r = alice
        .deploy(pb::MasterDeployRequest {
            service: Some(spec_pb("mcq", "v1")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.success);
    assert!(r.error.contains("refused by this node"), "{}", r.error);
    assert_eq!(deploys(), 2);
    alice.sync(sync.clone()).await.unwrap();
    assert_eq!(deploys(), 2);

    // A changed spec deploys.
    let r = alice
        .sync(pb::SyncRequest {
            services: vec![spec_pb("mcq", "v2")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.results
            .iter()
            .all(|s| s.success || s.status == pb::StepStatus::Skipped as i32),
        "{:?}",
        r.results
    );
    assert_eq!(m.agents.node_of("mcq").as_deref(), Some("vega"));
}

#[tokio::test]
async fn sync_dry_run_then_apply_status_and_pass_through() {
    let m = start(&["agent-vega"], 16, RateLimits::new()).await;
    let mut vega = m.agent_client("vega", &["10.0.0.2"]).await;
    vega.register(reg("vega", "https://10.0.0.2:9444"))
        .await
        .unwrap();
    let mut alice = m.client("alice", AccountType::Human).await;

    // Dry run: the request's specs are planned, nothing is stored or done.
    let r = alice
        .sync(pb::SyncRequest {
            services: vec![spec_pb("mcq", "v1")],
            dry_run: true,
            source: "working tree".to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.changes);
    assert!(r.results.is_empty());
    let plan: serde_json::Value = serde_json::from_str(&r.plan_json).unwrap();
    assert_eq!(plan["source"], "working tree");
    assert_eq!(plan["entries"][0]["service"], "mcq");
    assert_eq!(plan["entries"][0]["kind"], "deploy");
    assert_eq!(plan["entries"][0]["node"], "vega");
    assert!(m.agents.mutations().is_empty());
    assert!(m.state.read(|r| r.desired_specs()).unwrap().is_empty());

    // Apply.
    let r = alice
        .sync(pb::SyncRequest {
            services: vec![spec_pb("mcq", "v1")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.changes);
    let deploy = r
        .results
        .iter()
        .find(|s| s.step.starts_with("deploy mcq"))
        .unwrap();
    assert!(deploy.success, "{deploy:?}");
    let dns = r
        .results
        .iter()
        .find(|s| s.step.starts_with("dns set"))
        .unwrap();
    assert!(!dns.success);
    assert_eq!(dns.status, pb::StepStatus::Skipped as i32);
    assert_eq!(m.agents.node_of("mcq").as_deref(), Some("vega"));

    // Again: nothing to do.
    m.agents.clear_calls();
    let r = alice
        .sync(pb::SyncRequest {
            services: vec![spec_pb("mcq", "v1")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.changes, "{}", r.plan_json);
    assert!(m.agents.mutations().is_empty());

    // Mass prune refused: the previous desired state stays.
    let r = alice
        .sync(pb::SyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    let plan: serde_json::Value = serde_json::from_str(&r.plan_json).unwrap();
    assert!(plan["refused"].is_string());
    assert_eq!(m.state.read(|r| r.desired_specs()).unwrap().len(), 1);

    // Status.
    let st = alice
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].name, "mcq");
    assert_eq!(st[0].node, "vega");
    assert_eq!(st[0].status, "running");
    assert_eq!(st[0].components[0].observed_state, "running");
    assert_eq!(st[0].detail, "");

    // A service removed from the desired state whose prune the guard
    // refuses: its status says why it still runs.
    let kept = m.state.read(|r| r.desired_specs()).unwrap();
    let now = std::time::SystemTime::now();
    m.state
        .write(|w| w.replace_desired_specs(&[], "test", now))
        .unwrap();
    let st = alice
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(st[0].status, "running");
    assert!(
        st[0]
            .detail
            .starts_with("removed from the desired state but not undeployed: mass-deletion guard"),
        "{}",
        st[0].detail
    );
    let specs: Vec<_> = kept.into_iter().map(|d| d.spec).collect();
    m.state
        .write(|w| w.replace_desired_specs(&specs, "test", now))
        .unwrap();

    // Deploy one service.
    let r = alice
        .deploy(pb::MasterDeployRequest {
            service: Some(spec_pb("mcr", "v2")),
            component: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    assert_eq!(r.node, "vega");
    assert_eq!(r.dns_result.unwrap().status, pb::StepStatus::Skipped as i32);
    assert_eq!(
        r.edge_route_result.unwrap().status,
        pb::StepStatus::Skipped as i32
    );

    // Stop passes through to the node's agent.
    m.agents.clear_calls();
    alice
        .stop_service(pb::ServiceLifecycleRequest {
            service_name: "mcr".to_string(),
            component: String::new(),
        })
        .await
        .unwrap();
    assert!(m.agents.mutations().contains(&Call::Stop {
        node: "vega".to_string(),
        service: "mcr".to_string(),
        component: None,
    }));

    // Undeploy one service (not a mass prune).
    let r = alice
        .undeploy(pb::MasterUndeployRequest {
            service_name: "mcr".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    assert!(m.state.read(|r| r.placement("mcr")).unwrap().is_none());
    assert!(m.state.read(|r| r.placement("mcq")).unwrap().is_some());

    // A request without a target is refused as such; a migration without
    // a snapshot store (the data travels through it) says so.
    let e = alice
        .migrate(pb::MigrateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = alice
        .migrate(pb::MigrateRequest {
            service_name: "mcq".into(),
            target_node: "vega".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("[snapshots]"), "{e:?}");
}

#[tokio::test]
async fn agent_registration_loop_registers_heartbeats_and_re_registers() {
    let m = start(&["agent-vega"], 16, RateLimits::new()).await;
    let client = m.agent_client("vega", &["10.0.0.2"]).await;
    let mut cfg = register::RegistrationConfig::new(
        "vega",
        "worker",
        "https://10.0.0.2:9444",
        Duration::from_millis(100),
    );
    cfg.backoff_initial = Duration::from_millis(20);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(register::run_registration(client, cfg, || 7, async move {
        let _ = stop_rx.await;
    }));
    let wait = |what: &'static str, f: &dyn Fn() -> bool| {
        let ok = (0..100).any(|_| {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
            false
        });
        assert!(ok, "timed out waiting for {what}");
    };
    let state = m.state.clone();
    tokio::task::spawn_blocking(move || {
        wait("heartbeat", &|| {
            state
                .read(|r| r.node("vega"))
                .unwrap()
                .is_some_and(|n| n.containers == 7)
        });
        // The master forgets the node: the agent registers again.
        state.write(|w| w.remove_node("vega")).unwrap();
        wait("re-registration", &|| {
            state.read(|r| r.node("vega")).unwrap().is_some()
        });
    })
    .await
    .unwrap();
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// A scripted master link for the back-off test.
struct ScriptedLink {
    register_failures: u32,
    not_found_once: bool,
    registers: Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
}

impl register::MasterLink for ScriptedLink {
    async fn register(
        &mut self,
        _req: pb::RegisterRequest,
    ) -> Result<pb::RegisterResponse, tonic::Status> {
        self.registers
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        if self.register_failures > 0 {
            self.register_failures -= 1;
            return Err(tonic::Status::unavailable("master down"));
        }
        Ok(pb::RegisterResponse { accepted: true })
    }

    async fn heartbeat(
        &mut self,
        _req: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, tonic::Status> {
        if self.not_found_once {
            self.not_found_once = false;
            return Err(tonic::Status::not_found("node vega is not registered"));
        }
        Ok(pb::HeartbeatResponse { acknowledged: true })
    }

    async fn report_changes(
        &mut self,
        _req: pb::ReportChangesRequest,
    ) -> Result<pb::ReportChangesResponse, tonic::Status> {
        Ok(pb::ReportChangesResponse {})
    }
}

#[tokio::test(start_paused = true)]
async fn registration_backs_off_exponentially_up_to_the_maximum() {
    let registers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let link = ScriptedLink {
        register_failures: 8,
        not_found_once: true,
        registers: registers.clone(),
    };
    let cfg = register::RegistrationConfig::new(
        "vega",
        "worker",
        "https://10.0.0.2:9444",
        Duration::from_secs(30),
    );
    let start = tokio::time::Instant::now();
    register::run_registration(
        link,
        cfg,
        || 0,
        tokio::time::sleep(Duration::from_secs(600)),
    )
    .await;
    let times = registers.lock().unwrap().clone();
    let gaps: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    // 8 failures: 1, 2, 4, 8, 16, 32, 60, 60; then accepted; then after the
    // first heartbeat (30 s) says NotFound, registered again at once.
    assert_eq!(
        gaps,
        [1, 2, 4, 8, 16, 32, 60, 60, 30],
        "{times:?} from {start:?}"
    );
}

#[test]
fn resource_parsers() {
    assert_eq!(
        register::parse_loadavg("0.52 0.58 0.59 1/467 1234\n"),
        Some(520)
    );
    assert_eq!(register::parse_loadavg("nonsense"), None);
    let meminfo = "MemTotal:       16000000 kB\nMemFree:   100 kB\nMemAvailable:   12000000 kB\n";
    assert_eq!(register::parse_meminfo(meminfo), Some(4_000_000 * 1024));
    assert_eq!(register::parse_meminfo("MemTotal: 1 kB\n"), None);
    let r = register::read_resources(std::path::Path::new("/"));
    assert!(r.disk_bytes > 0);
}

#[tokio::test]
async fn forget_node_frees_the_slot_and_is_refused_while_the_node_holds_placements() {
    // One registration slot: a second node cannot join until one is forgotten.
    let m = start(&["agent-vega", "agent-rigel"], 1, RateLimits::new()).await;
    let mut vega = m.agent_client("vega", &["10.0.0.2"]).await;
    vega.register(reg("vega", "https://10.0.0.2:9444"))
        .await
        .unwrap();
    let mut rigel = m.agent_client("rigel", &["10.0.0.3"]).await;
    let full = rigel
        .register(reg("rigel", "https://10.0.0.3:9444"))
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");

    let mut alice = m.client("alice", AccountType::Human).await;
    alice
        .sync(pb::SyncRequest {
            services: vec![spec_pb("mcq", "v1")],
            ..Default::default()
        })
        .await
        .unwrap();
    let held = alice
        .forget_node(pb::ForgetNodeRequest {
            node: "vega".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(held.code(), Code::FailedPrecondition);
    assert!(
        held.message().contains("holds a placement: mcq"),
        "{held:?}"
    );
    let forced = alice
        .forget_node(pb::ForgetNodeRequest {
            node: "vega".into(),
            force: true,
        })
        .await
        .unwrap_err();
    assert_eq!(
        forced.code(),
        Code::Unimplemented,
        "--force says it is not there yet"
    );
    assert!(
        forced.message().contains("nothing was changed"),
        "{forced:?}"
    );

    // Undeploy everything (the mass-deletion guard needs the permission).
    alice
        .sync(pb::SyncRequest {
            allow_mass_prune: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let done = alice
        .forget_node(pb::ForgetNodeRequest {
            node: "vega".into(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.results[0].success, "{done:?}");
    let nodes = m.state.read(|r| r.nodes()).unwrap();
    assert!(nodes.iter().all(|n| n.name != "vega"));
    rigel
        .register(reg("rigel", "https://10.0.0.3:9444"))
        .await
        .expect("the freed slot takes a new node");
    let gone = alice
        .forget_node(pb::ForgetNodeRequest {
            node: "vega".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Operators only: an agent may not forget nodes.
    let denied = rigel
        .forget_node(pb::ForgetNodeRequest {
            node: "rigel".into(),
            force: false,
        })
        .await;
    assert!(denied.is_err());
}

/// Issue 12, item 9: `mcp sync --expect-commit` applies only when the
/// desired state is at the previewed commit (push mode: the request's
/// source, a clean work tree); otherwise nothing is applied.
#[tokio::test]
async fn sync_with_an_expected_commit_applies_only_at_that_commit() {
    let m = start(&["agent-w1"], 16, RateLimits::new()).await;
    let mut w1 = m.agent_client("w1", &["w1", "127.0.0.1"]).await;
    w1.register(reg("w1", "https://127.0.0.1:9444"))
        .await
        .unwrap();
    let mut alice = m.client("alice", AccountType::Human).await;
    let sync = |source: &str, expect: &str| pb::SyncRequest {
        services: vec![spec_pb("mcq", "v1")],
        source: source.to_string(),
        expect_commit: expect.to_string(),
        ..Default::default()
    };
    for (source, expect, why) in [
        ("abc1234", "def5678", "moved since the preview"),
        ("abc1234 (dirty)", "abc1234", "uncommitted changes"),
        ("/srv/services", "abc1234", "not a commit"),
    ] {
        let e = alice.sync(sync(source, expect)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{source}: {e:?}");
        assert!(e.message().contains(why), "{source}: {e:?}");
        assert!(m.state.read(|r| r.placement("mcq")).unwrap().is_none());
    }
    let e = alice.sync(sync("abc1234", "zz")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let r = alice
        .sync(sync("abc1234", "ABC1"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.results
            .iter()
            .any(|s| s.step == "expect-commit" && s.success),
        "{r:?}"
    );
    assert!(m.state.read(|r| r.placement("mcq")).unwrap().is_some());
}

/// Issue 12 item 5: an agent reports container changes for its own node
/// only, within a bounded burst; the reports reach the master as calls of
/// `run_change_reports`.
#[tokio::test]
async fn change_reports_are_bound_to_the_node_and_rate_limited() {
    let m = start(&["agent-vega", "agent-rigel"], 16, RateLimits::new()).await;
    let mut vega = m.agent_client("vega", &["10.0.0.2"]).await;
    let report = |name: &str| pb::ReportChangesRequest {
        name: name.to_string(),
        services: vec!["mcq".to_string()],
    };
    let e = vega.report_changes(report("rigel")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut ok = 0;
    let mut refused = None;
    for _ in 0..40 {
        match vega.report_changes(report("vega")).await {
            Ok(_) => ok += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the burst is bounded");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        (20..=22).contains(&ok),
        "a burst of 20 (plus what refilled meanwhile): {ok}"
    );
    // Another node has its own allowance.
    let mut rigel = m.agent_client("rigel", &["10.0.0.3"]).await;
    rigel.report_changes(report("rigel")).await.unwrap();

    // The agent's reporter batches names into calls.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let client = m.agent_client("rigel", &["10.0.0.3"]).await;
    let task = tokio::spawn(register::run_change_reports(
        client,
        "rigel".to_string(),
        rx,
        std::future::pending(),
    ));
    tx.send("mcq".to_string()).await.unwrap();
    tx.send("mcr".to_string()).await.unwrap();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the reporter ends with its channel")
        .unwrap();
}
