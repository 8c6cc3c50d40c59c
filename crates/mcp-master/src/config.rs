//! The master config (docs/CONFIG.md), usually `/etc/mcp/master.toml`.
//!
//! A complete example; every key shown with a value in a comment is optional
//! and the comment shows its default:
//!
//! ```toml
//! [server]
//! grpc_addr = "100.64.0.1:9443"          # the overlay address, never 0.0.0.0 by default
//! tls_cert  = "/etc/mcp/master.pem"
//! tls_key   = "/etc/mcp/master.key"
//! ca_cert   = "/etc/mcp/ca.pem"          # peers (CLI, agents) are verified against it
//! # preface_timeout = "10s"                # TLS done, no HTTP/2 preface: closed
//! # max_connections_per_peer = 64          # per peer IP address
//! # max_refusals_per_peer = 20             # refused calls per refusal_window per peer IP...
//! # refusal_window = "1m"                  # ...then ResourceExhausted, one summary log line
//! # agent_server_name = "node"             # an agent's certificate must name its node
//! #                                        # ("address": the host of its address)
//!
//! [database]
//! path = "/var/lib/mcp/master.db"
//!
//! [auth]
//! # Exactly one way to verify callers' tokens:
//! issuer_public_key = "/etc/mcp/issuer.pub"   # Ed25519 JWT verified locally...
//! issuer   = "mcias"                          # ...with these two claims checked
//! audience = "mcp"
//! # identity_service_url = "https://mcias.example:8443/v1/token/validate"
//! token_file = "/etc/mcp/master.token"        # bearer token for the master's own calls to agents
//! # master_identity = "mcp-master"
//! # master_cert_name = <master_identity>      # the master's certificate must name it
//! # max_token_lifetime = "90d"                # longer-lived tokens are refused
//! # leeway = "5s"                             # clock skew allowed for exp / nbf
//!
//! [services]                  # omit the section for push mode (`mcp sync`)
//! dir = "/srv/platform/services"   # a git work tree (or a directory inside one)
//! # debounce = "500ms"        # quiet time after a change under .git before HEAD is checked
//! # poll = "30s"              # fallback periodic HEAD check
//! # allowed_host_paths = []   # host paths volumes may mount besides /srv/<service>/
//! #                           # (each agent must allow them too, [podman] allowed_host_paths)
//!
//! [edge]
//! internal_zone   = "svc.example.internal"
//! allowed_domains = ["example.net"]
//! # overlay_cidrs = ["100.64.0.0/10"]
//!
//! [registration]
//! allowed_agents = ["agent-orion", "agent-vega", "agent-edge1"]
//! # max_nodes = 16
//! # heartbeat_interval = "30s"
//! # heartbeat_timeout = "90s"          # then the master calls HealthCheck
//! # register_min_interval = "1m"       # rate limit per identity
//! # heartbeat_min_interval = "10s"     # rate limit per identity
//! # allow_overlay_addresses = false    # accept an address inside [edge] overlay_cidrs
//! #                                    # that the agent's certificate does not name
//! # address_change_cooldown = "10m"    # an address change this soon after the last is refused
//!
//! [registration.roles]        # roles of nodes without a [[nodes]] entry; a node not
//! vega  = "worker"            # configured anywhere keeps the role of its first registration
//! edge1 = "edge"
//!
//! [timeouts]
//! # deploy = "5m"
//! # edge_route = "30s"
//! # health_check = "5s"
//! # undeploy = "2m"
//! # snapshot = "10m"
//!
//! [snapshots]                 # omit: no stored snapshots (scheduled or migration restores)
//! dir = "/var/lib/mcp/snapshots"   # default: snapshots/ beside the database
//! # interval = "24h"          # a service's newest older than this is snapshotted (live)
//! # retain = 7                # per service, newest kept (also `keep`)
//! mirror = "/mnt/offsite/mcp-snapshots"   # default: none; a directory off the master's disk
//!
//! [dns]                       # omit: DNS steps are skipped and reported as skipped
//! adapter = "rfc2136"
//! server = "100.64.0.1:53"
//! # zone = <edge.internal_zone>
//! tsig_key_name = "mcp"
//! # tsig_algorithm = "hmac-sha256"
//! tsig_secret_file = "/etc/mcp/tsig.secret"
//! # ttl = "60s"
//! # ...or the platform's DNS server (not available in this build: refused):
//! # adapter = "mcns"
//! # url = "https://mcns.example:8443"
//! # token_file = "/etc/mcp/mcns.token"
//! # ca_cert = "/etc/mcp/ca.pem"
//!
//! [reconcile]
//! # interval = "60s"          # periodic re-plan
//! # concurrency = 4           # services handled at once
//! # allow_auto_migrate = false
//! # heal_max_attempts = 5     # then the component is marked degraded
//! # heal_backoff = "30s"      # first retry delay, doubled per attempt
//!
//! [alerts]                    # optional; no command = alerts are only logged
//! # command = ["/usr/local/bin/page", "--team", "ops"]   # argv, no shell; MCP_* env
//! # cooldown = "15m"          # the same alert key at most once per cooldown
//!
//! [audit]                     # the audit table `mcp audit` reads
//! # max_age = "90d"           # older rows are deleted
//! # max_rows = 100000         # at most this many rows are kept (the newest)
//! # prune_interval = "10m"    # also pruned after every max_rows/10 rows written
//!
//! [[nodes]]                   # bootstrap entries (the master's own agent)
//! name    = "orion"
//! address = "https://100.64.0.1:9444"
//! role    = "master"          # "master" | "worker" | "edge"
//! ```
//!
//! Durations use humantime syntax (`"500ms"`, `"1m 30s"`, `"24h"`).
//! Relative paths are resolved against the directory of the config file.
//! [`Config::load`] reads, parses and [validates](Config::validate); every
//! problem is reported at once. [`Config::check_paths`] additionally checks
//! the files and directories it names (used by `mcp-master check-config`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Config problems use the shape shared with the agent (file, key,
/// message).
pub use mcp_security::config::{ConfigError, ConfigProblem};

