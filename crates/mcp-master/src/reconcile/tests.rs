//! The control loop against the fake fleet ([`crate::fake::FakeAgents`]).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mcp_planner::{ContainerState, Desired, Held, Kind, Policy};
use mcp_security::clock::ManualClock;
use mcp_spec::{parse_service, LoadOptions, ServiceSpec};

use super::*;
use crate::config::NodeRole;
use crate::fake::{Call, FakeAgents};
use crate::state::{Heartbeat, Registration, State};

const T0: u64 = 1_735_689_600;

struct Fx {
    _dir: tempfile::TempDir,
    state: Arc<State>,
    agents: Arc<FakeAgents>,
    clock: ManualClock,
    rec: Arc<Reconciler>,
}

fn settings() -> Settings {
    Settings {
        policy: Policy {
            internal_zone: "svc.test".to_string(),
            heal_backoff_base_secs: 10,
            heal_backoff_max_secs: 600,
            heal_max_attempts: 3,
            ..Policy::default()
        },
        concurrency: 2,
        list_timeout: Duration::from_secs(2),
        heal_settle: Duration::from_secs(10),
        interval: Duration::from_secs(60),
    }
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(State::open(&dir.path().join("master.db")).unwrap());
    let clock = ManualClock::at_unix(T0);
    let now = clock.now();
    state
        .write(|w| {
            for (name, role, containers) in [
                ("orion", NodeRole::Master, 2),
                ("vega", NodeRole::Worker, 5),
                ("deneb", NodeRole::Worker, 1),
                ("edge1", NodeRole::Edge, 0),
            ] {
                w.register_node(
                    &Registration {
                        name: name.into(),
                        role,
                        address: format!("https://{name}.overlay:9444"),
                        arch: "amd64".into(),
                    },
                    now,
                )?;
                w.record_heartbeat(
                    name,
                    &Heartbeat {
                        containers,
                        ..Heartbeat::default()
                    },
                    now,
                )?;
            }
            Ok(())
        })
        .unwrap();
    let agents = Arc::new(FakeAgents::new());
    let rec = reconciler(&state, &agents, &clock);
    Fx {
        _dir: dir,
        state,
        agents,
        clock,
        rec,
    }
}

fn reconciler(
    state: &Arc<State>,
    agents: &Arc<FakeAgents>,
    clock: &ManualClock,
) -> Arc<Reconciler> {
    Arc::new(Reconciler::new(
        state.clone(),
        agents.clone(),
        Arc::new(clock.clone()),
        DesiredSource::Push,
        settings(),
    ))
}

fn spec(name: &str, version: &str, extra: &str) -> ServiceSpec {
    let text = format!(
        "name = \"{name}\"\n{extra}\n[[components]]\nname = \"api\"\nimage = \"registry.example:8443/{name}:{version}\"\n"
    );
    parse_service(
        &format!("{name}.toml"),
        name,
        &text,
        &LoadOptions::default(),
    )
    .unwrap()
}

impl Fx {
    async fn push(&self, specs: &[ServiceSpec]) {
        self.rec.store_pushed(specs, &[], "test").await.unwrap();
    }

    async fn pass(&self) -> PassOutcome {
        self.rec.reconcile(PassOptions::default()).await.unwrap()
    }

    /// Runs a pass and asserts that a second one changes nothing.
    async fn converge(&self) -> PassOutcome {
        let out = self.pass().await;
        assert!(out.ok(), "{:#?}", out.results);
        self.agents.clear_calls();
        let again = self.pass().await;
        assert!(
            self.agents.mutations().is_empty(),
            "second pass changed something: {:?}",
            self.agents.mutations()
        );
        assert!(again.plan.entries.is_empty(), "{:#?}", again.plan.entries);
        out
    }

    fn placement(&self, service: &str) -> Option<crate::state::Placement> {
        self.state.read(|r| r.placement(service)).unwrap()
    }

    fn deploys_of(&self, service: &str) -> usize {
        self.agents
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Deploy { service: s, .. } if s == service))
            .count()
    }
}

