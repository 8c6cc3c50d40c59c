//! Validation of tokens by the identity service, over HTTP(S), cached.
//!
//! Contract (MCP's side of the identity service):
//!
//! ```text
//! POST <validate_url>
//! Authorization: Bearer <token>
//! Accept: application/json
//!
//! 200 {"name": "alice", "account_type": "human", "roles": ["admin"]}
//! 401 / 403 (any body)      the token is not valid
//! anything else / no answer verification unavailable (not cached)
//! ```
//!
//! Answers (valid and invalid) are cached for [`CACHE_TTL`] keyed by the
//! SHA-256 of the token; the token itself is never stored or logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::clock::{Clock, SystemClock};
use crate::identity::{Identity, TokenVerifier, VerifyError, VerifyFuture, MAX_TOKEN_LEN};

/// How long an answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Time allowed for one validation call.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted response body.
const MAX_BODY: usize = 64 * 1024;
/// Cached entries before a sweep.
const MAX_ENTRIES: usize = 4096;

/// Invalid configuration of the verifier.
#[derive(Debug, thiserror::Error)]
pub enum IdentityServiceError {
    #[error("identity service URL {0:?}: {1}")]
    Url(String, String),
}

type CacheKey = [u8; 32];
/// A cached answer: when it expires, and the identity or the refusal reason.
type CacheEntry = (Instant, Result<Identity, String>);

/// A [`TokenVerifier`] asking the identity service.
pub struct IdentityServiceVerifier {
    uri: http::Uri,
    host: String,
    port: u16,
    tls: Option<Arc<ClientConfig>>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    cache: Mutex<HashMap<CacheKey, CacheEntry>>,
}

impl fmt::Debug for IdentityServiceVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityServiceVerifier")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a token: the cache key.
pub fn token_fingerprint(token: &str) -> CacheKey {
    Sha256::digest(token.as_bytes()).into()
}

impl IdentityServiceVerifier {
    /// `url` is `http://` or `https://`. For `https`, `tls` is the client
    /// configuration (e.g. [`crate::tls::client_config`]); its ALPN is set to
    /// HTTP/1.1 here.
    pub fn new(url: &str, tls: Option<ClientConfig>) -> Result<Self, IdentityServiceError> {
        let bad = |m: &str| IdentityServiceError::Url(url.to_string(), m.to_string());
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("scheme must be http or https")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, tls) {
            (true, Some(mut c)) => {
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Arc::new(c))
            }
            (true, None) => return Err(bad("https needs a TLS client configuration")),
            (false, _) => None,
        };
        Ok(Self {
            uri,
            host,
            port,
            tls,
            clock: Arc::new(SystemClock),
            ttl: CACHE_TTL,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn cached(&self, key: &CacheKey) -> Option<Result<Identity, VerifyError>> {
        let now = self.clock.instant();
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.get(key) {
            Some((expires, r)) if now < *expires => Some(r.clone().map_err(VerifyError::Invalid)),
            _ => None,
        }
    }

    fn store(&self, key: CacheKey, r: &Result<Identity, VerifyError>) {
        let value = match r {
            Ok(id) => Ok(id.clone()),
            Err(VerifyError::Invalid(m)) => Err(m.clone()),
            Err(VerifyError::Unavailable(_)) => return,
        };
        let now = self.clock.instant();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (exp, _)| now < *exp);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (now + self.ttl, value));
    }

    async fn call(&self, token: &str) -> Result<Identity, VerifyError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(token)).await {
            Ok(r) => r,
            Err(_) => Err(VerifyError::Unavailable(format!(
                "{}: no answer within {REQUEST_TIMEOUT:?}",
                self.uri
            ))),
        }
    }

    async fn exchange(&self, token: &str) -> Result<Identity, VerifyError> {
        let unavailable = |m: String| VerifyError::Unavailable(format!("{}: {m}", self.uri));
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unavailable(format!("connect: {e}")))?;
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| VerifyError::Invalid("token is not printable ASCII".to_string()))?;
        auth.set_sensitive(true);
        let path = self
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .to_string();
        let authority = self
            .uri
            .authority()
            .map_or_else(|| self.host.clone(), |a| a.to_string());
        let req = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| unavailable(e.to_string()))?;
        let (status, body) = match &self.tls {
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|_| unavailable("invalid server name".to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unavailable(format!("TLS: {e}")))?;
                send(TokioIo::new(tls), req).await
            }
            None => send(TokioIo::new(tcp), req).await,
        }
        .map_err(unavailable)?;
        match status.as_u16() {
            200 => {
                let id: Identity = serde_json::from_slice(&body)
                    .map_err(|e| unavailable(format!("bad answer: {e}")))?;
                if id.name.is_empty() {
                    return Err(unavailable("bad answer: empty name".to_string()));
                }
                Ok(id)
            }
            401 | 403 => Err(VerifyError::Invalid(
                "rejected by the identity service".to_string(),
            )),
            other => Err(unavailable(format!("HTTP status {other}"))),
        }
    }
}

async fn send<IO>(
    io: IO,
    req: http::Request<Empty<Bytes>>,
) -> Result<(http::StatusCode, Bytes), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

impl TokenVerifier for IdentityServiceVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move {
            if token.is_empty() || token.len() > MAX_TOKEN_LEN {
                return Err(VerifyError::Invalid("token empty or too long".to_string()));
            }
            let key = token_fingerprint(token);
            if let Some(r) = self.cached(&key) {
                return r;
            }
            let r = self.call(token).await;
            self.store(key, &r);
            r
        })
    }
}
