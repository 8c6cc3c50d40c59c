//! Per-RPC authorization by caller class: one table, as data.
//!
//! The table ([`RPC_TABLE`]) names every RPC MCP serves by its gRPC path and
//! the caller classes allowed to call it. Anything not in the table is denied
//! (`PermissionDenied`). `docs/SECURITY.md` shows the same table; a test
//! keeps them equal, and another fails when the protocol gains an RPC the
//! table does not list.

use std::collections::HashMap;
use std::fmt;

use crate::identity::{AccountType, Identity};
use crate::registration::node_from_identity;

/// What kind of caller an identity is, for authorization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerClass {
    /// A human account that is not a guest.
    Operator,
    /// The master's own identity (a system account, configured by name).
    Master,
    /// An `agent-<node>` system account.
    Agent { node: String },
    /// Any guest account (never allowed).
    Guest,
    /// A system account that is neither the master nor an agent.
    UnknownSystem,
}

impl fmt::Display for CallerClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerClass::Operator => f.write_str("operator"),
            CallerClass::Master => f.write_str("master"),
            CallerClass::Agent { node } => write!(f, "agent({node})"),
            CallerClass::Guest => f.write_str("guest"),
            CallerClass::UnknownSystem => f.write_str("unknown-system"),
        }
    }
}

/// Default name of the master's identity.
pub const DEFAULT_MASTER_IDENTITY: &str = "mcp-master";

/// Classifies an identity. Guests are recognised first, whatever their
/// account type. The master identity must be a system account; a human
/// account named like the master or like an agent is just an operator.
pub fn classify(identity: &Identity, master_identity: &str) -> CallerClass {
    if identity.is_guest() {
        return CallerClass::Guest;
    }
    match identity.account_type {
        AccountType::Human => CallerClass::Operator,
        AccountType::System if identity.name == master_identity => CallerClass::Master,
        AccountType::System => match node_from_identity(identity) {
            Ok(node) => CallerClass::Agent { node },
            Err(_) => CallerClass::UnknownSystem,
        },
    }
}

/// The set of caller classes allowed to call one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Allowed {
    pub operators: bool,
    pub master: bool,
    pub agents: bool,
}

impl Allowed {
    /// CLI → master RPCs, and master → agent lifecycle/read RPCs
    /// (`--direct`): human operators and the master.
    pub const OPERATORS_AND_MASTER: Allowed = Allowed {
        operators: true,
        master: true,
        agents: false,
    };
    /// Operator-only reads: human operators (not the master, not agents).
    pub const OPERATORS_ONLY: Allowed = Allowed {
        operators: true,
        master: false,
        agents: false,
    };
    /// master → agent fleet RPCs: the master only.
    pub const MASTER_ONLY: Allowed = Allowed {
        operators: false,
        master: true,
        agents: false,
    };
    /// agent → master RPCs: `agent-*` system accounts only.
    pub const AGENTS_ONLY: Allowed = Allowed {
        operators: false,
        master: false,
        agents: true,
    };

    pub fn permits(self, class: &CallerClass) -> bool {
        match class {
            CallerClass::Operator => self.operators,
            CallerClass::Master => self.master,
            CallerClass::Agent { .. } => self.agents,
            CallerClass::Guest | CallerClass::UnknownSystem => false,
        }
    }

