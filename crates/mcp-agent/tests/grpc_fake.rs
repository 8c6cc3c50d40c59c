//! The agent's gRPC server as the daemon builds it (`ServerSecurity::from_config`
//! and `serve`: TLS 1.3 on 127.0.0.1, bearer tokens), over the fake runtime:
//!
//! - PushFile / PullFile: a 50 MiB file goes through both ways intact (the
//!   server and its clients share `MAX_MESSAGE_BYTES`), and a file over
//!   `MAX_FILE_BYTES` is refused with a message naming the limit;
//! - Events: `limit` (0 = 100), `since` (RFC 3339, else InvalidArgument),
//!   oldest first, every row with its detail;
//! - ExportServiceData → ImportServiceData: a service's data (a SQLite
//!   database among it) streamed out of one agent and into another under
//!   another name, the same files; refusals with their status codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mcp_agent::testing::{FakeRuntime, TestServer};
use mcp_agent::{Agent, Config, EventKind, NewEvent, Registry, ServerSecurity, Timestamp};
use mcp_proto::pb;
use mcp_proto::pb::mcp_agent_service_client::McpAgentServiceClient;
use mcp_proto::{MAX_FILE_BYTES, MAX_MESSAGE_BYTES};
use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{generate_keypair, issue_token, Secret, SigningKey, TokenRequest};
use mcp_security::pki::{Ca, Validity};
use mcp_security::tls::{self, TlsConnector};
use mcp_security::token::BearerInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = McpAgentServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// A config file with a throwaway PKI in `dir` (its `grpc_addr` is not
/// bound: the test serves on a free port); returns it loaded, and an
/// operator's token.
fn setup(dir: &Path) -> (Config, Secret) {
    let ca = Ca::generate("files-test").unwrap();
    ca.write_cert(&dir.join("ca.pem")).unwrap();
    let leaf = ca
        .write_leaf(dir, "agent", &["127.0.0.1", "localhost"], Validity::Days(1))
        .unwrap();
    let kp = generate_keypair().unwrap();
    std::fs::write(dir.join("issuer.pub"), &kp.public_pem).unwrap();
    std::fs::write(dir.join("agent.token"), "unused").unwrap();
    std::fs::create_dir(dir.join("srv")).unwrap();
    let d = dir.display();
    let text = format!(
        r#"
[server]
grpc_addr = "127.0.0.1:19444"
tls_cert = "{cert}"
tls_key = "{key}"
ca_cert = "{d}/ca.pem"

[node]
name = "orion"
role = "worker"
address = "127.0.0.1:19444"

[master]
address = "127.0.0.1:19443"

[auth]
issuer_public_key = "{d}/issuer.pub"
issuer = "mcias"
audience = "mcp"
token_file = "{d}/agent.token"

[database]
path = "{d}/agent.db"

[files]
root = "{d}/srv"
"#,
        cert = leaf.cert.display(),
        key = leaf.key.display(),
    );
    let path = dir.join("mcp-agent.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    std::fs::write(dir.join("issuer.key"), kp.private_pem.expose()).unwrap();
    let token = token_for(dir, "alice", AccountType::Human);
    (config, token)
}

/// A token of the issuer `setup` made in `dir`.
fn token_for(dir: &Path, identity: &str, account_type: AccountType) -> Secret {
    let pem = std::fs::read(dir.join("issuer.key")).unwrap();
    let signing = SigningKey::from_pem(&pem, "test").unwrap();
    issue_token(
        &signing,
        &TokenRequest {
            identity: identity.to_string(),
            account_type,
            roles: Vec::new(),
            ttl: Duration::from_secs(3600),
            issuer: "mcias".to_string(),
            audience: "mcp".to_string(),
        },
        &SystemClock,
    )
    .unwrap()
}

async fn client(server: &TestServer, ca: &Path, token: &Secret) -> Client {
    let cfg = tls::client_config(ca, None).unwrap();
    let channel = tls::connect_channel(&server.url(), TlsConnector::new(Arc::new(cfg)))
        .await
        .unwrap();
    McpAgentServiceClient::with_interceptor(channel, BearerInterceptor::new(token).unwrap())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Bytes that are not all alike, so a truncated or shifted copy differs.
fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 31 + i / 4096) % 251).unwrap())
        .collect()
}

