//! Real TLS on 127.0.0.1: a tonic server behind `tls_incoming` and
//! `AuthLayer`, tonic clients through `TlsConnector`, certificates made in
//! the test with rcgen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::fake_master::{fixture, list_nodes, Fixture, ServeOpts};
use mcp_proto::pb;
use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;
use mcp_security::binding::MasterBinding;
use mcp_security::conn::IncomingOptions;
use mcp_security::identity::AccountType::{Human, System};
use mcp_security::jwt::Secret;
use mcp_security::tls::{self, CertKeyPaths, ClientAuth, TlsConnector, TlsError};
use mcp_security::token::BearerInterceptor;
use tonic::{Code, Status};

#[tokio::test]
async fn verified_handshake_token_and_audit() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1", "localhost"], false);
    let (cc, ck) = f.pki.leaf("agent-x", &["agent-x"], false);
    let addr = f
        .serve((&sc, &sk), ClientAuth::Optional(f.pki.ca_path.clone()))
        .await;

    // The CLI: no client certificate, operator token.
    let alice = f.token("alice", Human);
    let mut cli = f.client(addr, &f.pki.ca_path, None, &alice).await.unwrap();
    assert_eq!(list_nodes(&mut cli).await.unwrap(), "alice");
    // An operator may not register.
    let reg = pb::RegisterRequest {
        name: "x".into(),
        ..Default::default()
    };
    assert_eq!(
        cli.register(reg.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // An agent with a client certificate registers, once per minute.
    let agent = f.token("agent-x", System);
    let mut ag = f
        .client(addr, &f.pki.ca_path, Some((&cc, &ck)), &agent)
        .await
        .unwrap();
    assert!(
        ag.register(reg.clone())
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
    assert_eq!(
        ag.register(reg.clone()).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    f.clock.advance(Duration::from_secs(61));
    // Name bound to identity: agent-x cannot register as y.
    let wrong = pb::RegisterRequest {
        name: "y".into(),
        ..Default::default()
    };
    assert_eq!(
        ag.register(wrong).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // An agent may not list nodes.
    assert_eq!(
        list_nodes(&mut ag).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // No token at all.
    let config = tls::client_config(&f.pki.ca_path, None).unwrap();
    let channel = tls::connect_channel(
        &format!("https://127.0.0.1:{}", addr.port()),
        TlsConnector::new(Arc::new(config)),
    )
    .await
    .unwrap();
    let mut anon = McpMasterServiceClient::new(channel);
    assert_eq!(
        anon.list_nodes(pb::ListNodesRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let events = f.audit.events();
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e.method.rsplit('/').next().unwrap_or(""),
                e.caller,
                e.class,
                e.target.as_deref().unwrap_or("-"),
                e.outcome
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ListNodes alice operator - Ok",
            "Register alice operator - PermissionDenied",
            "Register agent-x agent(x) node=x Ok",
            "Register agent-x agent(x) - ResourceExhausted",
            "Register agent-x agent(x) node=y PermissionDenied",
            "ListNodes agent-x agent(x) - PermissionDenied",
        ]
    );
}

/// Connects and calls; the attempt must fail, with `reason` in the error.
async fn expect_refused(
    f: &Fixture,
    addr: SocketAddr,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
    reason: &str,
) {
    let tok = f.token("alice", Human);
    let result = match f.client(addr, ca, cert, &tok).await {
        Err(e) => Err(e),
        Ok(mut c) => list_nodes(&mut c).await.map_err(|s| s.to_string()),
    };
    match result {
        Ok(_) => panic!("connection should have been refused ({reason})"),
        Err(e) => assert!(e.contains(reason), "refused, but not for {reason}: {e}"),
    }
}

#[tokio::test]
async fn wrong_ca_is_refused() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f
        .serve((&sc, &sk), ClientAuth::Optional(f.pki.ca_path.clone()))
        .await;
    // Client trusts another CA: the server's certificate does not verify.
    expect_refused(&f, addr, &f.other.ca_path, None, "UnknownIssuer").await;
    // Client certificate from another CA: the server refuses it.
    let (ec, ek) = f.other.leaf("intruder", &["agent-x"], false);
    expect_refused(&f, addr, &f.pki.ca_path, Some((&ec, &ek)), "UnknownCA").await;
    // The server still serves good clients.
    let tok = f.token("alice", Human);
    let mut ok = f.client(addr, &f.pki.ca_path, None, &tok).await.unwrap();
    assert_eq!(list_nodes(&mut ok).await.unwrap(), "alice");
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], true);
    let addr = f.serve((&sc, &sk), ClientAuth::None).await;
    expect_refused(&f, addr, &f.pki.ca_path, None, "Expired").await;
}

#[tokio::test]
async fn required_client_certificate() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f
        .serve((&sc, &sk), ClientAuth::Required(f.pki.ca_path.clone()))
        .await;
    expect_refused(&f, addr, &f.pki.ca_path, None, "CertificateRequired").await;
    let (xc, xk) = f.pki.leaf("expired-client", &["agent-x"], true);
    expect_refused(
        &f,
        addr,
        &f.pki.ca_path,
        Some((&xc, &xk)),
        "CertificateExpired",
    )
    .await;
    let (cc, ck) = f.pki.leaf("master", &["mcp-master"], false);
    let tok = f.token("alice", Human);
    let mut ok = f
        .client(addr, &f.pki.ca_path, Some((&cc, &ck)), &tok)
        .await
        .unwrap();
    assert_eq!(list_nodes(&mut ok).await.unwrap(), "alice");
}

#[tokio::test]
async fn plaintext_client_is_refused() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f.serve((&sc, &sk), ClientAuth::None).await;
    let tok = f.token("alice", Human);
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let result = match plain.connect().await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => {
            let mut c =
                McpMasterServiceClient::with_interceptor(ch, BearerInterceptor::new(&tok).unwrap());
            list_nodes(&mut c).await.map_err(|s| s.to_string())
        }
    };
    assert!(result.is_err(), "plaintext call succeeded: {result:?}");
    let mut ok = f.client(addr, &f.pki.ca_path, None, &tok).await.unwrap();
    assert_eq!(list_nodes(&mut ok).await.unwrap(), "alice");
}

