//! DNS steps through a [`FakeDns`]: records set on deploy, repaired when
//! changed behind the master's back, deleted on undeploy, and a refused
//! update reported as a failed step.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mcp_net::testing::FakeDns;
use mcp_net::{DnsRecords, RecordData, RecordType};
use mcp_planner::Policy;
use mcp_security::clock::ManualClock;
use mcp_spec::{parse_service, LoadOptions, ServiceSpec};

use super::*;
use crate::config::NodeRole;
use crate::fake::FakeAgents;
use crate::state::{Heartbeat, Registration, State};

const NAME: &str = "web.svc.test";

struct Fx {
    _dir: tempfile::TempDir,
    state: Arc<State>,
    dns: Arc<FakeDns>,
    rec: Arc<Reconciler>,
}

fn fx(address: &str) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(State::open(&dir.path().join("master.db")).unwrap());
    let clock = ManualClock::at_unix(1_735_689_600);
    let now = clock.now();
    state
        .write(|w| {
            w.register_node(
                &Registration {
                    name: "vega".into(),
                    role: NodeRole::Worker,
                    address: address.to_string(),
                    arch: "amd64".into(),
                },
                now,
            )?;
            w.record_heartbeat("vega", &Heartbeat::default(), now)
        })
        .unwrap();
    let dns = Arc::new(FakeDns::new("svc.test"));
    let settings = Settings {
        policy: Policy {
            internal_zone: "svc.test".to_string(),
            ..Policy::default()
        },
        concurrency: 2,
        list_timeout: Duration::from_secs(2),
        heal_settle: Duration::from_secs(10),
        interval: Duration::from_secs(60),
    };
    let rec = Reconciler::new(
        state.clone(),
        Arc::new(FakeAgents::new()),
        Arc::new(clock),
        DesiredSource::Push,
        settings,
    )
    .with_dns(Some(dns.clone()), Duration::from_secs(60));
    Fx {
        _dir: dir,
        state,
        dns,
        rec: Arc::new(rec),
    }
}

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

impl Fx {
    async fn pass(&self) -> PassOutcome {
        self.rec
            .reconcile(PassOptions {
                allow_mass_prune: true,
                ..PassOptions::default()
            })
            .await
            .unwrap()
    }

    fn live(&self, rtype: RecordType) -> Option<Vec<RecordData>> {
        self.dns.records().get(&(NAME.to_string(), rtype)).cloned()
    }

    fn tracked(&self) -> Vec<(String, String)> {
        self.state
            .read(|r| r.dns_records())
            .unwrap()
            .into_iter()
            .map(|d| (d.name, d.address))
            .collect()
    }

    fn dns_steps(out: &PassOutcome) -> Vec<&StepOutcome> {
        out.results
            .iter()
            .filter(|r| matches!(r.action, Action::SetDns { .. } | Action::RemoveDns { .. }))
            .collect()
    }
}

fn a(ip: &str) -> Vec<RecordData> {
    vec![RecordData::A(ip.parse().unwrap())]
}

#[tokio::test]
async fn deploy_sets_the_record_and_a_second_pass_only_looks_it_up() {
    let f = fx("https://10.0.0.5:9444");
    f.rec
        .store_pushed(&[spec("web")], &[], "test")
        .await
        .unwrap();
    let out = f.pass().await;
    assert!(out.ok(), "{:#?}", out.results);
    let steps = Fx::dns_steps(&out);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::Succeeded, "{:?}", steps[0]);
    assert_eq!(f.live(RecordType::A), Some(a("10.0.0.5")));
    assert_eq!(f.tracked(), [(NAME.to_string(), "10.0.0.5".to_string())]);

    let again = f.pass().await;
    assert!(again.plan.entries.is_empty(), "{:#?}", again.plan.entries);
    assert!(
        f.dns
            .calls()
            .iter()
            .any(|c| c == &format!("lookup {NAME} A")),
        "the pass looked the record up on the server: {:?}",
        f.dns.calls()
    );
}

#[tokio::test]
async fn a_record_deleted_or_changed_by_hand_is_repaired_by_the_next_pass() {
    let f = fx("https://10.0.0.5:9444");
    f.rec
        .store_pushed(&[spec("web")], &[], "test")
        .await
        .unwrap();
    assert!(f.pass().await.ok());

    f.dns.delete_by_hand(NAME, RecordType::A);
    let out = f.pass().await;
    assert!(out.ok(), "{:#?}", out.results);
    assert_eq!(Fx::dns_steps(&out).len(), 1, "{:#?}", out.results);
    assert!(out.plan.entries[0]
        .reason
        .contains("DNS record missing or wrong"));
    assert_eq!(f.live(RecordType::A), Some(a("10.0.0.5")), "repaired");
    assert_eq!(f.tracked().len(), 1, "tracked again");

    f.dns.replace(NAME, 60, &a("10.9.9.9")).await.unwrap();
    let out = f.pass().await;
    assert_eq!(Fx::dns_steps(&out).len(), 1, "{:#?}", out.results);
    assert_eq!(f.live(RecordType::A), Some(a("10.0.0.5")), "changed back");
    assert!(f.pass().await.plan.entries.is_empty(), "converged");
}

