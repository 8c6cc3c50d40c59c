//! The agent's side of registration (docs/ARCHITECTURE.md): `Register` with the
//! master on start, retried with exponential back-off (1 s → 60 s by
//! default), then a `Heartbeat` every interval with CPU, memory and disk use
//! and the container count; when the master no longer knows the node
//! (`NotFound`, or a heartbeat not acknowledged) the agent registers again.
//!
//! The master is reached through [`MasterLink`], implemented for the
//! generated `McpMasterServiceClient` (any tonic transport, e.g. a TLS
//! channel with the agent's `BearerInterceptor`) and by test fakes.
//!
//! ```ignore
//! let channel = mcp_security::tls::connect_channel(&master_url, connector).await?;
//! let client = with_message_limits(McpMasterServiceClient::with_interceptor(
//!     channel,
//!     BearerInterceptor::new(&token)?,
//! ));
//! let cfg = RegistrationConfig::new("orion", "worker", "https://100.64.0.2:9444", Duration::from_secs(30));
//! tokio::spawn(run_registration(client, cfg, move || registry_container_count(), shutdown));
//! ```
//!
//! Resource figures are best effort: CPU is the 1-minute load average in
//! millicores (`/proc/loadavg` × 1000), memory is `MemTotal - MemAvailable`
//! (`/proc/meminfo`), disk is the used space of the filesystem holding
//! [`RegistrationConfig::disk_path`] (statvfs). Anything unreadable is 0.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_proto::pb;
use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;

/// `client` with the message limits every MCP hop shares
/// ([`mcp_proto::MAX_MESSAGE_BYTES`], decoding and encoding).
pub fn with_message_limits<T>(client: McpMasterServiceClient<T>) -> McpMasterServiceClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    client
        .max_decoding_message_size(mcp_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(mcp_proto::MAX_MESSAGE_BYTES)
}

/// The two master RPCs registration needs.
pub trait MasterLink: Send {
    fn register(
        &mut self,
        req: pb::RegisterRequest,
    ) -> impl Future<Output = Result<pb::RegisterResponse, tonic::Status>> + Send;
    fn heartbeat(
        &mut self,
        req: pb::HeartbeatRequest,
    ) -> impl Future<Output = Result<pb::HeartbeatResponse, tonic::Status>> + Send;
    fn report_changes(
        &mut self,
        req: pb::ReportChangesRequest,
    ) -> impl Future<Output = Result<pb::ReportChangesResponse, tonic::Status>> + Send;
}

impl<T> MasterLink for McpMasterServiceClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send,
    T::Future: Send,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    async fn register(
        &mut self,
        req: pb::RegisterRequest,
    ) -> Result<pb::RegisterResponse, tonic::Status> {
        McpMasterServiceClient::register(self, req)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn heartbeat(
        &mut self,
        req: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, tonic::Status> {
        McpMasterServiceClient::heartbeat(self, req)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn report_changes(
        &mut self,
        req: pb::ReportChangesRequest,
    ) -> Result<pb::ReportChangesResponse, tonic::Status> {
        McpMasterServiceClient::report_changes(self, req)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// How long the reporter gathers names after the first before it calls.
const REPORT_BATCH: Duration = Duration::from_millis(50);

/// Tells the master, as they come, which services' containers changed
/// state (`ReportChanges`; names from [`crate::Agent::with_change_sink`]),
/// a batch per call, until `shutdown`. A failed call is logged and
/// dropped: the master's periodic pass catches up.
pub async fn run_change_reports<L: MasterLink>(
    mut link: L,
    node: String,
    mut changes: tokio::sync::mpsc::Receiver<String>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        let first = tokio::select! {
            () = &mut shutdown => return,
            c = changes.recv() => match c {
                Some(c) => c,
                None => return,
            },
        };
        tokio::time::sleep(REPORT_BATCH).await;
        let mut services = std::collections::BTreeSet::from([first]);
        while let Ok(c) = changes.try_recv() {
            services.insert(c);
        }
        let req = pb::ReportChangesRequest {
            name: node.clone(),
            services: services.into_iter().collect(),
        };
        if let Err(e) = link.report_changes(req).await {
            tracing::warn!(code = ?e.code(), error = e.message(), "cannot tell the master about container changes; its next pass will see them");
        }
    }
}

/// What the agent says about itself, and the timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// The node name; must match the agent's identity (`agent-<name>`).
    pub name: String,
    /// `master` | `worker` | `edge`.
    pub role: String,
    /// The agent's own gRPC address as the master should dial it
    /// (`https://100.64.0.2:9444`).
    pub address: String,
    /// `amd64`, `arm64`, ...
    pub arch: String,
    pub heartbeat_interval: Duration,
    /// First retry delay of `Register`, doubled per failure...
    pub backoff_initial: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
    /// Disk use is reported for the filesystem holding this path.
    pub disk_path: PathBuf,
}

impl RegistrationConfig {
    /// Defaults: this machine's architecture, back-off 1 s → 60 s, disk `/`.
    pub fn new(name: &str, role: &str, address: &str, heartbeat_interval: Duration) -> Self {
        Self {
            name: name.to_string(),
            role: role.to_string(),
            address: address.to_string(),
            arch: arch().to_string(),
            heartbeat_interval,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            disk_path: PathBuf::from("/"),
        }
    }
}

/// The architecture in the names container registries use.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Load figures sent with each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

/// Reads the node's load figures (best effort; unreadable figures are 0).
pub fn read_resources(disk_path: &Path) -> Resources {
    Resources {
        cpu_millicores: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| parse_loadavg(&s))
            .unwrap_or(0),
        memory_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_meminfo(&s))
            .unwrap_or(0),
        disk_bytes: rustix::fs::statvfs(disk_path)
            .map(|s| {
                s.f_blocks
                    .saturating_sub(s.f_bfree)
                    .saturating_mul(s.f_frsize)
            })
            .unwrap_or(0),
    }
}

