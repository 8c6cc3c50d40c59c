//! One case per planner rule (docs/ARCHITECTURE.md). Each is a call to `check`.

use expect_test::expect;
use mcp_planner::{
    AgentStatus, ComponentHealth, ContainerState, EdgeRoute, HealRecord, Held, NodeHealth,
    NodeRole, Placement,
};
use mcp_spec::Tier;

use crate::support::{check, public_svc, svc, Fleet, NOW};
use mcp_planner::{render_text, Integration, Integrations, StepState};

#[test]
fn converged_fleet_gives_an_empty_plan() {
    let f = Fleet::new()
        .want(svc("a"))
        .want(public_svc("b"))
        .want(Tier::Core.into_core(svc("c")))
        .converged();
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): no changes, the fleet matches the desired state
    "#]],
    );
}

trait IntoCore {
    fn into_core(self, s: mcp_spec::ServiceSpec) -> mcp_spec::ServiceSpec;
}

impl IntoCore for Tier {
    fn into_core(self, mut s: mcp_spec::ServiceSpec) -> mcp_spec::ServiceSpec {
        s.tier = self;
        s
    }
}

#[test]
fn new_service_goes_to_least_loaded_healthy_worker() {
    let mut f = Fleet::new().want(svc("a"));
    f.observed.nodes.get_mut("w1").unwrap().containers = 5;
    f.observed.nodes.get_mut("w2").unwrap().containers = 2;
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to deploy

        + a on w2
            new service, least containers among healthy workers (w2 has 2)
            1. deploy a on w2 (spec c2fa3a44f725)
            2. dns set a.mcp.internal -> 100.64.0.3
    "#]],
    );
}

#[test]
fn placement_counts_what_the_plan_already_placed_ties_by_name() {
    let f = Fleet::new().want(svc("a")).want(svc("b")).want(svc("c"));
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 3 to deploy

        + a on w1
            new service, least containers among healthy workers (w1 has 0)
            1. deploy a on w1 (spec c2fa3a44f725)
            2. dns set a.mcp.internal -> 100.64.0.2

        + b on w2
            new service, least containers among healthy workers (w2 has 0)
            1. deploy b on w2 (spec df008a082dbe)
            2. dns set b.mcp.internal -> 100.64.0.3

        + c on w1
            new service, least containers among healthy workers (w1 has 1)
            1. deploy c on w1 (spec 2a6b0392b6d6)
            2. dns set c.mcp.internal -> 100.64.0.2
    "#]],
    );
}

#[test]
fn core_tier_goes_to_the_master_node_and_comes_first() {
    let f = Fleet::new()
        .want(svc("app"))
        .want(Tier::Core.into_core(svc("zdns")));
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 2 to deploy

        + zdns on m1
            new service, core tier: master node m1
            1. deploy zdns on m1 (spec 1b9abdd30802)
            2. dns set zdns.mcp.internal -> 100.64.0.1

        + app on w1
            new service, least containers among healthy workers (w1 has 0)
            1. deploy app on w1 (spec 6804f8081fa6)
            2. dns set app.mcp.internal -> 100.64.0.2
    "#]],
    );
}

