//! Issue 9, item 5: a spec the agent refuses gets one attempt, is shown as
//! failed with the agent's answer, is not tried again (on any node) until
//! its file changes; transient errors are retried.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mcp_security::clock::ManualClock;
use mcp_spec::LoadOptions;

use super::*;
use crate::config::NodeRole;
use crate::fake::{Call, FakeAgents};
use crate::fleet::{Fleet, FleetSettings};
use crate::gitsource::GitSource;
use crate::server::MasterService;
use crate::state::{Registration, State};
use crate::testutil::Repo;

const BAD: &str = "registry.example:8443/mcq:v2";

struct Fx {
    _dir: tempfile::TempDir,
    repo: Repo,
    state: Arc<State>,
    agents: Arc<FakeAgents>,
    clock: ManualClock,
    rec: Arc<Reconciler>,
    server: MasterService,
}

fn fx() -> Fx {
    fx_with(None)
}

/// With `alerts` (else logged only).
fn fx_with(alerts: Option<crate::alerts::Alerts>) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(State::open(&dir.path().join("master.db")).unwrap());
    let clock = ManualClock::at_unix(1_735_689_600);
    let now = clock.now();
    state
        .write(|w| {
            for name in ["w1", "w2"] {
                w.register_node(
                    &Registration {
                        name: name.into(),
                        role: NodeRole::Worker,
                        address: format!("https://{name}:9444"),
                        arch: "amd64".into(),
                    },
                    now,
                )?;
            }
            Ok(())
        })
        .unwrap();
    let repo = Repo::new();
    repo.write(
        "services/keep.toml",
        crate::testutil::service_toml("keep", "v1"),
    );
    repo.commit_all("keep");
    let agents = Arc::new(FakeAgents::new());
    let rec = Arc::new(Reconciler::new(
        state.clone(),
        agents.clone(),
        Arc::new(clock.clone()),
        DesiredSource::Git {
            source: GitSource::open(&repo.join("services")).unwrap(),
            options: LoadOptions::default(),
        },
        Settings {
            policy: Policy {
                internal_zone: "svc.test".to_string(),
                ..Policy::default()
            },
            concurrency: 2,
            list_timeout: Duration::from_secs(2),
            heal_settle: Duration::from_secs(10),
            interval: Duration::from_secs(60),
        },
    ));
    let rec = match alerts {
        Some(a) => Arc::new(Arc::into_inner(rec).unwrap().with_alerts(Arc::new(a))),
        None => rec,
    };
    let fleet = Arc::new(Fleet::new(
        state.clone(),
        agents.clone(),
        Arc::new(clock.clone()),
        FleetSettings::default(),
        Box::new(|| {}),
    ));
    let server = MasterService::new(rec.clone(), fleet);
    Fx {
        _dir: dir,
        repo,
        state,
        agents,
        clock,
        rec,
        server,
    }
}

impl Fx {
    fn commit(&self, service: &str, version: &str) {
        self.repo.write(
            &format!("services/{service}.toml"),
            crate::testutil::service_toml(service, version),
        );
        self.repo.commit_all(&format!("{service} {version}"));
    }

    fn deploys_of(&self, service: &str) -> usize {
        self.agents
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Deploy { service: s, .. } if s == service))
            .count()
    }

    async fn pass(&self) -> PassOutcome {
        self.clock.advance(Duration::from_secs(60));
        self.rec.reconcile(PassOptions::default()).await.unwrap()
    }

    async fn status(&self, service: &str) -> (String, String) {
        let s = self.server.status_of(Some(service)).await.unwrap();
        (s[0].status.clone(), s[0].detail.clone())
    }
}

#[tokio::test]
async fn a_refused_spec_gets_one_attempt_is_shown_failed_and_waits_for_a_fix() {
    let f = fx();
    f.agents.reject_image(
        BAD,
        tonic::Code::InvalidArgument,
        "service mcq: invalid spec: components[0].image: not pullable here",
    );
    f.commit("mcq", "v2");

    // One attempt: the step fails with the agent's answer.
    let out = f.pass().await;
    let step = out.results.iter().find(|r| r.service == "mcq").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert!(step.error.contains("InvalidArgument"), "{}", step.error);
    assert!(
        step.error
            .contains("mcq is marked failed and not retried until its spec changes"),
        "{}",
        step.error
    );
    assert_eq!(f.deploys_of("mcq"), 1);
    let rec = f.state.read(|r| r.failed_spec("mcq")).unwrap().unwrap();
    assert_eq!(rec.code, "InvalidArgument");
    assert_eq!(
        rec.spec_hash,
        mcp_spec::spec_hash(f.rec.desired().await.unwrap().services.get("mcq").unwrap())
    );

    // `mcp status` says failed, with the agent's answer.
    let (status, detail) = f.status("mcq").await;
    assert_eq!(status, "failed");
    assert!(
        detail.starts_with(
            &format!(
                "spec rejected by the agent on {n} (InvalidArgument), not retried until the spec \
                 changes (fix the file, or `mcp deploy mcq` to try again): agent {n}: Deploy: \
                 InvalidArgument: service mcq: invalid spec: components[0].image: not pullable here",
                n = rec.node
            )
        ),
        "{detail}"
    );

    // Five more passes: no attempt on this node or another; the plan says
    // it is held and why; the other service is untouched.
    for _ in 0..5 {
        let out = f.pass().await;
        let e = out
            .plan
            .entries
            .iter()
            .find(|e| e.service == "mcq")
            .unwrap();
        assert_eq!(e.kind, mcp_planner::Kind::Held);
        assert!(
            e.reason.starts_with("spec rejected by the agent on"),
            "{}",
            e.reason
        );
        assert!(out.results.iter().all(|r| r.service != "mcq"));
    }
    assert_eq!(f.deploys_of("mcq"), 1, "{:?}", f.agents.calls());
    assert!(f.agents.node_of("keep").is_some());

    // Fixing the file deploys it.
    f.commit("mcq", "v3");
    let out = f.pass().await;
    assert!(out.ok(), "{:?}", out.results);
    assert_eq!(f.deploys_of("mcq"), 2);
    assert!(f.agents.node_of("mcq").is_some());
    assert!(f.state.read(|r| r.failed_specs()).unwrap().is_empty());
    let (status, detail) = f.status("mcq").await;
    assert_eq!((status.as_str(), detail.as_str()), ("running", ""));
}

