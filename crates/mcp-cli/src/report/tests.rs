#![allow(clippy::unwrap_used)]

use mcp_planner::{
    plan, AgentStatus, Desired, Node, NodeHealth, NodeRole, Observed, Placement, Policy, Timestamp,
};
use mcp_spec::{LoadOptions, ServiceSpec, Tier};

use super::*;

fn spec(name: &str) -> ServiceSpec {
    let text =
        format!("name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"r/{name}:v1\"\n");
    mcp_spec::parse_service(
        &format!("{name}.toml"),
        name,
        &text,
        &LoadOptions::default(),
    )
    .unwrap()
}

fn fleet() -> Observed {
    let mut o = Observed::default();
    o.nodes.insert(
        "w1".to_string(),
        Node {
            role: NodeRole::Worker,
            address: "100.64.0.2".to_string(),
            health: NodeHealth::Healthy,
            containers: 0,
        },
    );
    o.agents.insert("w1".to_string(), AgentStatus::empty());
    o
}

fn desired(names: &[&str]) -> Desired {
    Desired::new(
        Some("services @ abc1234".to_string()),
        names.iter().map(|n| spec(n)),
        &[],
    )
}

fn ok(step: &str) -> StepLine {
    StepLine {
        step: step.to_string(),
        outcome: Outcome::Ok,
        error: String::new(),
        detail: String::new(),
    }
}

#[test]
fn dry_run_exit_status_is_0_without_changes_and_2_with() {
    let empty = plan(&desired(&[]), &fleet(), &Policy::default(), Timestamp(0));
    let r = sync_report(&empty, &[], true, false, false);
    assert_eq!(r.code, 0, "{}", r.stdout);

    let p = plan(
        &desired(&["web"]),
        &fleet(),
        &Policy::default(),
        Timestamp(0),
    );
    assert!(p.has_changes());
    let r = sync_report(&p, &[], true, false, false);
    assert_eq!(r.code, 2);
    assert!(r.stdout.contains("+ web on w1"), "{}", r.stdout);
    assert!(r.stdout.contains("abc1234"), "{}", r.stdout);
    assert!(!r.stdout.contains('\x1b'), "no colour unless asked");
    assert!(!r.stdout.contains("Results:"), "a dry run has no results");

    let coloured = sync_report(&p, &[], true, false, true);
    assert!(coloured.stdout.contains('\x1b'));
}

#[test]
fn apply_is_0_when_every_step_worked_and_1_when_one_failed() {
    let p = plan(
        &desired(&["web"]),
        &fleet(),
        &Policy::default(),
        Timestamp(0),
    );
    let skipped = StepLine {
        step: "edge route web".to_string(),
        outcome: Outcome::Skipped,
        error: String::new(),
        detail: String::new(),
    };
    let r = sync_report(
        &p,
        &[ok("deploy web on w1"), skipped.clone()],
        false,
        false,
        false,
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("  ok       deploy web on w1\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("  skipped  edge route web (not configured)\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("1 ok, 0 failed, 1 skipped"),
        "{}",
        r.stdout
    );

    let failed = StepLine {
        step: "dns set web.mcp.internal".to_string(),
        outcome: Outcome::Failed,
        error: "server refused update".to_string(),
        detail: String::new(),
    };
    let r = sync_report(&p, &[ok("deploy web on w1"), failed], false, false, false);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("  failed   dns set web.mcp.internal: server refused update\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn refused_plan_applies_nothing_and_fails() {
    let mut o = fleet();
    for n in ["a", "b", "c"] {
        o.placements.insert(
            n.to_string(),
            Placement {
                node: "w1".to_string(),
                tier: Tier::Worker,
                deployed_at: Timestamp(0),
                spec: None,
                spec_hash: None,
            },
        );
    }
    let p = plan(&desired(&[]), &o, &Policy::default(), Timestamp(0));
    assert!(p.refused.is_some());
    assert_eq!(sync_report(&p, &[], true, false, false).code, 2);
    let r = sync_report(&p, &[], false, false, false);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("nothing applied"), "{}", r.stdout);
}

#[test]
fn json_is_the_planner_json_for_a_dry_run_and_wraps_it_with_results() {
    let p = plan(
        &desired(&["web"]),
        &fleet(),
        &Policy::default(),
        Timestamp(0),
    );
    let r = sync_report(&p, &[], true, true, true);
    let back: Plan = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(back, p);
    assert!(!r.stdout.contains('\x1b'));

    let r = sync_report(&p, &[ok("deploy web on w1")], false, true, false);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let back: Plan = serde_json::from_value(v["plan"].clone()).unwrap();
    assert_eq!(back, p);
    assert_eq!(v["results"][0]["outcome"], "ok");
    assert_eq!(r.code, 0);
}

#[test]
fn step_status_wins_over_success_and_unspecified_falls_back() {
    let r = |success, status: pb::StepStatus| pb::StepResult {
        step: "s".to_string(),
        success,
        error: String::new(),
        status: status as i32,
        detail: String::new(),
    };
    assert_eq!(
        StepLine::from(&r(true, pb::StepStatus::Skipped)).outcome,
        Outcome::Skipped
    );
    assert_eq!(
        StepLine::from(&r(true, pb::StepStatus::Unspecified)).outcome,
        Outcome::Ok
    );
    assert_eq!(
        StepLine::from(&r(false, pb::StepStatus::Unspecified)).outcome,
        Outcome::Failed
    );
    assert_eq!(
        StepLine::from(&r(true, pb::StepStatus::Failed)).outcome,
        Outcome::Failed
    );
}

#[test]
fn tables_align_columns() {
    let t = table(
        &["NAME", "NODE", "STATUS"],
        &[
            vec!["mcq".into(), "orion".into(), "running".into()],
            vec!["longer-name".into(), "-".into(), "stopped".into()],
        ],
    );
    assert_eq!(
        t,
        "NAME         NODE   STATUS\nmcq          orion  running\nlonger-name  -      stopped\n"
    );
}

#[test]
fn event_rows_say_what_happened() {
    let ev = |kind: &str, detail: &str, prev: &str, new: &str| pb::EventInfo {
        node: "w1".to_string(),
        service: "web".to_string(),
        component: "api".to_string(),
        prev_state: prev.to_string(),
        new_state: new.to_string(),
        timestamp: "2026-01-01T00:00:00Z".to_string(),
        kind: kind.to_string(),
        detail: detail.to_string(),
    };
    assert_eq!(
        event_what(&ev("deploy", "deployed r/web:v2 (created web-api)", "", "")),
        "deployed r/web:v2 (created web-api)"
    );
    assert_eq!(
        event_what(&ev("state", "", "running", "exited")),
        "running -> exited"
    );
    assert_eq!(
        event_what(&ev("state", "exited with 137", "running", "exited")),
        "exited with 137 (running -> exited)"
    );
    assert_eq!(event_what(&ev("stop", "", "", "")), "stop");
    assert_eq!(
        event_what(&ev("flapping", "3 transitions in 5m", "running", "running")),
        "3 transitions in 5m",
        "no change to show"
    );
    assert_eq!(
        event_what(&ev("state", "", "running", "running")),
        "running"
    );
    let t = events_table(&[ev("deploy", "deployed r/web:v2", "", "")]);
    assert_eq!(
        t,
        "TIME                  NODE  SERVICE  COMPONENT  KIND    WHAT\n\
         2026-01-01T00:00:00Z  w1    web      api        deploy  deployed r/web:v2\n"
    );
}