#[test]
fn pin_wins_over_tier() {
    let mut s = Tier::Core.into_core(svc("a"));
    s.node = Some("w2".to_string());
    check(
        &Fleet::new().want(s),
        expect![[r#"
        Plan (source 4f2a9c1): 1 to deploy

        + a on w2
            new service, pinned to w2
            1. deploy a on w2 (spec 4653a0599427)
            2. dns set a.mcp.internal -> 100.64.0.3
    "#]],
    );
}

#[test]
fn pin_to_an_edge_node_is_blocked() {
    let mut s = svc("a");
    s.node = Some("e1".to_string());
    check(
        &Fleet::new().want(s),
        expect![[r#"
        Plan (source 4f2a9c1): 1 blocked

        ! a
            cannot place: pinned node e1 is an edge node (edge nodes run no application containers)
    "#]],
    );
}

#[test]
fn pin_to_an_unhealthy_or_unknown_node_is_blocked() {
    let mut a = svc("a");
    a.node = Some("w1".to_string());
    let mut b = svc("b");
    b.node = Some("w9".to_string());
    let mut f = Fleet::new().want(a).want(b);
    f.set_health("w1", NodeHealth::Unhealthy);
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 2 blocked

        ! a
            cannot place: pinned node w1 is unhealthy

        ! b
            cannot place: pinned node w9 is not registered
    "#]],
    );
}

#[test]
fn never_placed_on_unhealthy_or_unreachable_workers() {
    let mut f = Fleet::new().want(svc("a"));
    f.set_health("w1", NodeHealth::Unknown);
    f.observed.agents.insert(
        "w2".to_string(),
        AgentStatus::Unreachable {
            error: "deadline exceeded".to_string(),
        },
    );
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 blocked

        ! a
            cannot place: no healthy worker node
    "#]],
    );
}

#[test]
fn core_service_without_a_healthy_master_is_blocked() {
    let mut f = Fleet::new().want(Tier::Core.into_core(svc("dns")));
    f.set_health("m1", NodeHealth::Unhealthy);
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 blocked

        ! dns
            cannot place: core tier: no healthy master node
    "#]],
    );
}

#[test]
fn new_service_gets_dns_then_edge_route() {
    check(
        &Fleet::new().want(public_svc("web")),
        expect![[r#"
        Plan (source 4f2a9c1): 1 to deploy

        + web on w1
            new service, least containers among healthy workers (w1 has 0)
            1. deploy web on w1 (spec 5d63710d4f60)
            2. dns set web.mcp.internal -> 100.64.0.2
            3. edge set web.example.net on e1 -> web.mcp.internal:8443
    "#]],
    );
}

#[test]
fn changed_spec_is_redeployed_on_the_same_node_with_a_diff() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.spec_mut("a").components[0].image = "registry.example:8443/a:v2".to_string();
    f.spec_mut("a").components[0].env = vec!["LOG_LEVEL=debug".to_string()];
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to update

        ~ a on w1
            spec changed (c2fa3a44f725 -> 71e9b9af7d3b): redeploy on the same node
            1. deploy a on w1 (spec 71e9b9af7d3b)
            --- a (deployed c2fa3a44f725)
            +++ a (desired 71e9b9af7d3b)
            @@ -4,7 +4,8 @@

             [[components]]
             name = "api"
            -image = "registry.example:8443/a:v1"
            +image = "registry.example:8443/a:v2"
            +env = ["LOG_LEVEL=debug"]

             [[components.routes]]
             port = 8443
    "#]],
    );
}

#[test]
fn update_without_the_old_spec_shows_only_hashes() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.observed.placements.get_mut("a").unwrap().spec = None;
    f.spec_mut("a").components[0].image = "registry.example:8443/a:v2".to_string();
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to update

        ~ a on w1
            spec changed (c2fa3a44f725 -> df2850301c2c): redeploy on the same node
              the deployed spec is not known: only hashes can be shown
            1. deploy a on w1 (spec df2850301c2c)
    "#]],
    );
}

#[test]
fn service_set_inactive_is_stopped_not_redeployed() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.spec_mut("a").active = false;
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to stop

        v a on w1
            desired stopped, api running
            1. stop a on w1
    "#]],
    );
}

#[test]
fn service_set_active_again_is_started() {
    let mut s = svc("a");
    s.active = false;
    let mut f = Fleet::new().want(s).converged();
    f.spec_mut("a").active = true;
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to start

        ^ a on w1
            desired running, stopped on the agent
            1. start a on w1
    "#]],
    );
}

#[test]
fn service_stopped_behind_the_masters_back_is_started() {
    let mut f = Fleet::new().want(svc("a")).converged();
    if let Some(AgentStatus::Reported { services }) = f.observed.agents.get_mut("w1") {
        let sr = services.get_mut("a").unwrap();
        sr.active = false;
        sr.components.get_mut("api").unwrap().state = ContainerState::Stopped;
    }
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to start

        ^ a on w1
            desired running, stopped on the agent
            1. start a on w1
    "#]],
    );
}

#[test]
fn inactive_service_found_running_is_stopped() {
    let mut s = svc("a");
    s.active = false;
    let mut f = Fleet::new().want(s).converged();
    f.set_state("w1", "a", "api", ContainerState::Running);
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to stop

        v a on w1
            desired stopped, api running
            1. stop a on w1
    "#]],
    );
}

#[test]
fn exited_component_is_healed_by_starting_it() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.set_state("w1", "a", "api", ContainerState::Exited);
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to heal

        * a on w1
            self-heal: api exited
            1. heal a on w1: start api
    "#]],
    );
}

#[test]
fn unhealthy_component_is_healed_by_restarting_it() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.set_component_health("w1", "a", "api", Some(ComponentHealth::Unhealthy));
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 to heal

            * a on w1
                self-heal: api unhealthy
                1. heal a on w1: restart api
        "#]],
    );
    // Starting and healthy are left alone.
    for h in [ComponentHealth::Starting, ComponentHealth::Healthy] {
        f.set_component_health("w1", "a", "api", Some(h));
        assert!(f.plan().entries.is_empty(), "{h:?}");
    }
}

