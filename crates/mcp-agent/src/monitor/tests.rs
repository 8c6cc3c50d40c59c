//! Monitor rules as data: each case is (registry components, containers,
//! history, alerts sent) → a summary of the outcome, one line per item.

use super::*;

const NOW: i64 = 1_000_000;
const MIN: i64 = 60;

/// `service/component desired observed restarts`.
fn comp(spec: &str) -> ComponentRecord {
    let f: Vec<&str> = spec.split_whitespace().collect();
    let (service, name) = f[0].split_once('/').expect("service/component");
    ComponentRecord {
        service: service.into(),
        name: name.into(),
        image: format!("registry.example/{service}:v1"),
        version: "v1".into(),
        desired: DesiredState::parse(f[1]).expect("desired"),
        observed: ObservedState::parse(f[2]),
        restart_count: f[3].parse().expect("restarts"),
        container_name: format!("{service}-{name}"),
        updated_at: Timestamp::from_unix(0),
    }
}

/// `container-name service/component state restarts` (`-/-` = unlabelled).
fn ctr(spec: &str) -> ObservedContainer {
    let f: Vec<&str> = spec.split_whitespace().collect();
    let (service, component) = f[1].split_once('/').expect("labels");
    let unlabelled = |s: &str| if s == "-" { String::new() } else { s.into() };
    ObservedContainer {
        name: f[0].into(),
        service: unlabelled(service),
        component: unlabelled(component),
        state: ObservedState::parse(f[2]),
        restart_count: f[3].parse().expect("restarts"),
    }
}

/// `minutes-ago kind service/component prev->new`.
fn ev(spec: &str) -> Event {
    let f: Vec<&str> = spec.split_whitespace().collect();
    let (service, component) = f[2].split_once('/').expect("service/component");
    let (prev, new) = f[3].split_once("->").expect("prev->new");
    Event {
        id: 0,
        service: service.into(),
        component: component.into(),
        prev_state: Some(prev.into()),
        new_state: Some(new.into()),
        kind: EventKind::parse(f[1]),
        detail: String::new(),
        time: Timestamp::from_unix(NOW - f[0].parse::<i64>().expect("minutes") * MIN),
    }
}

#[derive(Default)]
struct Case {
    components: &'static [&'static str],
    containers: &'static [&'static str],
    history: &'static [&'static str],
    /// `key minutes-ago`.
    sent: &'static [&'static str],
    skip: &'static [&'static str],
}

fn summary(o: &MonitorOutcome) -> Vec<String> {
    let mut out = Vec::new();
    for u in &o.updates {
        out.push(format!(
            "update {}/{} {} {}",
            u.service, u.component, u.observed, u.restart_count
        ));
    }
    for e in &o.events {
        assert_eq!(e.time, Timestamp::from_unix(NOW));
        let mut line = format!(
            "event {} {}/{} {}->{}",
            e.kind,
            e.service,
            e.component,
            e.prev_state.as_deref().unwrap_or("?"),
            e.new_state.as_deref().unwrap_or("?"),
        );
        if !e.detail.is_empty() {
            line.push_str(&format!(": {}", e.detail));
        }
        out.push(line);
    }
    for f in o.drift.iter().chain(&o.flapping) {
        out.push(format!(
            "{} {}/{}: {}",
            f.kind.as_str(),
            f.service,
            f.component,
            f.detail
        ));
    }
    for a in &o.alerts {
        out.push(format!("alert {} ({} {})", a.key, a.event, a.detail));
    }
    for k in &o.suppressed {
        out.push(format!("suppressed {k}"));
    }
    for c in &o.unmanaged {
        out.push(format!("unmanaged {}", c.name));
    }
    out
}

