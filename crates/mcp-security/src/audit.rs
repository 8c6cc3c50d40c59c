//! Audit records of authenticated RPCs.
//!
//! [`crate::layer::AuthLayer`] logs every call that passed authentication
//! with `tracing` at info (target `mcp::audit`): method, caller, caller
//! class, target, outcome (gRPC code), duration. A server may add the target
//! (service / node) from inside its handler with [`set_audit_target`], since
//! the layer cannot read request bodies. An [`AuditSink`] receives the same
//! record, e.g. for the master's audit table.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub time: SystemTime,
    /// gRPC path, `/mcp.v1.McpMasterService/Deploy`.
    pub method: String,
    /// Identity name.
    pub caller: String,
    /// Caller class (`operator`, `master`, `agent(orion)`, ...).
    pub class: String,
    /// What the call was about (`service=mcq node=orion`), if the handler
    /// said.
    pub target: Option<String>,
    /// gRPC code name: `Ok`, `PermissionDenied`, ... For streaming calls, the
    /// outcome when the response started.
    pub outcome: String,
    pub duration: Duration,
}

/// Receives audit events (besides the tracing log). Awaited on the request
/// path, after the handler: implementations must not block a thread (queue
/// to a bounded channel and write from a task; awaiting room in a full
/// channel is how a sink applies back-pressure without dropping events).
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, event: AuditEvent) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// An [`AuditSink`] that keeps events in memory (tests, `mcp dev`).
#[derive(Debug, Clone, Default)]
pub struct MemoryAuditSink {
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

impl MemoryAuditSink {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl AuditSink for MemoryAuditSink {
    fn record(&self, event: AuditEvent) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
        Box::pin(std::future::ready(()))
    }
}

/// A request extension the layer inserts; handlers fill it with
/// [`set_audit_target`].
#[derive(Clone, Default)]
pub struct AuditTarget(Arc<Mutex<Option<String>>>);

impl fmt::Debug for AuditTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AuditTarget").field(&self.get()).finish()
    }
}

impl AuditTarget {
    pub fn set(&self, target: impl Into<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(target.into());
    }
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Records what a call is about, for its audit line; a no-op when the
/// request did not come through [`crate::layer::AuthLayer`]. Call it early in
/// the handler, e.g. `set_audit_target(&req, format!("service={svc}"))`.
pub fn set_audit_target<T>(req: &tonic::Request<T>, target: impl Into<String>) {
    if let Some(t) = req.extensions().get::<AuditTarget>() {
        t.set(target);
    }
}

/// Formats a target from an optional service and node.
pub fn target(service: Option<&str>, node: Option<&str>) -> String {
    match (service, node) {
        (Some(s), Some(n)) => format!("service={s} node={n}"),
        (Some(s), None) => format!("service={s}"),
        (None, Some(n)) => format!("node={n}"),
        (None, None) => String::new(),
    }
}

/// Writes the tracing line for an event.
pub(crate) fn log(event: &AuditEvent) {
    tracing::info!(
        target: "mcp::audit",
        method = %event.method,
        caller = %event.caller,
        class = %event.class,
        target = event.target.as_deref().unwrap_or("-"),
        outcome = %event.outcome,
        duration_ms = event.duration.as_millis() as u64,
        "rpc"
    );
}
