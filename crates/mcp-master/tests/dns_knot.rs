//! The control loop's DNS steps against a real Knot DNS server (Debian
//! `knot`, `knot-dnsutils`) through the RFC 2136 adapter, with the fake
//! fleet: deploy sets the record, a record deleted by hand is back after
//! one pass, undeploy deletes it, a wrong TSIG key is a failed step.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mcp_master::config::NodeRole;
use mcp_master::fake::FakeAgents;
use mcp_master::reconcile::{
    DesiredSource, PassOptions, PassOutcome, Reconciler, Settings, StepStatus,
};
use mcp_master::state::{Heartbeat, Registration, State};
use mcp_net::testing::servers::knot::KnotServer;
use mcp_net::{DnsRecords, Rfc2136, Rfc2136Options};
use mcp_planner::{Action, Policy};
use mcp_security::clock::{Clock, ManualClock};
use mcp_spec::{parse_service, LoadOptions, ServiceSpec};

const ZONE: &str = "svc.test";
const NAME: &str = "web.svc.test";

fn spec(name: &str) -> ServiceSpec {
    let text = format!(
        "name = \"{name}\"\n[[components]]\nname = \"api\"\nimage = \"registry.example:8443/{name}:v1\"\n"
    );
    parse_service(
        &format!("{name}.toml"),
        name,
        &text,
        &LoadOptions::default(),
    )
    .unwrap()
}

fn reconciler(dir: &std::path::Path, options: Rfc2136Options) -> Arc<Reconciler> {
    let state = Arc::new(State::open(&dir.join("master.db")).unwrap());
    let clock = ManualClock::at_unix(1_735_689_600);
    let now = clock.now();
    state
        .write(|w| {
            w.register_node(
                &Registration {
                    name: "vega".into(),
                    role: NodeRole::Worker,
                    address: "https://127.0.0.1:9444".into(),
                    arch: "amd64".into(),
                },
                now,
            )?;
            w.record_heartbeat("vega", &Heartbeat::default(), now)
        })
        .unwrap();
    let dns: Arc<dyn DnsRecords> = Arc::new(Rfc2136::new(options).unwrap());
    let settings = Settings {
        policy: Policy {
            internal_zone: ZONE.to_string(),
            ..Policy::default()
        },
        concurrency: 2,
        list_timeout: Duration::from_secs(2),
        heal_settle: Duration::from_secs(10),
        interval: Duration::from_secs(60),
    };
    Arc::new(
        Reconciler::new(
            state,
            Arc::new(FakeAgents::new()),
            Arc::new(clock),
            DesiredSource::Push,
            settings,
        )
        .with_dns(Some(dns), Duration::from_secs(60)),
    )
}

async fn pass(rec: &Arc<Reconciler>) -> PassOutcome {
    rec.reconcile(PassOptions {
        allow_mass_prune: true,
        ..PassOptions::default()
    })
    .await
    .unwrap()
}

fn dns_steps(out: &PassOutcome) -> Vec<(StepStatus, String)> {
    out.results
        .iter()
        .filter(|r| matches!(r.action, Action::SetDns { .. } | Action::RemoveDns { .. }))
        .map(|r| (r.status, r.error.clone()))
        .collect()
}

#[tokio::test]
async fn service_records_are_set_repaired_and_removed_on_knot() {
    let dir = tempfile::tempdir().unwrap();
    let Some(k) = KnotServer::start(&dir.path().join("knot"), &[ZONE]) else {
        return;
    };
    let rec = reconciler(dir.path(), k.options(ZONE));

    rec.store_pushed(&[spec("web")], &[], "test").await.unwrap();
    let out = pass(&rec).await;
    assert!(out.ok(), "{:#?}", out.results);
    assert_eq!(dns_steps(&out), [(StepStatus::Succeeded, String::new())]);
    assert_eq!(k.kdig(NAME, "A"), ["127.0.0.1"]);
    assert!(pass(&rec).await.plan.entries.is_empty(), "converged");

    // Deleted behind the master's back: back after one pass.
    k.knsupdate_delete(NAME, "A");
    assert!(k.kdig(NAME, "A").is_empty());
    let out = pass(&rec).await;
    assert!(out.ok(), "{:#?}", out.results);
    assert_eq!(k.kdig(NAME, "A"), ["127.0.0.1"], "repaired by one pass");

    // Undeployed: the record is deleted.
    rec.store_pushed(&[], &[], "test").await.unwrap();
    let out = pass(&rec).await;
    assert!(out.ok(), "{:#?}", out.results);
    assert!(
        out.results
            .iter()
            .any(|r| matches!(&r.action, Action::RemoveDns { name } if name == NAME)),
        "{:#?}",
        out.results
    );
    assert!(k.kdig(NAME, "A").is_empty(), "deleted on undeploy");
    assert!(rec
        .state()
        .read(|r| r.dns_records())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_wrong_tsig_key_is_a_failed_step_naming_notauth() {
    let dir = tempfile::tempdir().unwrap();
    let Some(k) = KnotServer::start(&dir.path().join("knot"), &[ZONE]) else {
        return;
    };
    let mut options = k.options(ZONE);
    options.secret = vec![9; 32];
    let rec = reconciler(dir.path(), options);
    rec.store_pushed(&[spec("web")], &[], "test").await.unwrap();
    let out = pass(&rec).await;
    assert!(!out.ok());
    let steps = dns_steps(&out);
    assert_eq!(steps.len(), 1);
    let (status, error) = &steps[0];
    assert_eq!(*status, StepStatus::Failed);
    assert!(
        error.starts_with(&format!("dns {NAME}: {} refused: ", k.addr())),
        "{error}"
    );
    assert!(error.contains("NOTAUTH"), "{error}");
    assert!(k.kdig(NAME, "A").is_empty());
    assert!(rec
        .state()
        .read(|r| r.dns_records())
        .await
        .unwrap()
        .is_empty());
}