#[test]
fn unhealthy_component_degrades_after_its_heal_attempts() {
    let mut f = with_heal(
        Fleet::new().want(svc("a")).converged(),
        heal_record(5, 600, false),
    );
    f.set_component_health("w1", "a", "api", Some(ComponentHealth::Unhealthy));
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 degraded

            ! a on w1
                degraded: api unhealthy
                  api: degraded after 5 heal attempts
                1. alert degraded a/api: api still down after 5 heal attempts
        "#]],
    );
}

#[test]
fn missing_component_is_healed_by_redeploying() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.set_state("w1", "a", "api", ContainerState::Missing);
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to heal

        * a on w1
            self-heal: api missing
            1. heal a on w1: redeploy api
    "#]],
    );
}

#[test]
fn service_unknown_to_its_agent_is_redeployed() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.observed
        .agents
        .insert("w1".to_string(), AgentStatus::empty());
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 to heal

            * a on w1
                self-heal: the agent on w1 does not run it
                1. heal a on w1: redeploy api
        "#]],
    );
}

fn heal_record(attempts: u32, ago: u64, alerted: bool) -> HealRecord {
    HealRecord {
        attempts,
        last_attempt: mcp_planner::Timestamp(NOW.0 - ago),
        alerted,
    }
}

fn with_heal(mut f: Fleet, rec: HealRecord) -> Fleet {
    f.observed
        .heal
        .entry("a".to_string())
        .or_default()
        .insert("api".to_string(), rec);
    f
}

#[test]
fn heal_waits_for_its_backoff() {
    // 3 attempts: next delay 10 * 2^2 = 40s; last attempt 15s ago.
    let mut f = Fleet::new().want(svc("a")).converged();
    f.set_state("w1", "a", "api", ContainerState::Exited);
    check(
        &with_heal(f, heal_record(3, 15, false)),
        expect![[r#"
        Plan (source 4f2a9c1): 1 waiting

        = a on w1
            self-heal backing off: api exited
              api: heal attempt 4 of 5 due in 25s
    "#]],
    );
}

#[test]
fn heal_is_retried_once_the_backoff_has_passed() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.set_state("w1", "a", "api", ContainerState::Exited);
    check(
        &with_heal(f, heal_record(3, 40, false)),
        expect![[r#"
        Plan (source 4f2a9c1): 1 to heal

        * a on w1
            self-heal: api exited
            1. heal a on w1: start api
    "#]],
    );
}

#[test]
fn component_is_degraded_and_alerted_after_max_attempts() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.set_state("w1", "a", "api", ContainerState::Exited);
    check(
        &with_heal(f, heal_record(5, 3600, false)),
        expect![[r#"
        Plan (source 4f2a9c1): 1 degraded

        ! a on w1
            degraded: api exited
              api: degraded after 5 heal attempts
            1. alert degraded a/api: api still down after 5 heal attempts
    "#]],
    );
}

#[test]
fn degraded_component_is_alerted_once() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.set_state("w1", "a", "api", ContainerState::Exited);
    check(
        &with_heal(f, heal_record(5, 3600, true)),
        expect![[r#"
        Plan (source 4f2a9c1): 1 degraded

        ! a on w1
            degraded: api exited
              api: degraded after 5 heal attempts (alerted)
    "#]],
    );
}

#[test]
fn pin_change_is_a_blocked_migration_by_default() {
    let mut s = svc("a");
    s.node = Some("w1".to_string());
    let mut f = Fleet::new().want(s).converged();
    f.spec_mut("a").node = Some("w2".to_string());
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 blocked

        ! a on w1
            node pin changed from w1 to w2: automatic migration is disabled
              to move it, run `mcp migrate a --to w2`
            1. migrate a from w1 to w2 [not run: automatic migration disabled: run `mcp migrate a --to w2`]
    "#]],
    );
}

#[test]
fn pin_change_migrates_when_policy_allows() {
    let mut s = public_svc("a");
    s.node = Some("w1".to_string());
    let mut f = Fleet::new().want(s).converged();
    f.spec_mut("a").node = Some("w2".to_string());
    f.policy.allow_auto_migrate = true;
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to migrate

        > a on w2
            node pin changed from w1 to w2
            1. migrate a from w1 to w2
            2. dns set a.mcp.internal -> 100.64.0.3
    "#]],
    );
}

#[test]
fn pin_change_to_an_edge_node_is_blocked_even_when_allowed() {
    let mut s = svc("a");
    s.node = Some("w1".to_string());
    let mut f = Fleet::new().want(s).converged();
    f.spec_mut("a").node = Some("e1".to_string());
    f.policy.allow_auto_migrate = true;
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 blocked

        ! a on w1
            node pin changed from w1 to e1, but e1 is an edge node (edge nodes run no application containers)
            1. migrate a from w1 to e1 [not run: e1 is an edge node (edge nodes run no application containers)]
    "#]],
    );
}

#[test]
fn a_tier_change_onto_the_wrong_kind_of_node_is_a_blocked_migration() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.spec_mut("a").tier = mcp_spec::Tier::Core;
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 blocked

            ! a on w1
                tier is core but it runs on worker node w1 (core services run on the master node): automatic migration is disabled
                  to move it, run `mcp migrate a --to m1`
                1. migrate a from w1 to m1 [not run: automatic migration disabled: run `mcp migrate a --to m1`]
        "#]],
    );
    f.policy.allow_auto_migrate = true;
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 to migrate

            > a on m1
                tier is core but it runs on worker node w1 (core services run on the master node)
                1. migrate a from w1 to m1
                2. dns set a.mcp.internal -> 100.64.0.1
        "#]],
    );
}

