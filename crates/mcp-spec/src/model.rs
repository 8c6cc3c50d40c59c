//! The validated service definition: what a `<name>.toml` file declares once
//! every rule of docs/SERVICE-FILES.md holds. Values of these types are always valid;
//! they are built by the loader (`crate::load`) or by conversions that
//! re-validate (e.g. from the protocol messages).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Placement class of a service.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Runs on the master node (identity, DNS, CA, registry...).
    Core,
    /// Runs on the least-loaded healthy worker (the default).
    #[default]
    Worker,
}

impl Tier {
    /// The file form: `"core"` or `"worker"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Core => "core",
            Tier::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's role in the fleet (docs/ARCHITECTURE.md). One definition, shared by the
/// planner, the master and the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Runs the master; hosts `core` tier services.
    Master,
    /// Hosts `worker` tier services.
    Worker,
    /// Hosts only edge routes; never application containers.
    Edge,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Worker => "worker",
            NodeRole::Edge => "edge",
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NodeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "master" => Ok(NodeRole::Master),
            "worker" => Ok(NodeRole::Worker),
            "edge" => Ok(NodeRole::Edge),
            other => Err(format!(
                "node role must be \"master\", \"worker\" or \"edge\", found {other:?}"
            )),
        }
    }
}

/// One service: the whole content of `<name>.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// DNS label, equal to the file stem.
    pub name: String,
    pub tier: Tier,
    /// Node pin; overrides the tier for placement.
    pub node: Option<String>,
    /// Desired: every component running (`true`) or stopped (`false`).
    pub active: bool,
    /// `rollback` (default `true`): when a redeploy's new spec never turns
    /// healthy, the agent brings the previous spec back.
    pub rollback: bool,
    pub snapshot: Option<SnapshotConfig>,
    /// At least one; names unique within the service.
    pub components: Vec<ComponentSpec>,
}

/// How the agent takes a consistent copy of `/srv/<service>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotConfig {
    pub method: SnapshotMethod,
    /// Relative paths under `/srv/<service>/` to skip.
    pub exclude: Vec<String>,
}

/// `[snapshot] method`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMethod {
    /// Only `*.toml`, `*.db`, `*.pem` (method omitted).
    Default,
    /// Call the service's `SnapshotService.Snapshot` RPC.
    Grpc,
    /// `podman exec <ctr> <service> snapshot`.
    Cli,
    /// `podman exec <ctr> <argv...>` (`method = "exec: <cmd>"`).
    Exec(Vec<String>),
    /// The whole directory.
    Full,
}

impl SnapshotMethod {
    /// The method as written in a service file (`"exec: a b"` for `Exec`).
    pub fn to_config_string(&self) -> String {
        match self {
            SnapshotMethod::Default => String::new(),
            SnapshotMethod::Grpc => "grpc".into(),
            SnapshotMethod::Cli => "cli".into(),
            SnapshotMethod::Full => "full".into(),
            SnapshotMethod::Exec(argv) => format!("exec: {}", join_argv(argv)),
        }
    }

    /// Parses the file form; `None` when it is not a known method.
    pub fn from_config_string(s: &str) -> Option<SnapshotMethod> {
        match s {
            "" => Some(SnapshotMethod::Default),
            "grpc" => Some(SnapshotMethod::Grpc),
            "cli" => Some(SnapshotMethod::Cli),
            "full" => Some(SnapshotMethod::Full),
            _ => {
                let rest = s.strip_prefix("exec:")?;
                let argv = split_argv(rest.trim())?;
                if argv.is_empty() {
                    None
                } else {
                    Some(SnapshotMethod::Exec(argv))
                }
            }
        }
    }
}

/// Splits a command line into argv with POSIX-shell-like quoting rules
/// (no expansion of any kind: no shell is ever involved).
pub fn split_argv(s: &str) -> Option<Vec<String>> {
    shlex::split(s)
}

/// Joins argv so that [`split_argv`] gives it back.
pub fn join_argv(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

/// One container of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// DNS label, unique within the service.
    pub name: String,
    /// Pinned image reference; the version is its tag.
    pub image: String,
    pub volumes: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub network: Option<String>,
    pub user: Option<String>,
    pub restart: Option<String>,
    pub routes: Vec<RouteSpec>,
    pub health: Option<HealthCheck>,
}

impl ComponentSpec {
    /// The version the image reference pins: its tag, `latest` when it has
    /// none, or the digest for `name@sha256:...` references.
    pub fn version(&self) -> String {
        image_version(&self.image)
    }
}

/// The version of an image reference (see [`ComponentSpec::version`]).
pub fn image_version(image: &str) -> String {
    if let Some((_, digest)) = image.split_once('@') {
        return digest.to_string();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_string(),
        _ => "latest".to_string(),
    }
}

/// How the node's reverse proxy handles a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    /// TLS passthrough.
    L4,
    /// TLS-terminating at the node's reverse proxy.
    L7,
}

impl RouteMode {
    /// The file form: `"l4"` or `"l7"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::L4 => "l4",
            RouteMode::L7 => "l7",
        }
    }
}

