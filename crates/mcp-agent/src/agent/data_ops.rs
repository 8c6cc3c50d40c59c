//! ExportServiceData / ImportServiceData (see [`crate::data`]): the
//! snapshot methods, the service's lock, and the bridges between the
//! blocking archive code and the async streams.
//!
//! **Export** takes the service's lock, runs the snapshot method in the
//! service's container, then archives on a blocking task that writes
//! [`CHUNK_BYTES`] chunks into a bounded channel (memory bounded by
//! `CHANNEL_CHUNKS` × 64 KiB plus zstd's window, whatever the data's size).
//! The lock is held for the method and the archive, and released when the
//! archive is finished or abandoned: when the reader goes away, or does not
//! take a chunk for [`SEND_TIMEOUT`], so a stalled client cannot block
//! deploys of the service for longer than that.
//!
//! The method runs in the component named like the service if it is
//! running, else the first running component (in spec order); when none
//! runs (or the service is not deployed here), the method is skipped and
//! the directory archived as it is. `cli` is `podman exec <ctr> <service>
//! snapshot`, `exec: <cmd>` that argv exactly (no shell), `grpc` calls
//! `mcp.v1.SnapshotService/Snapshot` in plaintext on the host port of that
//! component's first route, at the agent's `bind_address` (127.0.0.1 when
//! it is unspecified) — the address podman publishes it on. A method fails
//! the export when it exits non-zero, answers `success = false` or takes
//! longer than [`METHOD_TIMEOUT`].
//!
//! **Import** takes the service's lock for the whole import, refuses a
//! running container of the service and an existing directory without
//! `force`, extracts on a blocking task reading the client's chunks from a
//! bounded channel while hashing them, verifies the announced SHA-256 and
//! size, and only then installs (see [`crate::data::import`]).

use std::path::PathBuf;
use std::time::Duration;

use mcp_proto::pb;
use mcp_runtime::ContainerRuntime;
use mcp_spec::{SnapshotConfig, SnapshotMethod};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

use crate::data::{self, DataError, ImportStats, Selection, Staging, CHUNK_BYTES};

use super::*;

/// Longest a snapshot method may run.
pub const METHOD_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest an export waits for its reader to take a chunk.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(120);
const CHANNEL_CHUNKS: usize = 16;

/// One message of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportChunk {
    Data(Vec<u8>),
    /// The last one: the archive's SHA-256 (hex) and size.
    End {
        sha256: String,
        size: u64,
    },
}

/// One message of an import after the first's service and `force`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportPiece {
    Data(Vec<u8>),
    /// The trailer: the archive's announced SHA-256 (hex) and size.
    End {
        sha256: String,
        size: u64,
    },
}

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    pub stats: ImportStats,
    /// SHA-256 (hex) of the archive received.
    pub sha256: String,
}

