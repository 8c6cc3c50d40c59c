//! MCP node agent (docs/ARCHITECTURE.md).
//!
//! - [`agent`]: the daemon's core, [`Agent`]: deploy, undeploy, stop /
//!   start / restart, bulk status, adopt, logs, events, health, start-up
//!   convergence and the monitor round, generic over the container runtime.
//! - [`server`]: the `McpAgentService` gRPC server over [`Agent`], with TLS
//!   and the authentication / authorization / audit layer of
//!   `mcp-security` plugged in by [`serve`].
//! - [`config`]: `mcp-agent.toml`, parsed strictly and validated.
//! - [`registry`]: the SQLite registry (services, components, ports,
//!   events, alert cooldowns, edge routes, certificates) with versioned
//!   migrations.
//! - [`ports`]: host port allocation for routes, persisted in the registry.
//! - [`files`]: PushFile / PullFile confined to `<root>/<service>/`.
//! - [`data`]: the tar.zst archives of ExportServiceData /
//!   ImportServiceData (export with the snapshot selection and SQLite
//!   copies; import with every entry checked and an atomic swap).
//! - [`fuzzing`]: the body of the `import_archive` fuzz target.
//! - [`snapshot`]: `mcp-agent snapshot`, a `VACUUM INTO` backup with
//!   retention.
//! - [`monitor`]: the monitor's decisions as a pure function (state events,
//!   drift, flapping, alerts with cooldown).
//! - [`alert`]: running the alert command (argv, no shell).
//! - [`clock`]: the stored time representation (unix seconds).
//! - `testing` (feature `testing`, for other crates' tests): an agent over
//!   the fake runtime and its gRPC server on 127.0.0.1.
//!
//! Layering: `monitor` and `clock` do no I/O; `registry`, `ports` and
//! `snapshot` touch only the database file and the snapshot directory;
//! `alert` runs one configured program; `files` and `data` touch only the
//! files root; `agent` talks to podman only through `mcp_runtime`'s
//! `ContainerRuntime`; `server` is the only module that knows gRPC.

pub mod agent;
pub mod alert;
pub mod clock;
pub mod config;
pub mod data;
pub mod files;
pub mod fuzzing;
pub mod health;
pub mod monitor;
pub mod netsetup;
pub mod ports;
pub mod register;
pub mod registry;
pub mod server;
pub mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;

pub use agent::{
    Agent, AgentError, AgentSettings, ComponentStatus, DeployOutcome, Health, HealthStatus,
    Inventory, MonitorReport, Networking, ProxyCheck, RouteStatus, ServiceStatus, Step,
    StepOutcome, DEFAULT_RENEW_BEFORE, LABEL_CONFIG_HASH,
};
pub use alert::{AlertError, Alerter};
pub use clock::Timestamp;
pub use config::{Config, ConfigError, ConfigProblem, EventsConfig, NodeRole};
pub use monitor::{
    observe, Alert, Finding, FindingKind, MonitorInput, MonitorOutcome, MonitorPolicy,
    ObservedContainer, ObservedUpdate,
};
pub use ports::{BindProbe, PortAllocation, PortAssignment, PortProbe, PortRange};
pub use registry::{
    CertRecord, ComponentRecord, DesiredState, Event, EventKind, EventQuery, NewEvent,
    ObservedState, PrunedEvents, Registry, RegistryError, RouteRecord, ServiceRecord,
    UpsertOutcome,
};
pub use server::{serve, AgentService, SecurityOptions, ServeError, ServerSecurity};
pub use snapshot::{snapshot_database, SnapshotError, SnapshotFile, SnapshotOutcome};
