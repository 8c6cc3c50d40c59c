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
use mcp_security::binding::MasterBinding;
use mcp_security::clock::ManualClock;
use mcp_security::identity::AccountType::{Human, System};
use mcp_security::jwt::cert_thumbprint;
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

/// The certificate dimension: who presents which token over which client
/// certificate, against an authorizer without and with the master binding.
#[derive(Debug, Clone, Copy)]
enum Conn {
    /// Master token not bound to any certificate, no client certificate.
    MasterUnbound,
    /// Master token bound to the master's certificate, presented with it.
    MasterBoundWithCert,
    /// The same token replayed without a client certificate.
    MasterBoundNoCert,
    /// The same token replayed with another node's certificate.
    MasterBoundOtherCert,
    /// A master token bound to a node's certificate, with that certificate.
    MasterBoundToNodeCert,
    /// An operator token bound to a certificate, presented without it.
    OperatorBoundNoCert,
    /// An unbound operator token over a connection with a client certificate.
    OperatorWithCert,
}

const CONNS: [Conn; 7] = [
    Conn::MasterUnbound,
    Conn::MasterBoundWithCert,
    Conn::MasterBoundNoCert,
    Conn::MasterBoundOtherCert,
    Conn::MasterBoundToNodeCert,
    Conn::OperatorBoundNoCert,
    Conn::OperatorWithCert,
];

fn expected_conn(conn: Conn, binding: bool, allowed: Option<Allowed>) -> Code {
    let master = if allowed.is_some_and(|a| a.master) {
        Code::Ok
    } else {
        Code::PermissionDenied
    };
    let operator = if allowed.is_some_and(|a| a.operators) {
        Code::Ok
    } else {
        Code::PermissionDenied
    };
    match (conn, binding) {
        (Conn::MasterUnbound, false) => master,
        (Conn::MasterUnbound, true) => Code::Unauthenticated,
        (Conn::MasterBoundWithCert, _) => master,
        (Conn::MasterBoundNoCert | Conn::MasterBoundOtherCert, _) => Code::Unauthenticated,
        (Conn::MasterBoundToNodeCert, false) => master,
        (Conn::MasterBoundToNodeCert, true) => Code::PermissionDenied,
        (Conn::OperatorBoundNoCert, _) => Code::Unauthenticated,
        (Conn::OperatorWithCert, _) => operator,
    }
}

#[tokio::test]
async fn every_rpc_with_and_without_the_masters_certificate() {
    let clock = ManualClock::at_unix(common::T0);
    let keys = common::keys();
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new(dir.path(), "fleet");
    let (mc, _) = pki.leaf("master", &["mcp-master", "localhost"], false);
    let (wc, _) = pki.leaf("agent-w1", &["agent-w1", "localhost"], false);
    let (master_der, node_der) = (common::leaf_der(&mc), common::leaf_der(&wc));
    let (master_t, node_t) = (cert_thumbprint(&master_der), cert_thumbprint(&node_der));
    let k = &keys.signing;
    let hour = Duration::from_secs(3600);
    let conn = |c: Conn| -> (String, Option<&[u8]>) {
        match c {
            Conn::MasterUnbound => (
                common::token(k, "mcp-master", System, &[], hour, &clock),
                None,
            ),
            Conn::MasterBoundWithCert => (
                common::bound_token(k, "mcp-master", System, &master_t, &clock),
                Some(&master_der),
            ),
            Conn::MasterBoundNoCert => (
                common::bound_token(k, "mcp-master", System, &master_t, &clock),
                None,
            ),
            Conn::MasterBoundOtherCert => (
                common::bound_token(k, "mcp-master", System, &master_t, &clock),
                Some(&node_der),
            ),
            Conn::MasterBoundToNodeCert => (
                common::bound_token(k, "mcp-master", System, &node_t, &clock),
                Some(&node_der),
            ),
            Conn::OperatorBoundNoCert => (
                common::bound_token(k, "alice", Human, &node_t, &clock),
                None,
            ),
            Conn::OperatorWithCert => (
                common::token(k, "alice", Human, &["admin"], hour, &clock),
                Some(&node_der),
            ),
        }
    };
    let table = AuthzTable::standard("mcp-master");
    let plain = Authorizer::new(Arc::new(common::verifier(&keys, &clock)), table.clone());
    let bound = Authorizer::new(Arc::new(common::verifier(&keys, &clock)), table.clone())
        .with_master_binding(MasterBinding::new("mcp-master"));
    let methods: Vec<String> = protocol_rpcs().into_iter().map(|(_, p)| p).collect();
    let mut failures = Vec::new();
    let mut rows = 0;
    for (binding, authorizer) in [(false, &plain), (true, &bound)] {
        for method in &methods {
            let allowed = table.lookup(method);
            for c in CONNS {
                let (token, cert) = conn(c);
                let header = format!("Bearer {token}");
                let got = match authorizer.check_peer(method, Some(&header), cert).await {
                    Ok(_) => Code::Ok,
                    Err(r) => r.status.code(),
                };
                let want = expected_conn(c, binding, allowed);
                if got != want {
                    failures.push(format!(
                        "{method} {c:?} binding={binding}: got {got:?}, want {want:?}"
                    ));
                }
                rows += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(rows, 2 * methods.len() * CONNS.len());
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
        "Restore",
        "StopService",
        "StartService",
        "RestartService",
        "ServiceLogs",
        "ServiceEvents",
        "ListEdgeRoutes",
        "DeployHistory",
        "PushServiceFile",
        "PullServiceFile",
        "AdoptService",
    ];
    for m in cli_to_master {
        let p = format!("/mcp.v1.McpMasterService/{m}");
        assert_eq!(t.lookup(&p), Some(Allowed::OPERATORS_AND_MASTER), "{p}");
    }
    let operators_only = ["ListAudit", "ForgetNode"];
    for m in operators_only {
        let p = format!("/mcp.v1.McpMasterService/{m}");
        assert_eq!(t.lookup(&p), Some(Allowed::OPERATORS_ONLY), "{p}");
    }
    for m in ["Register", "Heartbeat", "ReportChanges"] {
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
        cli_to_master.len() + operators_only.len() + 3 + agent_lifecycle.len() + agent_fleet.len()
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
