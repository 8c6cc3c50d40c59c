//! Plain data exchanged with a [`crate::ContainerRuntime`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio_stream::Stream;

use crate::error::{Result, RuntimeError};

/// Label carrying the service name on every managed container.
pub const LABEL_SERVICE: &str = "mcp.service";
/// Label carrying the component name on every managed container.
pub const LABEL_COMPONENT: &str = "mcp.component";
/// Label carrying the node name on every managed container.
pub const LABEL_NODE: &str = "mcp.node";

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A published port: `host_ip:host_port:container_port/protocol`.
///
/// The host address is always explicit: the agent binds to its configured
/// (overlay or loopback) address, never to all interfaces by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortBinding {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortBinding {
    /// A TCP binding.
    pub fn tcp(host_ip: IpAddr, host_port: u16, container_port: u16) -> Self {
        PortBinding {
            host_ip,
            host_port,
            container_port,
            protocol: Protocol::Tcp,
        }
    }
}

impl fmt::Display for PortBinding {
    /// The `podman --publish` form, e.g. `127.0.0.1:10001:8080/tcp` or
    /// `[::1]:10001:8080/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            IpAddr::V4(ip) => write!(f, "{ip}")?,
            IpAddr::V6(ip) => write!(f, "[{ip}]")?,
        }
        write!(
            f,
            ":{}:{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

/// Everything needed to create one container. The runtime's own plain type;
/// [`ContainerConfig::for_component`] fills it from a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Container name, e.g. `mcq-api` (see `ServiceSpec::container_name`).
    pub name: String,
    pub image: String,
    /// Written to the [`LABEL_SERVICE`] label.
    pub service: String,
    /// Written to the [`LABEL_COMPONENT`] label.
    pub component: String,
    /// Written to the [`LABEL_NODE`] label.
    pub node: String,
    /// Further labels; keys must not be the `mcp.*` labels above.
    pub labels: BTreeMap<String, String>,
    /// `KEY=VALUE` entries. An entry without `=` is rejected (podman would
    /// copy the variable from the agent's own environment).
    pub env: Vec<String>,
    /// `host:container[:options]` entries, passed to `--volume` unchanged.
    pub volumes: Vec<String>,
    /// Command and arguments; empty means the image's default.
    pub cmd: Vec<String>,
    pub user: Option<String>,
    pub network: Option<String>,
    /// Restart policy, e.g. `unless-stopped`; `None` means podman's default.
    pub restart: Option<String>,
    pub ports: Vec<PortBinding>,
}

impl ContainerConfig {
    /// A config with only the required fields set.
    pub fn new(
        name: impl Into<String>,
        image: impl Into<String>,
        service: impl Into<String>,
        component: impl Into<String>,
        node: impl Into<String>,
    ) -> Self {
        ContainerConfig {
            name: name.into(),
            image: image.into(),
            service: service.into(),
            component: component.into(),
            node: node.into(),
            labels: BTreeMap::new(),
            env: Vec::new(),
            volumes: Vec::new(),
            cmd: Vec::new(),
            user: None,
            network: None,
            restart: None,
            ports: Vec::new(),
        }
    }

    /// The config of one component of `service` on `node`. Ports and the
    /// `$PORT` variables are the agent's business (it allocates the host
    /// ports); add them to `ports` and `env`.
    pub fn for_component(
        service: &mcp_spec::ServiceSpec,
        component: &mcp_spec::ComponentSpec,
        node: &str,
    ) -> Self {
        ContainerConfig {
            name: service.container_name(&component.name),
            image: component.image.clone(),
            service: service.name.clone(),
            component: component.name.clone(),
            node: node.to_string(),
            labels: BTreeMap::new(),
            env: component.env.clone(),
            volumes: component.volumes.clone(),
            cmd: component.cmd.clone(),
            user: non_empty(&component.user),
            network: non_empty(&component.network),
            restart: non_empty(&component.restart),
            ports: Vec::new(),
        }
    }

