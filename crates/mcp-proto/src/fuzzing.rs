//! The bodies of the cargo-fuzz targets for the request messages, run by the
//! workspace's fuzz crate (`crates/mcp-security/fuzz`) and, over the
//! committed corpora, by `crates/mcp-security/tests/fuzz_corpus.rs` on
//! stable: both run the same code. Each function takes arbitrary bytes and
//! panics only when a property is broken.
//!
//! An input is one selector byte, the index of a request message in
//! [`AGENT_REQUESTS`] or [`MASTER_REQUESTS`] (an index past the end is
//! ignored), then the message's bytes as a server receives them after the
//! gRPC framing: what tonic hands to prost. Both lists are append-only, so
//! the committed corpora keep their meaning.

use std::fmt::Debug;

use mcp_spec::{LoadOptions, ServiceSpec};
use prost::Message;

use crate::pb;

/// The names of the fuzz targets, as in `crates/mcp-security/fuzz/Cargo.toml`
/// and its `corpus/<name>/`.
pub const TARGETS: &[&str] = &["agent_requests", "master_requests"];

/// Runs the target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "agent_requests" => agent_requests(data),
        "master_requests" => master_requests(data),
        _ => return false,
    }
    true
}

/// One request message: its full protobuf name and the body that decodes
/// and checks it.
pub type Decoder = (&'static str, fn(&[u8]));

/// Every message `McpAgentService` accepts (append only).
pub const AGENT_REQUESTS: &[Decoder] = &[
    ("mcp.v1.AgentDeployRequest", |d| {
        if let Some(m) = decoded::<pb::AgentDeployRequest>(d) {
            spec(m.service);
        }
    }),
    (
        "mcp.v1.AgentUndeployRequest",
        plain::<pb::AgentUndeployRequest>,
    ),
    (
        "mcp.v1.AgentLifecycleRequest",
        plain::<pb::AgentLifecycleRequest>,
    ),
    (
        "mcp.v1.ListServicesRequest",
        plain::<pb::ListServicesRequest>,
    ),
    ("mcp.v1.AdoptRequest", plain::<pb::AdoptRequest>),
    ("mcp.v1.LogsRequest", plain::<pb::LogsRequest>),
    ("mcp.v1.EventsRequest", plain::<pb::EventsRequest>),
    ("mcp.v1.PushFileRequest", plain::<pb::PushFileRequest>),
    ("mcp.v1.PullFileRequest", plain::<pb::PullFileRequest>),
    ("mcp.v1.HealthCheckRequest", plain::<pb::HealthCheckRequest>),
    (
        "mcp.v1.SetupEdgeRouteRequest",
        plain::<pb::SetupEdgeRouteRequest>,
    ),
    (
        "mcp.v1.RemoveEdgeRouteRequest",
        plain::<pb::RemoveEdgeRouteRequest>,
    ),
    (
        "mcp.v1.ListEdgeRoutesRequest",
        plain::<pb::ListEdgeRoutesRequest>,
    ),
    (
        "mcp.v1.ExportServiceDataRequest",
        plain::<pb::ExportServiceDataRequest>,
    ),
    (
        "mcp.v1.ImportServiceDataChunk",
        plain::<pb::ImportServiceDataChunk>,
    ),
    (
        "mcp.v1.AddProxyRouteRequest",
        plain::<pb::AddProxyRouteRequest>,
    ),
    (
        "mcp.v1.RemoveProxyRouteRequest",
        plain::<pb::RemoveProxyRouteRequest>,
    ),
    (
        "mcp.v1.ListProxyRoutesRequest",
        plain::<pb::ListProxyRoutesRequest>,
    ),
];

/// Every message `McpMasterService` accepts (append only).
pub const MASTER_REQUESTS: &[Decoder] = &[
    ("mcp.v1.MasterDeployRequest", |d| {
        if let Some(m) = decoded::<pb::MasterDeployRequest>(d) {
            spec(m.service);
        }
    }),
    (
        "mcp.v1.MasterUndeployRequest",
        plain::<pb::MasterUndeployRequest>,
    ),
    ("mcp.v1.StatusRequest", plain::<pb::StatusRequest>),
    ("mcp.v1.SyncRequest", |d| {
        if let Some(m) = decoded::<pb::SyncRequest>(d) {
            for s in m.services {
                spec(Some(s));
            }
        }
    }),
    ("mcp.v1.MigrateRequest", plain::<pb::MigrateRequest>),
    ("mcp.v1.ListNodesRequest", plain::<pb::ListNodesRequest>),
    (
        "mcp.v1.CreateSnapshotRequest",
        plain::<pb::CreateSnapshotRequest>,
    ),
    (
        "mcp.v1.ListSnapshotsRequest",
        plain::<pb::ListSnapshotsRequest>,
    ),
    (
        "mcp.v1.ServiceLifecycleRequest",
        plain::<pb::ServiceLifecycleRequest>,
    ),
    ("mcp.v1.ServiceLogsRequest", plain::<pb::ServiceLogsRequest>),
    (
        "mcp.v1.ServiceEventsRequest",
        plain::<pb::ServiceEventsRequest>,
    ),
    (
        "mcp.v1.ListMasterEdgeRoutesRequest",
        plain::<pb::ListMasterEdgeRoutesRequest>,
    ),
    ("mcp.v1.PushFileRequest", plain::<pb::PushFileRequest>),
    ("mcp.v1.PullFileRequest", plain::<pb::PullFileRequest>),
    ("mcp.v1.MasterAdoptRequest", plain::<pb::MasterAdoptRequest>),
    ("mcp.v1.RegisterRequest", plain::<pb::RegisterRequest>),
    ("mcp.v1.HeartbeatRequest", plain::<pb::HeartbeatRequest>),
    ("mcp.v1.ListAuditRequest", plain::<pb::ListAuditRequest>),
    ("mcp.v1.ForgetNodeRequest", plain::<pb::ForgetNodeRequest>),
    ("mcp.v1.RestoreRequest", plain::<pb::RestoreRequest>),
    (
        "mcp.v1.DeployHistoryRequest",
        plain::<pb::DeployHistoryRequest>,
    ),
    (
        "mcp.v1.ReportChangesRequest",
        plain::<pb::ReportChangesRequest>,
    ),
];

/// A request to the agent, chosen by the first byte.
pub fn agent_requests(data: &[u8]) {
    dispatch(AGENT_REQUESTS, data);
}

/// A request to the master, chosen by the first byte.
pub fn master_requests(data: &[u8]) {
    dispatch(MASTER_REQUESTS, data);
}

fn dispatch(table: &[Decoder], data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if let Some((_, body)) = table.get(usize::from(which)) {
        body(rest);
    }
}

fn plain<M: Message + Default + PartialEq + Debug>(data: &[u8]) {
    let _ = decoded::<M>(data);
}

/// Decoding never panics; what decodes re-encodes to `encoded_len` bytes
/// that decode to the same message.
fn decoded<M: Message + Default + PartialEq + Debug>(data: &[u8]) -> Option<M> {
    let m = M::decode(data).ok()?;
    let bytes = m.encode_to_vec();
    assert_eq!(bytes.len(), m.encoded_len(), "encoded_len of {m:?}");
    let again = M::decode(bytes.as_slice()).expect("an encoded message decodes");
    assert_eq!(again, m, "re-encoding changed the message");
    Some(m)
}

/// The conversion the servers apply to a spec: never panics; an accepted
/// spec passes the loader's rules and survives the trip back to the wire.
fn spec(m: Option<pb::ServiceSpec>) {
    let Some(m) = m else {
        return;
    };
    if let Ok(spec) = ServiceSpec::try_from(m) {
        assert_eq!(
            mcp_spec::validate(&spec, &LoadOptions::wire()),
            vec![],
            "accepted an invalid spec: {spec:?}"
        );
        let back = ServiceSpec::try_from(pb::ServiceSpec::from(&spec));
        assert_eq!(back.as_ref(), Ok(&spec), "the wire form changed the spec");
    }
}
