//! The values the master exchanges with an agent, independent of the wire
//! format: what [`super::AgentApi`] takes and returns. The mapping to and
//! from the protocol messages lives in `grpc` only.

use std::fmt;
use std::pin::Pin;
use std::time::SystemTime;

use tokio_stream::Stream;

use super::AgentError;

/// How one step of an agent call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    /// The step did something, and it worked.
    Done,
    /// Nothing to do, or not applicable (the detail says why).
    Skipped,
    /// The step failed; the error says how.
    Failed(String),
}

/// One step of an agent call (`create mcq-api`, `stop mcq-api`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStep {
    pub step: String,
    pub state: StepState,
    /// Free-form detail for the operator.
    pub detail: String,
}

impl AgentStep {
    pub fn done(step: impl Into<String>, detail: impl Into<String>) -> AgentStep {
        AgentStep {
            step: step.into(),
            state: StepState::Done,
            detail: detail.into(),
        }
    }

    pub fn skipped(step: impl Into<String>, detail: impl Into<String>) -> AgentStep {
        AgentStep {
            step: step.into(),
            state: StepState::Skipped,
            detail: detail.into(),
        }
    }

    pub fn failed(step: impl Into<String>, error: impl Into<String>) -> AgentStep {
        AgentStep {
            step: step.into(),
            state: StepState::Failed(error.into()),
            detail: String::new(),
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.state, StepState::Failed(_))
    }
}

/// The failed steps of a response, as one line; `None` when every step
/// succeeded or was skipped.
pub fn failed_steps(steps: &[AgentStep]) -> Option<String> {
    let failed: Vec<String> = steps
        .iter()
        .filter_map(|s| match &s.state {
            StepState::Failed(e) if e.is_empty() => Some(format!("{} failed", s.step)),
            StepState::Failed(e) => Some(format!("{}: {e}", s.step)),
            _ => None,
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

/// An agent's overall health (`HealthCheck`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthStatus {
    /// Every component desired running runs.
    Healthy,
    /// At least one component desired running does not.
    Degraded,
    /// A status this master does not know (a newer agent), verbatim.
    Other(String),
}

impl HealthStatus {
    pub fn parse(s: &str) -> HealthStatus {
        match s {
            "healthy" => HealthStatus::Healthy,
            "degraded" => HealthStatus::Degraded,
            other => HealthStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Other(s) => s,
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to `HealthCheck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub status: HealthStatus,
    /// Managed containers on the node.
    pub containers: u32,
}

/// Which log lines to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogsQuery {
    pub service: String,
    /// `None`: every component of the service, merged.
    pub component: Option<String>,
    pub follow: bool,
    /// Lines from the end; `None`: all.
    pub tail: Option<u32>,
    /// Lines since this time; `None`: no bound.
    pub since: Option<SystemTime>,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    Stdout,
    Stderr,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
        }
    }
}

/// One line of a component's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub component: String,
    pub line: String,
    pub source: LogSource,
}

/// A stream of log lines from an agent.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, AgentError>> + Send>>;

/// Which events to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventsQuery {
    /// `None`: every service.
    pub service: Option<String>,
    /// Only with `service`.
    pub component: Option<String>,
    /// Events at or after this time; `None`: no bound.
    pub since: Option<SystemTime>,
    /// The newest this many; `None`: the agent's default, 100.
    pub limit: Option<u32>,
}

/// One recorded event of an agent (a deploy, a stop, a state change...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub node: String,
    pub service: String,
    /// Empty for service-wide events (undeploy).
    pub component: String,
    /// `deploy`, `stop`, `start`, `restart`, `undeploy`, `state`, `drift`,
    /// `flapping`, ...
    pub kind: String,
    pub prev_state: Option<String>,
    pub new_state: Option<String>,
    pub time: SystemTime,
    /// What happened, for people ("stopped by request", ...).
    pub detail: String,
}

/// A file's content and permission bits (`PushFile` / `PullFile`).
#[derive(Clone, PartialEq, Eq)]
pub struct FileContent {
    pub content: Vec<u8>,
    /// Unix permission bits; 0 on push means 0644.
    pub mode: u32,
}

impl fmt::Debug for FileContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileContent")
            .field("bytes", &self.content.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// One message of a service-data export (`ExportServiceData`): a piece of
/// the tar.zst archive of `/srv/<service>/`, or the end, announcing the
/// SHA-256 (hex) and size of every piece before it.
#[derive(Clone, PartialEq, Eq)]
pub enum DataChunk {
    Data(Vec<u8>),
    End { sha256: String, size: u64 },
}

impl fmt::Debug for DataChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataChunk::Data(d) => write!(f, "Data({} bytes)", d.len()),
            DataChunk::End { sha256, size } => write!(f, "End({size} bytes, sha256 {sha256})"),
        }
    }
}

/// An agent's export stream. A stream that stops before
/// [`DataChunk::End`] is incomplete.
pub type DataStream = Pin<Box<dyn Stream<Item = Result<DataChunk, AgentError>> + Send>>;

/// What an import sends: the archive's pieces, then its expected SHA-256
/// (hex) and size, which the agent checks before extracting anything. A
/// piece that is `Err` (the sender could not read its copy) ends the
/// stream without the checksum, so the agent writes nothing.
pub struct ImportData {
    pub force: bool,
    pub sha256: String,
    pub size: u64,
    pub chunks: Pin<Box<dyn Stream<Item = Result<Vec<u8>, String>> + Send>>,
}

impl fmt::Debug for ImportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportData")
            .field("force", &self.force)
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What an import wrote (`ImportServiceDataResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Bytes of the files written under `/srv/<service>/`.
    pub bytes_written: u64,
    /// The SHA-256 (hex) of the archive received.
    pub sha256: String,
    /// Files and directories extracted.
    pub entries: u64,
}