#[test]
fn removed_service_is_pruned_backend_then_edge_then_dns() {
    let mut f = Fleet::new()
        .want(public_svc("old"))
        .want(svc("a"))
        .want(svc("b"))
        .converged();
    f.desired.services.remove("old");
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to undeploy

        - old on w1
            no longer desired: prune
            1. undeploy old from w1
            2. edge remove old.example.net from e1
            3. dns remove old.mcp.internal
    "#]],
    );
}

#[test]
fn held_service_is_never_pruned_or_touched() {
    let mut f = Fleet::new()
        .want(public_svc("a"))
        .want(svc("b"))
        .converged();
    f.desired.services.remove("a");
    f.desired.held.insert(
        "a".to_string(),
        Held {
            file: "services/a.toml".to_string(),
            errors: vec!["services/a.toml:3:8: unknown field `imgae`".to_string()],
            reason: None,
        },
    );
    // Its DNS record is wrong and would otherwise be repaired.
    f.observed
        .dns
        .insert("a.mcp.internal".to_string(), "100.64.0.77".to_string());
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 held

        ! a on w1
            file services/a.toml is unreadable: service left as it is
              services/a.toml:3:8: unknown field `imgae`
    "#]],
    );
}

#[test]
fn a_service_held_for_a_refused_spec_says_why_and_is_not_deployed() {
    // Its file is readable (the spec is in `services` too), but an agent
    // refused this spec: held, nothing planned for it.
    let mut f = Fleet::new().want(svc("a"));
    f.desired.held.insert(
        "a".to_string(),
        Held {
            file: "a.toml".to_string(),
            errors: vec!["agent w1: Deploy: InvalidArgument: bad image".to_string()],
            reason: Some("spec rejected by the agent on w1 (InvalidArgument)".to_string()),
        },
    );
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 held

        ! a
            spec rejected by the agent on w1 (InvalidArgument): service left as it is
              agent w1: Deploy: InvalidArgument: bad image
    "#]],
    );
}

#[test]
fn held_service_that_was_never_placed_is_reported() {
    let mut f = Fleet::new();
    f.desired.held.insert(
        "new".to_string(),
        Held {
            file: "services/new.toml".to_string(),
            errors: vec!["services/new.toml:1:1: name must match the file stem".to_string()],
            reason: None,
        },
    );
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 held

        ! new
            file services/new.toml is unreadable: service left as it is
              services/new.toml:1:1: name must match the file stem
    "#]],
    );
}

#[test]
fn pruning_everything_is_refused() {
    let mut f = Fleet::new().want(svc("a")).want(svc("b")).converged();
    f.desired.services.clear();
    f.desired.services.insert("c".to_string(), svc("c"));
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 to deploy, 2 refused
            REFUSED: mass-deletion guard: the plan would prune 2 of 2 placements (all, or more than 50%), so nothing is applied; rerun with --allow-mass-prune if this is intended

            ! a on w1
                no longer desired; prune refused by the mass-deletion guard
                1. undeploy a from w1 [not run: mass-deletion guard]
                2. dns remove a.mcp.internal [not run: mass-deletion guard]

            ! b on w2
                no longer desired; prune refused by the mass-deletion guard
                1. undeploy b from w2 [not run: mass-deletion guard]
                2. dns remove b.mcp.internal [not run: mass-deletion guard]

            + c on w1
                new service, least containers among healthy workers (w1 has 1)
                1. deploy c on w1 (spec 2a6b0392b6d6)
                2. dns set c.mcp.internal -> 100.64.0.2
        "#]],
    );
}

