//! The exhaustive authorization test: every RPC of the protocol × every
//! caller class, through the real decision pipeline (JWT verification,
//! classification, table), must equal the table. An RPC missing from the
//! table, or a table row for an RPC that no longer exists, fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mcp_security::authz::{render_markdown_table, Allowed, AuthzTable, NOT_SERVED, RPC_TABLE};
use mcp_security::clock::ManualClock;
use mcp_security::identity::AccountType::{Human, System};
use mcp_security::layer::Authorizer;
use prost::Message;
use tonic::Code;

/// Every RPC of every service in the protocol, as gRPC paths, grouped by
/// service.
fn protocol_rpcs() -> Vec<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(mcp_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for file in &set.file {
        let package = file.package();
        for svc in &file.service {
            let full = format!("{package}.{}", svc.name());
            for m in &svc.method {
                out.push((full.clone(), format!("/{full}/{}", m.name())));
            }
        }
    }
    assert!(out.len() > 30, "descriptor set looks empty: {out:?}");
    out
}

#[test]
fn every_served_rpc_has_a_table_row_and_every_row_an_rpc() {
    let rpcs = protocol_rpcs();
    let table: BTreeSet<&str> = RPC_TABLE.iter().map(|r| r.method).collect();
    assert_eq!(table.len(), RPC_TABLE.len(), "duplicate table rows");
    let mut missing = Vec::new();
    for (service, path) in &rpcs {
        if NOT_SERVED.contains(&service.as_str()) {
            assert!(
                !table.contains(path.as_str()),
                "{path} is in NOT_SERVED and in the table"
            );
            continue;
        }
        if !table.contains(path.as_str()) {
            missing.push(path.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "RPCs without an authorization rule: {missing:?}"
    );
    let known: BTreeSet<&str> = rpcs.iter().map(|(_, p)| p.as_str()).collect();
    let stale: Vec<&&str> = table.iter().filter(|m| !known.contains(**m)).collect();
    assert!(
        stale.is_empty(),
        "table rows for RPCs not in the protocol: {stale:?}"
    );
    for s in NOT_SERVED {
        assert!(
            rpcs.iter().any(|(svc, _)| svc == s),
            "NOT_SERVED names unknown service {s}"
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Who {
    Operator,
    Guest,
    Master,
    AgentX,
    UnknownSystem,
    Expired,
    OtherKey,
    NoToken,
}

const EVERYONE: [Who; 8] = [
    Who::Operator,
    Who::Guest,
    Who::Master,
    Who::AgentX,
    Who::UnknownSystem,
    Who::Expired,
    Who::OtherKey,
    Who::NoToken,
];

fn expected(who: Who, allowed: Option<Allowed>) -> Code {
    let grant = |yes: bool| {
        if yes {
            Code::Ok
        } else {
            Code::PermissionDenied
        }
    };
    match who {
        Who::Expired | Who::OtherKey | Who::NoToken => Code::Unauthenticated,
        Who::Guest | Who::UnknownSystem => Code::PermissionDenied,
        Who::Operator => grant(allowed.is_some_and(|a| a.operators)),
        Who::Master => grant(allowed.is_some_and(|a| a.master)),
        Who::AgentX => grant(allowed.is_some_and(|a| a.agents)),
    }
}

#[tokio::test]
async fn every_rpc_for_every_caller_class_matches_the_table() {
    let clock = ManualClock::at_unix(common::T0);
    let keys = common::keys();
    let other = common::keys();
    let hour = Duration::from_secs(3600);
    let k = &keys.signing;
    let tok = |who: Who| -> Option<String> {
        Some(match who {
            Who::Operator => common::token(k, "alice", Human, &["admin"], hour, &clock),
            Who::Guest => common::token(k, "visitor", Human, &["guest"], hour, &clock),
            Who::Master => common::token(k, "mcp-master", System, &[], hour, &clock),
            Who::AgentX => common::token(k, "agent-x", System, &[], hour, &clock),
            Who::UnknownSystem => common::token(k, "backup-bot", System, &[], hour, &clock),
            Who::Expired => {
                let old = ManualClock::at_unix(common::T0 - 7200);
                common::token(k, "alice", Human, &["admin"], hour, &old)
            }
            Who::OtherKey => {
                common::token(&other.signing, "alice", Human, &["admin"], hour, &clock)
            }
            Who::NoToken => return None,
        })
    };
    let tokens: Vec<(Who, Option<String>)> = EVERYONE.iter().map(|w| (*w, tok(*w))).collect();
    let table = AuthzTable::standard("mcp-master");
    let authorizer = Authorizer::new(Arc::new(common::verifier(&keys, &clock)), table.clone());

    let mut rows = 0;
    let mut failures = Vec::new();
    let mut methods: Vec<String> = protocol_rpcs().into_iter().map(|(_, p)| p).collect();
    // A path nobody declared is denied to everyone authenticated.
    methods.push("/mcp.v1.McpMasterService/NoSuchMethod".to_string());
    methods.push("/mcp.v1.SnapshotService/Snapshot".to_string());
    for method in &methods {
        let allowed = table.lookup(method);
        for (who, token) in &tokens {
            let header = token.as_ref().map(|t| format!("Bearer {t}"));
            let got = match authorizer.check(method, header.as_deref()).await {
                Ok(_) => Code::Ok,
                Err(r) => r.status.code(),
            };
            let want = expected(*who, allowed);
            if got != want {
                failures.push(format!("{method} as {who:?}: got {got:?}, want {want:?}"));
            }
            rows += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(rows, methods.len() * EVERYONE.len());
}

/// The table itself, checked against docs/SECURITY.md group by group (so a
/// wrong row is caught, not only a missing one).
#[test]
fn table_matches_the_design() {
    let t = AuthzTable::standard("mcp-master");
    let cli_to_master = [
        "Deploy",
        "Undeploy",
        "Status",
        "Sync",
        "Migrate",
        "ListNodes",
        "CreateSnapshot",
        "ListSnapshots",
        "StopService",
        "StartService",
        "RestartService",
        "ServiceLogs",
        "ServiceEvents",
        "ListEdgeRoutes",
        "PushServiceFile",
        "PullServiceFile",
        "AdoptService",
    ];
    for m in cli_to_master {
        let p = format!("/mcp.v1.McpMasterService/{m}");
        assert_eq!(t.lookup(&p), Some(Allowed::OPERATORS_AND_MASTER), "{p}");
    }
    for m in ["Register", "Heartbeat"] {
        let p = format!("/mcp.v1.McpMasterService/{m}");
        assert_eq!(t.lookup(&p), Some(Allowed::AGENTS_ONLY), "{p}");
    }
    let agent_lifecycle = [
        "Deploy",
        "Undeploy",
        "Stop",
        "Start",
        "Restart",
        "ListServices",
        "Logs",
        "Events",
        "Adopt",
        "PushFile",
        "PullFile",
    ];
    for m in agent_lifecycle {
        let p = format!("/mcp.v1.McpAgentService/{m}");
        assert_eq!(t.lookup(&p), Some(Allowed::OPERATORS_AND_MASTER), "{p}");
    }
    let agent_fleet = [
        "HealthCheck",
        "SetupEdgeRoute",
        "RemoveEdgeRoute",
        "ListEdgeRoutes",
        "ExportServiceData",
        "ImportServiceData",
        "AddProxyRoute",
        "RemoveProxyRoute",
        "ListProxyRoutes",
    ];
    for m in agent_fleet {
        let p = format!("/mcp.v1.McpAgentService/{m}");
        assert_eq!(t.lookup(&p), Some(Allowed::MASTER_ONLY), "{p}");
    }
    assert_eq!(
        RPC_TABLE.len(),
        cli_to_master.len() + 2 + agent_lifecycle.len() + agent_fleet.len()
    );
}

/// docs/SECURITY.md carries the rendered table verbatim.
#[test]
fn security_doc_shows_the_table() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SECURITY.md"),
    )
    .expect("docs/SECURITY.md");
    let table = render_markdown_table();
    assert!(
        doc.contains(&table),
        "docs/SECURITY.md is out of date; paste this table:\n{table}"
    );
}