#[tokio::test]
async fn undeploy_deletes_the_record_and_forgets_it() {
    let f = fx("https://10.0.0.5:9444");
    f.rec
        .store_pushed(&[spec("web"), spec("api")], &[], "test")
        .await
        .unwrap();
    assert!(f.pass().await.ok());
    assert_eq!(f.tracked().len(), 2);
    f.rec
        .store_pushed(&[spec("api")], &[], "test")
        .await
        .unwrap();
    let out = f.pass().await;
    assert!(out.ok(), "{:#?}", out.results);
    let steps = Fx::dns_steps(&out);
    assert!(
        steps.iter().any(
            |s| matches!(&s.action, Action::RemoveDns { name } if name == NAME)
                && s.status == StepStatus::Succeeded
        ),
        "{steps:#?}"
    );
    assert_eq!(f.live(RecordType::A), None);
    assert_eq!(
        f.tracked(),
        [("api.svc.test".to_string(), "10.0.0.5".to_string())]
    );
    assert!(f.pass().await.plan.entries.is_empty(), "converged");
}

#[tokio::test]
async fn a_refused_update_is_a_failed_step_naming_the_rcode_and_is_retried() {
    let f = fx("https://10.0.0.5:9444");
    f.dns.reject_updates(Some("NOTAUTH"));
    f.rec
        .store_pushed(&[spec("web")], &[], "test")
        .await
        .unwrap();
    let out = f.pass().await;
    assert!(!out.ok(), "a refused update fails the pass");
    let steps = Fx::dns_steps(&out);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::Failed);
    assert!(steps[0].error.contains("NOTAUTH"), "{}", steps[0].error);
    assert!(
        steps[0].error.starts_with(&format!("dns {NAME}: ")),
        "{}",
        steps[0].error
    );
    assert!(f.tracked().is_empty(), "not recorded as created");
    assert_eq!(f.live(RecordType::A), None);

    // Still failing: planned and tried again, never skipped.
    let out = f.pass().await;
    assert_eq!(Fx::dns_steps(&out)[0].status, StepStatus::Failed);

    f.dns.reject_updates(None);
    let out = f.pass().await;
    assert!(out.ok(), "{:#?}", out.results);
    assert_eq!(f.live(RecordType::A), Some(a("10.0.0.5")));
    assert_eq!(f.tracked().len(), 1);
}

#[tokio::test]
async fn an_ipv6_node_gets_an_aaaa_record() {
    let f = fx("https://[fd00::5]:9444");
    f.rec
        .store_pushed(&[spec("web")], &[], "test")
        .await
        .unwrap();
    let out = f.pass().await;
    assert!(out.ok(), "{:#?}", out.results);
    assert_eq!(
        f.live(RecordType::Aaaa),
        Some(vec![RecordData::Aaaa("fd00::5".parse().unwrap())])
    );
    assert!(f.pass().await.plan.entries.is_empty(), "converged");
}

#[tokio::test]
async fn a_node_address_that_is_not_an_ip_fails_the_step() {
    let f = fx("https://vega.overlay:9444");
    f.rec
        .store_pushed(&[spec("web")], &[], "test")
        .await
        .unwrap();
    let out = f.pass().await;
    let steps = Fx::dns_steps(&out);
    assert_eq!(steps[0].status, StepStatus::Failed);
    assert!(
        steps[0].error.contains("not an IP address"),
        "{}",
        steps[0].error
    );
}

#[tokio::test]
async fn without_an_adapter_dns_steps_stay_skipped() {
    let f = fx("https://10.0.0.5:9444");
    let rec = Arc::new(
        Reconciler::new(
            f.state.clone(),
            Arc::new(FakeAgents::new()),
            Arc::new(ManualClock::at_unix(1_735_689_600)),
            DesiredSource::Push,
            f.rec.settings().clone(),
        )
        .with_dns(None, Duration::from_secs(60)),
    );
    rec.store_pushed(&[spec("web")], &[], "test").await.unwrap();
    let out = rec.reconcile(PassOptions::default()).await.unwrap();
    let steps = Fx::dns_steps(&out);
    assert_eq!(steps[0].status, StepStatus::Skipped);
    assert!(f.dns.calls().is_empty());
}