#[test]
fn pruning_more_than_half_is_refused() {
    let mut f = Fleet::new()
        .want(svc("a"))
        .want(svc("b"))
        .want(svc("c"))
        .converged();
    f.desired.services.remove("a");
    f.desired.services.remove("b");
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 2 refused
            REFUSED: mass-deletion guard: the plan would prune 2 of 3 placements (all, or more than 50%), so nothing is applied; rerun with --allow-mass-prune if this is intended

            ! a on w1
                no longer desired; prune refused by the mass-deletion guard
                1. undeploy a from w1 [not run: mass-deletion guard]
                2. dns remove a.mcp.internal [not run: mass-deletion guard]

            ! b on w2
                no longer desired; prune refused by the mass-deletion guard
                1. undeploy b from w2 [not run: mass-deletion guard]
                2. dns remove b.mcp.internal [not run: mass-deletion guard]
        "#]],
    );
}

#[test]
fn pruning_exactly_half_is_allowed() {
    let mut f = Fleet::new()
        .want(svc("a"))
        .want(svc("b"))
        .want(svc("c"))
        .want(svc("d"))
        .converged();
    f.desired.services.remove("a");
    f.desired.services.remove("b");
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 2 to undeploy

        - a on w1
            no longer desired: prune
            1. undeploy a from w1
            2. dns remove a.mcp.internal

        - b on w2
            no longer desired: prune
            1. undeploy b from w2
            2. dns remove b.mcp.internal
    "#]],
    );
}

#[test]
fn mass_prune_goes_through_when_allowed() {
    let mut f = Fleet::new().want(svc("a")).want(svc("b")).converged();
    f.desired.services.clear();
    f.policy.allow_mass_prune = true;
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 2 to undeploy

        - a on w1
            no longer desired: prune
            1. undeploy a from w1
            2. dns remove a.mcp.internal

        - b on w2
            no longer desired: prune
            1. undeploy b from w2
            2. dns remove b.mcp.internal
    "#]],
    );
}

#[test]
fn orphan_containers_are_reported_and_left_alone() {
    let mut f = Fleet::new().want(svc("a")).converged();
    let report = mcp_planner::sim::report_for(&svc("stray"), "0123456789abcdef".to_string());
    if let Some(AgentStatus::Reported { services }) = f.observed.agents.get_mut("w2") {
        services.insert("stray".to_string(), report);
    }
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): no changes, the fleet matches the desired state

        Notes:
          - orphan: w2 runs stray, which is not placed there (left alone)
    "#]],
    );
}

#[test]
fn unplaced_service_an_agent_already_runs_is_placed_there_again() {
    // A master killed after an agent's deploy but before it recorded the
    // placement: w2 runs a, no placement says so. Least containers would
    // pick w1 and start a second copy.
    let mut f = Fleet::new().want(svc("a"));
    let report = mcp_planner::sim::report_for(&svc("a"), "0123456789abcdef".to_string());
    if let Some(AgentStatus::Reported { services }) = f.observed.agents.get_mut("w2") {
        services.insert("a".to_string(), report);
    }
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 to deploy

            + a on w2
                new service, already running on w2 (its placement was not recorded)
                1. deploy a on w2 (spec c2fa3a44f725)
                2. dns set a.mcp.internal -> 100.64.0.3
        "#]],
    );
}

#[test]
fn service_on_an_unhealthy_node_is_reported_without_failover() {
    let mut f = Fleet::new().want(svc("a")).want(svc("b")).converged();
    f.set_health("w1", NodeHealth::Unhealthy);
    f.observed.agents.insert(
        "w2".to_string(),
        AgentStatus::Unreachable {
            error: "connection refused".to_string(),
        },
    );
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): no changes, the fleet matches the desired state

            Notes:
              - node w1 is unhealthy; placed there: a (no automatic failover)
              - node w2 is unreachable (connection refused); placed there: b (no automatic failover)
        "#]],
    );
}

#[test]
fn update_for_a_service_on_an_unhealthy_node_waits() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.set_health("w1", NodeHealth::Unhealthy);
    f.spec_mut("a").components[0].image = "registry.example:8443/a:v2".to_string();
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 blocked

            Notes:
              - node w1 is unhealthy; placed there: a (no automatic failover)

            ! a on w1
                spec changed but node w1 is unhealthy: the change waits
                1. deploy a on w1 (spec df2850301c2c) [not run: node w1 is unhealthy]
        "#]],
    );
}