/// The daemon's server over `registry` and a fake runtime, and a client.
async fn start(config: &Config, registry: Registry, token: &Secret) -> (TestServer, Client) {
    let agent = Arc::new(Agent::from_config(config, FakeRuntime::new(), registry).unwrap());
    let security = ServerSecurity::from_config(config).unwrap();
    let server = TestServer::start(agent, security).await.unwrap();
    let c = client(&server, &config.server.ca_cert, token).await;
    (server, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_file_goes_through_and_an_over_limit_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (config, token) = setup(dir.path());
    let registry = Registry::open(&config.database.path).unwrap();
    let (server, mut c) = start(&config, registry, &token).await;

    // 50 MiB in, 50 MiB out, byte for byte.
    let big = content(50 * 1024 * 1024);
    let resp = c
        .push_file(pb::PushFileRequest {
            service: "mcq".to_string(),
            path: "data/big.bin".to_string(),
            content: big.clone(),
            mode: 0o600,
        })
        .await
        .expect("PushFile of 50 MiB")
        .into_inner();
    assert!(resp.success, "{}", resp.error);
    let on_disk = std::fs::read(dir.path().join("srv/mcq/data/big.bin")).unwrap();
    assert!(on_disk == big, "the pushed file differs from what was sent");
    let pulled = c
        .pull_file(pb::PullFileRequest {
            service: "mcq".to_string(),
            path: "data/big.bin".to_string(),
        })
        .await
        .expect("PullFile of 50 MiB")
        .into_inner();
    assert_eq!(pulled.mode, 0o600);
    assert!(pulled.content == big, "the pulled file differs");

    // One byte over the file limit (the message still fits): the agent's
    // own refusal, naming the limit, and nothing written.
    let over = vec![7u8; MAX_FILE_BYTES + 1];
    let err = c
        .push_file(pb::PushFileRequest {
            service: "mcq".to_string(),
            path: "over.bin".to_string(),
            content: over,
            mode: 0o644,
        })
        .await
        .expect_err("PushFile over the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.message(),
        format!(
            "service mcq: path \"over.bin\": file is {} bytes (64.0 MiB), over the 64 MiB limit",
            MAX_FILE_BYTES + 1
        )
    );
    assert!(!dir.path().join("srv/mcq/over.bin").exists());

    // A file over the limit on the node cannot be pulled.
    let huge = dir.path().join("srv/mcq/huge.bin");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(70 * 1024 * 1024)
        .unwrap();
    let err = c
        .pull_file(pb::PullFileRequest {
            service: "mcq".to_string(),
            path: "huge.bin".to_string(),
        })
        .await
        .expect_err("PullFile over the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.message(),
        "service mcq: path \"huge.bin\": file is 73400320 bytes (70 MiB), over the 64 MiB limit"
    );
    server.stop().await.unwrap();
}

const T0: i64 = 1_714_564_800; // 2024-05-01T12:00:00Z

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_honour_limit_and_since_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (config, token) = setup(dir.path());
    let mut registry = Registry::open(&config.database.path).unwrap();
    let events: Vec<NewEvent> = (1..=150)
        .map(|i| NewEvent {
            service: "mcq".to_string(),
            component: "web".to_string(),
            prev_state: None,
            new_state: None,
            kind: EventKind::Other("deploy".to_string()),
            detail: format!("deployed localhost/mcq:v{i}"),
            time: Timestamp::from_unix(T0 + i),
        })
        .collect();
    registry.record_events(&events).unwrap();
    let (server, mut c) = start(&config, registry, &token).await;
    let query = |limit: u32, since: &str| pb::EventsRequest {
        service_name: String::new(),
        component: String::new(),
        since: since.to_string(),
        limit,
    };
    let details =
        |r: pb::EventsResponse| -> Vec<String> { r.events.into_iter().map(|e| e.detail).collect() };
    let versions = |range: std::ops::RangeInclusive<i64>| -> Vec<String> {
        range
            .map(|i| format!("deployed localhost/mcq:v{i}"))
            .collect()
    };

    // No limit: the newest 100, oldest first.
    let all = c.events(query(0, "")).await.unwrap().into_inner();
    assert_eq!(all.events[0].kind, "deploy");
    assert_eq!(all.events[0].node, "orion");
    assert_eq!(
        all.events[0].timestamp,
        Timestamp::from_unix(T0 + 51).to_rfc3339()
    );
    assert_eq!(details(all), versions(51..=150));

    let five = c.events(query(5, "")).await.unwrap().into_inner();
    assert_eq!(details(five), versions(146..=150));

    let since = Timestamp::from_unix(T0 + 140).to_rfc3339();
    let recent = c.events(query(0, &since)).await.unwrap().into_inner();
    assert_eq!(details(recent), versions(140..=150));
    let recent = c.events(query(3, &since)).await.unwrap().into_inner();
    assert_eq!(details(recent), versions(148..=150));

    let err = c.events(query(0, "yesterday")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("since must be an RFC 3339 time, found \"yesterday\""),
        "{}",
        err.message()
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_since_must_be_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (config, token) = setup(dir.path());
    let registry = Registry::open(&config.database.path).unwrap();
    let (server, mut c) = start(&config, registry, &token).await;
    let req = |since: &str| pb::LogsRequest {
        service_name: "mcq".to_string(),
        component: String::new(),
        follow: false,
        tail: 0,
        since: since.to_string(),
    };
    let err = c.logs(req("an hour ago")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("since must be an RFC 3339 time"),
        "{}",
        err.message()
    );
    // A valid time is accepted: the answer is about the service.
    let err = c.logs(req("2026-01-01T00:00:00Z")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    server.stop().await.unwrap();
}

/// A second agent's server (its own files root and registry) where the
/// master identity `mcp-master` is recognised by its token alone (no
/// certificate binding), and a master client.
async fn start_for_master(
    dir: &Path,
    config: &Config,
) -> (TestServer, Client, Arc<Agent<FakeRuntime>>) {
    let mut config = config.clone();
    config.files.root = dir.join("srv");
    std::fs::create_dir_all(&config.files.root).unwrap();
    let agent = Arc::new(
        Agent::from_config(
            &config,
            FakeRuntime::new(),
            Registry::open_in_memory().unwrap(),
        )
        .unwrap(),
    );
    let tls = tls::server_config(
        &tls::CertKeyPaths {
            cert: config.server.tls_cert.clone(),
            key: config.server.tls_key.clone(),
        },
        &tls::ClientAuth::Optional(config.server.ca_cert.clone()),
    )
    .unwrap();
    let key = mcp_security::jwt::PublicKey::from_file(&config.auth.issuer_public_key).unwrap();
    let verifier = mcp_security::jwt::JwtVerifier::new(key, "mcias", "mcp");
    let security = ServerSecurity::new(tls, Arc::new(verifier), "mcp-master");
    let server = TestServer::start(agent.clone(), security).await.unwrap();
    let token = token_for(
        config.auth.issuer_public_key.parent().unwrap(),
        "mcp-master",
        AccountType::System,
    );
    let c = client(&server, &config.server.ca_cert, &token).await;
    (server, c, agent)
}

async fn export(
    c: &mut Client,
    service: &str,
) -> Result<(Vec<pb::ServiceDataChunk>, Vec<u8>), tonic::Status> {
    let mut s = c
        .export_service_data(pb::ExportServiceDataRequest {
            service_name: service.into(),
        })
        .await?
        .into_inner();
    let mut chunks = Vec::new();
    let mut data = Vec::new();
    while let Some(m) = s.message().await? {
        data.extend_from_slice(&m.data);
        chunks.push(m);
    }
    Ok((chunks, data))
}

fn import_stream(
    service: &str,
    force: bool,
    data: &[u8],
    sha256: &str,
    size: u64,
) -> impl tokio_stream::Stream<Item = pb::ImportServiceDataChunk> + Send + 'static {
    let mut msgs: Vec<pb::ImportServiceDataChunk> = data
        .chunks(100_000)
        .map(|d| pb::ImportServiceDataChunk {
            data: d.to_vec(),
            ..Default::default()
        })
        .collect();
    msgs.push(pb::ImportServiceDataChunk {
        sha256: sha256.into(),
        size,
        ..Default::default()
    });
    msgs[0].service_name = service.into();
    msgs[0].force = force;
    tokio_stream::iter(msgs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_one_agent_imports_into_another_under_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = setup(dir.path());
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let (_sa, mut a, _) = start_for_master(&a_dir, &config).await;
    let (_sb, mut b, _) = start_for_master(&b_dir, &config).await;
    let src = a_dir.join("srv/app");
    std::fs::create_dir_all(src.join("conf")).unwrap();
    std::fs::write(src.join("conf/app.toml"), b"x = 1\n").unwrap();
    std::fs::write(src.join("cert.pem"), content(300_000)).unwrap();
    std::fs::write(src.join("ignored.txt"), b"not in the default set").unwrap();
    let conn = rusqlite::Connection::open(src.join("app.db")).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES (42);")
        .unwrap();

    let (chunks, data) = export(&mut a, "app").await.unwrap();
    let last = chunks.last().unwrap();
    assert!(last.data.is_empty());
    assert_eq!(last.size, data.len() as u64);
    use sha2::Digest;
    assert_eq!(last.sha256, hex::encode(sha2::Sha256::digest(&data)));
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c.sha256.is_empty() && c.data.len() <= 64 * 1024));
    drop(conn);

    let resp = b
        .import_service_data(import_stream("copy", false, &data, &last.sha256, last.size))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.sha256, last.sha256);
    let dst = b_dir.join("srv/copy");
    assert_eq!(
        std::fs::read(dst.join("conf/app.toml")).unwrap(),
        b"x = 1\n"
    );
    assert_eq!(
        std::fs::read(dst.join("cert.pem")).unwrap(),
        content(300_000)
    );
    assert!(!dst.join("ignored.txt").exists());
    assert!(!dst.join("app.db-wal").exists() && !dst.join("app.db-shm").exists());
    let copy = rusqlite::Connection::open(dst.join("app.db")).unwrap();
    let v: i64 = copy.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 42);
    drop(copy);
    assert_eq!(resp.entries, 5, "., conf, conf/app.toml, cert.pem, app.db");

    // Refusals, each with its code; the data stays.
    let before = std::fs::read(dst.join("cert.pem")).unwrap();
    let err = b
        .import_service_data(import_stream("copy", false, &data, &last.sha256, last.size))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("force"), "{}", err.message());
    let err = b
        .import_service_data(import_stream(
            "copy",
            true,
            &data,
            &"0".repeat(64),
            last.size,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert_eq!(std::fs::read(dst.join("cert.pem")).unwrap(), before);
    let err = export(&mut a, "nothing").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = b
        .import_service_data(import_stream("", true, &data, &last.sha256, last.size))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // An operator may not call them.
    let (_s, mut op) = start(
        &config,
        Registry::open_in_memory().unwrap(),
        &token_for(dir.path(), "alice", AccountType::Human),
    )
    .await;
    let err = export(&mut op, "app").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}
