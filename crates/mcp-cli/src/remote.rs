//! Authenticated TLS channels to the master and, with `--direct --node N`, to
//! one agent.
//!
//! Resolving *where* to connect ([`Target`]) is synchronous and reads only
//! the CLI config, the CA bundle path and the token, so every configuration
//! mistake is reported before any network call, naming what is missing.
//! Connecting ([`master`], [`agent`]) is TLS 1.3 verified against
//! `[tls] ca_cert`, with the bearer token on every call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mcp_proto::pb::mcp_agent_service_client::McpAgentServiceClient;
use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;
use mcp_security::token::{BearerInterceptor, TokenSourceError};
use mcp_security::Secret;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::cli::Direct;
use crate::config::Config;

/// How long opening a channel (TCP + TLS + HTTP/2) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type MasterClient = McpMasterServiceClient<InterceptedService<Channel, BearerInterceptor>>;
pub type AgentClient = McpAgentServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// A peer to call, with everything needed to reach it.
pub struct Target {
    /// "master" or "agent orion": used in every message about this peer.
    pub what: String,
    /// `https://host:port`.
    pub address: String,
    ca: PathBuf,
    token: Secret,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("what", &self.what)
            .field("address", &self.address)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// `master at https://...` / `agent orion at https://...`.
    pub fn name(&self) -> String {
        format!("{} at {}", self.what, self.address)
    }

    /// A readable error for a failed call: peer, RPC, code and message, with
    /// a hint for the codes an operator can act on.
    pub fn rpc_error(&self, rpc: &str, status: &tonic::Status) -> anyhow::Error {
        let hint = match status.code() {
            tonic::Code::Unauthenticated => {
                " (the token was refused: check MCP_TOKEN or [auth] token_path)"
            }
            tonic::Code::PermissionDenied => " (this identity may not make this call)",
            tonic::Code::Unavailable => " (is it running and reachable?)",
            tonic::Code::Unimplemented => " (the daemon does not support this call yet)",
            _ => "",
        };
        let msg = status.message();
        let msg = if msg.is_empty() {
            String::new()
        } else {
            format!(": {msg}")
        };
        anyhow!(
            "{}: {rpc} failed: {:?}{msg}{hint}",
            self.name(),
            status.code()
        )
    }
}

/// Where the CLI config lives, for messages ("no [master] address in ...").
pub fn config_label(explicit: Option<&Path>) -> String {
    match explicit
        .map(Path::to_path_buf)
        .or_else(crate::config::default_path)
    {
        Some(p) => p.display().to_string(),
        None => "the CLI config".to_string(),
    }
}

/// `--direct --node N` → `Some(N)`; no `--direct` → `None` (through the
/// master). `--direct` without `--node` and `--node` without `--direct` are
/// errors.
pub fn direct_node(d: &Direct) -> Result<Option<&str>> {
    match (d.direct, d.node.as_deref()) {
        (true, Some(n)) => Ok(Some(n)),
        (true, None) => bail!("--direct needs --node: name the agent to talk to"),
        (false, Some(n)) => {
            bail!("--node {n} only applies with --direct (through the master, it picks the node)")
        }
        (false, None) => Ok(None),
    }
}

/// Normalizes an address: `host:port` → `https://host:port`; `http://` is
/// refused (every channel is TLS).
fn https(address: &str, origin: &str) -> Result<String> {
    let a = address.trim();
    if a.is_empty() {
        bail!("{origin}: the address is empty");
    }
    if a.starts_with("http://") {
        bail!("{origin}: address {a} is plaintext http; MCP channels are TLS only (use https://)");
    }
    if a.starts_with("https://") {
        Ok(a.to_string())
    } else {
        Ok(format!("https://{a}"))
    }
}

fn ca_and_token(cfg: &Config, label: &str) -> Result<(PathBuf, Secret)> {
    let ca = cfg
        .tls
        .ca_cert
        .clone()
        .with_context(|| format!("no CA bundle: set [tls] ca_cert in {label}"))?;
    let token = match mcp_security::token::read_token(cfg.auth.token_path.as_deref()) {
        Ok(t) => t,
        Err(TokenSourceError::Missing) => {
            bail!("no token: set MCP_TOKEN or [auth] token_path in {label}")
        }
        Err(e) => return Err(anyhow!(e)),
    };
    Ok((ca, token))
}

/// The master, from `[master] address`.
pub fn master_target(cfg: &Config, label: &str) -> Result<Target> {
    let Some(m) = &cfg.master else {
        bail!("no [master] address in {label}");
    };
    let address = https(&m.address, &format!("[master] address in {label}"))?;
    let (ca, token) = ca_and_token(cfg, label)?;
    Ok(Target {
        what: "master".to_string(),
        address,
        ca,
        token,
    })
}

/// One agent, by node name, from `[[nodes]]`.
pub fn agent_target(cfg: &Config, label: &str, node: &str) -> Result<Target> {
    let Some(entry) = cfg.nodes.iter().find(|n| n.name == node) else {
        if cfg.nodes.is_empty() {
            bail!(
                "unknown node {node}: no [[nodes]] in {label} (add one with `mcp node add {node} ADDRESS`)"
            );
        }
        let known: Vec<&str> = cfg.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!(
            "unknown node {node}; known nodes in {label}: {}",
            known.join(", ")
        );
    };
    let address = https(&entry.address, &format!("node {node} in {label}"))?;
    let (ca, token) = ca_and_token(cfg, label)?;
    Ok(Target {
        what: format!("agent {node}"),
        address,
        ca,
        token,
    })
}

async fn channel(t: &Target) -> Result<(Channel, BearerInterceptor)> {
    let tls = mcp_security::tls::client_config(&t.ca, None)
        .with_context(|| format!("TLS setup for {} ([tls] ca_cert)", t.name()))?;
    let auth = BearerInterceptor::new(&t.token)?;
    let connect = mcp_security::tls::connect_channel(
        &t.address,
        mcp_security::tls::TlsConnector::new(Arc::new(tls)),
    );
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(anyhow::Error::new(e).context(format!("cannot connect to {}", t.name())))
        }
        Err(_) => bail!(
            "cannot connect to {}: no answer within {}s",
            t.name(),
            CONNECT_TIMEOUT.as_secs()
        ),
    };
    Ok((channel, auth))
}

/// An authenticated client of the master.
pub async fn master(t: &Target) -> Result<MasterClient> {
    let (ch, auth) = channel(t).await?;
    Ok(McpMasterServiceClient::with_interceptor(ch, auth))
}

/// An authenticated client of one agent.
pub async fn agent(t: &Target) -> Result<AgentClient> {
    let (ch, auth) = channel(t).await?;
    Ok(McpAgentServiceClient::with_interceptor(ch, auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_https_and_refuse_http() {
        assert_eq!(https("m:9443", "x").ok().as_deref(), Some("https://m:9443"));
        assert_eq!(
            https("https://m:9443", "x").ok().as_deref(),
            Some("https://m:9443")
        );
        assert!(https("http://m:9443", "x").is_err());
        assert!(https(" ", "x").is_err());
    }

    #[test]
    fn direct_flags() {
        let d = |direct, node: Option<&str>| Direct {
            direct,
            node: node.map(str::to_string),
        };
        assert_eq!(direct_node(&d(false, None)).ok(), Some(None));
        assert_eq!(direct_node(&d(true, Some("a"))).ok(), Some(Some("a")));
        let e = direct_node(&d(true, None)).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--direct needs --node")));
        assert!(direct_node(&d(false, Some("a"))).is_err());
    }
}
