//! The service-data streams (`ExportServiceData`, `ImportServiceData`)
//! mapped between [`super::super::types`] and the protocol messages.

use mcp_proto::pb;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{rpc_error, GrpcAgents};
use crate::agents::{AgentError, AgentTarget, DataChunk, DataStream, ImportData, ImportOutcome};

/// Messages of an import in flight at once (each at most one chunk).
const IMPORT_QUEUE: usize = 4;

/// One export message as a [`DataChunk`]: a message with empty data is the
/// end, and must carry the checksum.
fn chunk_from_pb(t: &AgentTarget, m: pb::ServiceDataChunk) -> Result<DataChunk, AgentError> {
    if !m.data.is_empty() {
        return Ok(DataChunk::Data(m.data));
    }
    if m.sha256.is_empty() {
        return Err(AgentError::BadReply {
            node: t.node.clone(),
            method: "ExportServiceData".to_string(),
            detail: "a message with no data and no sha256".to_string(),
        });
    }
    Ok(DataChunk::End {
        sha256: m.sha256,
        size: m.size,
    })
}

/// The import's messages: the first carries the service name and `force`
/// (and the first piece), the last (empty data) the SHA-256 and size. A
/// piece that is `Err` ends the stream without the last message.
fn import_messages(service: &str, data: ImportData) -> ReceiverStream<pb::ImportServiceDataChunk> {
    let (tx, rx) = tokio::sync::mpsc::channel(IMPORT_QUEUE);
    let service = service.to_string();
    tokio::spawn(async move {
        let ImportData {
            force,
            sha256,
            size,
            mut chunks,
        } = data;
        let mut first = Some(pb::ImportServiceDataChunk {
            service_name: service,
            force,
            ..Default::default()
        });
        while let Some(piece) = chunks.next().await {
            let Ok(bytes) = piece else { return };
            if bytes.is_empty() {
                continue;
            }
            let mut m = first.take().unwrap_or_default();
            m.data = bytes;
            if tx.send(m).await.is_err() {
                return;
            }
        }
        let mut last = first.take().unwrap_or_default();
        last.sha256 = sha256;
        last.size = size;
        let _ = tx.send(last).await;
    });
    ReceiverStream::new(rx)
}

impl GrpcAgents {
    pub(super) async fn export_data(
        &self,
        t: &AgentTarget,
        service: &str,
    ) -> Result<DataStream, AgentError> {
        let req = pb::ExportServiceDataRequest {
            service_name: service.to_string(),
        };
        let stream = self
            .call(
                t,
                "ExportServiceData",
                self.timeouts.snapshot,
                |mut c| async move { c.export_service_data(req).await },
            )
            .await?;
        let target = t.clone();
        Ok(Box::pin(stream.map(move |item| match item {
            Ok(m) => chunk_from_pb(&target, m),
            Err(s) => Err(rpc_error(&target, "ExportServiceData", &s)),
        })))
    }

    pub(super) async fn import_data(
        &self,
        t: &AgentTarget,
        service: &str,
        data: ImportData,
    ) -> Result<ImportOutcome, AgentError> {
        let messages = import_messages(service, data);
        let r = self
            .call(
                t,
                "ImportServiceData",
                self.timeouts.snapshot,
                |mut c| async move { c.import_service_data(messages).await },
            )
            .await?;
        Ok(ImportOutcome {
            bytes_written: r.bytes_written,
            sha256: r.sha256,
            entries: r.entries,
        })
    }
}
