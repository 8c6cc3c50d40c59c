//! ExportServiceData / ImportServiceData through the agent: the snapshot
//! methods in the service's container, the lock, the checksum.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex as StdMutex;

use mcp_proto::pb;
use mcp_runtime::ExecOutput;
use tokio_stream::Stream;

use crate::data::tests::{archive_of, entries, raw_entry, tree};
use crate::data::DataError;

use super::*;

/// A service with a `[snapshot]` section and its data directory.
fn with_snapshot(name: &str, snapshot: &str) -> ServiceSpec {
    spec(
        name,
        &format!(
            "name = \"{name}\"\n[snapshot]\n{snapshot}\n[[components]]\nname = \"{name}\"\nimage = \"{V1}\"\n[[components.routes]]\nport = 443\n"
        ),
    )
}

async fn export_all(h: &Harness, service: &str) -> Result<(Vec<u8>, String, u64)> {
    std::fs::create_dir_all(h.agent.settings().files_root.join(service)).unwrap();
    let mut s = Box::pin(h.agent.export_service_data(service).await?);
    let mut data = Vec::new();
    while let Some(c) = s.next().await {
        match c.map_err(AgentError::from)? {
            ExportChunk::Data(d) => {
                assert!(d.len() <= crate::data::CHUNK_BYTES);
                data.extend(d);
            }
            ExportChunk::End { sha256, size } => return Ok((data, sha256, size)),
        }
    }
    panic!("export ended without its last message")
}

fn execs(h: &Harness) -> Vec<(String, Vec<String>)> {
    h.fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Exec { name, argv } => Some((name, argv)),
            _ => None,
        })
        .collect()
}

fn ok() -> ExecOutput {
    ExecOutput {
        exit_code: 0,
        stdout: String::new(),
        stderr: String::new(),
    }
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test]
async fn exec_method_argv_arrives_literally_then_the_whole_directory_is_archived() {
    let h = Harness::new();
    let svc = h.agent.settings().files_root.join("mcq");
    std::fs::create_dir_all(&svc).unwrap();
    h.agent
        .deploy(
            with_snapshot(
                "mcq",
                r#"method = "exec: mcq dump --out '/srv/mcq/a b.db' $HOME;rm -rf /"
exclude = ["cache"]"#,
            ),
            None,
        )
        .await
        .unwrap();
    let dump = svc.join("dump.out");
    h.fake.set_exec_handler(move |_env, argv| {
        (argv.first().map(String::as_str) == Some("mcq")).then(|| {
            std::fs::write(&dump, b"dumped").unwrap();
            ok()
        })
    });
    std::fs::write(svc.join("notes.txt"), b"n").unwrap();
    std::fs::create_dir_all(svc.join("cache")).unwrap();
    std::fs::write(svc.join("cache/x"), b"c").unwrap();
    let (data, sha256, size) = export_all(&h, "mcq").await.unwrap();
    assert_eq!(
        execs(&h),
        [(
            "mcq".to_string(),
            [
                "mcq",
                "dump",
                "--out",
                "/srv/mcq/a b.db",
                "$HOME;rm",
                "-rf",
                "/"
            ]
            .map(String::from)
            .to_vec()
        )]
    );
    assert_eq!(sha256, sha(&data));
    assert_eq!(size, data.len() as u64);
    let e = entries(&data);
    assert_eq!(
        e.keys().collect::<Vec<_>>(),
        ["./", "dump.out", "notes.txt"]
    );
}