/// One CIDR type for the whole workspace.
pub use mcp_security::edge::Cidr;

mod snapshots;
mod validate;

pub use snapshots::{default_snapshot_dir, SnapshotsConfig};

/// The whole master config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    /// `Some`: GitOps mode; `None`: push mode.
    #[serde(default)]
    pub services: Option<ServicesConfig>,
    pub edge: EdgeConfig,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub snapshots: Option<SnapshotsConfig>,
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
}

/// `[alerts]`: the command the master runs for a degraded service, a node
/// turned unhealthy, a plan refused by the mass-deletion guard, a failed
/// step and a stale snapshot (`crate::alerts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// argv, run without a shell; `None`: alerts are only logged.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The same alert key is sent at most once per cooldown.
    #[serde(default = "d_15m", with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            command: None,
            cooldown: d_15m(),
        }
    }
}

fn d_15m() -> Duration {
    Duration::from_secs(15 * 60)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub grpc_addr: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// CA bundle that peers' certificates are verified against.
    pub ca_cert: PathBuf,
    /// A peer that completes the TLS handshake must send the HTTP/2
    /// preface within this time, or the connection is closed.
    #[serde(default = "d_10s", with = "humantime_serde")]
    pub preface_timeout: Duration,
    /// At most this many open connections per peer IP address.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Refused calls per peer IP per `refusal_window` answered as usual;
    /// further ones get `ResourceExhausted` (calls that authenticate are
    /// never limited).
    #[serde(default = "default_max_refusals_per_peer")]
    pub max_refusals_per_peer: u32,
    #[serde(default = "d_1m", with = "humantime_serde")]
    pub refusal_window: Duration,
    /// What an agent's server certificate is verified against when the
    /// master calls it.
    #[serde(default)]
    pub agent_server_name: AgentServerName,
}

/// Default `[server] max_connections_per_peer`.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;

fn default_max_connections_per_peer() -> usize {
    DEFAULT_MAX_CONNECTIONS_PER_PEER
}

fn default_max_refusals_per_peer() -> u32 {
    mcp_security::abuse::FailureLimits::default().max_failures
}

/// `[server] agent_server_name`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentServerName {
    /// The agent's certificate must name its node (a DNS SAN equal to the
    /// node name), whatever address it registered: one node's certificate
    /// never passes for another's.
    #[default]
    Node,
    /// The agent's certificate must name the host of its address.
    Address,
}

impl ServerConfig {
    /// The connection limits of `[server]`.
    pub fn incoming_options(&self) -> mcp_security::tls::IncomingOptions {
        mcp_security::tls::IncomingOptions::per_peer(
            self.preface_timeout,
            self.max_connections_per_peer,
        )
    }

