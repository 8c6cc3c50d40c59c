//! Golden renders of a realistic change set: a new public service, an update
//! with a diff, a stop, a prune and a held file; and of a plan made for a
//! master without DNS or edge adapters (skipped steps).

use expect_test::expect;
use mcp_planner::{plan, render_json, render_text, Held, Integrations, Plan};
use mcp_spec::Tier;

use crate::support::{component, public_svc, svc, Fleet, NOW};

fn change_set() -> Plan {
    let mut dns = svc("dns");
    dns.tier = Tier::Core;
    let mut api = public_svc("api");
    api.components.push(component(
        "worker",
        "registry.example:8443/api-worker:v1.2.0",
    ));
    let mut f = Fleet::new()
        .want(dns)
        .want(api)
        .want(svc("batch"))
        .want(svc("legacy"))
        .want(svc("wiki"))
        .converged();
    // New public service.
    f = f.want(public_svc("web"));
    // Update: image bump and a new env var.
    let a = f.spec_mut("api");
    a.components[0].image = "registry.example:8443/api:v2".to_string();
    a.components[0].env = vec!["LOG_LEVEL=debug".to_string()];
    // Stop.
    f.spec_mut("batch").active = false;
    // Prune.
    f.desired.services.remove("legacy");
    // Held: wiki's file no longer parses.
    f.desired.services.remove("wiki");
    f.desired.held.insert(
        "wiki".to_string(),
        Held {
            file: "services/wiki.toml".to_string(),
            errors: vec![
                "services/wiki.toml:7:11: invalid image reference \"registry.example:8443/wiki:\""
                    .to_string(),
            ],
            reason: None,
        },
    );
    plan(&f.desired, &f.observed, &f.policy, NOW)
}