fn run(case: &Case) -> Vec<String> {
    let components: Vec<_> = case.components.iter().map(|s| comp(s)).collect();
    let containers: Vec<_> = case.containers.iter().map(|s| ctr(s)).collect();
    let history: Vec<_> = case.history.iter().map(|s| ev(s)).collect();
    let alerts_sent: BTreeMap<String, Timestamp> = case
        .sent
        .iter()
        .map(|s| {
            let (key, ago) = s.split_once(' ').expect("key minutes");
            let ago: i64 = ago.parse().expect("minutes");
            (key.to_string(), Timestamp::from_unix(NOW - ago * MIN))
        })
        .collect();
    let skip: BTreeSet<String> = case.skip.iter().map(|s| s.to_string()).collect();
    let input = MonitorInput {
        components: &components,
        containers: &containers,
        history: &history,
        alerts_sent: &alerts_sent,
        skip_services: &skip,
        now: Timestamp::from_unix(NOW),
    };
    summary(&observe(&input, &MonitorPolicy::default()))
}

fn check(case: Case, want: &[&str]) {
    let got = run(&case);
    assert_eq!(
        got,
        want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "\ngot:\n  {}\n",
        got.join("\n  ")
    );
}

#[test]
fn steady_state_is_silent() {
    check(
        Case {
            components: &["app/web running running 0", "app/job stopped exited 0"],
            containers: &["app-web app/web running 0", "app-job app/job exited 0"],
            ..Case::default()
        },
        &[],
    );
}

#[test]
fn first_observation_records_state_only() {
    check(
        Case {
            components: &["app/web running unknown 0"],
            containers: &["app-web app/web running 4"],
            ..Case::default()
        },
        &[
            "update app/web running 4",
            "event state app/web unknown->running",
        ],
    );
}

#[test]
fn crash_is_a_state_change_with_drift_and_an_alert() {
    check(
        Case {
            components: &["app/web running running 0"],
            containers: &["app-web app/web exited 0"],
            ..Case::default()
        },
        &[
            "update app/web exited 0",
            "event state app/web running->exited",
            "event drift app/web running->exited: desired running, observed exited",
            "drift app/web: desired running, observed exited",
            "alert drift:app/web (drift desired running, observed exited)",
        ],
    );
}

#[test]
fn missing_container_is_drift() {
    check(
        Case {
            components: &["app/web running running 2"],
            containers: &[],
            ..Case::default()
        },
        &[
            "update app/web missing 2",
            "event state app/web running->missing: container app-web not found",
            "event drift app/web running->missing: desired running, observed missing",
            "drift app/web: desired running, observed missing",
            "alert drift:app/web (drift desired running, observed missing)",
        ],
    );
}

#[test]
fn lasting_drift_alerts_once_per_cooldown() {
    let base = || Case {
        components: &["app/web running exited 0"],
        containers: &["app-web app/web exited 0"],
        ..Case::default()
    };
    // Within the 15 minute cooldown: held back, no new event.
    check(
        Case {
            sent: &["drift:app/web 5"],
            ..base()
        },
        &[
            "drift app/web: desired running, observed exited",
            "suppressed drift:app/web",
        ],
    );
    // Cooldown over: alerted again (still no new event).
    check(
        Case {
            sent: &["drift:app/web 16"],
            ..base()
        },
        &[
            "drift app/web: desired running, observed exited",
            "alert drift:app/web (drift desired running, observed exited)",
        ],
    );
    // Another key's cooldown does not matter.
    check(
        Case {
            sent: &["drift:app/db 1"],
            ..base()
        },
        &[
            "drift app/web: desired running, observed exited",
            "alert drift:app/web (drift desired running, observed exited)",
        ],
    );
}

#[test]
fn running_when_desired_stopped_is_drift() {
    check(
        Case {
            components: &["app/web stopped exited 0"],
            containers: &["app-web app/web running 0"],
            sent: &["drift:app/web 1"],
            ..Case::default()
        },
        &[
            "update app/web running 0",
            "event state app/web exited->running",
            "event drift app/web exited->running: desired stopped, observed running",
            "drift app/web: desired stopped, observed running",
            "suppressed drift:app/web",
        ],
    );
}

#[test]
fn recovery_records_the_state_change_only() {
    check(
        Case {
            components: &["app/web running exited 0"],
            containers: &["app-web app/web running 1"],
            ..Case::default()
        },
        // The restart is the state change itself: no separate restart event.
        &[
            "update app/web running 1",
            "event state app/web exited->running",
        ],
    );
}

