//! The agent's configuration file (`mcp-agent.toml`).
//!
//! Unknown keys are errors (a typo must not silently fall back to a default).
//! Durations are humantime strings (`"10s"`, `"5m"`, `"1h 30m"`). Every path
//! must be absolute: the agent runs from a service manager whose working
//! directory means nothing.
//!
//! Problems are reported in the shape the master's config shares
//! ([`ConfigError`] from `mcp_security::config`): the file, the key
//! (`section.key`) and what is wrong, every problem at once.
//!
//! ```toml
//! [server]
//! grpc_addr = "100.64.0.12:9444"       # the overlay address; never 0.0.0.0 / :: unless
//! # allow_all_interfaces = true       # ...this is set explicitly
//! tls_cert  = "/etc/mcp/agent.crt"
//! tls_key   = "/etc/mcp/agent.key"
//! ca_cert   = "/etc/mcp/ca.pem"
//! preface_timeout          = "10s"    # default; TLS done, no HTTP/2 preface: closed
//! max_connections_per_peer = 64       # default; per peer IP address
//! max_refusals_per_peer    = 20       # default; refused calls per refusal_window per peer IP...
//! refusal_window           = "1m"     # ...then ResourceExhausted, one summary log line
//!
//! [node]
//! name    = "orion"                   # DNS label; the identity is agent-<name>
//! role    = "worker"                  # "master" | "worker" | "edge"
//! address = "100.64.0.12:9444"        # advertised to the master (host:port)
//!
//! [master]
//! address = "mcp-master.internal.example:9443"   # where to register
//! heartbeat_interval = "30s"                     # default
//! server_name = "mcp-master"                     # default: auth.master_cert_name; the name
//!                                                # the master's certificate must carry
//!
//! [auth]
//! issuer_public_key = "/etc/mcp/issuer.pub"      # Ed25519 key of the identity service
//! issuer            = "mcias"
//! audience          = "mcp"
//! master_identity   = "mcp-master"               # default
//! master_cert_name  = "mcp-master"               # default: master_identity; the master's
//!                                                # client certificate must name it
//! max_token_lifetime = "90d"                     # default; longer-lived tokens are refused
//! leeway            = "5s"                       # default; clock skew allowed for exp / nbf
//! token_file        = "/etc/mcp/agent.token"     # this agent's own token
//!
//! [database]
//! path = "/var/lib/mcp/agent.db"
//!
//! [podman]                            # optional section
//! binary      = "podman"              # default
//! global_args = []                    # e.g. ["--root", "/var/lib/containers"]
//! env         = { CONTAINERS_CONF = "/etc/mcp/containers.conf" }
//! allowed_host_paths = []             # host paths volumes may mount besides /srv/<service>/
//!
//! [ports]                             # optional section
//! range        = [10000, 60000]       # default; inclusive
//! bind_address = "127.0.0.1"          # default; where containers publish ports
//!
//! [monitor]                           # optional section
//! interval       = "60s"              # full comparison; podman events wake it at once
//! flap_threshold = 3                  # transitions ...
//! flap_window    = "5m"               # ... within this window = flapping
//!
//! [health]                            # optional section: health checks
//! deploy_timeout = "60s"              # default; a deploy waits this long for healthy
//! start_interval = "1s"               # default; probe interval while starting
//! max_interval   = "10s"              # optional cap on a file's interval (mcp dev: 1s)
//!
//! [events]                            # optional section: the event history kept
//! max_age  = "30d"                    # default; older events are deleted
//! max_rows = 10000                    # default; beyond it the oldest are deleted
//!
//! [alerts]                            # optional section; no command = no alerts
//! command  = ["/usr/local/bin/notify", "--channel", "ops"]
//! cooldown = "15m"
//!
//! [files]                             # optional section
//! root = "/srv"                       # PushFile / PullFile, service data; /srv in volumes
//! max_import_bytes      = 10737418240 # ImportServiceData: file content in all (10 GiB)
//! max_import_file_bytes = 4294967296  # ImportServiceData: one file (4 GiB)
//!
//! [snapshot]                          # optional section
//! dir  = "/var/lib/mcp/snapshots"     # default: "snapshots" beside the database
//! keep = 7
//! ```
//!
//! `[proxy]` and `[certs]` (routes and their certificates) are described in
//! `config/net.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_security::config::{parse_toml, read_toml};
pub use mcp_security::config::{ConfigError, ConfigProblem};
use serde::{Deserialize, Deserializer};