#[test]
fn prune_on_an_unreachable_node_waits() {
    let mut f = Fleet::new()
        .want(svc("a"))
        .want(svc("b"))
        .want(svc("c"))
        .converged();
    f.desired.services.remove("a");
    f.observed.agents.remove("w1");
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 blocked

            Notes:
              - node w1 is unreachable (no agent report); placed there: a, c (no automatic failover)

            ! a on w1
                not desired, but node w1 is unreachable (no agent report): the prune waits
                1. undeploy a from w1 [not run: node w1 is unreachable (no agent report)]
                2. dns remove a.mcp.internal [not run: node w1 is unreachable (no agent report)]
        "#]],
    );
}

#[test]
fn missing_or_wrong_dns_records_are_repaired() {
    let mut f = Fleet::new().want(svc("a")).want(svc("b")).converged();
    f.observed.dns.remove("a.mcp.internal");
    f.observed
        .dns
        .insert("b.mcp.internal".to_string(), "100.64.0.99".to_string());
    f.observed
        .dns
        .insert("ghost.mcp.internal".to_string(), "100.64.0.98".to_string());
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 3 to repair

            # a on w1
                DNS record missing or wrong
                1. dns set a.mcp.internal -> 100.64.0.2

            # b on w2
                DNS record missing or wrong
                1. dns set b.mcp.internal -> 100.64.0.3

            # ghost
                stale DNS record
                1. dns remove ghost.mcp.internal
        "#]],
    );
}

#[test]
fn missing_wrong_and_stale_edge_routes_are_repaired() {
    let mut f = Fleet::new()
        .want(public_svc("a"))
        .want(public_svc("b"))
        .want(public_svc("c"))
        .converged();
    f.observed.edge_routes.remove("a.example.net");
    f.observed
        .edge_routes
        .get_mut("b.example.net")
        .unwrap()
        .backend_port = 9999;
    // c no longer asks for an edge route.
    f.spec_mut("c").components[0].routes[0].public = false;
    let hash = mcp_spec::spec_hash(&f.desired.services["c"]);
    if let Some(AgentStatus::Reported { services }) = f.observed.agents.get_mut("w1") {
        services.get_mut("c").unwrap().spec_hash = hash.clone();
    }
    let placement = f.observed.placements.get_mut("c").unwrap();
    placement.spec = Some(f.desired.services["c"].clone());
    placement.spec_hash = Some(hash);
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 3 to repair

            # a on w1
                edge route missing or wrong
                1. edge set a.example.net on e1 -> a.mcp.internal:8443

            # b on w2
                edge route missing or wrong
                1. edge set b.example.net on e1 -> b.mcp.internal:8443

            # c on w1
                stale edge route
                1. edge remove c.example.net from e1
        "#]],
    );
}

#[test]
fn edge_route_without_a_healthy_edge_node_is_a_blocked_step() {
    let mut f = Fleet::new().want(public_svc("web"));
    f.set_health("e1", NodeHealth::Unhealthy);
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 to deploy

            + web on w1
                new service, least containers among healthy workers (w1 has 0)
                1. deploy web on w1 (spec 5d63710d4f60)
                2. dns set web.mcp.internal -> 100.64.0.2
                3. edge set web.example.net on (no edge node) -> web.mcp.internal:8443 [not run: no healthy edge node]
        "#]],
    );
}

#[test]
fn edge_route_stays_on_its_edge_node_and_new_ones_pick_by_name() {
    let mut f = Fleet::new().want(public_svc("a"));
    f.add_node("e0", NodeRole::Edge, "100.64.0.8");
    f.observed.edge_routes.insert(
        "a.example.net".to_string(),
        EdgeRoute {
            service: "a".to_string(),
            edge_node: "e1".to_string(),
            backend_hostname: "a.mcp.internal".to_string(),
            backend_port: 1,
        },
    );
    f = f.want(public_svc("b"));
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 2 to deploy

        + a on w1
            new service, least containers among healthy workers (w1 has 0)
            1. deploy a on w1 (spec c8cc3b5028e9)
            2. dns set a.mcp.internal -> 100.64.0.2
            3. edge set a.example.net on e1 -> a.mcp.internal:8443

        + b on w2
            new service, least containers among healthy workers (w2 has 0)
            1. deploy b on w2 (spec 66ac6887a2a8)
            2. dns set b.mcp.internal -> 100.64.0.3
            3. edge set b.example.net on e0 -> b.mcp.internal:8443
    "#]],
    );
}

