//! The agent's configuration file (`mcp-agent.toml`).
//!
//! Unknown keys are errors (a typo must not silently fall back to a default).
//! Durations are humantime strings (`"10s"`, `"5m"`, `"1h 30m"`). Every path
//! must be absolute: the agent runs from a service manager whose working
//! directory means nothing.
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
//! [alerts]                            # optional section; no command = no alerts
//! command  = ["/usr/local/bin/notify", "--channel", "ops"]
//! cooldown = "15m"
//!
//! [files]                             # optional section
//! root = "/srv"                       # PushFile / PullFile and service data
//!
//! [snapshot]                          # optional section
//! dir  = "/var/lib/mcp/snapshots"     # default: "snapshots" beside the database
//! keep = 7
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// One thing wrong with a configuration: the field (`section.key`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, unknown key, wrong type (the message has line and column).
    #[error("invalid config {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// Parsed, but values break the rules of [`Config::validate`].
    #[error("invalid config {}:\n{}", path.display(), format_problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

fn format_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate().map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })?;
        Ok(config)
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

        p.absolute("files.root", &self.files.root);
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
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            field: field.to_string(),
            message: message.into(),
        });
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
pub(crate) mod tests {
    use super::*;

    pub(crate) const MINIMAL: &str = r#"
[server]
grpc_addr = "100.64.0.12:9444"
tls_cert = "/etc/mcp/agent.crt"
tls_key = "/etc/mcp/agent.key"
ca_cert = "/etc/mcp/ca.pem"

[node]
name = "orion"
role = "worker"
address = "100.64.0.12:9444"

[master]
address = "master.internal.example:9443"

[auth]
issuer_public_key = "/etc/mcp/issuer.pub"
issuer = "mcias"
audience = "mcp"
token_file = "/etc/mcp/agent.token"

[database]
path = "/var/lib/mcp/agent.db"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("/etc/mcp/mcp-agent.toml"))
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(e) => panic!("expected validation problems, got {e}"),
            Ok(_) => panic!("expected validation problems, config was accepted"),
        }
    }

    /// `MINIMAL` with the `key = value` lines of `lines` set in `section`
    /// (replacing keys that exist, adding the section if missing).
    fn with(section: &str, lines: &str) -> String {
        let mut doc: toml::Table = toml::from_str(MINIMAL).expect("MINIMAL parses");
        let overrides: toml::Table = toml::from_str(lines).expect("override lines parse");
        let entry = doc
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let table = entry.as_table_mut().expect("section is a table");
        table.extend(overrides);
        toml::to_string(&doc).expect("renders")
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).expect("minimal config");
        assert_eq!(c.node.role, NodeRole::Worker);
        assert_eq!(c.auth.master_identity, "mcp-master");
        assert_eq!(c.podman.binary, "podman");
        assert_eq!(c.ports.range, (10000, 60000));
        assert_eq!(c.ports.bind_address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.monitor.interval, Duration::from_secs(10));
        assert_eq!(c.monitor.flap_threshold, 3);
        assert_eq!(c.monitor.flap_window, Duration::from_secs(300));
        assert_eq!(c.alerts.command, None);
        assert_eq!(c.alerts.cooldown, Duration::from_secs(900));
        assert_eq!(c.files.root, PathBuf::from("/srv"));
        assert_eq!(c.snapshot.keep, 7);
        assert_eq!(c.snapshot_dir(), PathBuf::from("/var/lib/mcp/snapshots"));
    }

    #[test]
    fn module_doc_example_parses() {
        // The example in this module's documentation, verbatim.
        let src = include_str!("config.rs");
        let example: String = src
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| {
                l.strip_prefix("//! ")
                    .unwrap_or(l.trim_start_matches("//!"))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&example).expect("documented example");
        assert_eq!(
            c.alerts.command.as_deref(),
            Some(
                &[
                    "/usr/local/bin/notify".to_string(),
                    "--channel".into(),
                    "ops".into()
                ][..]
            )
        );
        assert_eq!(
            c.podman.env.get("CONTAINERS_CONF").map(String::as_str),
            Some("/etc/mcp/containers.conf")
        );
        assert_eq!(c.snapshot_dir(), PathBuf::from("/var/lib/mcp/snapshots"));
    }

    #[test]
    fn overrides_parse() {
        let c = parse(&with(
            "monitor",
            "interval = \"1m 30s\"\nflap_window = \"1h\"\nflap_threshold = 5",
        ))
        .expect("config");
        assert_eq!(c.monitor.interval, Duration::from_secs(90));
        assert_eq!(c.monitor.flap_window, Duration::from_secs(3600));
        assert_eq!(c.monitor.flap_threshold, 5);
    }

    #[test]
    fn parse_errors_name_file_and_problem() {
        let cases: &[(&str, &str)] = &[
            // (config text, expected fragment of the error)
            (
                "[server]\ngrpc_adr = \"1.2.3.4:1\"",
                "unknown field `grpc_adr`",
            ),
            (&with("node", "role = \"boss\""), "unknown variant `boss`"),
            (
                &with("monitor", "interval = \"10 parsecs\""),
                "invalid duration",
            ),
            (
                &with("ports", "range = [1, 2, 3]"),
                "expected [first, last]",
            ),
            (&with("ports", "range = [10000, 70000]"), "70000"),
            (&with("server", "grpc_addr = \"nonsense\""), "grpc_addr"),
            (&with("bogus", "x = 1"), "unknown field `bogus`"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.contains("/etc/mcp/mcp-agent.toml"),
                "error does not name the file: {err}"
            );
            assert!(err.contains(want), "error {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn validation_rules() {
        let cases: &[(&str, &str, &str)] = &[
            // (section, override lines, expected problem fragment)
            (
                "server",
                "grpc_addr = \"0.0.0.0:9444\"",
                "server.grpc_addr: 0.0.0.0:9444 listens on all interfaces",
            ),
            (
                "server",
                "grpc_addr = \"[::]:9444\"",
                "server.grpc_addr: [::]:9444 listens on all interfaces",
            ),
            (
                "server",
                "grpc_addr = \"100.64.0.1:0\"",
                "server.grpc_addr: port 0",
            ),
            (
                "server",
                "tls_key = \"agent.key\"",
                "server.tls_key: agent.key is not an absolute path",
            ),
            (
                "node",
                "name = \"Orion\"",
                "node.name: \"Orion\" is not a DNS label",
            ),
            (
                "node",
                "address = \"100.64.0.12\"",
                "node.address: \"100.64.0.12\" is not host:port",
            ),
            ("master", "address = \"master:0\"", "master.address"),
            ("auth", "issuer = \"\"", "auth.issuer: is empty"),
            (
                "auth",
                "token_file = \"token\"",
                "auth.token_file: token is not an absolute path",
            ),
            (
                "database",
                "path = \"agent.db\"",
                "database.path: agent.db is not an absolute path",
            ),
            (
                "ports",
                "range = [20000, 10000]",
                "ports.range: [20000, 10000] is not a range",
            ),
            (
                "ports",
                "range = [0, 100]",
                "ports.range: [0, 100] is not a range",
            ),
            ("ports", "range = [80, 2000]", "privileged"),
            (
                "monitor",
                "interval = \"0s\"",
                "monitor.interval: must be greater than zero",
            ),
            (
                "monitor",
                "flap_threshold = 1",
                "monitor.flap_threshold: must be at least 2",
            ),
            ("alerts", "command = []", "alerts.command: is empty"),
            (
                "alerts",
                "command = [\"\", \"x\"]",
                "alerts.command: the program",
            ),
            (
                "files",
                "root = \"srv\"",
                "files.root: srv is not an absolute path",
            ),
            ("snapshot", "keep = 0", "snapshot.keep: must be at least 1"),
            (
                "snapshot",
                "dir = \"snaps\"",
                "snapshot.dir: snaps is not an absolute path",
            ),
            ("podman", "env = { \"A=B\" = \"x\" }", "podman.env"),
        ];
        for (section, lines, want) in cases {
            let text = with(section, lines);
            let got = problems(&text);
            assert!(
                got.iter().any(|p| p.contains(want)),
                "[{section}] {lines}: problems {got:?} lack {want:?}"
            );
            assert_eq!(got.len(), 1, "[{section}] {lines}: {got:?}");
        }
    }

    #[test]
    fn all_interfaces_allowed_explicitly() {
        let c = parse(&with(
            "server",
            "grpc_addr = \"0.0.0.0:9444\"\nallow_all_interfaces = true",
        ))
        .expect("explicit opt-in");
        assert!(c.server.grpc_addr.ip().is_unspecified());
    }

    #[test]
    fn every_problem_is_reported() {
        let text = with("ports", "range = [5, 1]")
            .replace("path = \"/var/lib/mcp/agent.db\"", "path = \"rel.db\"");
        let got = problems(&text);
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn check_files_names_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let text = MINIMAL.replace("/etc/mcp", &d).replace("/var/lib/mcp", &d)
            + &format!("[files]\nroot = \"{d}\"\n");
        let c = parse(&text).expect("config");
        let fields =
            |c: &Config| -> Vec<String> { c.check_files().into_iter().map(|p| p.field).collect() };
        assert_eq!(
            fields(&c),
            vec![
                "server.tls_cert",
                "server.tls_key",
                "server.ca_cert",
                "auth.issuer_public_key",
                "auth.token_file"
            ]
        );
        for f in [
            "agent.crt",
            "agent.key",
            "ca.pem",
            "issuer.pub",
            "agent.token",
        ] {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        assert!(fields(&c).is_empty(), "{:?}", c.check_files());
        let gone = parse(&text.replace(&format!("root = \"{d}\""), "root = \"/nonexistent-srv\""))
            .expect("config");
        assert_eq!(
            gone.check_files()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["files.root: directory /nonexistent-srv does not exist".to_string()]
        );
    }

    #[test]
    fn load_reports_missing_file() {
        let err = Config::load(Path::new("/nonexistent/mcp-agent.toml"))
            .expect_err("missing file")
            .to_string();
        assert!(err.starts_with("cannot read config /nonexistent/mcp-agent.toml"));
    }
}