/// Default port range for container host ports (docs/ARCHITECTURE.md).
pub const DEFAULT_PORT_RANGE: (u16, u16) = (10000, 60000);

/// The whole agent configuration, as read from the file. Values are only
/// guaranteed sane after [`Config::validate`] (which [`Config::load`] runs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub node: NodeConfig,
    pub master: MasterConfig,
    pub auth: AuthConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub podman: PodmanConfig,
    #[serde(default)]
    pub ports: PortsConfig,
    #[serde(default)]
    pub monitor: MonitorConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub files: FilesConfig,
    #[serde(default)]
    pub snapshot: SnapshotSettings,
    /// The node's reverse proxies (routes); `None`: routes are skipped.
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
    /// Where certificates come from; `None`: L7 routes are skipped.
    #[serde(default)]
    pub certs: Option<CertsConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the gRPC server binds: the node's overlay address.
    pub grpc_addr: SocketAddr,
    /// Binding to `0.0.0.0` / `::` is refused unless this is set.
    #[serde(default)]
    pub allow_all_interfaces: bool,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// CA bundle peers are verified against.
    pub ca_cert: PathBuf,
    /// A peer that completes the TLS handshake must send the HTTP/2
    /// preface within this time, or the connection is closed.
    #[serde(default = "default_preface_timeout", deserialize_with = "de_duration")]
    pub preface_timeout: Duration,
    /// At most this many open connections per peer IP address.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Refused calls (failed authentication, permission denied) per peer IP
    /// per `refusal_window` answered, logged and audited as usual; further
    /// ones get `ResourceExhausted` and one summary log line per window.
    /// Calls that authenticate are never limited.
    #[serde(default = "default_max_refusals_per_peer")]
    pub max_refusals_per_peer: u32,
    #[serde(default = "default_refusal_window", deserialize_with = "de_duration")]
    pub refusal_window: Duration,
}

fn default_preface_timeout() -> Duration {
    mcp_security::conn::DEFAULT_PREFACE_TIMEOUT
}
/// Default `[server] max_connections_per_peer` (agent and master).
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;
fn default_max_connections_per_peer() -> usize {
    DEFAULT_MAX_CONNECTIONS_PER_PEER
}
fn default_max_refusals_per_peer() -> u32 {
    mcp_security::abuse::FailureLimits::default().max_failures
}
fn default_refusal_window() -> Duration {
    mcp_security::abuse::FailureLimits::default().window
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

pub use mcp_spec::NodeRole;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// DNS label; the agent's identity is `agent-<name>`.
    pub name: String,
    pub role: NodeRole,
    /// `host:port` the master uses to reach this agent.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// `host:port` (or `https://host:port`) of the master's gRPC server
    /// (where to register).
    pub address: String,
    /// How often the agent sends a heartbeat once registered.
    #[serde(
        default = "default_heartbeat_interval",
        deserialize_with = "de_duration"
    )]
    pub heartbeat_interval: Duration,
    /// The name the master's server certificate is verified against
    /// (whatever host `address` names); `None`: `auth.master_cert_name`.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(30)
}

/// `https://host:port` for an address written with or without the scheme.
pub fn https_url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("https://{address}")
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Ed25519 public key of the token issuer (PEM).
    pub issuer_public_key: PathBuf,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// Identity name of the master (allowed the fleet RPCs).
    #[serde(default = "default_master_identity")]
    pub master_identity: String,
    /// The name (DNS SAN or IP address) the master's client certificate
    /// must carry for master-class calls; `None`: `master_identity`.
    #[serde(default)]
    pub master_cert_name: Option<String>,
    /// Tokens whose lifetime (`exp - iat`) is longer are refused.
    #[serde(
        default = "default_max_token_lifetime",
        deserialize_with = "de_duration"
    )]
    pub max_token_lifetime: Duration,
    /// Clock skew allowed when checking `exp` and `nbf`.
    #[serde(default = "default_leeway", deserialize_with = "de_duration")]
    pub leeway: Duration,
    /// This agent's own bearer token (for Register / Heartbeat).
    pub token_file: PathBuf,
}

fn default_master_identity() -> String {
    "mcp-master".to_string()
}
fn default_max_token_lifetime() -> Duration {
    mcp_security::jwt::DEFAULT_MAX_TOKEN_LIFETIME
}
fn default_leeway() -> Duration {
    Duration::from_secs(mcp_security::jwt::DEFAULT_LEEWAY_SECS)
}

