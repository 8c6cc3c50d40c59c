//! ExportServiceData / ImportServiceData: the messages onto
//! [`Agent::export_service_data`] and [`Agent::import_service_data`], and
//! the gRPC status of a [`DataError`]:
//!
//! | error | status |
//! |---|---|
//! | bad service name, refused archive entry, not a tar.zst, protocol misuse | `InvalidArgument` |
//! | no data directory | `NotFound` |
//! | directory exists without `force`, containers running, the directory is a link | `FailedPrecondition` |
//! | a size limit | `ResourceExhausted` |
//! | checksum or size mismatch | `DataLoss` |
//! | the snapshot method failed, the export's reader stopped reading | `Aborted` |
//! | I/O | `Internal` |

use mcp_proto::pb;
use mcp_runtime::ContainerRuntime;
use mcp_security::audit::{set_audit_target, target};
use tokio_stream::StreamExt;
use tonic::{Request, Status, Streaming};

use super::{status, BoxStream};
use crate::agent::{Agent, ExportChunk, ImportOutcome, ImportPiece};
use crate::data::DataError;

pub(super) fn data_status(e: &DataError) -> Status {
    let msg = e.to_string();
    match e {
        DataError::InvalidService { .. }
        | DataError::Refused { .. }
        | DataError::Corrupt { .. }
        | DataError::Protocol { .. } => Status::invalid_argument(msg),
        DataError::NoData { .. } => Status::not_found(msg),
        DataError::Exists { .. } | DataError::Running { .. } | DataError::Link { .. } => {
            Status::failed_precondition(msg)
        }
        DataError::TooLarge { .. } | DataError::TooManyEntries { .. } => {
            Status::resource_exhausted(msg)
        }
        DataError::Checksum { .. } => Status::data_loss(msg),
        DataError::Method { .. } | DataError::Aborted { .. } => Status::aborted(msg),
        DataError::Io { .. } => Status::internal(msg),
    }
}

pub(super) async fn export<R: ContainerRuntime + 'static>(
    agent: &Agent<R>,
    req: Request<pb::ExportServiceDataRequest>,
) -> Result<BoxStream<pb::ServiceDataChunk>, Status> {
    let service = req.get_ref().service_name.clone();
    set_audit_target(&req, target(Some(&service), Some(agent.node())));
    let chunks = agent
        .export_service_data(&service)
        .await
        .map_err(|e| status(&e))?;
    Ok(Box::pin(chunks.map(|c| match c {
        Ok(ExportChunk::Data(data)) => Ok(pb::ServiceDataChunk {
            data,
            sha256: String::new(),
            size: 0,
        }),
        Ok(ExportChunk::End { sha256, size }) => Ok(pb::ServiceDataChunk {
            data: Vec::new(),
            sha256,
            size,
        }),
        Err(e) => Err(data_status(&e)),
    })))
}

pub(super) async fn import<R: ContainerRuntime + 'static>(
    agent: &Agent<R>,
    req: Request<Streaming<pb::ImportServiceDataChunk>>,
) -> Result<pb::ImportServiceDataResponse, Status> {
    let (meta, ext, mut stream) = req.into_parts();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("ImportServiceData: the stream is empty"))?;
    let service = first.service_name.clone();
    set_audit_target(
        &Request::from_parts(meta, ext, ()),
        target(Some(&service), Some(agent.node())),
    );
    if service.is_empty() {
        return Err(Status::invalid_argument(
            "ImportServiceData: the first message must name the service (service_name)",
        ));
    }
    let force = first.force;
    let mut ended = false;
    let svc = service.clone();
    let mut check = move |m: pb::ImportServiceDataChunk| -> Result<ImportPiece, DataError> {
        let bad = |what: &str| DataError::Protocol {
            message: format!("ImportServiceData {svc}: {what}"),
        };
        if ended {
            return Err(bad("a message after the last one (the one with sha256)"));
        }
        if !m.service_name.is_empty() && m.service_name != svc {
            return Err(bad(&format!(
                "a later message names another service {:?}",
                m.service_name
            )));
        }
        if m.sha256.is_empty() {
            if m.size != 0 {
                return Err(bad("size without sha256"));
            }
            return Ok(ImportPiece::Data(m.data));
        }
        if !m.data.is_empty() {
            return Err(bad("the last message (with sha256) must carry no data"));
        }
        ended = true;
        Ok(ImportPiece::End {
            sha256: m.sha256,
            size: m.size,
        })
    };
    let head = check(pb::ImportServiceDataChunk {
        service_name: String::new(),
        force: false,
        ..first
    });
    let rest = stream.map(move |m| match m {
        Ok(m) => check(m),
        Err(s) => Err(DataError::Protocol {
            message: format!("ImportServiceData: the stream failed: {}", s.message()),
        }),
    });
    let pieces = Box::pin(tokio_stream::once(head).chain(rest));
    let ImportOutcome { stats, sha256 } = agent
        .import_service_data(&service, force, pieces)
        .await
        .map_err(|e| status(&e))?;
    Ok(pb::ImportServiceDataResponse {
        bytes_written: stats.bytes_written,
        sha256,
        entries: stats.entries,
    })
}