#[tokio::test]
async fn cli_method_runs_service_snapshot_and_a_failure_fails_the_export() {
    let h = Harness::new();
    h.agent
        .deploy(with_snapshot("mcq", r#"method = "cli""#), None)
        .await
        .unwrap();
    let err = match h.agent.export_service_data("nodata").await {
        Err(e) => e,
        Ok(_) => panic!("exported a missing directory"),
    };
    assert!(
        matches!(err, AgentError::Data(DataError::NoData { .. })),
        "{err}"
    );
    let fail = Arc::new(StdMutex::new(false));
    let f = fail.clone();
    h.fake.set_exec_handler(move |_env, _argv| {
        Some(if *f.lock().unwrap() {
            ExecOutput {
                exit_code: 3,
                stdout: String::new(),
                stderr: "disk full\n".into(),
            }
        } else {
            ok()
        })
    });
    export_all(&h, "mcq").await.unwrap();
    assert_eq!(
        execs(&h),
        [(
            "mcq".to_string(),
            vec!["mcq".to_string(), "snapshot".to_string()]
        )]
    );
    *fail.lock().unwrap() = true;
    let err = export_all(&h, "mcq").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, AgentError::Data(DataError::Method { .. })),
        "{msg}"
    );
    assert!(
        msg.contains("exited with 3") && msg.contains("disk full"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_stopped_service_is_archived_without_its_method() {
    let h = Harness::new();
    h.agent
        .deploy(with_snapshot("mcq", r#"method = "cli""#), None)
        .await
        .unwrap();
    h.agent.stop("mcq", None).await.unwrap();
    std::fs::create_dir_all(h.agent.settings().files_root.join("mcq")).unwrap();
    std::fs::write(h.agent.settings().files_root.join("mcq/a.toml"), b"x").unwrap();
    let (data, _, _) = export_all(&h, "mcq").await.unwrap();
    assert!(execs(&h).is_empty());
    assert!(entries(&data).contains_key("a.toml"));
}

struct Snap(Arc<StdMutex<u32>>);

#[tonic::async_trait]
impl pb::snapshot_service_server::SnapshotService for Snap {
    async fn snapshot(
        &self,
        _req: tonic::Request<pb::SnapshotRequest>,
    ) -> std::result::Result<tonic::Response<pb::SnapshotResponse>, tonic::Status> {
        *self.0.lock().unwrap() += 1;
        Ok(tonic::Response::new(pb::SnapshotResponse {
            success: true,
            error: String::new(),
            path: "snap.db".into(),
        }))
    }
}

#[tokio::test]
async fn grpc_method_calls_snapshot_on_the_first_routes_host_port() {
    let h = Harness::new();
    h.agent
        .deploy(with_snapshot("mcq", r#"method = "grpc""#), None)
        .await
        .unwrap();
    let port = h.component("mcq", "mcq").await.ports[""];
    let calls = Arc::new(StdMutex::new(0));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::snapshot_service_server::SnapshotServiceServer::new(
                Snap(calls.clone()),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    export_all(&h, "mcq").await.unwrap();
    assert_eq!(*calls.lock().unwrap(), 1);
    server.abort();
}

fn pieces(
    data: &[u8],
    sha256: &str,
    size: u64,
) -> impl Stream<Item = std::result::Result<ImportPiece, DataError>> + Unpin + Send {
    let mut v: Vec<std::result::Result<ImportPiece, DataError>> = data
        .chunks(1000)
        .map(|c| Ok(ImportPiece::Data(c.to_vec())))
        .collect();
    v.push(Ok(ImportPiece::End {
        sha256: sha256.to_string(),
        size,
    }));
    tokio_stream::iter(v)
}

#[tokio::test]
async fn import_checks_the_checksum_force_and_running_containers() {
    let h = Harness::new();
    let root = h.agent.settings().files_root.clone();
    std::fs::create_dir_all(root.join("mcq")).unwrap();
    std::fs::write(root.join("mcq/a.toml"), b"a = 1\n").unwrap();
    let (data, sha256, size) = export_all(&h, "mcq").await.unwrap();

    // Into a new service: accepted.
    let out = h
        .agent
        .import_service_data("copy", false, pieces(&data, &sha256, size))
        .await
        .unwrap();
    assert_eq!(out.sha256, sha256);
    assert_eq!(out.stats.bytes_written, 6);
    assert_eq!(tree(&root.join("copy")), tree(&root.join("mcq")));

    // A checksum mismatch, a wrong size: refused, nothing changed.
    std::fs::write(root.join("copy/a.toml"), b"changed\n").unwrap();
    let before = tree(&root);
    let bad = "0".repeat(64);
    for (s, n) in [(bad.as_str(), size), (sha256.as_str(), size + 1)] {
        let err = h
            .agent
            .import_service_data("copy", true, pieces(&data, s, n))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AgentError::Data(DataError::Checksum { .. })),
            "{err}"
        );
        assert_eq!(tree(&root), before);
    }
    // Existing without force.
    let err = h
        .agent
        .import_service_data("copy", false, pieces(&data, &sha256, size))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::Data(DataError::Exists { .. })),
        "{err}"
    );
    // A hostile archive with a right checksum: refused, unchanged.
    let evil = archive_of(&[raw_entry(b"../x", tar::EntryType::Regular, b"", b"x")]);
    let err = h
        .agent
        .import_service_data("copy", true, pieces(&evil, &sha(&evil), evil.len() as u64))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::Data(DataError::Refused { .. })),
        "{err}"
    );
    assert_eq!(tree(&root), before);
    // No trailer.
    let err = h
        .agent
        .import_service_data(
            "copy",
            true,
            tokio_stream::iter(vec![Ok(ImportPiece::Data(data.clone()))]),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("without its last message"),
        "{err}"
    );
    assert_eq!(tree(&root), before);

    // A running service is refused.
    h.agent.deploy(solo("run", "worker"), None).await.unwrap();
    let err = h
        .agent
        .import_service_data("run", true, pieces(&data, &sha256, size))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::Data(DataError::Running { .. })),
        "{err}"
    );
}