/// The largest `[auth] leeway` accepted (agent and master): a longer one
/// would keep expired tokens usable.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

impl AuthConfig {
    /// The name the master's certificate must carry: `master_cert_name`,
    /// else `master_identity`.
    pub fn master_cert_name(&self) -> &str {
        self.master_cert_name
            .as_deref()
            .unwrap_or(&self.master_identity)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodmanConfig {
    #[serde(default = "default_podman_binary")]
    pub binary: String,
    /// Arguments placed before every podman subcommand.
    #[serde(default)]
    pub global_args: Vec<String>,
    /// Extra environment for podman (e.g. `CONTAINERS_CONF`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Host paths a volume may mount besides the service's own
    /// `/srv/<service>/` (each allows itself and what is under it, by
    /// whole components; see `mcp_spec::volumes`). Empty: none.
    #[serde(default)]
    pub allowed_host_paths: Vec<String>,
}

fn default_podman_binary() -> String {
    "podman".to_string()
}

impl Default for PodmanConfig {
    fn default() -> Self {
        PodmanConfig {
            binary: default_podman_binary(),
            global_args: Vec::new(),
            env: BTreeMap::new(),
            allowed_host_paths: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsConfig {
    /// Inclusive `[first, last]` range of host ports handed to routes.
    #[serde(default = "default_port_range", deserialize_with = "de_port_range")]
    pub range: (u16, u16),
    /// Address containers publish their ports on; also the address the
    /// "is this port free on the host" bind test uses.
    #[serde(default = "default_bind_address")]
    pub bind_address: IpAddr,
}

fn default_port_range() -> (u16, u16) {
    DEFAULT_PORT_RANGE
}

fn default_bind_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

impl PortsConfig {
    /// The range as a [`crate::ports::PortRange`]; `None` if invalid (which
    /// [`Config::validate`] reports).
    pub fn port_range(&self) -> Option<crate::ports::PortRange> {
        crate::ports::PortRange::new(self.range.0, self.range.1)
    }

    /// The production "is this host port free" check on `bind_address`.
    pub fn probe(&self) -> crate::ports::BindProbe {
        crate::ports::BindProbe {
            addr: self.bind_address,
        }
    }
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            range: default_port_range(),
            bind_address: default_bind_address(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    /// This many transitions within `flap_window` = flapping.
    #[serde(default = "default_flap_threshold")]
    pub flap_threshold: u32,
    #[serde(default = "default_flap_window", deserialize_with = "de_duration")]
    pub flap_window: Duration,
}

/// The monitor's full comparison: a safety net, container events from
/// podman wake it at once.
fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_flap_threshold() -> u32 {
    3
}
fn default_flap_window() -> Duration {
    Duration::from_secs(5 * 60)
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: default_interval(),
            flap_threshold: default_flap_threshold(),
            flap_window: default_flap_window(),
        }
    }
}

/// `[health]`: how the agent probes `[components.health]` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How long a deploy waits for its checked components to turn healthy
    /// (and how long a started container may stay "starting").
    #[serde(default = "default_deploy_timeout", deserialize_with = "de_duration")]
    pub deploy_timeout: Duration,
    /// The probe interval while a component is starting (when shorter than
    /// its check's `interval`).
    #[serde(default = "default_start_interval", deserialize_with = "de_duration")]
    pub start_interval: Duration,
    /// A cap on every check's `interval` (none by default).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_interval: Option<Duration>,
}

/// 60 s.
pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

fn default_deploy_timeout() -> Duration {
    DEFAULT_DEPLOY_TIMEOUT
}
fn default_start_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            deploy_timeout: DEFAULT_DEPLOY_TIMEOUT,
            start_interval: default_start_interval(),
            max_interval: None,
        }
    }
}

/// How much event history the agent keeps. It prunes at start and after
/// every monitor round: events older than `max_age`, then the oldest beyond
/// `max_rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(default = "default_events_max_age", deserialize_with = "de_duration")]
    pub max_age: Duration,
    #[serde(default = "default_events_max_rows")]
    pub max_rows: u64,
}

/// 30 days.
pub const DEFAULT_EVENTS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_EVENTS_MAX_ROWS: u64 = 10_000;