#[tokio::test]
async fn a_refused_update_keeps_the_old_spec_running() {
    let f = fx();
    f.commit("mcq", "v1");
    assert!(f.pass().await.ok());
    let node = f.agents.node_of("mcq").unwrap();
    f.agents
        .reject_image(BAD, tonic::Code::FailedPrecondition, "image not found");
    f.commit("mcq", "v2");
    assert!(!f.pass().await.ok());
    assert!(f.pass().await.ok());
    assert_eq!(f.deploys_of("mcq"), 2);
    // v1 still runs where it ran; the service shows failed.
    assert_eq!(f.agents.node_of("mcq").as_deref(), Some(node.as_str()));
    assert_eq!(
        f.agents.services_on(&node)["mcq"].components["api"].version,
        "v1"
    );
    let (status, detail) = f.status("mcq").await;
    assert_eq!(status, "failed");
    assert!(
        detail.contains(&format!(
            "rejected by the agent on {node} (FailedPrecondition)"
        )),
        "{detail}"
    );
    // Going back to the deployed spec is a change too: nothing to do, and
    // the failure is forgotten.
    f.commit("mcq", "v1");
    assert!(f.pass().await.ok());
    assert!(f.state.read(|r| r.failed_specs()).unwrap().is_empty());
    assert_eq!(f.status("mcq").await.0, "running");
}

#[tokio::test]
async fn transient_errors_are_retried_and_not_recorded() {
    let f = fx();
    f.agents.fail_next("Deploy", "w1", 1);
    f.agents.fail_next("Deploy", "w2", 1);
    f.commit("mcq", "v1");
    assert!(!f.pass().await.ok());
    assert!(f.state.read(|r| r.failed_specs()).unwrap().is_empty());
    let before = f.deploys_of("mcq");
    assert!(before >= 1);
    // Retried until it works.
    for _ in 0..3 {
        if f.agents.node_of("mcq").is_some() {
            break;
        }
        f.pass().await;
    }
    assert!(f.agents.node_of("mcq").is_some());
    assert!(f.deploys_of("mcq") > before);

    // An unreachable node is transient too.
    f.agents
        .reject_image(BAD, tonic::Code::Unavailable, "podman is not runnable");
    f.commit("mcq", "v2");
    f.pass().await;
    f.pass().await;
    assert!(f.state.read(|r| r.failed_specs()).unwrap().is_empty());
    assert!(f.deploys_of("mcq") >= before + 3);
}

/// Issue 12 item 3: the agent rolled a failed health check back. The master
/// holds the spec (no retry across passes), says so in the agent's words,
/// records the outcome, and runs the alert command once.
#[tokio::test]
async fn a_rolled_back_update_is_held_recorded_and_alerted_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alerts.log");
    let script = format!(
        "printf '%s %s\\n' \"$MCP_EVENT\" \"$MCP_SERVICE\" >> {}",
        log.display()
    );
    let alerter = mcp_alert::Alerter::new(vec!["sh".into(), "-c".into(), script], "master");
    let clock = ManualClock::at_unix(1_735_689_600);
    let alerts = crate::alerts::Alerts::new(alerter, Duration::from_secs(900), Arc::new(clock))
        .with_retry_delays(vec![]);
    let f = fx_with(Some(alerts));
    f.commit("mcq", "v1");
    assert!(f.pass().await.ok());
    let answer = "service mcq: v2 failed its health check (not healthy within 20s: api: http \
                  GET / on 127.0.0.1:10001: status 500 Internal Server Error (expected 2xx)), \
                  rolled back to v1 (spec 0123456789ab); commit a fix or run `mcp rollback mcq`";
    f.agents
        .reject_image(BAD, tonic::Code::FailedPrecondition, answer);
    f.commit("mcq", "v2");
    assert!(!f.pass().await.ok());
    for _ in 0..3 {
        assert!(f.pass().await.ok(), "held: nothing to do");
    }
    assert_eq!(f.deploys_of("mcq"), 2, "the failed hash is not retried");
    let (status, detail) = f.status("mcq").await;
    assert_eq!(status, "failed");
    assert!(
        detail.starts_with("v2 failed its health check (not healthy within 20s: api:"),
        "{detail}"
    );
    assert!(
        detail.contains(
            "rolled back to v1 (spec 0123456789ab); commit a fix or run `mcp rollback mcq`"
        ),
        "{detail}"
    );
    let outcomes = f.state.read(|r| r.deploy_outcomes("mcq")).unwrap();
    let kinds: Vec<&str> = outcomes.iter().map(|o| o.outcome.as_str()).collect();
    assert_eq!(kinds, ["rolled_back", "deployed"]);
    // The alert command ran once, as rolled_back (not also as step_failed).
    let mut lines = String::new();
    for _ in 0..50 {
        lines = std::fs::read_to_string(&log).unwrap_or_default();
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = std::fs::read_to_string(&log).unwrap_or(lines);
    assert_eq!(lines, "rolled_back mcq\n");
}
