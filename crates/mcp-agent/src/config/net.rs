//! `[proxy]` and `[certs]`: the node's reverse proxies and where its
//! certificates come from. Both optional: without `[proxy]` routes are
//! reported skipped; without `[certs]` L7 routes are.
//!
//! ```toml
//! [proxy]
//! address        = "100.64.0.12"          # where the proxies listen (shown in URLs);
//!                                         # default: the host of [node] address
//! internal_zone  = "svc.example.internal" # a route without hostname is <service>.<zone>
//! check_interval = "5s"                   # default; a proxy that lost routes gets them back
//! [proxy.l7]                              # L7: TLS terminated, matched by SNI and Host
//! adapter = "caddy"
//! admin   = "127.0.0.1:2019"              # Caddy's admin API
//! [proxy.l4]                              # L4: TLS passthrough by SNI
//! adapter       = "haproxy"
//! config        = "/var/lib/mcp/haproxy.cfg"          # rendered by the agent
//! master_socket = "/run/mcp/haproxy-master.sock"      # haproxy -W -S <this>
//! binary        = "/usr/sbin/haproxy"                 # default
//!
//! [certs]
//! issuer       = "local-ca"               # or "acme"
//! dir          = "/var/lib/mcp/certs"     # default: "certs" beside the database
//! renew_before = "30d"                    # default
//! ca_cert      = "/etc/mcp/routes-ca.pem" # local-ca: the CA that signs...
//! ca_key       = "/etc/mcp/routes-ca.key" # ...with this key (mode 0600)
//! validity     = "90d"                    # local-ca, default
//!
//! [certs.acme]                            # issuer = "acme"
//! directory    = "https://acme.example.internal/dir"
//! root_ca      = "/etc/mcp/acme-root.pem" # optional: trust for the ACME server's TLS
//! account_file = "/var/lib/mcp/acme-account.json"  # default: beside the database
//! contact      = ["mailto:ops@example.org"]
//! [certs.acme.dns]                        # dns-01: where the TXT records are written
//! server           = "100.64.0.1:53"
//! zone             = "example.internal"
//! tsig_key_name    = "acme"
//! tsig_algorithm   = "hmac-sha256"        # or hmac-sha384, hmac-sha512
//! tsig_secret_file = "/etc/mcp/acme.tsig" # base64, as knotc/tsig-keygen print it
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::de_duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default)]
    pub address: Option<IpAddr>,
    pub internal_zone: String,
    #[serde(default = "default_check_interval", deserialize_with = "de_duration")]
    pub check_interval: Duration,
    #[serde(default)]
    pub l7: Option<L7Config>,
    #[serde(default)]
    pub l4: Option<L4Config>,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L7Adapter {
    Caddy,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Config {
    pub adapter: L7Adapter,
    /// Caddy's admin API (keep it on loopback).
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Adapter {
    Haproxy,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L4Config {
    pub adapter: L4Adapter,
    /// The haproxy.cfg the agent renders (HAProxy runs with `-f` on it).
    pub config: PathBuf,
    /// HAProxy's master socket (`haproxy -W -S <path>`), for reloads.
    pub master_socket: PathBuf,
    #[serde(default = "default_haproxy")]
    pub binary: PathBuf,
}

fn default_haproxy() -> PathBuf {
    PathBuf::from("/usr/sbin/haproxy")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum IssuerKind {
    #[serde(rename = "local-ca")]
    LocalCa,
    #[serde(rename = "acme")]
    Acme,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertsConfig {
    pub issuer: IssuerKind,
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default = "default_renew_before", deserialize_with = "de_duration")]
    pub renew_before: Duration,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
    #[serde(default = "default_validity", deserialize_with = "de_duration")]
    pub validity: Duration,
    #[serde(default)]
    pub acme: Option<AcmeConfig>,
}

fn default_renew_before() -> Duration {
    crate::agent::DEFAULT_RENEW_BEFORE
}
fn default_validity() -> Duration {
    mcp_net::LocalCa::DEFAULT_VALIDITY
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    pub directory: String,
    #[serde(default)]
    pub root_ca: Option<PathBuf>,
    #[serde(default)]
    pub account_file: Option<PathBuf>,
    #[serde(default)]
    pub contact: Vec<String>,
    pub dns: AcmeDnsConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeDnsConfig {
    pub server: SocketAddr,
    pub zone: String,
    pub tsig_key_name: String,
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: String,
    pub tsig_secret_file: PathBuf,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_string()
}

/// The TSIG algorithms the DNS adapter signs with.
pub const TSIG_ALGORITHMS: &[&str] = &["hmac-sha256", "hmac-sha384", "hmac-sha512"];