#[tokio::test]
async fn new_service_goes_to_the_least_loaded_worker_and_is_recorded() {
    let f = fx();
    let mcq = spec("mcq", "v1", "");
    f.push(std::slice::from_ref(&mcq)).await;
    let out = f.converge().await;
    let p = f.placement("mcq").unwrap();
    assert_eq!(p.node, "deneb");
    assert_eq!(p.spec, mcq);
    assert_eq!(p.spec_hash, mcp_spec::spec_hash(&mcq));
    assert!(f.agents.services_on("deneb").contains_key("mcq"));
    // The DNS step is reported as skipped, never as success, and nothing is
    // recorded as created.
    let dns: Vec<_> = out
        .results
        .iter()
        .filter(|r| matches!(r.action, Action::SetDns { .. }))
        .collect();
    assert_eq!(dns.len(), 1);
    assert_eq!(dns[0].status, StepStatus::Skipped);
    assert!(dns[0].detail.contains("DNS adapter not configured"));
    assert!(f.state.read(|r| r.dns_records()).unwrap().is_empty());
    // The operation is journaled and finished.
    let j = f.state.read(|r| r.journal_recent(Some("mcq"), 10)).unwrap();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].status, JournalStatus::Succeeded);
    assert_eq!(j[0].op, "deploy");
}

#[tokio::test]
async fn core_services_go_to_the_master_node() {
    let f = fx();
    f.push(&[
        spec("mcias", "v1", "tier = \"core\""),
        spec("app", "v1", ""),
    ])
    .await;
    f.converge().await;
    assert_eq!(f.placement("mcias").unwrap().node, "orion");
    assert_eq!(f.placement("app").unwrap().node, "deneb");
    // Core before workers.
    let order: Vec<String> = f
        .state
        .read(|r| r.journal_recent(None, 10))
        .unwrap()
        .into_iter()
        .map(|e| e.service)
        .collect();
    assert!(order.contains(&"mcias".to_string()));
}

#[tokio::test]
async fn update_redeploys_on_the_same_node() {
    let f = fx();
    f.push(&[spec("mcq", "v1", "")]).await;
    f.converge().await;
    // Make deneb look busier: an update must stay where it is anyway.
    let v2 = spec("mcq", "v2", "");
    f.push(std::slice::from_ref(&v2)).await;
    f.agents.clear_calls();
    f.converge().await;
    let p = f.placement("mcq").unwrap();
    assert_eq!(p.node, "deneb");
    assert_eq!(p.spec_hash, mcp_spec::spec_hash(&v2));
    assert_eq!(
        f.agents.services_on("deneb")["mcq"].spec_hash,
        mcp_spec::spec_hash(&v2)
    );
}

#[tokio::test]
async fn active_false_stops_and_records_the_new_spec() {
    let f = fx();
    f.push(&[spec("mcq", "v1", "")]).await;
    f.converge().await;
    let stopped = spec("mcq", "v1", "active = false");
    f.push(std::slice::from_ref(&stopped)).await;
    f.agents.clear_calls();
    let out = f.pass().await;
    assert_eq!(out.plan.entries[0].kind, Kind::Stop);
    // The agent is sent the new spec (only `active` differs).
    assert_eq!(
        f.agents.mutations(),
        [Call::Deploy {
            node: "deneb".into(),
            service: "mcq".into(),
            active: false,
            spec_hash: mcp_spec::spec_hash(&stopped),
            component: None,
        }]
    );
    let report = &f.agents.services_on("deneb")["mcq"];
    assert!(!report.active);
    assert_eq!(report.components["api"].state, ContainerState::Stopped);
    assert_eq!(f.placement("mcq").unwrap().spec, stopped);
    f.converge().await;
}

#[tokio::test]
async fn deleted_service_is_undeployed() {
    let f = fx();
    let all = [
        spec("a", "v1", ""),
        spec("b", "v1", ""),
        spec("c", "v1", ""),
    ];
    f.push(&all).await;
    f.converge().await;
    f.push(&all[..2]).await;
    f.agents.clear_calls();
    f.converge().await;
    assert!(f.placement("c").is_none());
    assert!(f.agents.node_of("c").is_none());
    assert!(f.placement("a").is_some());
}