/// A port the component serves, exposed through the node's reverse proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// `None` for the unnamed route (`$PORT`); otherwise `$PORT_<NAME>`.
    pub name: Option<String>,
    /// Port on the node's reverse proxy.
    pub port: u16,
    /// `mode` in the file; `"l7"` when the key is left out (the loader's
    /// default, also for an empty `mode` in the protocol message).
    pub mode: RouteMode,
    /// `None` means `<service>.<internal_zone>`.
    pub hostname: Option<String>,
    /// Ask the master for an edge route (requires `hostname`).
    pub public: bool,
}

impl RouteSpec {
    /// The environment variable that carries this route's host port.
    pub fn port_env(&self) -> String {
        match &self.name {
            None => "PORT".to_string(),
            Some(n) => format!("PORT_{}", n.to_ascii_uppercase().replace('-', "_")),
        }
    }
}

/// What a health check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// A TCP connect to the route's port.
    Tcp,
    /// An HTTP GET of `path`; healthy on a 2xx status.
    Http,
    /// The standard `grpc.health.v1.Health/Check` RPC.
    Grpc,
}

impl HealthKind {
    /// The file form: `"tcp"`, `"http"` or `"grpc"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthKind::Tcp => "tcp",
            HealthKind::Http => "http",
            HealthKind::Grpc => "grpc",
        }
    }
}

/// `[components.health]`: used for health-gated deploys and boot stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub kind: HealthKind,
    /// Route whose port is probed; `None` means the first route.
    pub route: Option<String>,
    /// HTTP path (kind `http` only; default `/`).
    pub path: Option<String>,
    /// Per probe; `timeout` in the file, a humantime string (`"5s"`),
    /// default [`HealthCheck::DEFAULT_TIMEOUT`]. Whole milliseconds, > 0.
    pub timeout: Duration,
    /// Between probes; default [`HealthCheck::DEFAULT_INTERVAL`]. Whole
    /// milliseconds, > 0.
    pub interval: Duration,
    /// HTTP status a healthy answer has (kind `http` only); `None`: any 2xx.
    pub status: Option<u16>,
}

impl HealthCheck {
    /// `timeout` when the file leaves it out.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// `interval` when the file leaves it out.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
}

impl ServiceSpec {
    /// Container name of a component: `<service>-<component>`, or just
    /// `<service>` for a single-component service whose component carries the
    /// service's name.
    pub fn container_name(&self, component: &str) -> String {
        if self.components.len() == 1 && component == self.name {
            self.name.clone()
        } else {
            format!("{}-{}", self.name, component)
        }
    }

    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentSpec> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Routes of every component that ask for an edge route.
    pub fn public_routes(&self) -> impl Iterator<Item = (&ComponentSpec, &RouteSpec)> {
        self.components
            .iter()
            .flat_map(|c| c.routes.iter().map(move |r| (c, r)))
            .filter(|(_, r)| r.public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_versions() {
        let cases = [
            ("registry.example:8443/mcq:v0.4.0", "v0.4.0"),
            ("reg:8443/mcq:v0.4.0", "v0.4.0"),
            ("mcq:1.2", "1.2"),
            ("mcq", "latest"),
            ("reg:5000/x", "latest"),
            ("reg:5000/team/x", "latest"),
            ("reg:5000/team/x:edge", "edge"),
            ("x:", "latest"),
            ("reg/x@sha256:abcd", "sha256:abcd"),
            ("reg:5000/x:v1@sha256:abcd", "sha256:abcd"),
        ];
        for (image, want) in cases {
            assert_eq!(image_version(image), want, "{image}");
        }
    }

    #[test]
    fn container_names() {
        let comp = |name: &str| ComponentSpec {
            name: name.into(),
            image: "x".into(),
            volumes: vec![],
            cmd: vec![],
            env: vec![],
            network: None,
            user: None,
            restart: None,
            routes: vec![],
            health: None,
        };
        let mut spec = ServiceSpec {
            name: "mcq".into(),
            tier: Tier::Worker,
            node: None,
            active: true,
            rollback: true,
            snapshot: None,
            components: vec![comp("mcq")],
        };
        assert_eq!(spec.container_name("mcq"), "mcq");
        spec.components.push(comp("web"));
        assert_eq!(spec.container_name("mcq"), "mcq-mcq");
        assert_eq!(spec.container_name("web"), "mcq-web");
    }

    #[test]
    fn snapshot_methods_round_trip() {
        for m in [
            SnapshotMethod::Default,
            SnapshotMethod::Grpc,
            SnapshotMethod::Cli,
            SnapshotMethod::Full,
            SnapshotMethod::Exec(vec![
                "dump".into(),
                "a b".into(),
                "it's".into(),
                String::new(),
            ]),
        ] {
            assert_eq!(
                SnapshotMethod::from_config_string(&m.to_config_string()),
                Some(m)
            );
        }
        assert_eq!(SnapshotMethod::from_config_string("exec:"), None);
        assert_eq!(SnapshotMethod::from_config_string("rsync"), None);
    }

    #[test]
    fn port_env_names() {
        let route = |name: Option<&str>| RouteSpec {
            name: name.map(str::to_string),
            port: 1,
            mode: RouteMode::L7,
            hostname: None,
            public: false,
        };
        assert_eq!(route(None).port_env(), "PORT");
        assert_eq!(route(Some("rest")).port_env(), "PORT_REST");
        assert_eq!(route(Some("grpc-web")).port_env(), "PORT_GRPC_WEB");
    }
}
