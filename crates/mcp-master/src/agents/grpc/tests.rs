//! The protocol mapping of [`super::GrpcAgents`].
#![allow(clippy::unwrap_used)]

use super::*;
use crate::agents::failed_steps;
use mcp_planner::ContainerState;

fn comp(name: &str, desired: &str, observed: &str) -> pb::ComponentInfo {
    pb::ComponentInfo {
        name: name.into(),
        image: "r/x:v1".into(),
        version: "v1".into(),
        desired_state: desired.into(),
        observed_state: observed.into(),
        restart_count: 2,
        ..Default::default()
    }
}

#[test]
fn list_services_maps_to_planner_report() {
    let resp = pb::ListServicesResponse {
        services: vec![pb::ServiceInfo {
            name: "mcq".into(),
            active: true,
            spec_hash: "abc".into(),
            components: vec![
                comp("api", "running", "running"),
                comp("worker", "running", "exited"),
                comp("cron", "stopped", "exited"),
                comp("gone", "running", "missing"),
                comp("odd", "running", "paused"),
            ],
            tier: "worker".into(),
        }],
        orphans: vec!["stray".into()],
    };
    let r = report_from_pb(resp);
    assert_eq!(r.orphans, ["stray"]);
    let s = &r.services["mcq"];
    assert_eq!(s.spec_hash, "abc");
    assert!(s.active);
    let st = |c: &str| s.components[c].state;
    assert_eq!(st("api"), ContainerState::Running);
    assert_eq!(st("worker"), ContainerState::Exited);
    assert_eq!(st("cron"), ContainerState::Stopped);
    assert_eq!(st("gone"), ContainerState::Missing);
    assert_eq!(st("odd"), ContainerState::Other);
    assert_eq!(s.components["api"].restarts, 2);
    assert_eq!(s.components["api"].version, "v1");
}

#[test]
fn skipped_steps_are_not_failures() {
    let ok = step_from_pb(pb::StepResult {
        step: "pull".into(),
        success: true,
        status: pb::StepStatus::Succeeded as i32,
        ..Default::default()
    });
    assert_eq!(ok.state, StepState::Done);
    let skipped = step_from_pb(pb::StepResult {
        step: "dns".into(),
        success: false,
        status: pb::StepStatus::Skipped as i32,
        ..Default::default()
    });
    assert_eq!(skipped.state, StepState::Skipped);
    assert_eq!(failed_steps(&[ok.clone(), skipped]), None);
    let bad = step_from_pb(pb::StepResult {
        step: "cert".into(),
        success: false,
        error: "acme down".into(),
        status: pb::StepStatus::Failed as i32,
        ..Default::default()
    });
    assert_eq!(bad.state, StepState::Failed("acme down".into()));
    assert_eq!(failed_steps(&[ok, bad]).as_deref(), Some("cert: acme down"));
    // An older agent that only says `success = false`.
    let old = step_from_pb(pb::StepResult {
        step: "x".into(),
        success: false,
        ..Default::default()
    });
    assert!(old.is_failed());
}

#[test]
fn events_map_times_and_empty_states() {
    let t = AgentTarget {
        node: "vega".into(),
        address: "https://127.0.0.1:1".into(),
    };
    let e = event_from_pb(
        &t,
        pb::EventInfo {
            service: "mcq".into(),
            component: "api".into(),
            kind: "deploy".into(),
            timestamp: "2026-01-02T03:04:05Z".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(e.node, "vega");
    assert_eq!(e.prev_state, None);
    assert_eq!(rfc3339(e.time), "2026-01-02T03:04:05Z");
    let bad = event_from_pb(
        &t,
        pb::EventInfo {
            timestamp: "yesterday".into(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(bad, AgentError::BadReply { .. }), "{bad}");
}
