//! Health checks (`[components.health]`): the probes — a TCP connect, an
//! HTTP/1.1 GET (healthy on the expected status, any 2xx by default) and
//! the standard `grpc.health.v1.Health/Check` (healthy when `SERVING`) —
//! made against the container's host port on loopback, never through the
//! proxy; and [`Tracker`], the pure verdict of one component's probes.
//!
//! A component starts `starting` each time its container (re)starts. One
//! passed probe makes it `healthy`. Failures while starting keep it
//! `starting` until the grace (`[health] deploy_timeout`) has passed, then
//! it is `unhealthy`; a healthy component turns `unhealthy` after
//! [`FAILURES_TO_UNHEALTHY`] failed probes in a row, and healthy again with
//! one passed probe. Probes speak plaintext (HTTP/1.1, gRPC over h2c): a
//! container that terminates TLS on its port is probed with `tcp`.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use mcp_spec::HealthKind;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Failed probes in a row that turn a healthy component unhealthy.
pub const FAILURES_TO_UNHEALTHY: u32 = 3;

/// How much of an HTTP answer's body a probe keeps for its output.
const BODY_EXCERPT: usize = 200;

/// A health check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthState {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One probe of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: HealthKind,
    pub addr: SocketAddr,
    /// HTTP path (kind `http`), `/` when the check names none.
    pub path: String,
    /// HTTP status of a healthy answer; `None`: any 2xx.
    pub status: Option<u16>,
    pub timeout: Duration,
}

/// What one probe found: passed or not, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub passed: bool,
    pub output: String,
}

impl ProbeResult {
    fn fail(output: impl Into<String>) -> ProbeResult {
        ProbeResult {
            passed: false,
            output: output.into(),
        }
    }
}

impl Probe {
    /// `http GET /healthz on 127.0.0.1:10001`, for messages.
    pub fn describe(&self) -> String {
        match self.kind {
            HealthKind::Tcp => format!("tcp connect to {}", self.addr),
            HealthKind::Http => format!("http GET {} on {}", self.path, self.addr),
            HealthKind::Grpc => format!("grpc health check on {}", self.addr),
        }
    }

    /// Runs the probe once, within its timeout.
    pub async fn run(&self) -> ProbeResult {
        match tokio::time::timeout(self.timeout, self.attempt()).await {
            Ok(r) => r,
            Err(_) => ProbeResult::fail(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            )),
        }
    }

    async fn attempt(&self) -> ProbeResult {
        match self.kind {
            HealthKind::Tcp => match TcpStream::connect(self.addr).await {
                Ok(_) => ProbeResult {
                    passed: true,
                    output: "connected".to_string(),
                },
                Err(e) => ProbeResult::fail(format!("connect: {e}")),
            },
            HealthKind::Http => self.http().await,
            HealthKind::Grpc => self.grpc().await,
        }
    }

    async fn http(&self) -> ProbeResult {
        let stream = match TcpStream::connect(self.addr).await {
            Ok(s) => s,
            Err(e) => return ProbeResult::fail(format!("connect: {e}")),
        };
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
            Ok(x) => x,
            Err(e) => return ProbeResult::fail(format!("http: {e}")),
        };
        let conn = tokio::spawn(conn);
        let req = hyper::Request::get(self.path.as_str())
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::USER_AGENT, "mcp-agent-health")
            .body(Empty::<Bytes>::new());
        let req = match req {
            Ok(r) => r,
            Err(e) => return ProbeResult::fail(format!("http request: {e}")),
        };
        let result = match sender.send_request(req).await {
            Err(e) => ProbeResult::fail(format!("http: {e}")),
            Ok(resp) => {
                let status = resp.status();
                let body = match resp.into_body().collect().await {
                    Ok(b) => excerpt(&b.to_bytes()),
                    Err(e) => format!("(body unreadable: {e})"),
                };
                let passed = match self.status {
                    Some(want) => status.as_u16() == want,
                    None => status.is_success(),
                };
                let mut output = format!("status {status}");
                if !passed {
                    match self.status {
                        Some(want) => output.push_str(&format!(" (expected {want})")),
                        None => output.push_str(" (expected 2xx)"),
                    }
                }
                if !body.is_empty() {
                    output.push_str(": ");
                    output.push_str(&body);
                }
                ProbeResult { passed, output }
            }
        };
        conn.abort();
        result
    }

    async fn grpc(&self) -> ProbeResult {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let endpoint =
            match tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr)) {
                Ok(e) => e.connect_timeout(self.timeout).timeout(self.timeout),
                Err(e) => return ProbeResult::fail(format!("grpc endpoint: {e}")),
            };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return ProbeResult::fail(format!("grpc connect: {}", error_chain(&e))),
        };
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        match answer {
            Ok(r) => {
                let status = r.into_inner().status();
                ProbeResult {
                    passed: status == ServingStatus::Serving,
                    output: format!("status {}", status.as_str_name()),
                }
            }
            Err(s) => ProbeResult::fail(format!("grpc {:?}: {}", s.code(), s.message())),
        }
    }
}

/// A transport error with its causes, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// The start of a body as one line of text.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]);
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line = line.trim().to_string();
    if body.len() > BODY_EXCERPT {
        line.push('…');
    }
    line
}

/// The verdict of one component's probes since its container started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    pub state: HealthState,
    /// The last probe's output (`""` before the first).
    pub detail: String,
    started: Instant,
    grace: Duration,
    failures: u32,
}

impl Tracker {
    /// A component whose container started at `started`: `starting` for
    /// at most `grace`.
    pub fn new(started: Instant, grace: Duration) -> Tracker {
        Tracker {
            state: HealthState::Starting,
            detail: String::new(),
            started,
            grace,
            failures: 0,
        }
    }

    /// Takes one probe's result, seen at `now`.
    pub fn record(&mut self, r: &ProbeResult, now: Instant) {
        self.detail.clone_from(&r.output);
        if r.passed {
            self.failures = 0;
            self.state = HealthState::Healthy;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        self.state = match self.state {
            HealthState::Starting if now.duration_since(self.started) < self.grace => {
                HealthState::Starting
            }
            HealthState::Healthy if self.failures < FAILURES_TO_UNHEALTHY => HealthState::Healthy,
            _ => HealthState::Unhealthy,
        };
    }

    /// The time between probes: the check's `interval` (capped by
    /// `max_interval`), shorter (`start_interval`) while starting.
    pub fn interval(
        &self,
        interval: Duration,
        start_interval: Duration,
        max_interval: Option<Duration>,
    ) -> Duration {
        let mut d = max_interval.map_or(interval, |m| interval.min(m));
        if self.state == HealthState::Starting {
            d = d.min(start_interval);
        }
        d
    }
}

#[cfg(test)]
mod tests;