#[test]
fn config_errors_name_the_file_and_the_problem() {
    let f = fixture();
    let dir = f.pki.dir.clone();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let (_, other_key) = f.pki.leaf("other", &["127.0.0.1"], false);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let missing = dir.join("missing.pem");

    let err = |cert: &Path, key: &Path, ca: ClientAuth| -> String {
        let paths = CertKeyPaths {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        tls::server_config(&paths, &ca).unwrap_err().to_string()
    };
    let e = err(&missing, &sk, ClientAuth::None);
    assert!(
        e.starts_with("server certificate ") && e.contains("missing.pem: cannot read"),
        "{e}"
    );
    let e = err(&sc, &missing, ClientAuth::None);
    assert!(
        e.starts_with("server key ") && e.contains("cannot read"),
        "{e}"
    );
    let e = err(&garbage, &sk, ClientAuth::None);
    assert!(
        e.contains("garbage.pem: contains no CERTIFICATE block"),
        "{e}"
    );
    let e = err(&sc, &garbage, ClientAuth::None);
    assert!(
        e.contains("garbage.pem: contains no PRIVATE KEY block"),
        "{e}"
    );
    let e = err(&sc, &sc, ClientAuth::None);
    assert!(
        e.contains("server.crt: contains no PRIVATE KEY block"),
        "{e}"
    );
    let e = err(&sc, &sk, ClientAuth::Required(garbage.clone()));
    assert!(
        e.starts_with("CA bundle ") && e.contains("contains no CERTIFICATE"),
        "{e}"
    );
    let e = err(&sc, &other_key, ClientAuth::None);
    assert!(
        e.contains("server.crt") && e.contains("other.key") && e.contains("do not match"),
        "{e}"
    );
    let client_err = tls::client_config(&missing, None).unwrap_err();
    assert!(
        matches!(
            client_err,
            TlsError::Read {
                what: "CA bundle",
                ..
            }
        ),
        "{client_err}"
    );
}

/// A channel whose TLS connector verifies the server certificate against
/// `server_name` (not the URI host) and presents `cert` if given.
async fn pinned_channel(
    addr: SocketAddr,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
    server_name: &str,
) -> Result<tonic::transport::Channel, String> {
    let cert = cert.map(|(c, k)| CertKeyPaths {
        cert: c.to_path_buf(),
        key: k.to_path_buf(),
    });
    let config = tls::client_config(ca, cert.as_ref()).unwrap();
    let connector = TlsConnector::new(Arc::new(config))
        .with_server_name(server_name)
        .unwrap();
    tls::connect_channel(&format!("https://127.0.0.1:{}", addr.port()), connector)
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A master client over [`pinned_channel`] with `token`.
async fn pinned_client(
    addr: SocketAddr,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
    server_name: &str,
    token: &str,
) -> Result<
    McpMasterServiceClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            BearerInterceptor,
        >,
    >,
    String,
> {
    let channel = pinned_channel(addr, ca, cert, server_name).await?;
    Ok(McpMasterServiceClient::with_interceptor(
        channel,
        BearerInterceptor::new(&Secret::new(token.to_string())).unwrap(),
    ))
}

/// The agent's RPCs behind the same layer: the decision is taken on the path
/// before any handler, so a server without the agent service shows it — a
/// refused call is answered by the layer, an accepted one reaches the
/// router, which does not know the path (`Unimplemented`).
#[tokio::test]
async fn agent_rpcs_refuse_a_replayed_master_token() {
    use mcp_proto::pb::mcp_agent_service_client::McpAgentServiceClient;
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["localhost"], false);
    let (mc, mk) = f.pki.leaf("master", &["mcp-master"], false);
    let (wc, wk) = f.pki.leaf("agent-w1", &["agent-w1"], false);
    let addr = f
        .serve_opts(
            (&sc, &sk),
            ClientAuth::Optional(f.pki.ca_path.clone()),
            ServeOpts {
                master_binding: Some(MasterBinding::new("mcp-master")),
                ..Default::default()
            },
        )
        .await;
    let thumb = mcp_security::jwt::cert_thumbprint_from_pem_file(&mc).unwrap();
    let token = Secret::new(common::bound_token(
        &f.keys.signing,
        "mcp-master",
        System,
        &thumb,
        &f.clock,
    ));
    let alice = f.token("alice", Human);
    let codes = |cert: Option<(&Path, &Path)>, token: Secret| {
        let ca = f.pki.ca_path.clone();
        let cert = cert.map(|(c, k)| (c.to_path_buf(), k.to_path_buf()));
        async move {
            let cert = cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            let channel = pinned_channel(addr, &ca, cert, "localhost").await.unwrap();
            let mut c = McpAgentServiceClient::with_interceptor(
                channel,
                BearerInterceptor::new(&token).unwrap(),
            );
            let code = |r: Result<(), Status>| match r {
                Ok(()) => Code::Ok,
                Err(s) => s.code(),
            };
            [
                code(
                    c.health_check(pb::HealthCheckRequest::default())
                        .await
                        .map(|_| ()),
                ),
                code(
                    c.list_services(pb::ListServicesRequest::default())
                        .await
                        .map(|_| ()),
                ),
                code(
                    c.deploy(pb::AgentDeployRequest::default())
                        .await
                        .map(|_| ()),
                ),
            ]
        }
    };
    let passed = [Code::Unimplemented; 3];
    assert_eq!(codes(Some((&mc, &mk)), token.clone()).await, passed);
    assert_eq!(codes(None, token.clone()).await, [Code::Unauthenticated; 3]);
    assert_eq!(
        codes(Some((&wc, &wk)), token.clone()).await,
        [Code::Unauthenticated; 3]
    );
    // Operators (`--direct`): lifecycle and read RPCs, never HealthCheck.
    assert_eq!(
        codes(None, alice).await,
        [
            Code::PermissionDenied,
            Code::Unimplemented,
            Code::Unimplemented
        ]
    );
}

/// The replay attack of issue 9: a party holding the master's token but not
/// its private key — no client certificate, or another node's — is refused;
/// with the master's certificate the same token passes. Operators without
/// certificates are unaffected.
#[tokio::test]
async fn a_replayed_master_token_is_useless_without_the_masters_key() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1", "localhost"], false);
    let (mc, mk) = f.pki.leaf("master", &["mcp-master", "localhost"], false);
    let (wc, wk) = f.pki.leaf("agent-w1", &["agent-w1", "localhost"], false);
    let (ec, ek) = f.other.leaf("evil-master", &["mcp-master"], false);
    let addr = f
        .serve_opts(
            (&sc, &sk),
            ClientAuth::Optional(f.pki.ca_path.clone()),
            ServeOpts {
                master_binding: Some(MasterBinding::new("mcp-master")),
                ..Default::default()
            },
        )
        .await;
    let thumb = mcp_security::jwt::cert_thumbprint_from_pem_file(&mc).unwrap();
    let k = &f.keys.signing;
    let master_token = common::bound_token(k, "mcp-master", System, &thumb, &f.clock);
    let ca = f.pki.ca_path.clone();
    let call = |cert: Option<(&Path, &Path)>, token: String| {
        let ca = ca.clone();
        let cert = cert.map(|(c, k)| (c.to_path_buf(), k.to_path_buf()));
        async move {
            let cert = cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            let mut c = pinned_client(addr, &ca, cert, "localhost", &token).await?;
            list_nodes(&mut c)
                .await
                .map_err(|s| format!("{:?}", s.code()))
        }
    };

    // The master itself: its certificate and its bound token.
    assert_eq!(
        call(Some((&mc, &mk)), master_token.clone()).await.unwrap(),
        "mcp-master"
    );
    // Replayed without a client certificate, or with another node's.
    assert_eq!(
        call(None, master_token.clone()).await.unwrap_err(),
        "Unauthenticated"
    );
    assert_eq!(
        call(Some((&wc, &wk)), master_token.clone())
            .await
            .unwrap_err(),
        "Unauthenticated"
    );
    // A certificate naming the master from another CA never gets past TLS
    // (in TLS 1.3 the client learns it on its first call: a transport
    // error, not an answer from the server's auth layer).
    let e = call(Some((&ec, &ek)), master_token.clone())
        .await
        .unwrap_err();
    assert!(
        e.contains("UnknownCA") || e == "Unknown" || e == "Unavailable",
        "{e}"
    );
    // An unbound master token is not enough once the binding is required.
    let unbound = common::token(
        k,
        "mcp-master",
        System,
        &[],
        Duration::from_secs(3600),
        &f.clock,
    );
    assert_eq!(
        call(Some((&mc, &mk)), unbound).await.unwrap_err(),
        "Unauthenticated"
    );
    // A master token bound to w1's certificate, used by w1: its certificate
    // is genuine but does not name the master.
    let w1_thumb = mcp_security::jwt::cert_thumbprint_from_pem_file(&wc).unwrap();
    let w1_bound = common::bound_token(k, "mcp-master", System, &w1_thumb, &f.clock);
    assert_eq!(
        call(Some((&wc, &wk)), w1_bound).await.unwrap_err(),
        "PermissionDenied"
    );
    // Operators keep working without a certificate; a bound operator token
    // without its certificate does not.
    let alice = common::token(k, "alice", Human, &[], Duration::from_secs(3600), &f.clock);
    assert_eq!(call(None, alice).await.unwrap(), "alice");
    let alice_bound = common::bound_token(k, "alice", Human, &w1_thumb, &f.clock);
    assert_eq!(
        call(None, alice_bound.clone()).await.unwrap_err(),
        "Unauthenticated"
    );
    assert_eq!(call(Some((&wc, &wk)), alice_bound).await.unwrap(), "alice");
}