#[tokio::test]
async fn held_file_prunes_nothing() {
    let f = fx();
    let all = [spec("a", "v1", ""), spec("b", "v1", "")];
    f.push(&all).await;
    f.converge().await;
    // b's file no longer parses: b is held, not pruned.
    let mut desired = Desired::new(Some("test".into()), [all[0].clone()], &[]);
    desired.held.insert(
        "b".into(),
        Held {
            file: "b.toml".into(),
            errors: vec!["b.toml:1:1: expected a table".into()],
            reason: None,
        },
    );
    f.agents.clear_calls();
    let out = f
        .rec
        .reconcile(PassOptions {
            desired: Some(desired),
            ..PassOptions::default()
        })
        .await
        .unwrap();
    assert!(
        f.agents.mutations().is_empty(),
        "{:?}",
        f.agents.mutations()
    );
    assert_eq!(out.plan.entry("b").unwrap().kind, Kind::Held);
    assert!(f.placement("b").is_some());
    // Pushing with b unreadable keeps b's stored spec.
    f.rec
        .store_pushed(&all[..1], &["b".to_string()], "test")
        .await
        .unwrap();
    assert!(f.state.read(|r| r.desired_spec("b")).unwrap().is_some());
}

#[tokio::test]
async fn mass_prune_is_refused_then_allowed() {
    let f = fx();
    let all = [
        spec("a", "v1", ""),
        spec("b", "v1", ""),
        spec("c", "v1", ""),
    ];
    f.push(&all).await;
    f.converge().await;
    f.push(&[]).await;
    f.agents.clear_calls();
    let out = f.pass().await;
    assert!(out.plan.refused.is_some());
    assert!(out.results.is_empty());
    assert!(f.agents.mutations().is_empty());
    assert_eq!(f.state.read(|r| r.placements()).unwrap().len(), 3);
    let out = f
        .rec
        .reconcile(PassOptions {
            allow_mass_prune: true,
            ..PassOptions::default()
        })
        .await
        .unwrap();
    assert!(out.plan.refused.is_none());
    assert!(out.ok());
    assert!(f.state.read(|r| r.placements()).unwrap().is_empty());
    assert_eq!(
        f.agents
            .mutations()
            .iter()
            .filter(|c| matches!(c, Call::Undeploy { .. }))
            .count(),
        3
    );
}

#[tokio::test]
async fn crash_mid_apply_then_restart_converges_without_duplicates() {
    let f = fx();
    let all = [
        spec("a", "v1", ""),
        spec("b", "v1", ""),
        spec("c", "v1", ""),
    ];
    f.push(&all).await;
    // The first mutation completes; the next one never returns: the master
    // "dies" in the middle of the apply.
    f.agents.hang_after(Some(1));
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        f.rec.reconcile(PassOptions::default()),
    )
    .await;
    assert!(r.is_err(), "the pass should have hung");
    let open = f.state.read(|r| r.journal_unfinished()).unwrap();
    assert!(
        !open.is_empty(),
        "an interrupted operation must stay visible"
    );
    let done: Vec<String> = f
        .state
        .read(|r| r.placements())
        .unwrap()
        .into_iter()
        .map(|p| p.service)
        .collect();
    assert_eq!(done.len(), 1, "exactly one deploy completed: {done:?}");

    // Restart: a new reconciler on the same database and fleet.
    f.agents.hang_after(None);
    let rec = reconciler(&f.state, &f.agents, &f.clock);
    let abandoned = rec.recover_journal().await.unwrap();
    assert_eq!(abandoned.len(), open.len());
    assert!(f.state.read(|r| r.journal_unfinished()).unwrap().is_empty());
    let j = f
        .state
        .read(|r| r.journal_entry(abandoned[0].id))
        .unwrap()
        .unwrap();
    assert_eq!(j.status, JournalStatus::Abandoned);

    let out = rec.reconcile(PassOptions::default()).await.unwrap();
    assert!(out.ok(), "{:#?}", out.results);
    for s in ["a", "b", "c"] {
        assert!(f.placement(s).is_some(), "{s} not placed");
    }
    // The service deployed before the crash was not deployed again.
    assert_eq!(f.deploys_of(&done[0]), 1);
    f.agents.clear_calls();
    let again = rec.reconcile(PassOptions::default()).await.unwrap();
    assert!(again.plan.entries.is_empty());
    assert!(f.agents.mutations().is_empty());
}