    /// All labels the container gets: `labels` plus the three `mcp.*` ones.
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut all = self.labels.clone();
        all.insert(LABEL_SERVICE.to_string(), self.service.clone());
        all.insert(LABEL_COMPONENT.to_string(), self.component.clone());
        all.insert(LABEL_NODE.to_string(), self.node.clone());
        all
    }

    /// Checks what podman would misread or what would be unsafe; every
    /// runtime calls this before creating anything.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let invalid = |what, reason: String| RuntimeError::Invalid {
            target: self.name.clone(),
            what,
            reason,
        };
        validate_image(&self.image).map_err(|r| invalid("image", r))?;
        for (k, v) in &self.labels {
            if k.is_empty() || k.contains('=') || k.contains('\n') || v.contains('\n') {
                return Err(invalid("label", format!("{k:?}")));
            }
            if [LABEL_SERVICE, LABEL_COMPONENT, LABEL_NODE].contains(&k.as_str()) {
                return Err(invalid("label", format!("{k} is set by the runtime")));
            }
        }
        for (what, v) in [
            ("service", &self.service),
            ("component", &self.component),
            ("node", &self.node),
        ] {
            if v.is_empty() || v.contains('\n') {
                return Err(invalid(what, format!("{v:?}")));
            }
        }
        for e in &self.env {
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() && !k.contains('\n') => {}
                _ => return Err(invalid("env entry", format!("{e:?} (expected KEY=VALUE)"))),
            }
        }
        for v in &self.volumes {
            if v.is_empty() || v.starts_with('-') {
                return Err(invalid("volume", format!("{v:?}")));
            }
        }
        for (what, v) in [
            ("user", &self.user),
            ("network", &self.network),
            ("restart policy", &self.restart),
        ] {
            if let Some(v) = v {
                if v.is_empty() || v.starts_with('-') {
                    return Err(invalid(what, format!("{v:?}")));
                }
            }
        }
        Ok(())
    }
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).cloned()
}

/// Container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (podman's rule), at most
/// 253 bytes. Checked on every call so that a name can never be read as a
/// podman option.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = name.len() <= 253
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid {
            target: name.to_string(),
            what: "container name",
            reason: "expected [a-zA-Z0-9][a-zA-Z0-9_.-]*".to_string(),
        })
    }
}

/// Image references: the grammar every MCP component checks
/// ([`mcp_spec::image::check_reference`]; never starting with `-`, so never
/// read as a podman option).
pub(crate) fn validate_image(image: &str) -> std::result::Result<(), String> {
    mcp_spec::image::check_reference(image).map_err(|why| format!("{image:?}: {why}"))
}

pub(crate) fn check_image(image: &str) -> Result<()> {
    validate_image(image).map_err(|reason| RuntimeError::Invalid {
        target: image.to_string(),
        what: "image reference",
        reason,
    })
}

/// State of a container as podman reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created (or `configured`), never started.
    Created,
    Running,
    Paused,
    Restarting,
    /// Stopped and cleaned up; see [`ContainerInfo::exit_code`].
    Exited,
    /// Stopped but not yet cleaned up by podman.
    Stopped,
    Removing,
    Dead,
    /// Anything else podman may report.
    Other(String),
}

impl ContainerState {
    pub fn as_str(&self) -> &str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
            ContainerState::Stopped => "stopped",
            ContainerState::Removing => "removing",
            ContainerState::Dead => "dead",
            ContainerState::Other(s) => s,
        }
    }

    /// Exited, stopped or dead: the process has finished.
    pub fn has_finished(&self) -> bool {
        matches!(
            self,
            ContainerState::Exited | ContainerState::Stopped | ContainerState::Dead
        )
    }
}

impl FromStr for ContainerState {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "created" | "configured" | "initialized" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "exited" => ContainerState::Exited,
            "stopped" | "stopping" => ContainerState::Stopped,
            "removing" => ContainerState::Removing,
            "dead" => ContainerState::Dead,
            other => ContainerState::Other(other.to_string()),
        })
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime knows about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    pub id: String,
    /// The image reference the container was created from.
    pub image: String,
    pub image_id: String,
    pub state: ContainerState,
    /// Set once the container has finished ([`ContainerState::has_finished`]).
    pub exit_code: Option<i32>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub restart_count: u32,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortBinding>,
}

impl ContainerInfo {
    pub fn is_running(&self) -> bool {
        self.state == ContainerState::Running
    }

    /// The [`LABEL_SERVICE`] label.
    pub fn service(&self) -> Option<&str> {
        self.labels.get(LABEL_SERVICE).map(String::as_str)
    }