#[test]
fn text_render() {
    expect![[r#"
        Plan (source 4f2a9c1): 1 to deploy, 1 to update, 1 to undeploy, 1 to stop, 1 held

        ~ api on w1
            spec changed (333542958527 -> bc822bb54d66): redeploy on the same node
            1. deploy api on w1 (spec bc822bb54d66)
            --- api (deployed 333542958527)
            +++ api (desired bc822bb54d66)
            @@ -4,7 +4,8 @@

             [[components]]
             name = "api"
            -image = "registry.example:8443/api:v1"
            +image = "registry.example:8443/api:v2"
            +env = ["LOG_LEVEL=debug"]

             [[components.routes]]
             port = 8443

        v batch on w2
            desired stopped, api running
            1. stop batch on w2

        - legacy on w2
            no longer desired: prune
            1. undeploy legacy from w2
            2. dns remove legacy.mcp.internal

        + web on w2
            new service, least containers among healthy workers (w2 has 2)
            1. deploy web on w2 (spec 5d63710d4f60)
            2. dns set web.mcp.internal -> 100.64.0.3
            3. edge set web.example.net on e1 -> web.mcp.internal:8443

        ! wiki on w1
            file services/wiki.toml is unreadable: service left as it is
              services/wiki.toml:7:11: invalid image reference "registry.example:8443/wiki:"
    "#]]
    .assert_eq(&render_text(&change_set(), false));
}

#[test]
fn text_render_with_colour() {
    let text = render_text(&change_set(), true).replace('\x1b', "\\e");
    expect![[r#"
        \e[1mPlan (source 4f2a9c1): 1 to deploy, 1 to update, 1 to undeploy, 1 to stop, 1 held\e[0m

        \e[33m~\e[0m \e[1mapi\e[0m on w1
            spec changed (333542958527 -> bc822bb54d66): redeploy on the same node
            1. deploy api on w1 (spec bc822bb54d66)
            \e[1m--- api (deployed 333542958527)\e[0m
            \e[1m+++ api (desired bc822bb54d66)\e[0m
            \e[36m@@ -4,7 +4,8 @@\e[0m

             [[components]]
             name = "api"
            \e[31m-image = "registry.example:8443/api:v1"\e[0m
            \e[32m+image = "registry.example:8443/api:v2"\e[0m
            \e[32m+env = ["LOG_LEVEL=debug"]\e[0m

             [[components.routes]]
             port = 8443

        \e[33mv\e[0m \e[1mbatch\e[0m on w2
            desired stopped, api running
            1. stop batch on w2

        \e[31m-\e[0m \e[1mlegacy\e[0m on w2
            no longer desired: prune
            1. undeploy legacy from w2
            2. dns remove legacy.mcp.internal

        \e[32m+\e[0m \e[1mweb\e[0m on w2
            new service, least containers among healthy workers (w2 has 2)
            1. deploy web on w2 (spec 5d63710d4f60)
            2. dns set web.mcp.internal -> 100.64.0.3
            3. edge set web.example.net on e1 -> web.mcp.internal:8443

        \e[1;31m!\e[0m \e[1mwiki\e[0m on w1
            file services/wiki.toml is unreadable: service left as it is
              services/wiki.toml:7:11: invalid image reference "registry.example:8443/wiki:"
    "#]]
    .assert_eq(&text);
}

#[test]
fn json_render() {
    expect![[r#"
        {
          "source": "4f2a9c1",
          "now": 1700000000,
          "counts": {
            "deploy": 1,
            "update": 1,
            "undeploy": 1,
            "migrate": 0,
            "start": 0,
            "stop": 1,
            "heal": 0,
            "repair": 0,
            "waiting": 0,
            "degraded": 0,
            "held": 1,
            "blocked": 0,
            "refused": 0
          },
          "entries": [
            {
              "service": "api",
              "kind": "update",
              "tier": "worker",
              "node": "w1",
              "reason": "spec changed (333542958527 -> bc822bb54d66): redeploy on the same node",
              "details": [],
              "steps": [
                {
                  "action": {
                    "type": "deploy",
                    "service": "api",
                    "node": "w1",
                    "spec_hash": "bc822bb54d6603924271571153b3c4e057a42b7bdcfeaeed33783f6b56f6c54f"
                  },
                  "state": "ready"
                }
              ],
              "change": {
                "old_hash": "333542958527f3a429be8d482b9848bf027b79e25352cd0d5851870db39ed428",
                "new_hash": "bc822bb54d6603924271571153b3c4e057a42b7bdcfeaeed33783f6b56f6c54f",
                "old_canonical": "name = \"api\"\ntier = \"worker\"\nactive = true\n\n[[components]]\nname = \"api\"\nimage = \"registry.example:8443/api:v1\"\n\n[[components.routes]]\nport = 8443\nmode = \"l7\"\nhostname = \"api.example.net\"\npublic = true\n\n[[components]]\nname = \"worker\"\nimage = \"registry.example:8443/api-worker:v1.2.0\"\n\n[[components.routes]]\nport = 8443\nmode = \"l7\"\npublic = false\n",
                "new_canonical": "name = \"api\"\ntier = \"worker\"\nactive = true\n\n[[components]]\nname = \"api\"\nimage = \"registry.example:8443/api:v2\"\nenv = [\"LOG_LEVEL=debug\"]\n\n[[components.routes]]\nport = 8443\nmode = \"l7\"\nhostname = \"api.example.net\"\npublic = true\n\n[[components]]\nname = \"worker\"\nimage = \"registry.example:8443/api-worker:v1.2.0\"\n\n[[components.routes]]\nport = 8443\nmode = \"l7\"\npublic = false\n"
              }
            },
            {
              "service": "batch",
              "kind": "stop",
              "tier": "worker",
              "node": "w2",
              "reason": "desired stopped, api running",
              "details": [],
              "steps": [
                {
                  "action": {
                    "type": "stop",
                    "service": "batch",
                    "node": "w2",
                    "spec_hash": "3cb88f4a0459a00d2b52a178b83fa3873527e0dde5457f92b4e60d3843947636"
                  },
                  "state": "ready"
                }
              ],
              "change": null
            },
            {
              "service": "legacy",
              "kind": "undeploy",
              "tier": "worker",
              "node": "w2",
              "reason": "no longer desired: prune",
              "details": [],
              "steps": [
                {
                  "action": {
                    "type": "undeploy",
                    "service": "legacy",
                    "node": "w2"
                  },
                  "state": "ready"
                },
                {
                  "action": {
                    "type": "remove_dns",
                    "name": "legacy.mcp.internal"
                  },
                  "state": "ready"
                }
              ],
              "change": null
            },
            {
              "service": "web",
              "kind": "deploy",
              "tier": "worker",
              "node": "w2",
              "reason": "new service, least containers among healthy workers (w2 has 2)",
              "details": [],
              "steps": [
                {
                  "action": {
                    "type": "deploy",
                    "service": "web",
                    "node": "w2",
                    "spec_hash": "5d63710d4f60af2b6cce612222fbe50550a740d3dcdc559b7f3ede482ce51215"
                  },
                  "state": "ready"
                },
                {
                  "action": {
                    "type": "set_dns",
                    "name": "web.mcp.internal",
                    "address": "100.64.0.3"
                  },
                  "state": "ready"
                },
                {
                  "action": {
                    "type": "set_edge_route",
                    "hostname": "web.example.net",
                    "service": "web",
                    "edge_node": "e1",
                    "backend_hostname": "web.mcp.internal",
                    "backend_port": 8443
                  },
                  "state": "ready"
                }
              ],
              "change": null
            },
            {
              "service": "wiki",
              "kind": "held",
              "tier": "worker",
              "node": "w1",
              "reason": "file services/wiki.toml is unreadable: service left as it is",
              "details": [
                "services/wiki.toml:7:11: invalid image reference \"registry.example:8443/wiki:\""
              ],
              "steps": [],
              "change": null
            }
          ],
          "notes": [],
          "refused": null
        }"#]].assert_eq(&render_json(&change_set()));
}

#[test]
fn exit_status_follows_has_changes() {
    assert!(change_set().has_changes());
    let f = Fleet::new().want(svc("a")).converged();
    assert!(!f.plan().has_changes());
}

/// A master with no DNS or edge adapter (the default integrations): a new
/// public service on an unhealthy edge fleet, and a converged service.
fn without_adapters() -> Plan {
    let mut f = Fleet::new();
    f.policy.integrations = Integrations::default();
    let mut f = f.want(svc("api")).converged();
    f = f.want(public_svc("web"));
    f.set_health("e1", mcp_planner::NodeHealth::Unhealthy);
    plan(&f.desired, &f.observed, &f.policy, NOW)
}

#[test]
fn skipped_steps_say_why_in_text_and_json() {
    let p = without_adapters();
    // api is converged: its missing DNS record alone makes no entry.
    assert!(p.entry("api").is_none());
    expect![[r#"
        Plan (source 4f2a9c1): 1 to deploy

        + web on w2
            new service, least containers among healthy workers (w2 has 0)
            1. deploy web on w2 (spec 5d63710d4f60)
            2. dns set web.mcp.internal -> 100.64.0.3 [skipped: DNS adapter not configured]
            3. edge set web.example.net on (no edge node) -> web.mcp.internal:8443 [skipped: edge route adapter not configured]
    "#]]
    .assert_eq(&render_text(&p, false));
    // The steps as `render_json` writes them.
    expect![[r#"
        [
          {
            "action": {
              "type": "deploy",
              "service": "web",
              "node": "w2",
              "spec_hash": "5d63710d4f60af2b6cce612222fbe50550a740d3dcdc559b7f3ede482ce51215"
            },
            "state": "ready"
          },
          {
            "action": {
              "type": "set_dns",
              "name": "web.mcp.internal",
              "address": "100.64.0.3"
            },
            "state": "skipped",
            "reason": "DNS adapter not configured"
          },
          {
            "action": {
              "type": "set_edge_route",
              "hostname": "web.example.net",
              "service": "web",
              "edge_node": "",
              "backend_hostname": "web.mcp.internal",
              "backend_port": 8443
            },
            "state": "skipped",
            "reason": "edge route adapter not configured"
          }
        ]"#]]
    .assert_eq(&serde_json::to_string_pretty(&p.entries[0].steps).unwrap());
    assert!(render_json(&p).contains(
        &serde_json::to_string_pretty(&p.entries[0].steps)
            .unwrap()
            .replace('\n', "\n      ")
    ));
    let back: Plan = serde_json::from_str(&render_json(&p)).unwrap();
    assert_eq!(back, p);
}
