//! TLS 1.3-only rustls configurations from PEM files, and the glue to run a
//! tonic server and client over them.
//!
//! tonic's own `ServerTlsConfig`/`ClientTlsConfig` cannot restrict the
//! protocol version, so MCP builds the rustls configs itself:
//! [`tls_incoming`] turns a `TcpListener` into a stream of TLS connections for
//! `Server::serve_with_incoming`, and [`connect_channel`] opens a tonic
//! `Channel` through [`TlsConnector`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

use crate::conn::PeerConnections;
pub use crate::conn::{IncomingOptions, TlsConn};

/// Errors building a TLS configuration: each names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: cannot read: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path}: not valid PEM: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path}: contains no {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("CA bundle {path}: certificate {index} rejected: {reason}")]
    BadCa {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("certificate {cert} and private key {key} do not match: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

/// Paths of a certificate chain and its private key (PEM).
#[derive(Debug, Clone)]
pub struct CertKeyPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Whether a server asks clients for certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificates (callers authenticate by bearer token only).
    None,
    /// A client may present a certificate; if it does, it must chain to this
    /// CA bundle. The master uses this: the CLI has no certificate, agents do.
    Optional(PathBuf),
    /// Every client must present a certificate chaining to this CA bundle.
    Required(PathBuf),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every certificate of a PEM file.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(what, path)?;
    match rustls_pemfile::private_key(&mut bytes.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "PRIVATE KEY block",
        }),
        Err(source) => Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a CA bundle into a root store; every certificate must parse.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = load_certs("CA bundle", path)?;
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            index,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn mismatch(paths: &CertKeyPaths, e: rustls::Error) -> TlsError {
    TlsError::Mismatch {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        reason: e.to_string(),
    }
}

/// A TLS 1.3-only server configuration with ALPN `h2` (gRPC).
pub fn server_config(
    identity: &CertKeyPaths,
    client_auth: &ClientAuth,
) -> Result<ServerConfig, TlsError> {
    let chain = load_certs("server certificate", &identity.cert)?;
    let key = load_key("server key", &identity.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(ca) | ClientAuth::Required(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let mut v = WebPkiClientVerifier::builder_with_provider(roots, provider());
            if matches!(client_auth, ClientAuth::Optional(_)) {
                v = v.allow_unauthenticated();
            }
            let verifier = v.build().map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| mismatch(identity, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A TLS 1.3-only client configuration verifying servers against `ca`,
/// optionally presenting a client certificate, with ALPN `h2`.
pub fn client_config(ca: &Path, identity: Option<&CertKeyPaths>) -> Result<ClientConfig, TlsError> {
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(paths) => {
            let chain = load_certs("client certificate", &paths.cert)?;
            let key = load_key("client key", &paths.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| mismatch(paths, e))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections and completes TLS handshakes concurrently (one
/// slow or hostile peer does not block others). Failed handshakes (wrong CA,
/// expired certificate, plaintext) are logged at debug and dropped; only
/// established connections are yielded. Feed it to
/// `tonic::transport::Server::serve_with_incoming`. The limits are
/// [`IncomingOptions::default`]; see [`tls_incoming_with`].
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    tls_incoming_with(listener, config, IncomingOptions::default())
}

/// [`tls_incoming`] with explicit limits: handshake timeout, HTTP/2 preface
/// timeout (a peer that completes TLS and sends nothing is closed), and a
/// maximum number of concurrent connections per peer IP (excess ones are
/// closed right after accept, before any TLS work). Each yielded
/// [`TlsConn`] carries the peer's address and verified client certificate
/// chain into every request's extensions ([`crate::conn::Peer`]).
pub fn tls_incoming_with(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    options: IncomingOptions,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let peers = PeerConnections::new(options.max_connections_per_peer);
    tokio::spawn(async move {
        let mut refused = RefusedLog::default();
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let Some(slot) = peers.acquire(peer.ip()) else {
                refused.note(peer);
                drop(tcp);
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let handshake_timeout = options.handshake_timeout;
            let preface_timeout = options.preface_timeout;
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let conn = TlsConn::new(tls, preface_timeout, Some(slot));
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// One warn line per minute about connections refused over the per-peer
/// limit, with how many.
#[derive(Default)]
struct RefusedLog {
    last: Option<std::time::Instant>,
    count: u64,
}

impl RefusedLog {
    fn note(&mut self, peer: SocketAddr) {
        self.count += 1;
        let now = std::time::Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            tracing::warn!(
                %peer,
                refused = self.count,
                "connections over the per-peer limit closed at accept"
            );
            self.last = Some(now);
            self.count = 0;
        }
    }
}

/// A tower connector for `tonic::transport::Endpoint::connect_with_connector`:
/// TCP to the URI's host and port, then TLS 1.3 with this crate's client
/// config, verifying the server name (the URI host unless overridden).
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    pub fn new(config: Arc<ClientConfig>) -> Self {
        Self {
            config,
            server_name: None,
        }
    }

    /// Verifies the server certificate against `name` instead of the URI host
    /// (e.g. dialing an overlay IP whose certificate names the node).
    pub fn with_server_name(mut self, name: &str) -> Result<Self, TlsError> {
        let sn = ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::ServerName(name.to_string()))?;
        self.server_name = Some(sn);
        Ok(self)
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = BoxFuture<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        let fixed_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = match fixed_name {
                Some(n) => n,
                None => ServerName::try_from(host.clone()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("invalid server name {host:?}"),
                    )
                })?,
            };
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Opens a tonic channel to `uri` (`https://host:port`) over TLS 1.3.
pub async fn connect_channel(
    uri: &str,
    connector: TlsConnector,
) -> Result<tonic::transport::Channel, ConnectError> {
    Ok(endpoint(uri)?.connect_with_connector(connector).await?)
}

/// Like [`connect_channel`], but connects on first use and reconnects after
/// failures by itself: for long-lived clients whose peer may not be up yet
/// (an agent registering with its master).
pub fn connect_channel_lazy(
    uri: &str,
    connector: TlsConnector,
) -> Result<tonic::transport::Channel, ConnectError> {
    Ok(endpoint(uri)?.connect_with_connector_lazy(connector))
}

/// tonic would try its own TLS for an `https` URI, so the endpoint is dialed
/// as `http` through [`TlsConnector`] while requests keep the `https` origin.
fn endpoint(uri: &str) -> Result<tonic::transport::Endpoint, ConnectError> {
    let origin: http::Uri = uri
        .parse()
        .map_err(|e: http::uri::InvalidUri| ConnectError::Uri(uri.to_string(), e.to_string()))?;
    let dial = match uri.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => uri.to_string(),
    };
    Ok(tonic::transport::Endpoint::from_shared(dial)?.origin(origin))
}

/// Failure to open a channel.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid address {0:?}: {1}")]
    Uri(String, String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// Binds a listener; a helper so servers report the address in errors.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))
}