#[test]
fn placement_on_a_removed_node_is_reported() {
    let mut f = Fleet::new().want(svc("a")).converged();
    f.observed.placements.insert(
        "a".to_string(),
        Placement {
            node: "gone".to_string(),
            tier: Tier::Worker,
            deployed_at: NOW,
            spec: None,
            spec_hash: None,
        },
    );
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): no changes, the fleet matches the desired state

            Notes:
              - node gone is not registered; placed there: a (no automatic failover)
              - orphan: w1 runs a, which is not placed there (left alone)
        "#]],
    );
}

#[test]
fn public_hostname_claimed_twice_goes_to_the_first_service_by_name() {
    let a = public_svc("a");
    let mut b = public_svc("b");
    b.components[0].routes[0].hostname = Some("a.example.net".to_string());
    check(
        &Fleet::new().want(a).want(b),
        expect![[r#"
        Plan (source 4f2a9c1): 2 to deploy

        + a on w1
            new service, least containers among healthy workers (w1 has 0)
            1. deploy a on w1 (spec c8cc3b5028e9)
            2. dns set a.mcp.internal -> 100.64.0.2
            3. edge set a.example.net on e1 -> a.mcp.internal:8443

        + b on w2
            new service, least containers among healthy workers (w2 has 0)
            1. deploy b on w2 (spec 88b0474e2613)
            2. dns set b.mcp.internal -> 100.64.0.3
            3. edge set a.example.net on e1 -> b.mcp.internal:8443 [not run: a.example.net is also claimed by a]
    "#]],
    );
}

#[test]
fn edge_route_of_a_held_service_is_not_taken_over() {
    let mut f = Fleet::new()
        .want(public_svc("a"))
        .want(svc("b"))
        .converged();
    f.desired.services.remove("a");
    f.desired.held.insert(
        "a".to_string(),
        Held {
            file: "services/a.toml".to_string(),
            errors: vec!["services/a.toml:1:1: broken".to_string()],
            reason: None,
        },
    );
    let mut b = public_svc("b");
    b.components[0].routes[0].hostname = Some("a.example.net".to_string());
    f = f.want(b);
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to update, 1 held

        ! a on w1
            file services/a.toml is unreadable: service left as it is
              services/a.toml:1:1: broken

        ~ b on w2
            spec changed (df008a082dbe -> 88b0474e2613): redeploy on the same node
            1. deploy b on w2 (spec 88b0474e2613)
            2. edge set a.example.net on e1 -> b.mcp.internal:8443 [not run: a.example.net is routed to held service a]
            --- b (deployed df008a082dbe)
            +++ b (desired 88b0474e2613)
            @@ -9,4 +9,5 @@
             [[components.routes]]
             port = 8443
             mode = "l7"
            -public = false
            +hostname = "a.example.net"
            +public = true
    "#]],
    );
}

#[test]
fn migration_from_an_unreachable_node_is_still_planned_when_allowed() {
    let mut s = svc("a");
    s.node = Some("w1".to_string());
    let mut f = Fleet::new().want(s).converged();
    f.spec_mut("a").node = Some("w2".to_string());
    f.policy.allow_auto_migrate = true;
    f.observed.agents.insert(
        "w1".to_string(),
        AgentStatus::Unreachable {
            error: "no route to host".to_string(),
        },
    );
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to migrate

        Notes:
          - node w1 is unreachable (no route to host); placed there: a (no automatic failover)

        > a on w2
            node pin changed from w1 to w2
            1. migrate a from w1 to w2
            2. dns set a.mcp.internal -> 100.64.0.3
    "#]],
    );
}