    /// Human-readable list, as in docs/SECURITY.md.
    pub fn describe(self) -> String {
        let mut parts = Vec::new();
        if self.operators {
            parts.push("operators");
        }
        if self.master {
            parts.push("master");
        }
        if self.agents {
            parts.push("agents");
        }
        if parts.is_empty() {
            "nobody".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcRule {
    /// gRPC path, `/<package>.<Service>/<Method>`.
    pub method: &'static str,
    pub allowed: Allowed,
}

const fn rule(method: &'static str, allowed: Allowed) -> RpcRule {
    RpcRule { method, allowed }
}

use Allowed as A;

/// Every RPC MCP serves and who may call it (docs/SECURITY.md).
pub const RPC_TABLE: &[RpcRule] = &[
    // CLI → master
    rule("/mcp.v1.McpMasterService/Deploy", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpMasterService/Undeploy", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpMasterService/Status", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpMasterService/Sync", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpMasterService/Migrate", A::OPERATORS_AND_MASTER),
    rule(
        "/mcp.v1.McpMasterService/ListNodes",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/CreateSnapshot",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/ListSnapshots",
        A::OPERATORS_AND_MASTER,
    ),
    rule("/mcp.v1.McpMasterService/Restore", A::OPERATORS_AND_MASTER),
    rule(
        "/mcp.v1.McpMasterService/StopService",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/StartService",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/RestartService",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/ServiceLogs",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/ServiceEvents",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/ListEdgeRoutes",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/DeployHistory",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/PushServiceFile",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/PullServiceFile",
        A::OPERATORS_AND_MASTER,
    ),
    rule(
        "/mcp.v1.McpMasterService/AdoptService",
        A::OPERATORS_AND_MASTER,
    ),
    // CLI → master, operators only
    rule("/mcp.v1.McpMasterService/ListAudit", A::OPERATORS_ONLY),
    rule("/mcp.v1.McpMasterService/ForgetNode", A::OPERATORS_ONLY),
    // agent → master
    rule("/mcp.v1.McpMasterService/Register", A::AGENTS_ONLY),
    rule("/mcp.v1.McpMasterService/Heartbeat", A::AGENTS_ONLY),
    rule("/mcp.v1.McpMasterService/ReportChanges", A::AGENTS_ONLY),
    // master → agent: lifecycle and read (humans too: `--direct`)
    rule("/mcp.v1.McpAgentService/Deploy", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpAgentService/Undeploy", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpAgentService/Stop", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpAgentService/Start", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpAgentService/Restart", A::OPERATORS_AND_MASTER),
    rule(
        "/mcp.v1.McpAgentService/ListServices",
        A::OPERATORS_AND_MASTER,
    ),
    rule("/mcp.v1.McpAgentService/Adopt", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpAgentService/Logs", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpAgentService/Events", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpAgentService/PushFile", A::OPERATORS_AND_MASTER),
    rule("/mcp.v1.McpAgentService/PullFile", A::OPERATORS_AND_MASTER),
    // master → agent: fleet (master only)
    rule("/mcp.v1.McpAgentService/HealthCheck", A::MASTER_ONLY),
    rule("/mcp.v1.McpAgentService/SetupEdgeRoute", A::MASTER_ONLY),
    rule("/mcp.v1.McpAgentService/RemoveEdgeRoute", A::MASTER_ONLY),
    rule("/mcp.v1.McpAgentService/ListEdgeRoutes", A::MASTER_ONLY),
    rule("/mcp.v1.McpAgentService/ExportServiceData", A::MASTER_ONLY),
    rule("/mcp.v1.McpAgentService/ImportServiceData", A::MASTER_ONLY),
    rule("/mcp.v1.McpAgentService/AddProxyRoute", A::MASTER_ONLY),
    rule("/mcp.v1.McpAgentService/RemoveProxyRoute", A::MASTER_ONLY),
    rule("/mcp.v1.McpAgentService/ListProxyRoutes", A::MASTER_ONLY),
];

/// gRPC services in the protocol that MCP does not serve, and so have no
/// table rows: `SnapshotService` is implemented by managed services and
/// called by the agent as a client (snapshot method `grpc`). A server that
/// received one of these would deny it like any unknown path.
pub const NOT_SERVED: &[&str] = &["mcp.v1.SnapshotService"];

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("method {0} is not in the authorization table")]
    UnknownMethod(String),
    #[error("{class} may not call {method}")]
    NotAllowed { class: CallerClass, method: String },
}

impl Denied {
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::permission_denied(self.to_string())
    }
}

/// The table, indexed, plus the master identity name used to classify.
#[derive(Debug, Clone)]
pub struct AuthzTable {
    rules: HashMap<&'static str, Allowed>,
    master_identity: String,
}

impl AuthzTable {
    /// The standard table with the given master identity name.
    pub fn standard(master_identity: impl Into<String>) -> Self {
        Self::from_rules(RPC_TABLE, master_identity)
    }

    pub fn from_rules(rules: &[RpcRule], master_identity: impl Into<String>) -> Self {
        Self {
            rules: rules.iter().map(|r| (r.method, r.allowed)).collect(),
            master_identity: master_identity.into(),
        }
    }

    pub fn master_identity(&self) -> &str {
        &self.master_identity
    }

    pub fn lookup(&self, method: &str) -> Option<Allowed> {
        self.rules.get(method).copied()
    }

    pub fn classify(&self, identity: &Identity) -> CallerClass {
        classify(identity, &self.master_identity)
    }

    /// The decision for an authenticated caller: its class, or why not.
    pub fn authorize(&self, method: &str, identity: &Identity) -> Result<CallerClass, Denied> {
        let class = self.classify(identity);
        let allowed = self
            .lookup(method)
            .ok_or_else(|| Denied::UnknownMethod(method.to_string()))?;
        if allowed.permits(&class) {
            Ok(class)
        } else {
            Err(Denied::NotAllowed {
                class,
                method: method.to_string(),
            })
        }
    }
}

/// Renders [`RPC_TABLE`] as the Markdown table in docs/SECURITY.md.
pub fn render_markdown_table() -> String {
    let mut out = String::from("| RPC | allowed callers |\n|---|---|\n");
    for r in RPC_TABLE {
        out.push_str(&format!("| `{}` | {} |\n", r.method, r.allowed.describe()));
    }
    out
}