    /// The per-peer refusal limits of `[server]`.
    pub fn failure_limits(&self) -> mcp_security::abuse::FailureLimits {
        mcp_security::abuse::FailureLimits::per_window(
            self.max_refusals_per_peer,
            self.refusal_window,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub path: PathBuf,
}

/// The default name of the master's own identity.
pub const DEFAULT_MASTER_IDENTITY: &str = "mcp-master";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Ed25519 public key (PEM) of the token issuer: tokens are verified
    /// locally. Requires `issuer` and `audience`.
    #[serde(default)]
    pub issuer_public_key: Option<PathBuf>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    /// Alternative to `issuer_public_key`: tokens are validated by calling
    /// the identity service (answers cached 30s).
    #[serde(default)]
    pub identity_service_url: Option<String>,
    /// The master's own identity: allowed on every agent RPC and on the
    /// CLI-facing master RPCs.
    #[serde(default = "default_master_identity")]
    pub master_identity: String,
    /// The name (DNS SAN or IP address) the master's certificate must carry
    /// for master-class calls; `None`: `master_identity`.
    #[serde(default)]
    pub master_cert_name: Option<String>,
    /// Tokens whose lifetime (`exp - iat`) is longer are refused (local JWT
    /// verification only).
    #[serde(default = "default_max_token_lifetime", with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// Clock skew allowed when checking `exp` and `nbf` (local JWT
    /// verification only).
    #[serde(default = "d_5s", with = "humantime_serde")]
    pub leeway: Duration,
    /// Bearer token the master presents when it calls agents.
    pub token_file: PathBuf,
}

fn default_master_identity() -> String {
    DEFAULT_MASTER_IDENTITY.to_string()
}

fn default_max_token_lifetime() -> Duration {
    mcp_security::jwt::DEFAULT_MAX_TOKEN_LIFETIME
}

/// The largest `[auth] leeway` accepted: a longer one would keep expired
/// tokens usable.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// How the master verifies callers' tokens (see [`AuthConfig::verification`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenVerification<'a> {
    Jwt {
        public_key: &'a Path,
        issuer: &'a str,
        audience: &'a str,
    },
    IdentityService {
        url: &'a str,
    },
}

impl AuthConfig {
    /// The name the master's certificate must carry: `master_cert_name`,
    /// else `master_identity`.
    pub fn master_cert_name(&self) -> &str {
        self.master_cert_name
            .as_deref()
            .unwrap_or(&self.master_identity)
    }

    /// The configured verification method; `None` only for an invalid config
    /// (validation rejects it).
    pub fn verification(&self) -> Option<TokenVerification<'_>> {
        match (&self.issuer_public_key, &self.identity_service_url) {
            (Some(key), None) => Some(TokenVerification::Jwt {
                public_key: key,
                issuer: self.issuer.as_deref()?,
                audience: self.audience.as_deref()?,
            }),
            (None, Some(url)) => Some(TokenVerification::IdentityService { url }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesConfig {
    /// Git work tree (or a directory inside one) holding `<name>.toml` files.
    pub dir: PathBuf,
    #[serde(default = "d_500ms", with = "humantime_serde")]
    pub debounce: Duration,
    #[serde(default = "d_30s", with = "humantime_serde")]
    pub poll: Duration,
    /// Host paths a volume may mount besides `/srv/<service>/`: the master
    /// holds any other mount with the file's position. Each agent confines
    /// again with its own `[podman] allowed_host_paths`.
    #[serde(default)]
    pub allowed_host_paths: Vec<String>,
}

/// The default overlay network (CGNAT range, as Tailscale-like overlays use).
pub const DEFAULT_OVERLAY_CIDR: &str = "100.64.0.0/10";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Public hostnames must equal one of these or be under it (label match).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Internal names are `<service>.<internal_zone>`.
    pub internal_zone: String,
    /// Backend hostnames must resolve into one of these.
    #[serde(default = "default_overlay_cidrs", with = "cidr_list")]
    pub overlay_cidrs: Vec<Cidr>,
}

fn default_overlay_cidrs() -> Vec<Cidr> {
    // The default overlay is 100.64.0.0/10 (DEFAULT_OVERLAY_CIDR).
    mcp_security::edge::Overlay::default().0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Identities (`agent-<node>`) allowed to register. Empty: nobody.
    #[serde(default)]
    pub allowed_agents: Vec<String>,
    #[serde(default = "default_max_nodes")]
    pub max_nodes: usize,
    #[serde(default = "d_30s", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Silence after which the master probes the node with `HealthCheck`.
    #[serde(default = "d_90s", with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// At most one `Register` per identity per this interval.
    #[serde(default = "d_1m", with = "humantime_serde")]
    pub register_min_interval: Duration,
    /// At most one `Heartbeat` per identity per this interval.
    #[serde(default = "d_10s", with = "humantime_serde")]
    pub heartbeat_min_interval: Duration,
    /// The role of each node without a `[[nodes]]` entry (`[[nodes]]`
    /// entries carry their own). A node's registration asking for another
    /// role is refused; a node configured nowhere keeps the role of its
    /// first registration.
    #[serde(default)]
    pub roles: BTreeMap<String, NodeRole>,
    /// Accept a registered address inside `[edge] overlay_cidrs` even when
    /// the agent's client certificate does not name it.
    #[serde(default)]
    pub allow_overlay_addresses: bool,
    /// An address change within this time of the node's previous change is
    /// refused.
    #[serde(default = "d_10m", with = "humantime_serde")]
    pub address_change_cooldown: Duration,
}

/// The default node limit.
pub const DEFAULT_MAX_NODES: usize = 16;

fn default_max_nodes() -> usize {
    DEFAULT_MAX_NODES
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            allowed_agents: Vec::new(),
            max_nodes: DEFAULT_MAX_NODES,
            heartbeat_interval: d_30s(),
            heartbeat_timeout: d_90s(),
            register_min_interval: d_1m(),
            heartbeat_min_interval: d_10s(),
            roles: BTreeMap::new(),
            allow_overlay_addresses: false,
            address_change_cooldown: d_10m(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "d_5m", with = "humantime_serde")]
    pub deploy: Duration,
    #[serde(default = "d_30s", with = "humantime_serde")]
    pub edge_route: Duration,
    #[serde(default = "d_5s", with = "humantime_serde")]
    pub health_check: Duration,
    #[serde(default = "d_2m", with = "humantime_serde")]
    pub undeploy: Duration,
    #[serde(default = "d_10m", with = "humantime_serde")]
    pub snapshot: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            deploy: d_5m(),
            edge_route: d_30s(),
            health_check: d_5s(),
            undeploy: d_2m(),
            snapshot: d_10m(),
        }
    }
}