#[test]
fn recorded_spec_hash_is_trusted_only_for_an_equal_spec() {
    // The placement records the deployed spec and its hash; a desired spec
    // that differs in any field is hashed afresh and shows as an update.
    let mut f = Fleet::new().want(svc("a")).converged();
    f.spec_mut("a").components[0].user = Some("1000:1000".to_string());
    check(
        &f,
        expect![[r#"
        Plan (source 4f2a9c1): 1 to update

        ~ a on w1
            spec changed (c2fa3a44f725 -> 1c369444ae5b): redeploy on the same node
            1. deploy a on w1 (spec 1c369444ae5b)
            --- a (deployed c2fa3a44f725)
            +++ a (desired 1c369444ae5b)
            @@ -5,6 +5,7 @@
             [[components]]
             name = "api"
             image = "registry.example:8443/a:v1"
            +user = "1000:1000"

             [[components.routes]]
             port = 8443
    "#]],
    );
}

// -- integrations that are not configured -------------------------------------

#[test]
fn dns_and_edge_steps_are_skipped_without_their_adapters() {
    // Converged by a master that had both adapters; now it has neither.
    let mut f = Fleet::new().want(public_svc("web")).converged();
    f.policy.integrations = Integrations::default();
    assert!(
        f.plan().entries.is_empty(),
        "{}",
        render_text(&f.plan(), false)
    );
    // A record gone and an edge route gone: still nothing to plan, since
    // the repair steps could only be skipped.
    f.observed.dns.clear();
    f.observed.edge_routes.clear();
    let p = f.plan();
    assert!(p.entries.is_empty(), "{}", render_text(&p, false));
    assert!(!p.has_changes());
    // A new service still deploys; its DNS and edge steps say why they are
    // skipped, and they are not actions.
    let f = f.want(public_svc("api"));
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 to deploy

            + api on w2
                new service, least containers among healthy workers (w2 has 0)
                1. deploy api on w2 (spec 6fe3576298dd)
                2. dns set api.mcp.internal -> 100.64.0.3 [skipped: DNS adapter not configured]
                3. edge set api.example.net on e1 -> api.mcp.internal:8443 [skipped: edge route adapter not configured]
        "#]],
    );
    let p = f.plan();
    assert_eq!(p.actions().count(), 1);
    assert_eq!(
        p.entries[0].steps[1].state,
        StepState::Skipped("DNS adapter not configured".to_string())
    );
}

#[test]
fn a_repair_with_a_step_that_can_run_is_still_planned() {
    // DNS is configured, edge routes are not: the missing DNS record is
    // repaired, the edge route is shown as skipped beside it.
    let mut f = Fleet::new().want(public_svc("web")).converged();
    f.policy.integrations.edge = Integration::not_configured("no edge adapter in this build");
    f.observed.dns.clear();
    f.observed.edge_routes.clear();
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 to repair

            # web on w1
                DNS record missing or wrong, edge route missing or wrong
                1. dns set web.mcp.internal -> 100.64.0.2
                2. edge set web.example.net on e1 -> web.mcp.internal:8443 [skipped: no edge adapter in this build]
        "#]],
    );
}

#[test]
fn skipped_wins_over_blocked_and_the_guard_blocks_the_rest() {
    // A step whose integration is missing is skipped whatever else holds
    // (here: no healthy edge node; the mass-deletion guard); the guard still
    // blocks the steps that could run.
    let mut f = Fleet::new()
        .want(svc("a"))
        .want(svc("b"))
        .want(public_svc("c"))
        .converged();
    f.policy.integrations.dns = Integration::not_configured("DNS adapter not configured");
    f.policy.integrations.edge = Integration::not_configured("edge route adapter not configured");
    f.set_health("e1", NodeHealth::Unhealthy);
    f.desired.services.clear();
    f.desired.services.insert("d".to_string(), public_svc("d"));
    check(
        &f,
        expect![[r#"
            Plan (source 4f2a9c1): 1 to deploy, 3 refused
            REFUSED: mass-deletion guard: the plan would prune 3 of 3 placements (all, or more than 50%), so nothing is applied; rerun with --allow-mass-prune if this is intended

            ! a on w1
                no longer desired; prune refused by the mass-deletion guard
                1. undeploy a from w1 [not run: mass-deletion guard]
                2. dns remove a.mcp.internal [skipped: DNS adapter not configured]

            ! b on w2
                no longer desired; prune refused by the mass-deletion guard
                1. undeploy b from w2 [not run: mass-deletion guard]
                2. dns remove b.mcp.internal [skipped: DNS adapter not configured]

            ! c on w1
                no longer desired; prune refused by the mass-deletion guard
                1. undeploy c from w1 [not run: mass-deletion guard]
                2. edge remove c.example.net from e1 [skipped: edge route adapter not configured]
                3. dns remove c.mcp.internal [skipped: DNS adapter not configured]

            + d on w2
                new service, least containers among healthy workers (w2 has 1)
                1. deploy d on w2 (spec c5e31728ba36)
                2. dns set d.mcp.internal -> 100.64.0.3 [skipped: DNS adapter not configured]
                3. edge set d.example.net on (no edge node) -> d.mcp.internal:8443 [skipped: edge route adapter not configured]
        "#]],
    );
    let p = f.plan();
    assert!(p.refused.is_some());
    assert!(!p.has_actions());
}