#[test]
fn ignored_components_never_drift_or_alert() {
    check(
        Case {
            components: &["app/job ignore running 0"],
            containers: &["app-job app/job exited 0"],
            history: &[
                "1 state app/job running->exited",
                "2 state app/job exited->running",
                "3 state app/job running->exited",
            ],
            ..Case::default()
        },
        &[
            "update app/job exited 0",
            "event state app/job running->exited",
        ],
    );
}

#[test]
fn unseen_restarts_are_events() {
    check(
        Case {
            components: &["app/web running running 3"],
            containers: &["app-web app/web running 5"],
            ..Case::default()
        },
        &[
            "update app/web running 5",
            "event restart app/web running->running: restart count 3 -> 5",
        ],
    );
}

#[test]
fn a_recreated_container_resets_the_count_quietly() {
    check(
        Case {
            components: &["app/web running running 7"],
            containers: &["app-web app/web running 0"],
            ..Case::default()
        },
        &["update app/web running 0"],
    );
}

#[test]
fn flapping_needs_threshold_transitions_within_the_window() {
    // Two old transitions in the window + this one = 3 = threshold.
    check(
        Case {
            components: &["app/web running exited 0"],
            containers: &["app-web app/web running 0"],
            history: &[
                "4 state app/web running->exited",
                "2 state app/web exited->running",
                "1 state app/web running->exited",
                "60 state app/web exited->running",
            ],
            ..Case::default()
        },
        &[
            "update app/web running 0",
            "event state app/web exited->running",
            "event flapping app/web exited->running: 4 transitions in the last 5m, now running",
            "flapping app/web: 4 transitions in the last 5m, now running",
            "alert flapping:app/web (flapping 4 transitions in the last 5m, now running)",
        ],
    );
    // Only the transition from `unknown` and one outside the window: quiet.
    check(
        Case {
            components: &["app/web running exited 0"],
            containers: &["app-web app/web running 0"],
            history: &[
                "1 state app/web unknown->running",
                "3 state app/web running->exited",
                "6 state app/web exited->running",
            ],
            ..Case::default()
        },
        &[
            "update app/web running 0",
            "event state app/web exited->running",
        ],
    );
}

#[test]
fn flapping_event_once_per_window_finding_while_it_lasts() {
    check(
        Case {
            components: &["app/web running running 4"],
            containers: &["app-web app/web running 5"],
            history: &[
                "4 restart app/web running->running",
                "3 restart app/web running->running",
                "2 flapping app/web running->running",
            ],
            sent: &["flapping:app/web 2"],
            ..Case::default()
        },
        &[
            "update app/web running 5",
            "event restart app/web running->running: restart count 4 -> 5",
            "flapping app/web: 3 transitions in the last 5m, now running",
            "suppressed flapping:app/web",
        ],
    );
}

#[test]
fn unlabelled_containers_match_by_name_and_strangers_are_unmanaged() {
    check(
        Case {
            components: &["app/web running running 0"],
            containers: &[
                "app-web -/- running 0",
                "postgres -/- running 0",
                "other-api other/api running 0",
            ],
            ..Case::default()
        },
        &["unmanaged postgres", "unmanaged other-api"],
    );
}

#[test]
fn services_under_operation_are_skipped() {
    check(
        Case {
            components: &["app/web running running 0", "db/main running running 0"],
            containers: &["app-new app/new created 0", "db-main db/main exited 0"],
            skip: &["app", "db"],
            ..Case::default()
        },
        &[],
    );
}

#[test]
fn policy_from_config() {
    let text = format!(
        "{}\n[monitor]\nflap_threshold = 5\nflap_window = \"1m\"\n[alerts]\ncooldown = \"1h\"\n",
        crate::config::tests::MINIMAL
    );
    let config = Config::from_toml_str(&text, std::path::Path::new("/x.toml")).expect("config");
    assert_eq!(
        MonitorPolicy::from_config(&config),
        MonitorPolicy {
            flap_threshold: 5,
            flap_window: Duration::from_secs(60),
            alert_cooldown: Duration::from_secs(3600),
        }
    );
}