/// Agents pin the master's name: a server certificate from the right CA but
/// for another node is refused, the master's passes.
#[tokio::test]
async fn clients_can_pin_the_server_certificate_name() {
    let f = fixture();
    let (mc, mk) = f.pki.leaf("master", &["mcp-master"], false);
    let (wc, wk) = f.pki.leaf("agent-w1", &["agent-w1", "127.0.0.1"], false);
    let alice = f.token("alice", Human);
    let master = f.serve((&mc, &mk), ClientAuth::None).await;
    let impostor = f.serve((&wc, &wk), ClientAuth::None).await;
    let mut ok = pinned_client(master, &f.pki.ca_path, None, "mcp-master", alice.expose())
        .await
        .unwrap();
    assert_eq!(list_nodes(&mut ok).await.unwrap(), "alice");
    let refused =
        match pinned_client(impostor, &f.pki.ca_path, None, "mcp-master", alice.expose()).await {
            Err(e) => e,
            Ok(mut c) => list_nodes(&mut c).await.unwrap_err().to_string(),
        };
    assert!(refused.contains("NotValidForName"), "{refused}");
}

/// A raw TLS 1.3 connection to the server (ALPN h2), handshake completed.
async fn raw_tls(
    addr: SocketAddr,
    ca: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = tls::client_config(ca, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Reads until EOF or error; how long it took, or `None` if still open at
/// `limit`.
async fn time_to_close<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt as _;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(start + limit),
            s.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// HTTP/2 client preface and an empty SETTINGS frame.
const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn an_idle_handshaken_connection_is_closed_but_http2_stays() {
    use tokio::io::AsyncWriteExt as _;
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f
        .serve_opts(
            (&sc, &sk),
            ClientAuth::None,
            ServeOpts {
                incoming: IncomingOptions {
                    preface_timeout: Some(Duration::from_millis(400)),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
    // Handshake, then silence: closed after the preface timeout.
    let mut idle = raw_tls(addr, &f.pki.ca_path).await.unwrap();
    let closed = time_to_close(&mut idle, Duration::from_secs(5)).await;
    let closed = closed.expect("idle connection still open after 5 s");
    assert!(
        closed >= Duration::from_millis(300),
        "closed too early: {closed:?}"
    );
    assert!(closed < Duration::from_secs(3), "closed late: {closed:?}");
    // A connection that sent the preface stays open past the timeout.
    let mut h2 = raw_tls(addr, &f.pki.ca_path).await.unwrap();
    h2.write_all(H2_HELLO).await.unwrap();
    h2.flush().await.unwrap();
    assert_eq!(
        time_to_close(&mut h2, Duration::from_millis(1500)).await,
        None
    );
    // And gRPC over a tonic channel keeps working across idle periods.
    let alice = f.token("alice", Human);
    let mut c = f.client(addr, &f.pki.ca_path, None, &alice).await.unwrap();
    assert_eq!(list_nodes(&mut c).await.unwrap(), "alice");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(list_nodes(&mut c).await.unwrap(), "alice");
}

#[tokio::test]
async fn connections_per_peer_are_capped_at_accept() {
    use tokio::io::AsyncWriteExt as _;
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f
        .serve_opts(
            (&sc, &sk),
            ClientAuth::None,
            ServeOpts {
                incoming: IncomingOptions {
                    max_connections_per_peer: Some(2),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = raw_tls(addr, &f.pki.ca_path).await.unwrap();
        c.write_all(H2_HELLO).await.unwrap();
        c.flush().await.unwrap();
        held.push(c);
    }
    // The third is closed at accept: no TLS handshake completes.
    assert!(raw_tls(addr, &f.pki.ca_path).await.is_err());
    let alice = f.token("alice", Human);
    assert!(f.client(addr, &f.pki.ca_path, None, &alice).await.is_err());
    // Closing one frees its slot.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        if let Ok(c) = f.client(addr, &f.pki.ca_path, None, &alice).await {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(list_nodes(&mut c).await.unwrap(), "alice");
}