impl<R: ContainerRuntime + 'static> Agent<R> {
    /// Streams the tar.zst of `<files root>/<service>/` (see the module
    /// docs). Errors before the first chunk (unknown directory, failed
    /// method) are returned; later ones end the stream.
    pub async fn export_service_data(
        &self,
        service: &str,
    ) -> Result<impl Stream<Item = Result<ExportChunk, DataError>> + Send + 'static> {
        check_service(service)?;
        let guard = self.locks.lock(service).await;
        let name = service.to_string();
        let record = self.db(move |r| r.get_service(&name)).await?;
        let root = self.settings.files_root.clone();
        let svc = service.to_string();
        let exists = tokio::task::spawn_blocking(move || {
            let root = std::fs::canonicalize(&root).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    DataError::NoData {
                        path: root.join(&svc),
                        service: svc.clone(),
                    }
                } else {
                    DataError::io(&svc, format!("open files root {}", root.display()), e)
                }
            })?;
            data::export::open_service_dir(&root, &svc).map(|_| ())
        });
        join(exists, "export").await??;
        let config = record.as_ref().and_then(|r| r.spec.snapshot.clone());
        if let Some(record) = &record {
            self.run_method(record, config.as_ref()).await?;
        }
        let selection = Selection::of(config.as_ref());
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let root = self.settings.files_root.clone();
        let svc = service.to_string();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let out = ChunkWriter {
                tx: tx.clone(),
                handle: handle.clone(),
                buf: Vec::with_capacity(CHUNK_BYTES),
                hasher: Sha256::new(),
                size: 0,
                service: svc.clone(),
            };
            let last = export_blocking(&root, &svc, &selection, out);
            let _ = handle.block_on(tx.send_timeout(last, SEND_TIMEOUT));
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Runs the snapshot method of `config` in the service's container, if
    /// one runs.
    async fn run_method(
        &self,
        record: &ServiceRecord,
        config: Option<&SnapshotConfig>,
    ) -> Result<()> {
        let service = record.name.as_str();
        let method = config.map_or(SnapshotMethod::Default, |c| c.method.clone());
        if matches!(method, SnapshotMethod::Default | SnapshotMethod::Full) {
            return Ok(());
        }
        let Some((component, container)) = self.method_container(record).await? else {
            tracing::info!(service, "no component runs: snapshot method skipped");
            return Ok(());
        };
        let failed = |message: String| DataError::Method {
            service: service.to_owned(),
            method: method.to_config_string(),
            message,
        };
        let argv = match &method {
            SnapshotMethod::Cli => vec![service.to_owned(), "snapshot".to_owned()],
            SnapshotMethod::Exec(argv) => argv.clone(),
            SnapshotMethod::Grpc => {
                return self
                    .grpc_snapshot(record, &component)
                    .await
                    .map_err(|m| failed(m).into())
            }
            SnapshotMethod::Default | SnapshotMethod::Full => return Ok(()),
        };
        let out = tokio::time::timeout(METHOD_TIMEOUT, self.runtime.exec(&container, &argv))
            .await
            .map_err(|_| failed(format!("timed out after {}s", METHOD_TIMEOUT.as_secs())))?
            .map_err(|e| failed(format!("exec in {container}: {e}")))?;
        if !out.success() {
            return Err(failed(format!(
                "exec in {container} exited with {}: {}",
                out.exit_code,
                tail(&out.stderr)
            ))
            .into());
        }
        tracing::info!(service, container, "snapshot method ran");
        Ok(())
    }

    /// `(component, container)` the method runs in, if any runs.
    async fn method_container(&self, record: &ServiceRecord) -> Result<Option<(String, String)>> {
        let mut order: Vec<&crate::registry::ComponentRecord> = Vec::new();
        order.extend(record.components.iter().filter(|c| c.name == record.name));
        for c in &record.spec.components {
            if let Some(r) = record.components.iter().find(|r| r.name == c.name) {
                if !order.iter().any(|o| o.name == r.name) {
                    order.push(r);
                }
            }
        }
        for c in order {
            let info = self.runtime.inspect(&c.container_name).await.map_err(|e| {
                AgentError::runtime(format!("{}/{}: inspect", c.service, c.name), e)
            })?;
            if info.is_some_and(|i| i.is_running()) {
                return Ok(Some((c.name.clone(), c.container_name.clone())));
            }
        }
        Ok(None)
    }

    async fn grpc_snapshot(&self, record: &ServiceRecord, component: &str) -> Result<(), String> {
        let spec = record
            .spec
            .components
            .iter()
            .find(|c| c.name == component)
            .ok_or_else(|| format!("component {component} is not in the spec"))?;
        let route = spec
            .routes
            .first()
            .ok_or_else(|| format!("component {component} has no route to call"))?;
        let (svc, comp) = (record.name.clone(), component.to_owned());
        let ports = self
            .db(move |r| r.ports(Some(&svc)))
            .await
            .map_err(|e| e.to_string())?;
        let port = ports
            .iter()
            .find(|p| p.component == comp && p.route == route.name)
            .map(|p| p.port)
            .ok_or_else(|| format!("component {component}: its first route has no host port"))?;
        let ip = match self.settings.bind_address {
            a if a.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            a => a,
        };
        let url = format!("http://{}", std::net::SocketAddr::new(ip, port));
        let call = async {
            let mut client =
                pb::snapshot_service_client::SnapshotServiceClient::connect(url.clone())
                    .await
                    .map_err(|e| format!("connect {url}: {e}"))?;
            client
                .snapshot(pb::SnapshotRequest {})
                .await
                .map_err(|s| format!("{url}: {}: {}", s.code(), s.message()))
        };
        let resp = tokio::time::timeout(METHOD_TIMEOUT, call)
            .await
            .map_err(|_| format!("{url}: timed out after {}s", METHOD_TIMEOUT.as_secs()))??
            .into_inner();
        if !resp.success {
            return Err(format!("{url}: the service answered: {}", resp.error));
        }
        tracing::info!(
            service = record.name,
            url,
            path = resp.path,
            "snapshot RPC done"
        );
        Ok(())
    }

    /// Imports a tar.zst into `<files root>/<service>/` (see the module
    /// docs); `pieces` are the client's messages after the first.
    pub async fn import_service_data<S>(
        &self,
        service: &str,
        force: bool,
        mut pieces: S,
    ) -> Result<ImportOutcome>
    where
        S: Stream<Item = Result<ImportPiece, DataError>> + Unpin + Send,
    {
        check_service(service)?;
        let _guard = self.locks.lock(service).await;
        self.refuse_running(service).await?;
        let root = self.settings.files_root.clone();
        let svc = service.to_string();
        let staging = tokio::task::spawn_blocking(move || {
            if !force && root.join(&svc).symlink_metadata().is_ok() {
                return Err(DataError::Exists {
                    path: root.join(&svc),
                    service: svc,
                });
            }
            Staging::create(&root, &svc)
        });
        let staging = join(staging, "import").await??;
        let limits = self.settings.import_limits;
        let (tx, rx) = mpsc::channel::<Result<ImportPiece, DataError>>(CHANNEL_CHUNKS);
        let svc = service.to_string();
        let work = tokio::task::spawn_blocking(move || {
            let mut reader = PieceReader {
                rx,
                buf: Vec::new(),
                pos: 0,
                hasher: Sha256::new(),
                size: 0,
                max: limits
                    .max_bytes
                    .saturating_add(limits.max_bytes / 64)
                    .saturating_add(1 << 20),
                trailer: None,
                error: None,
                service: svc.clone(),
            };
            let res = data::extract(&mut reader, &staging, &limits);
            // Drain what follows the archive, so the hash covers it all.
            let drained = res.and_then(|stats| {
                std::io::copy(&mut reader, &mut std::io::sink())
                    .map(|_| stats)
                    .map_err(|e| DataError::corrupt(&svc, e))
            });
            if let Some(e) = reader.error.take() {
                return Err(e);
            }
            let stats = drained?;
            let Some((expected, expected_size)) = reader.trailer.clone() else {
                return Err(DataError::Protocol {
                    message: format!(
                        "service {svc}: the stream ended without its last message (sha256 and size)"
                    ),
                });
            };
            let actual = data::hex_digest(reader.hasher.clone());
            if !expected.eq_ignore_ascii_case(&actual) || expected_size != reader.size {
                return Err(DataError::Checksum {
                    service: svc,
                    expected,
                    expected_size,
                    actual,
                    actual_size: reader.size,
                });
            }
            data::install(staging, force)?;
            Ok(ImportOutcome {
                stats,
                sha256: actual,
            })
        });
        // Feed the blocking task; it stops reading on a refusal.
        loop {
            let piece = tokio::select! {
                p = pieces.next() => p,
                () = tx.closed() => break,
            };
            let Some(piece) = piece else { break };
            let stop = piece.is_err();
            if tx.send(piece).await.is_err() || stop {
                break;
            }
        }
        drop(tx);
        let out = join(work, "import").await??;
        tracing::info!(
            service,
            entries = out.stats.entries,
            bytes = out.stats.bytes_written,
            sha256 = out.sha256,
            "service data imported"
        );
        Ok(out)
    }

    async fn refuse_running(&self, service: &str) -> Result<()> {
        let name = service.to_string();
        let comps = self.db(move |r| r.components(&name)).await?;
        let names: BTreeSet<String> = comps.iter().map(|c| c.container_name.clone()).collect();
        let running: Vec<String> = self
            .service_containers(service, &names)
            .await?
            .into_values()
            .filter(ContainerInfo::is_running)
            .map(|c| c.name)
            .collect();
        if running.is_empty() {
            Ok(())
        } else {
            Err(DataError::Running {
                service: service.to_owned(),
                containers: running,
            }
            .into())
        }
    }
}