/// DNS adapter settings (docs/ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "adapter", rename_all = "lowercase")]
pub enum DnsConfig {
    /// RFC 2136 dynamic update with TSIG (BIND, Knot, PowerDNS).
    Rfc2136(Rfc2136Config),
    /// The platform's DNS server, REST `/v1/zones/{zone}/records`.
    Mcns(McnsConfig),
}

impl DnsConfig {
    /// The zone records are written in, given the config's internal zone.
    pub fn zone<'a>(&'a self, internal_zone: &'a str) -> &'a str {
        let z = match self {
            DnsConfig::Rfc2136(c) => c.zone.as_deref(),
            DnsConfig::Mcns(c) => c.zone.as_deref(),
        };
        z.unwrap_or(internal_zone)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Config {
    /// `host:port` of the primary server.
    pub server: String,
    /// Default: `[edge] internal_zone`.
    #[serde(default)]
    pub zone: Option<String>,
    pub tsig_key_name: String,
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: String,
    /// File holding the base64 TSIG secret.
    pub tsig_secret_file: PathBuf,
    #[serde(default = "d_60s", with = "humantime_serde")]
    pub ttl: Duration,
}

/// TSIG algorithms an adapter is expected to implement.
pub const TSIG_ALGORITHMS: &[&str] = &["hmac-sha256", "hmac-sha384", "hmac-sha512"];

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McnsConfig {
    /// Base URL, e.g. `https://mcns.example:8443`.
    pub url: String,
    /// Default: `[edge] internal_zone`.
    #[serde(default)]
    pub zone: Option<String>,
    pub token_file: PathBuf,
    /// CA bundle for the server; default: `[server] ca_cert`.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default = "d_60s", with = "humantime_serde")]
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    #[serde(default = "d_60s", with = "humantime_serde")]
    pub interval: Duration,
    /// Services whose operations run at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Let the reconciler migrate a service whose pin changed (default: the
    /// plan shows the migration as blocked with the `mcp migrate` command).
    #[serde(default)]
    pub allow_auto_migrate: bool,
    /// Self-heal attempts before a component is marked degraded.
    #[serde(default = "default_heal_max_attempts")]
    pub heal_max_attempts: u32,
    /// Delay before the first self-heal retry, doubled for each attempt.
    #[serde(default = "d_30s", with = "humantime_serde")]
    pub heal_backoff: Duration,
}

fn default_concurrency() -> usize {
    4
}

fn default_heal_max_attempts() -> u32 {
    5
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            interval: d_60s(),
            concurrency: default_concurrency(),
            allow_auto_migrate: false,
            heal_max_attempts: default_heal_max_attempts(),
            heal_backoff: d_30s(),
        }
    }
}

