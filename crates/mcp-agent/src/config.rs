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
//!
//! [node]
//! name    = "orion"                   # DNS label; the identity is agent-<name>
//! role    = "worker"                  # "master" | "worker" | "edge"
//! address = "100.64.0.12:9444"        # advertised to the master (host:port)
//!
//! [master]
//! address = "mcp-master.internal.example:9443"   # where to register
//! heartbeat_interval = "30s"                     # default
//!
//! [auth]
//! issuer_public_key = "/etc/mcp/issuer.pub"      # Ed25519 key of the identity service
//! issuer            = "mcias"
//! audience          = "mcp"
//! master_identity   = "mcp-master"               # default
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
//! interval       = "10s"
//! flap_threshold = 3                  # transitions ...
//! flap_window    = "5m"               # ... within this window = flapping
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
//!
//! [snapshot]                          # optional section
//! dir  = "/var/lib/mcp/snapshots"     # default: "snapshots" beside the database
//! keep = 7
//! ```

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
    pub events: EventsConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub files: FilesConfig,
    #[serde(default)]
    pub snapshot: SnapshotSettings,
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
    /// This agent's own bearer token (for Register / Heartbeat).
    pub token_file: PathBuf,
}

fn default_master_identity() -> String {
    "mcp-master".to_string()
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

fn default_interval() -> Duration {
    Duration::from_secs(10)
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
}

fn default_files_root() -> PathBuf {
    PathBuf::from("/srv")
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            root: default_files_root(),
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

    fn checked(self, path: &Path) -> Result<Config, ConfigError> {
        self.validate().map_err(|problems| ConfigError::Invalid {
            file: path.to_path_buf(),
            problems,
        })?;
        Ok(self)
    }

    /// Checks the rules the types cannot express; returns every problem
    /// found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut p = Problems::default();

        let grpc = self.server.grpc_addr;
        if grpc.ip().is_unspecified() && !self.server.allow_all_interfaces {
            p.push(
                "server.grpc_addr",
                format!(
                    "{grpc} listens on all interfaces; use the node's overlay address \
                     (or set server.allow_all_interfaces = true)"
                ),
            );
        }
        if grpc.port() == 0 {
            p.push("server.grpc_addr", "port 0 is not a fixed port");
        }
        p.absolute("server.tls_cert", &self.server.tls_cert);
        p.absolute("server.tls_key", &self.server.tls_key);
        p.absolute("server.ca_cert", &self.server.ca_cert);

        if !mcp_spec::names::is_dns_label(&self.node.name) {
            p.push(
                "node.name",
                format!(
                    "{:?} is not a DNS label (lowercase letters, digits, '-')",
                    self.node.name
                ),
            );
        }
        p.host_port("node.address", &self.node.address);
        p.host_port("master.address", &self.master.address);

        p.absolute("auth.issuer_public_key", &self.auth.issuer_public_key);
        p.absolute("auth.token_file", &self.auth.token_file);
        p.non_empty("auth.issuer", &self.auth.issuer);
        p.non_empty("auth.audience", &self.auth.audience);
        p.non_empty("auth.master_identity", &self.auth.master_identity);

        p.absolute("database.path", &self.database.path);

        p.non_empty("podman.binary", &self.podman.binary);
        for key in self.podman.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                p.push("podman.env", format!("{key:?} is not a variable name"));
            }
        }

        let (first, last) = self.ports.range;
        if first == 0 || first > last {
            p.push(
                "ports.range",
                format!("[{first}, {last}] is not a range of ports (need 1 <= first <= last)"),
            );
        } else if first < 1024 {
            p.push(
                "ports.range",
                format!("[{first}, {last}] includes privileged ports (below 1024)"),
            );
        }

        if self.monitor.interval.is_zero() {
            p.push("monitor.interval", "must be greater than zero");
        }
        if self.monitor.flap_threshold < 2 {
            p.push(
                "monitor.flap_threshold",
                "must be at least 2 (one transition is not flapping)",
            );
        }
        if self.monitor.flap_window.is_zero() {
            p.push("monitor.flap_window", "must be greater than zero");
        }
        if self.events.max_age < self.monitor.flap_window {
            p.push(
                "events.max_age",
                format!(
                    "{} is shorter than monitor.flap_window ({}): flapping could not be seen",
                    humantime::format_duration(self.events.max_age),
                    humantime::format_duration(self.monitor.flap_window)
                ),
            );
        }
        if self.events.max_rows == 0 {
            p.push("events.max_rows", "must be at least 1");
        }

        if let Some(argv) = &self.alerts.command {
            match argv.first() {
                None => p.push(
                    "alerts.command",
                    "is empty; remove it to disable alerts, or give [program, args...]",
                ),
                Some(prog) if prog.is_empty() => {
                    p.push("alerts.command", "the program (first element) is empty")
                }
                Some(_) => {}
            }
        }

        for entry in &self.podman.allowed_host_paths {
            if let Err(msg) = mcp_spec::volumes::check_allowed_entry(entry) {
                p.push("podman.allowed_host_paths", msg);
            }
        }

        p.absolute("files.root", &self.files.root);
        if self.files.root.to_string_lossy().contains([':', ',']) {
            p.push(
                "files.root",
                "must not contain ':' or ',' (it becomes the host side of volumes)",
            );
        }
        if let Some(dir) = &self.snapshot.dir {
            p.absolute("snapshot.dir", dir);
        }
        if self.snapshot.keep == 0 {
            p.push("snapshot.keep", "must be at least 1");
        }

        if p.0.is_empty() {
            Ok(())
        } else {
            Err(p.0)
        }
    }

    /// Checks what [`Config::validate`] does not: that the files the agent
    /// will read exist (TLS material, issuer key, token) and that the
    /// directories it writes into exist. `check-config` runs it; loading
    /// does not (tests and tools parse configs of other machines).
    pub fn check_files(&self) -> Vec<ConfigProblem> {
        let mut p = Problems::default();
        for (field, path) in [
            ("server.tls_cert", &self.server.tls_cert),
            ("server.tls_key", &self.server.tls_key),
            ("server.ca_cert", &self.server.ca_cert),
            ("auth.issuer_public_key", &self.auth.issuer_public_key),
            ("auth.token_file", &self.auth.token_file),
        ] {
            match std::fs::metadata(path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => p.push(field, format!("{} is not a file", path.display())),
                Err(e) => p.push(field, format!("{}: {e}", path.display())),
            }
        }
        let db_dir = self
            .database
            .path
            .parent()
            .unwrap_or_else(|| Path::new("/"));
        if !db_dir.is_dir() {
            p.push(
                "database.path",
                format!("directory {} does not exist", db_dir.display()),
            );
        }
        if !self.files.root.is_dir() {
            p.push(
                "files.root",
                format!("directory {} does not exist", self.files.root.display()),
            );
        }
        p.0
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

#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }

    fn absolute(&mut self, field: &str, path: &Path) {
        if path.as_os_str().is_empty() {
            self.push(field, "is empty");
        } else if !path.is_absolute() {
            self.push(field, format!("{} is not an absolute path", path.display()));
        }
    }

    fn non_empty(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(field, "is empty");
        }
    }

    fn host_port(&mut self, field: &str, value: &str) {
        if value.parse::<SocketAddr>().is_ok() {
            return;
        }
        let ok = value.rsplit_once(':').is_some_and(|(host, port)| {
            mcp_spec::names::is_hostname(host) && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !ok {
            self.push(
                field,
                format!("{value:?} is not host:port (e.g. \"100.64.0.2:9444\")"),
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
