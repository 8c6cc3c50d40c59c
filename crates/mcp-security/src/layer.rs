//! The server side: a tower layer that authenticates, authorizes,
//! rate-limits and audits every gRPC call.
//!
//! It is a tower [`Layer`](tower_layer::Layer) over HTTP requests rather
//! than a tonic interceptor because it needs the method path
//! (`req.uri().path()`), which interceptors do not see.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::audit::{self, AuditEvent, AuditSink, AuditTarget};
use crate::authz::{AuthzTable, CallerClass};
use crate::clock::{Clock, SystemClock};
use crate::identity::{Identity, TokenVerifier};
use crate::registration::RateLimiter;

/// The authenticated caller of the current request, inserted into the
/// request extensions by [`AuthLayer`]. Read it with [`caller`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    pub class: CallerClass,
}

/// The caller of a request that went through [`AuthLayer`].
pub fn caller<T>(req: &tonic::Request<T>) -> Option<&Caller> {
    req.extensions().get::<Caller>()
}

/// Like [`caller`], but `Unauthenticated` when missing (a server wired
/// without the layer fails closed).
pub fn require_caller<T>(req: &tonic::Request<T>) -> Result<&Caller, tonic::Status> {
    caller(req).ok_or_else(|| tonic::Status::unauthenticated("no authenticated caller"))
}

/// A refused call: the status to return, and the caller if it was
/// authenticated (then the refusal is audited).
#[derive(Debug)]
pub struct Rejected {
    pub status: tonic::Status,
    pub caller: Option<Caller>,
}

/// Extracts the token from an `authorization` header value (`Bearer <t>`,
/// scheme case-insensitive).
pub fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// The decision pipeline, independent of HTTP: token → identity →
/// class → table → rate limit. [`AuthLayer`] runs it for every request; tests
/// call it directly.
pub struct Authorizer {
    verifier: Arc<dyn TokenVerifier>,
    table: AuthzTable,
    rate: Option<RateLimiter>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("table", &self.table)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(verifier: Arc<dyn TokenVerifier>, table: AuthzTable) -> Self {
        Self {
            verifier,
            table,
            rate: None,
        }
    }

    /// Applies per-identity rate limits after authorization (refusals are
    /// `ResourceExhausted`).
    pub fn with_rate_limiter(mut self, rate: RateLimiter) -> Self {
        self.rate = Some(rate);
        self
    }

    pub fn table(&self) -> &AuthzTable {
        &self.table
    }

    /// Decides one call. `authorization` is the raw header value, if any.
    ///
    /// - no or malformed bearer token, invalid token → `Unauthenticated`
    /// - verifier cannot decide → `Unavailable`
    /// - caller class not allowed (guests, unknown system accounts,
    ///   methods not in the table) → `PermissionDenied`
    /// - over the rate limit → `ResourceExhausted`
    pub async fn check(
        &self,
        method: &str,
        authorization: Option<&str>,
    ) -> Result<Caller, Rejected> {
        let unauth = |m: &str| Rejected {
            status: tonic::Status::unauthenticated(m.to_string()),
            caller: None,
        };
        let header = authorization.ok_or_else(|| unauth("missing bearer token"))?;
        let token = parse_bearer(header).ok_or_else(|| unauth("malformed authorization header"))?;
        let identity = self.verifier.verify(token).await.map_err(|e| Rejected {
            status: e.to_status(),
            caller: None,
        })?;
        let class = self.table.classify(&identity);
        let caller = Caller { identity, class };
        if let Err(denied) = self.table.authorize(method, &caller.identity) {
            return Err(Rejected {
                status: denied.to_status(),
                caller: Some(caller),
            });
        }
        if let Some(rate) = &self.rate {
            if let Err(limited) = rate.check(&caller.identity.name, method) {
                return Err(Rejected {
                    status: limited.to_status(),
                    caller: Some(caller),
                });
            }
        }
        Ok(caller)
    }
}

/// Tower layer for `tonic::transport::Server::builder().layer(..)`.
#[derive(Clone)]
pub struct AuthLayer {
    authorizer: Arc<Authorizer>,
    sink: Option<Arc<dyn AuditSink>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("authorizer", &self.authorizer)
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    pub fn new(authorizer: Authorizer) -> Self {
        Self {
            authorizer: Arc::new(authorizer),
            sink: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Also hands every audit event to `sink` (e.g. the master's database).
    pub fn with_audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the router.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S> std::fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The gRPC code of a response, read from its headers (trailers-only error
/// responses carry it there); `Ok` when the response started normally.
fn outcome<B>(resp: &http::Response<B>) -> String {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map_or_else(
            || "Ok".to_string(),
            |c| format!("{:?}", tonic::Code::from_i32(c)),
        )
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let start = layer.clock.instant();
            let method = req.uri().path().to_string();
            // Taken out of the request: handlers never see the token.
            let header = req.headers_mut().remove(http::header::AUTHORIZATION);
            let header = header.as_ref().and_then(|v| v.to_str().ok());
            let record = |caller: &Caller, target: Option<String>, outcome: String| {
                let event = AuditEvent {
                    time: layer.clock.now(),
                    method: method.clone(),
                    caller: caller.identity.name.clone(),
                    class: caller.class.to_string(),
                    target,
                    outcome,
                    duration: layer.clock.instant().saturating_duration_since(start),
                };
                audit::log(&event);
                let sink = layer.sink.clone();
                async move {
                    if let Some(sink) = sink {
                        sink.record(event).await;
                    }
                }
            };
            match layer.authorizer.check(&method, header).await {
                Err(rejected) => {
                    match &rejected.caller {
                        Some(caller) => {
                            record(caller, None, format!("{:?}", rejected.status.code())).await;
                        }
                        None => tracing::warn!(
                            target: "mcp::audit",
                            method = %method,
                            code = ?rejected.status.code(),
                            reason = rejected.status.message(),
                            "unauthenticated rpc refused"
                        ),
                    }
                    Ok(rejected.status.into_http())
                }
                Ok(caller) => {
                    let target = AuditTarget::default();
                    req.extensions_mut().insert(caller.clone());
                    req.extensions_mut().insert(target.clone());
                    let result = inner.call(req).await;
                    let outcome = match &result {
                        Ok(resp) => outcome(resp),
                        Err(_) => "Internal".to_string(),
                    };
                    record(&caller, target.get(), outcome).await;
                    result
                }
            }
        })
    }
}