fn default_events_max_age() -> Duration {
    DEFAULT_EVENTS_MAX_AGE
}
fn default_events_max_rows() -> u64 {
    DEFAULT_EVENTS_MAX_ROWS
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_age: DEFAULT_EVENTS_MAX_AGE,
            max_rows: DEFAULT_EVENTS_MAX_ROWS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// argv of the alert command, run without a shell; `None` = no alerts.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Minimum time between two alerts with the same key.
    #[serde(default = "default_cooldown", deserialize_with = "de_duration")]
    pub cooldown: Duration,
}

fn default_cooldown() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            command: None,
            cooldown: default_cooldown(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Parent of every `<service>/` data directory.
    #[serde(default = "default_files_root")]
    pub root: PathBuf,
    /// ImportServiceData: the most file content one import writes.
    #[serde(default = "default_max_import_bytes")]
    pub max_import_bytes: u64,
    /// ImportServiceData: the largest single file.
    #[serde(default = "default_max_import_file_bytes")]
    pub max_import_file_bytes: u64,
}

fn default_max_import_bytes() -> u64 {
    crate::data::DEFAULT_MAX_IMPORT_BYTES
}

fn default_max_import_file_bytes() -> u64 {
    crate::data::DEFAULT_MAX_IMPORT_FILE_BYTES
}

fn default_files_root() -> PathBuf {
    PathBuf::from("/srv")
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            root: default_files_root(),
            max_import_bytes: default_max_import_bytes(),
            max_import_file_bytes: default_max_import_file_bytes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSettings {
    /// Where `mcp-agent snapshot` writes; `None` = `snapshots/` beside the
    /// database (see [`Config::snapshot_dir`]).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// How many snapshots to keep (oldest deleted first).
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_keep() -> usize {
    7
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            dir: None,
            keep: default_keep(),
        }
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_port_range<'de, D: Deserializer<'de>>(d: D) -> Result<(u16, u16), D::Error> {
    let v = Vec::<u16>::deserialize(d)?;
    match v.as_slice() {
        [a, b] => Ok((*a, *b)),
        _ => Err(serde::de::Error::custom(format!(
            "expected [first, last], got {} values",
            v.len()
        ))),
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config: Config = read_toml(path)?;
        config.checked(path)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = parse_toml(text, path)?;
        config.checked(path)
    }

    /// The name the master's server certificate is verified against:
    /// `[master] server_name`, else `[auth] master_cert_name`, else
    /// `[auth] master_identity`.
    pub fn master_server_name(&self) -> &str {
        self.master
            .server_name
            .as_deref()
            .unwrap_or_else(|| self.auth.master_cert_name())
    }

    fn checked(self, path: &Path) -> Result<Config, ConfigError> {
        self.validate().map_err(|problems| ConfigError::Invalid {
            file: path.to_path_buf(),
            problems,
        })?;
        Ok(self)
    }

    /// Where the node's certificates and keys live: `certs.dir`, or
    /// `certs/` beside the database.
    pub fn cert_dir(&self) -> PathBuf {
        match self.certs.as_ref().and_then(|c| c.dir.clone()) {
            Some(d) => d,
            None => self.state_dir().join("certs"),
        }
    }

    /// The database's directory.
    pub fn state_dir(&self) -> PathBuf {
        self.database
            .path
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .to_path_buf()
    }

    /// Where the proxies listen: `proxy.address`, else the host of
    /// `node.address` when it is an IP address.
    pub fn proxy_address(&self) -> Option<IpAddr> {
        self.proxy
            .as_ref()
            .and_then(|p| p.address)
            .or_else(|| self.node.address.parse::<SocketAddr>().ok().map(|a| a.ip()))
    }

    /// Where snapshots of the agent database go: `snapshot.dir`, or
    /// `snapshots/` in the database's directory.
    pub fn snapshot_dir(&self) -> PathBuf {
        match &self.snapshot.dir {
            Some(d) => d.clone(),
            None => self
                .database
                .path
                .parent()
                .unwrap_or_else(|| Path::new("/"))
                .join("snapshots"),
        }
    }
}

mod net;
mod validate;

pub use net::{
    AcmeConfig, AcmeDnsConfig, CertsConfig, IssuerKind, L4Adapter, L4Config, L7Adapter, L7Config,
    ProxyConfig, TSIG_ALGORITHMS,
};

#[cfg(test)]
pub(crate) mod tests;