    /// The [`LABEL_COMPONENT`] label.
    pub fn component(&self) -> Option<&str> {
        self.labels.get(LABEL_COMPONENT).map(String::as_str)
    }

    /// The [`LABEL_NODE`] label.
    pub fn node(&self) -> Option<&str> {
        self.labels.get(LABEL_NODE).map(String::as_str)
    }

    /// Carries the mcp labels, i.e. was created by an agent.
    pub fn is_managed(&self) -> bool {
        self.service().is_some()
    }

    /// The image version (its tag; see [`mcp_spec::image_version`]).
    pub fn version(&self) -> String {
        mcp_spec::image_version(&self.image)
    }
}

/// Result of [`crate::ContainerRuntime::pull`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullOutcome {
    /// A pinned reference was already present locally; nothing was fetched.
    AlreadyPresent,
    /// Fetched from the registry.
    Pulled,
}

/// Output of [`crate::ContainerRuntime::exec`]. A non-zero `exit_code` is
/// the command's own failure, not a runtime error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Which stream of the container a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    Stdout,
    Stderr,
}

/// One line of container output (without the newline). Order is kept
/// within one source; stdout and stderr lines may interleave differently
/// than they were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub source: LogSource,
    pub line: String,
}

/// What [`crate::ContainerRuntime::logs`] should return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines until the container stops or the stream is
    /// dropped.
    pub follow: bool,
    /// Only the last `n` lines already written; `None` means all.
    pub tail: Option<usize>,
    /// Only lines written at or after this time (podman `--since`, whole
    /// seconds); `None` means from the start. Applied before `tail`.
    pub since: Option<SystemTime>,
}

/// Stream of log lines. Dropping it stops the underlying `podman logs`.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine>> + Send + 'static>>;

/// A container event as podman reports it (`podman events`): something
/// happened to the container `name` — `create`, `start`, `died`, `stop`,
/// `remove`, ... (`status`, passed through as podman names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub name: String,
    pub status: String,
    /// The container's labels (podman's `Attributes`, which also carry
    /// the image's labels).
    pub labels: BTreeMap<String, String>,
}

impl ContainerEvent {
    /// The `mcp.service` label.
    pub fn service(&self) -> Option<&str> {
        self.labels.get(LABEL_SERVICE).map(String::as_str)
    }
}

/// Stream of container events, from now on. It ends when the runtime's
/// event source does (podman restarted, say): follow it again then.
/// Dropping it stops the underlying `podman events`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEvent>> + Send + 'static>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_binding_renders_for_publish() {
        let v4 = PortBinding::tcp("127.0.0.1".parse().expect("ip"), 10001, 8080);
        assert_eq!(v4.to_string(), "127.0.0.1:10001:8080/tcp");
        let v6 = PortBinding {
            protocol: Protocol::Udp,
            ..PortBinding::tcp("::1".parse().expect("ip"), 53, 5353)
        };
        assert_eq!(v6.to_string(), "[::1]:53:5353/udp");
    }

    #[test]
    fn validation_rejects_option_like_and_env_leaks() {
        let ok = ContainerConfig::new("mcq-api", "r.example/mcq:v1", "mcq", "api", "n1");
        ok.validate().expect("valid");
        for name in ["", "-x", "a b", "--rm", "é"] {
            let c = ContainerConfig {
                name: name.to_string(),
                ..ok.clone()
            };
            assert!(c.validate().is_err(), "{name:?}");
        }
        let c = ContainerConfig {
            env: vec!["HOME".to_string()],
            ..ok.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(RuntimeError::Invalid {
                what: "env entry",
                ..
            })
        ));
        let c = ContainerConfig {
            image: "--privileged".to_string(),
            ..ok.clone()
        };
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.labels.insert(LABEL_NODE.to_string(), "x".to_string());
        assert!(c.validate().is_err());
    }

    #[test]
    fn states_parse() {
        assert_eq!("configured".parse(), Ok(ContainerState::Created));
        assert_eq!("Exited".parse(), Ok(ContainerState::Exited));
        assert_eq!(
            "weird".parse(),
            Ok(ContainerState::Other("weird".to_string()))
        );
    }
}