fn check_service(service: &str) -> Result<()> {
    if mcp_spec::names::is_dns_label(service) {
        Ok(())
    } else {
        Err(DataError::InvalidService {
            service: service.to_owned(),
        }
        .into())
    }
}

async fn join<T>(r: tokio::task::JoinHandle<T>, what: &str) -> Result<T> {
    r.await.map_err(|e| AgentError::Internal {
        message: format!("{what} task failed: {e}"),
    })
}

/// The last 2000 bytes of a command's stderr, trimmed.
fn tail(s: &str) -> String {
    let s = s.trim();
    let mut start = s.len().saturating_sub(2000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

fn export_blocking(
    root: &std::path::Path,
    service: &str,
    selection: &Selection,
    out: ChunkWriter,
) -> Result<ExportChunk, DataError> {
    let scratch = Scratch::create(root, service)?;
    let (mut out, stats) = data::write_archive(root, service, selection, &scratch.0, out)?;
    out.flush_chunk()?;
    for (path, why) in &stats.skipped {
        tracing::warn!(service, path, why, "left out of the export");
    }
    tracing::info!(
        service,
        entries = stats.entries,
        bytes = stats.bytes,
        archive = out.size,
        sqlite = stats.sqlite.len(),
        "service data exported"
    );
    Ok(ExportChunk::End {
        sha256: data::hex_digest(out.hasher.clone()),
        size: out.size,
    })
}

/// `<root>/.mcp-export-<service>-<pid>-<n>/` (0700, outside the service
/// tree): where SQLite copies are made; deleted when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn create(root: &std::path::Path, service: &str) -> Result<Scratch, DataError> {
        use std::os::unix::fs::DirBuilderExt;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for _ in 0..16 {
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = root.join(format!(".mcp-export-{service}-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(Scratch(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(DataError::io(service, format!("create {}", p.display()), e)),
            }
        }
        Err(DataError::io(
            service,
            "create scratch directory",
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The archive's bytes as [`CHUNK_BYTES`] chunks into the channel,
/// hashed and counted on the way.
struct ChunkWriter {
    tx: mpsc::Sender<Result<ExportChunk, DataError>>,
    handle: tokio::runtime::Handle,
    buf: Vec<u8>,
    hasher: Sha256,
    size: u64,
    service: String,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> Result<(), DataError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.hasher.update(&chunk);
        self.size += chunk.len() as u64;
        let sent = self.handle.block_on(
            self.tx
                .send_timeout(Ok(ExportChunk::Data(chunk)), SEND_TIMEOUT),
        );
        sent.map_err(|e| DataError::Aborted {
            service: self.service.clone(),
            message: match e {
                mpsc::error::SendTimeoutError::Timeout(_) => {
                    format!("the reader took no data for {}s", SEND_TIMEOUT.as_secs())
                }
                mpsc::error::SendTimeoutError::Closed(_) => "the reader went away".into(),
            },
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.flush_chunk().map_err(std::io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The client's chunks as a [`std::io::Read`], hashed and counted as
/// received; EOF at the trailer.
struct PieceReader {
    rx: mpsc::Receiver<Result<ImportPiece, DataError>>,
    buf: Vec<u8>,
    pos: usize,
    hasher: Sha256,
    size: u64,
    max: u64,
    trailer: Option<(String, u64)>,
    /// The stream's own error (protocol, transport), reported as such.
    error: Option<DataError>,
    service: String,
}

impl std::io::Read for PieceReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.trailer.is_some() || self.error.is_some() {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(ImportPiece::Data(d))) => {
                    self.hasher.update(&d);
                    self.size += d.len() as u64;
                    if self.size > self.max {
                        self.error = Some(DataError::TooLarge {
                            service: self.service.clone(),
                            what: "the compressed archive".into(),
                            size: self.size,
                            limit: self.max,
                        });
                        return Err(std::io::Error::other("archive over the size limit"));
                    }
                    self.buf = d;
                    self.pos = 0;
                }
                Some(Ok(ImportPiece::End { sha256, size })) => {
                    self.trailer = Some((sha256, size));
                }
                Some(Err(e)) => {
                    self.error = Some(e);
                    return Err(std::io::Error::other("the stream failed"));
                }
                // The stream ended without a trailer: EOF; reported after.
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