#[tokio::test]
async fn heal_with_backoff_then_degraded_with_one_alert() {
    let f = fx();
    f.push(&[spec("mcq", "v1", "")]).await;
    f.converge().await;
    f.agents.set_crashing("mcq", "api", true);
    f.agents
        .set_state("deneb", "mcq", "api", ContainerState::Exited);
    for attempt in 1..=3u32 {
        f.agents.clear_calls();
        let out = f.pass().await;
        assert_eq!(out.plan.entries[0].kind, Kind::Heal, "attempt {attempt}");
        assert!(f.agents.mutations().iter().any(
            |c| matches!(c, Call::Start { component, .. } if component.as_deref() == Some("api"))
        ));
        let h = f
            .state
            .read(|r| r.heal_record("mcq", "api"))
            .unwrap()
            .unwrap();
        assert_eq!(h.attempts, attempt);
        // Not due again yet: the planner waits.
        f.agents.clear_calls();
        let out = f.pass().await;
        assert!(f.agents.mutations().is_empty());
        if attempt < 3 {
            assert_eq!(out.plan.entries[0].kind, Kind::Waiting);
        } else {
            // Out of attempts: degraded, and the alert is raised once.
            assert_eq!(out.plan.entries[0].kind, Kind::Degraded);
            assert!(out
                .results
                .iter()
                .any(|r| matches!(r.action, Action::Alert { .. })
                    && r.status == StepStatus::Succeeded));
        }
        f.clock.advance(Duration::from_secs(10 << attempt));
    }
    assert!(
        f.state
            .read(|r| r.heal_record("mcq", "api"))
            .unwrap()
            .unwrap()
            .alerted
    );
    f.agents.clear_calls();
    let out = f.pass().await;
    assert_eq!(out.plan.entries[0].kind, Kind::Degraded);
    assert!(out.results.is_empty());
    assert!(f.agents.mutations().is_empty());

    // It comes back (fixed by hand) and stays up: the record is cleared.
    f.agents.set_crashing("mcq", "api", false);
    f.agents
        .set_state("deneb", "mcq", "api", ContainerState::Running);
    f.clock.advance(Duration::from_secs(60));
    f.pass().await;
    assert!(f
        .state
        .read(|r| r.heal_record("mcq", "api"))
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn one_failing_service_does_not_block_others_and_is_retried() {
    let f = fx();
    f.push(&[spec("a", "v1", "node = \"vega\""), spec("b", "v1", "")])
        .await;
    f.agents.fail_next("Deploy", "vega", 1);
    let out = f.pass().await;
    assert!(!out.ok());
    assert!(f.placement("a").is_none());
    assert!(f.placement("b").is_some());
    let failed = f.state.read(|r| r.journal_recent(Some("a"), 5)).unwrap();
    assert_eq!(failed[0].status, JournalStatus::Failed);
    // The next pass retries and succeeds.
    f.converge().await;
    assert_eq!(f.placement("a").unwrap().node, "vega");
}

#[tokio::test]
async fn unreachable_agent_is_reported_not_failed_over() {
    let f = fx();
    f.push(&[spec("mcq", "v1", "")]).await;
    f.converge().await;
    f.agents.set_unreachable("deneb", true);
    let o = f.rec.observe().await.unwrap();
    assert!(matches!(
        o.agents.get("deneb"),
        Some(mcp_planner::AgentStatus::Unreachable { .. })
    ));
    f.agents.clear_calls();
    f.pass().await;
    assert!(f.agents.mutations().is_empty());
    assert_eq!(f.placement("mcq").unwrap().node, "deneb");
}

#[test]
fn address_host_strips_scheme_and_port() {
    assert_eq!(address_host("https://100.64.0.1:9444"), "100.64.0.1");
    assert_eq!(address_host("https://[fd00::1]:9444"), "fd00::1");
    assert_eq!(address_host("orion.overlay"), "orion.overlay");
}

#[tokio::test]
async fn gitops_commits_drive_the_loop_and_the_commit_is_recorded() {
    use crate::testutil::{service_toml, Repo};
    let f = fx();
    let repo = Repo::new();
    repo.write("services/mcq.toml", service_toml("mcq", "v1"));
    repo.write("services/notes.txt", "ignored");
    let c1 = repo.commit_all("one");
    let rec = Arc::new(Reconciler::new(
        f.state.clone(),
        f.agents.clone(),
        Arc::new(f.clock.clone()),
        DesiredSource::Git {
            source: crate::gitsource::GitSource::open(&repo.join("services")).unwrap(),
            options: LoadOptions::default(),
        },
        settings(),
    ));
    // Uncommitted edits are ignored.
    repo.write("services/extra.toml", service_toml("extra", "v1"));
    let out = rec.reconcile(PassOptions::default()).await.unwrap();
    assert_eq!(out.plan.source.as_deref(), Some(c1.as_str()));
    assert!(f.placement("mcq").is_some());
    assert!(f.placement("extra").is_none());
    let j = f.state.read(|r| r.journal_recent(Some("mcq"), 1)).unwrap();
    assert!(j[0].detail.contains(&c1), "{}", j[0].detail);

    // The loop re-plans when told about a new commit.
    repo.write("services/mcq.toml", service_toml("mcq", "v2"));
    let c2 = repo.commit_all("two");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(rec.clone().run(Some(rx), stop_rx));
    tx.send(crate::watch::HeadEvent {
        commit: crate::gitsource::CommitId::new(&c2),
        trigger: crate::watch::Trigger::FileEvent,
    })
    .await
    .unwrap();
    // Generous deadline: the pass runs git and SQLite on the blocking pool,
    // which a loaded CI machine can delay by seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let applied = || {
        f.agents.services_on("deneb")["mcq"].components["api"].version == "v2"
            && f.placement("extra").is_some()
    };
    while !applied() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        applied(),
        "the new commit was not applied (mcq v2 and extra, committed now as well)"
    );
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn integrations_come_from_the_config() {
    let base = r#"
[server]
grpc_addr = "100.64.0.1:9443"
tls_cert = "/etc/mcp/master.pem"
tls_key = "/etc/mcp/master.key"
ca_cert = "/etc/mcp/ca.pem"

[database]
path = "/var/lib/mcp/master.db"

[auth]
issuer_public_key = "/etc/mcp/issuer.pub"
issuer = "mcias"
audience = "mcp"
token_file = "/etc/mcp/master.token"

[edge]
internal_zone = "svc.example.internal"
"#;
    let parse = |text: &str| Config::parse(std::path::Path::new("master.toml"), text).unwrap();
    let without = Settings::from_config(&parse(base)).policy.integrations;
    assert_eq!(
        without.dns.skip_reason(),
        Some("DNS adapter not configured")
    );
    let with_dns = parse(&format!(
        "{base}\n[dns]\nadapter = \"rfc2136\"\nserver = \"127.0.0.1:53\"\nzone = \"example.internal\"\ntsig_key_name = \"mcp\"\ntsig_secret_file = \"/etc/mcp/tsig.secret\"\n"
    ));
    let with = Settings::from_config(&with_dns).policy.integrations;
    assert_eq!(with.dns, Integration::Configured, "rfc2136 has an adapter");
    for i in [&with.edge, &with.proxy, &with.certificates] {
        assert!(
            i.skip_reason()
                .is_some_and(|r| r.contains("not available in this build")),
            "{i:?}"
        );
    }
}

/// A committed file that mounts `/` or `/etc` is held: reported at the
/// volume with file:line:col, never deployed, and an already deployed
/// service keeps running its previous spec. An extra host path the
/// master's `[services] allowed_host_paths` lists is deployed.
#[tokio::test]
async fn gitops_forbidden_volumes_are_held_and_allowed_ones_deploy() {
    use crate::testutil::{service_toml, Repo};
    let f = fx();
    let repo = Repo::new();
    repo.write("services/mcq.toml", service_toml("mcq", "v1"));
    let git = |allowed: &[&str]| DesiredSource::Git {
        source: crate::gitsource::GitSource::open(&repo.join("services")).unwrap(),
        options: LoadOptions {
            allowed_host_paths: allowed.iter().map(|s| s.to_string()).collect(),
            ..LoadOptions::default()
        },
    };
    repo.commit_all("mcq");
    let rec = Arc::new(Reconciler::new(
        f.state.clone(),
        f.agents.clone(),
        Arc::new(f.clock.clone()),
        git(&[]),
        settings(),
    ));
    rec.reconcile(PassOptions::default()).await.unwrap();
    assert!(f.placement("mcq").is_some());

    let with_volume = |name: &str, version: &str, volume: &str| {
        format!("{}volumes = [\"{volume}\"]\n", service_toml(name, version))
    };
    repo.write("services/mcq.toml", with_volume("mcq", "v2", "/:/host"));
    repo.write("services/evil.toml", with_volume("evil", "v1", "/etc:/etc"));
    repo.write(
        "services/builder.toml",
        with_volume("builder", "v1", "/var/cache/builder:/cache"),
    );
    repo.commit_all("volumes");
    f.agents.clear_calls();
    let out = rec.reconcile(PassOptions::default()).await.unwrap();
    assert!(
        f.agents.mutations().is_empty(),
        "{:?}",
        f.agents.mutations()
    );
    for (svc, line) in [
        ("mcq", "services/mcq.toml:6:12: volume \"/:/host\""),
        ("evil", "services/evil.toml:6:12: volume \"/etc:/etc\""),
        (
            "builder",
            "services/builder.toml:6:12: volume \"/var/cache/builder:/cache\"",
        ),
    ] {
        let e = out.plan.entry(svc).unwrap();
        assert_eq!(e.kind, Kind::Held, "{svc}: {e:?}");
        assert!(
            e.details
                .iter()
                .any(|d| d.contains(line) && d.contains("allowed_host_paths")),
            "{svc}: {:?}",
            e.details
        );
    }
    assert!(f.placement("evil").is_none());
    assert_eq!(
        f.agents.services_on("deneb")["mcq"].components["api"].version,
        "v1"
    );

    // The master's configuration allows the builder's cache.
    let rec = Arc::new(Reconciler::new(
        f.state.clone(),
        f.agents.clone(),
        Arc::new(f.clock.clone()),
        git(&["/var/cache/builder"]),
        settings(),
    ));
    let out = rec.reconcile(PassOptions::default()).await.unwrap();
    assert_eq!(out.plan.entry("builder").unwrap().kind, Kind::Deploy);
    assert!(f.placement("builder").is_some());
    assert_eq!(out.plan.entry("evil").unwrap().kind, Kind::Held);
}

/// Issue 12 item 6: the degraded alert runs `[alerts] command`; while the
/// command fails the alert is not marked sent and the next pass tries
/// again; once it succeeds it is sent once.
#[tokio::test]
async fn a_degraded_alert_runs_the_command_and_is_retried_until_it_succeeds() {
    let mut f = fx();
    let dir = tempfile::tempdir().unwrap();
    let (fail, log) = (dir.path().join("fail"), dir.path().join("log"));
    let script = format!(
        "[ -e {} ] && exit 1; printf '%s %s %s %s\\n' \"$MCP_EVENT\" \"$MCP_SERVICE\" \"$MCP_COMPONENT\" \"$MCP_NODE\" >> {}",
        fail.display(),
        log.display()
    );
    let alerter = mcp_alert::Alerter::new(vec!["sh".into(), "-c".into(), script], "master");
    let alerts =
        crate::alerts::Alerts::new(alerter, Duration::from_secs(900), Arc::new(f.clock.clone()))
            .with_retry_delays(vec![]);
    f.rec = Arc::new(
        Reconciler::new(
            f.state.clone(),
            f.agents.clone(),
            Arc::new(f.clock.clone()),
            DesiredSource::Push,
            settings(),
        )
        .with_alerts(Arc::new(alerts)),
    );
    f.push(&[spec("mcq", "v1", "")]).await;
    f.converge().await;
    f.agents.set_crashing("mcq", "api", true);
    f.agents
        .set_state("deneb", "mcq", "api", ContainerState::Exited);
    std::fs::write(&fail, "").unwrap();
    let mut failed_alerts = 0;
    for _ in 0..8 {
        let out = f.pass().await;
        failed_alerts += out
            .results
            .iter()
            .filter(|r| matches!(r.action, Action::Alert { .. }) && r.status == StepStatus::Failed)
            .count();
        f.clock.advance(Duration::from_secs(200));
    }
    assert!(
        failed_alerts >= 2,
        "the failed alert is planned again: {failed_alerts}"
    );
    let alerted = |f: &Fx| {
        f.state
            .read(|r| r.heal_record("mcq", "api"))
            .unwrap()
            .unwrap()
            .alerted
    };
    assert!(!alerted(&f), "a failed alert is not marked sent");
    std::fs::remove_file(&fail).unwrap();
    let out = f.pass().await;
    assert!(
        out.results
            .iter()
            .any(|r| matches!(r.action, Action::Alert { .. }) && r.status == StepStatus::Succeeded),
        "{:?}",
        out.results
    );
    assert!(alerted(&f));
    f.pass().await;
    let lines = std::fs::read_to_string(&log).unwrap();
    let degraded: Vec<&str> = lines
        .lines()
        .filter(|l| l.starts_with("degraded "))
        .collect();
    assert_eq!(degraded, ["degraded mcq api deneb"]);
}
