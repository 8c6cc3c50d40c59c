//! What [`FakeAgents`] answers to the service-data streams. Its archive
//! of a service is not a tar.zst but a JSON document of the service's
//! files (what `push_file` wrote): byte-exact, so a round trip through the
//! master's snapshot store restores exactly what was exported, and a
//! corrupted archive is refused as the agent refuses one it cannot read.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::Code;

use super::{Call, FakeAgents};
use crate::agents::{
    AgentError, AgentTarget, DataChunk, DataStream, FileContent, ImportData, ImportOutcome,
};

/// Export pieces are at most this long (the real agent's are larger; small
/// pieces exercise the reassembly).
const PIECE: usize = 1024;

fn refused(t: &AgentTarget, method: &str, code: Code, message: String) -> AgentError {
    AgentError::Rpc {
        node: t.node.clone(),
        method: method.to_string(),
        code,
        message,
    }
}

/// The fake archive: path → (mode, content).
type Archive = BTreeMap<String, (u32, Vec<u8>)>;

impl FakeAgents {
    fn deployed(&self, t: &AgentTarget, method: &str, service: &str) -> Result<(), AgentError> {
        let g = self.lock();
        if g.nodes
            .get(&t.node)
            .is_some_and(|s| s.contains_key(service))
        {
            Ok(())
        } else {
            Err(refused(
                t,
                method,
                Code::NotFound,
                format!("service {service} is not deployed on node {}", t.node),
            ))
        }
    }

    fn archive_of(&self, node: &str, service: &str) -> Archive {
        self.lock()
            .files
            .iter()
            .filter(|((n, s, _), _)| n == node && s == service)
            .map(|((_, _, p), f)| (p.clone(), (f.mode, f.content.clone())))
            .collect()
    }

    /// What the agent's export takes of the service's files: with no
    /// `[snapshot]` or the default method only `*.toml`, `*.db`, `*.pem`
    /// (never `<db>-wal`, `-shm`, `-journal`), otherwise everything;
    /// `exclude` paths (whole components) skipped.
    fn selected(&self, node: &str, service: &str) -> Archive {
        let config = self
            .lock()
            .nodes
            .get(node)
            .and_then(|s| s.get(service))
            .and_then(|s| s.spec.snapshot.clone());
        let all = config
            .as_ref()
            .is_some_and(|c| c.method != mcp_spec::SnapshotMethod::Default);
        let excludes: Vec<Vec<String>> = config
            .map(|c| {
                c.exclude
                    .iter()
                    .map(|p| {
                        p.split('/')
                            .filter(|c| !c.is_empty() && *c != ".")
                            .map(str::to_string)
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut files = self.archive_of(node, service);
        files.retain(|path, _| {
            let comps: Vec<String> = path.split('/').map(str::to_string).collect();
            if excludes
                .iter()
                .any(|e| !e.is_empty() && comps.starts_with(e))
            {
                return false;
            }
            all || [".toml", ".db", ".pem"].iter().any(|x| path.ends_with(x))
        });
        files
    }

    /// Every archive an import accepted: (node, service, the bytes
    /// received), in order.
    pub fn imports(&self) -> Vec<(String, String, Vec<u8>)> {
        self.lock().imports.clone()
    }

    pub(super) async fn export_data(
        &self,
        t: &AgentTarget,
        service: &str,
    ) -> Result<DataStream, AgentError> {
        let call = Call::ExportServiceData {
            node: t.node.clone(),
            service: service.to_string(),
        };
        self.gate(t, "ExportServiceData", call).await?;
        self.deployed(t, "ExportServiceData", service)?;
        let bytes = serde_json::to_vec(&self.selected(&t.node, service))
            .map_err(|e| refused(t, "ExportServiceData", Code::Internal, e.to_string()))?;
        let mut out: Vec<Result<DataChunk, AgentError>> = bytes
            .chunks(PIECE)
            .map(|c| Ok(DataChunk::Data(c.to_vec())))
            .collect();
        out.push(Ok(DataChunk::End {
            sha256: hex::encode(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
        }));
        Ok(Box::pin(tokio_stream::iter(out)))
    }

    pub(super) async fn import_data(
        &self,
        t: &AgentTarget,
        service: &str,
        data: ImportData,
    ) -> Result<ImportOutcome, AgentError> {
        const M: &str = "ImportServiceData";
        let call = Call::ImportServiceData {
            node: t.node.clone(),
            service: service.to_string(),
            force: data.force,
        };
        self.gate(t, M, call).await?;
        // As the agent: a service not deployed on the node can receive
        // its data (a migration imports before it deploys).
        let running: Vec<String> = self
            .lock()
            .nodes
            .get(&t.node)
            .and_then(|s| s.get(service))
            .map(|s| {
                s.report
                    .components
                    .iter()
                    .filter(|(_, c)| c.state == mcp_planner::ContainerState::Running)
                    .map(|(name, _)| format!("{service}-{name}"))
                    .collect()
            })
            .unwrap_or_default();
        if !running.is_empty() {
            return Err(refused(
                t,
                M,
                Code::FailedPrecondition,
                format!(
                    "service {service}: containers {} are running; stop the service before importing (a running container keeps the old directory mounted)",
                    running.join(", ")
                ),
            ));
        }
        if !data.force && !self.archive_of(&t.node, service).is_empty() {
            return Err(refused(
                t,
                M,
                Code::FailedPrecondition,
                format!("/srv/{service}/ holds data; import with force to replace it"),
            ));
        }
        let ImportData {
            sha256,
            size,
            mut chunks,
            ..
        } = data;
        let mut bytes = Vec::new();
        while let Some(piece) = chunks.next().await {
            match piece {
                Ok(p) => bytes.extend_from_slice(&p),
                Err(_) => {
                    return Err(refused(
                        t,
                        M,
                        Code::InvalidArgument,
                        format!("{service}: the stream ended without the archive's checksum"),
                    ))
                }
            }
        }
        let got = hex::encode(Sha256::digest(&bytes));
        if got != sha256 || bytes.len() as u64 != size {
            return Err(refused(
                t,
                M,
                Code::InvalidArgument,
                format!(
                    "{service}: received {} bytes with sha256 {got}, announced {size} bytes with sha256 {sha256}: nothing written",
                    bytes.len()
                ),
            ));
        }
        let archive: Archive = serde_json::from_slice(&bytes).map_err(|e| {
            refused(
                t,
                M,
                Code::InvalidArgument,
                format!("{service}: not an archive: {e}"),
            )
        })?;
        let mut g = self.lock();
        g.files
            .retain(|(n, s, _), _| !(n == &t.node && s == service));
        let mut written = 0;
        let entries = archive.len() as u64;
        for (path, (mode, content)) in archive {
            written += content.len() as u64;
            g.files.insert(
                (t.node.clone(), service.to_string(), path),
                FileContent { content, mode },
            );
        }
        g.imports.push((t.node.clone(), service.to_string(), bytes));
        Ok(ImportOutcome {
            bytes_written: written,
            sha256: got,
            entries,
        })
    }
}