/// The 1-minute load average in millicores.
pub fn parse_loadavg(text: &str) -> Option<u64> {
    let first: f64 = text.split_whitespace().next()?.parse().ok()?;
    if !first.is_finite() || first < 0.0 {
        return None;
    }
    // Saturating float-to-int conversion.
    Some((first * 1000.0).round() as u64)
}

/// `MemTotal - MemAvailable`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let field = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let kb: u64 = line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kb.checked_mul(1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some(total.saturating_sub(available))
}

/// Registers, then heartbeats until `shutdown` resolves; registers again
/// whenever the master does not know the node. `containers` is asked for
/// the current container count before each heartbeat.
pub async fn run_registration<L, C>(
    mut link: L,
    cfg: RegistrationConfig,
    containers: C,
    shutdown: impl Future<Output = ()> + Send,
) where
    L: MasterLink,
    C: Fn() -> u32 + Send,
{
    tokio::pin!(shutdown);
    let register = pb::RegisterRequest {
        name: cfg.name.clone(),
        role: cfg.role.clone(),
        address: cfg.address.clone(),
        arch: cfg.arch.clone(),
    };
    'register: loop {
        let mut delay = cfg.backoff_initial;
        loop {
            match link.register(register.clone()).await {
                Ok(r) if r.accepted => {
                    tracing::info!(node = %cfg.name, "registered with the master");
                    break;
                }
                Ok(_) => {
                    tracing::warn!(node = %cfg.name, retry_in = ?delay, "master did not accept the registration")
                }
                Err(e) => tracing::warn!(
                    node = %cfg.name,
                    code = ?e.code(),
                    error = e.message(),
                    retry_in = ?delay,
                    "registration failed"
                ),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(cfg.backoff_max);
        }
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(cfg.heartbeat_interval) => {}
            }
            let r = read_resources(&cfg.disk_path);
            let hb = pb::HeartbeatRequest {
                name: cfg.name.clone(),
                cpu_millicores: r.cpu_millicores,
                memory_bytes: r.memory_bytes,
                disk_bytes: r.disk_bytes,
                containers: containers(),
            };
            match link.heartbeat(hb).await {
                Ok(r) if r.acknowledged => {}
                Ok(_) => {
                    tracing::warn!(node = %cfg.name, "heartbeat not acknowledged; registering again");
                    continue 'register;
                }
                Err(e) if e.code() == tonic::Code::NotFound => {
                    tracing::warn!(node = %cfg.name, error = e.message(), "the master does not know this node; registering again");
                    continue 'register;
                }
                Err(e) => tracing::warn!(
                    node = %cfg.name,
                    code = ?e.code(),
                    error = e.message(),
                    "heartbeat failed"
                ),
            }
        }
    }
}