/// `[audit]`: how long the audit table keeps its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Rows older than this are deleted.
    #[serde(default = "d_90d", with = "humantime_serde")]
    pub max_age: Duration,
    /// At most this many rows are kept (the newest).
    #[serde(default = "default_audit_max_rows")]
    pub max_rows: u64,
    /// Time between two prunes (the writer also prunes after every
    /// `max_rows / 10` rows, at most 10,000).
    #[serde(default = "d_10m", with = "humantime_serde")]
    pub prune_interval: Duration,
}

/// The default `[audit] max_rows`.
pub const DEFAULT_AUDIT_MAX_ROWS: u64 = 100_000;

fn default_audit_max_rows() -> u64 {
    DEFAULT_AUDIT_MAX_ROWS
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_age: d_90d(),
            max_rows: DEFAULT_AUDIT_MAX_ROWS,
            prune_interval: d_10m(),
        }
    }
}

pub use mcp_spec::NodeRole;

/// A `[[nodes]]` bootstrap entry: known before the node registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    /// The agent's address, e.g. `https://100.64.0.1:9444`.
    pub address: String,
    pub role: NodeRole,
}

/// `Vec<Cidr>` as a list of strings (`["100.64.0.0/10"]`).
mod cidr_list {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Cidr;

    pub fn serialize<S: Serializer>(v: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|c| c.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Durations as humantime strings (`"500ms"`, `"24h"`).
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e} (examples: \"500ms\", \"30s\", \"5m\", \"24h\")"
            ))
        })
    }
}

fn d_5s() -> Duration {
    Duration::from_secs(5)
}
fn d_10s() -> Duration {
    Duration::from_secs(10)
}
fn d_30s() -> Duration {
    Duration::from_secs(30)
}
fn d_60s() -> Duration {
    Duration::from_secs(60)
}
fn d_1m() -> Duration {
    Duration::from_secs(60)
}
fn d_90s() -> Duration {
    Duration::from_secs(90)
}
fn d_2m() -> Duration {
    Duration::from_secs(120)
}
fn d_5m() -> Duration {
    Duration::from_secs(300)
}
fn d_10m() -> Duration {
    Duration::from_secs(600)
}
fn d_24h() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn d_90d() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
fn d_500ms() -> Duration {
    Duration::from_millis(500)
}

impl Config {
    /// Reads, parses and validates `path`; relative paths in it are resolved
    /// against the directory of `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse(path, &text)?;
        let base = path.parent().unwrap_or(Path::new(""));
        cfg.resolve_paths(base);
        cfg.validate().map_err(|problems| ConfigError::Invalid {
            file: path.to_path_buf(),
            problems,
        })?;
        Ok(cfg)
    }

    /// Parses config text without validating it or resolving paths;
    /// `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_path_buf(),
            message: parse_message(&e, text),
        })
    }
    /// True when desired state comes from a git work tree.
    pub fn gitops(&self) -> bool {
        self.services.is_some()
    }

    /// The role the configuration fixes for each node it names: `[[nodes]]`
    /// entries, then `[registration.roles]` (validation refuses a node
    /// named in both with different roles).
    pub fn node_roles(&self) -> BTreeMap<String, NodeRole> {
        let mut roles = self.registration.roles.clone();
        for n in &self.nodes {
            roles.insert(n.name.clone(), n.role);
        }
        roles
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.tls_cert);
        fix(&mut self.server.tls_key);
        fix(&mut self.server.ca_cert);
        fix(&mut self.database.path);
        fix(&mut self.auth.token_file);
        if let Some(k) = &mut self.auth.issuer_public_key {
            fix(k);
        }
        if let Some(s) = &mut self.services {
            fix(&mut s.dir);
        }
        if let Some(s) = &mut self.snapshots {
            if s.dir.as_os_str().is_empty() {
                s.dir = default_snapshot_dir(&self.database.path);
            } else {
                fix(&mut s.dir);
            }
            if let Some(m) = &mut s.mirror {
                fix(m);
            }
        }
        match &mut self.dns {
            Some(DnsConfig::Rfc2136(c)) => fix(&mut c.tsig_secret_file),
            Some(DnsConfig::Mcns(c)) => {
                fix(&mut c.token_file);
                if let Some(ca) = &mut c.ca_cert {
                    fix(ca);
                }
            }
            None => {}
        }
    }
}

/// toml's message with its `line N, column M` and the source excerpt, made
/// to read `line N, column M: message`.
fn parse_message(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim_end_matches('.').to_string();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before
                .rfind('\n')
                .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
                + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests;
