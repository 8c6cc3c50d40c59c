//! The agent's gRPC server as the daemon builds it (`ServerSecurity::from_config`
//! and `serve`: TLS 1.3 on 127.0.0.1, bearer tokens), over the fake runtime:
//!
//! - PushFile / PullFile: a 50 MiB file goes through both ways intact (the
//!   server and its clients share `MAX_MESSAGE_BYTES`), and a file over
//!   `MAX_FILE_BYTES` is refused with a message naming the limit;
//! - Events: `limit` (0 = 100), `since` (RFC 3339, else InvalidArgument),
//!   oldest first, every row with its detail.
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
    let signing = SigningKey::from_pem(kp.private_pem.expose().as_bytes(), "test").unwrap();
    let token = issue_token(
        &signing,
        &TokenRequest {
            identity: "alice".to_string(),
            account_type: AccountType::Human,
            roles: Vec::new(),
            ttl: Duration::from_secs(3600),
            issuer: "mcias".to_string(),
            audience: "mcp".to_string(),
        },
        &SystemClock,
    )
    .unwrap();
    (config, token)
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
