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

use crate::abuse::{FailureLimiter, FailureLimits, FailureVerdict};
use crate::audit::{self, AuditEvent, AuditSink, AuditTarget};
use crate::authz::{AuthzTable, CallerClass};
use crate::binding::{check_binding, MasterBinding};
use crate::clock::{Clock, SystemClock};
use crate::conn::Peer;
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
    caller(req)
        .ok_or_else(|| tonic::Status::unauthenticated(crate::identity::UNAUTHENTICATED_MESSAGE))
}

/// A refused call: the status to return, the caller if it was authenticated
/// (then the refusal is audited), and the precise reason for the server's
/// log (the status the caller gets says no more than "unauthenticated").
#[derive(Debug)]
pub struct Rejected {
    pub status: tonic::Status,
    pub caller: Option<Caller>,
    pub reason: String,
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
    master_binding: Option<MasterBinding>,
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
            master_binding: None,
        }
    }

    /// Accepts master-class calls only over a connection whose client
    /// certificate names `binding.cert_name` and with a token bound to that
    /// certificate (`cnf` `x5t#S256`); see [`crate::binding`]. Without it
    /// (the default) the master is recognised by its token alone. Tokens
    /// carrying a `cnf` are checked against the connection's certificate
    /// either way.
    pub fn with_master_binding(mut self, binding: MasterBinding) -> Self {
        self.master_binding = Some(binding);
        self
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
    ///
    /// Without connection facts: a token bound to a certificate, and (with
    /// [`Authorizer::with_master_binding`]) the master, are refused. Servers
    /// go through [`Authorizer::check_peer`].
    pub async fn check(
        &self,
        method: &str,
        authorization: Option<&str>,
    ) -> Result<Caller, Rejected> {
        self.check_peer(method, authorization, None).await
    }

    /// [`Authorizer::check`] for a call over a connection whose client leaf
    /// certificate (DER) is `client_cert`: certificate-bound tokens and the
    /// master's certificate are checked after the token and before the
    /// table (see [`crate::binding`]).
    pub async fn check_peer(
        &self,
        method: &str,
        authorization: Option<&str>,
        client_cert: Option<&[u8]>,
    ) -> Result<Caller, Rejected> {
        let unauth = |m: &str| Rejected {
            status: tonic::Status::unauthenticated(crate::identity::UNAUTHENTICATED_MESSAGE),
            caller: None,
            reason: m.to_string(),
        };
        let header = authorization.ok_or_else(|| unauth("missing bearer token"))?;
        let token = parse_bearer(header).ok_or_else(|| unauth("malformed authorization header"))?;
        let identity = self.verifier.verify(token).await.map_err(|e| Rejected {
            status: e.to_status(),
            caller: None,
            reason: e.to_string(),
        })?;
        let class = self.table.classify(&identity);
        if let Err(e) = check_binding(&identity, &class, client_cert, self.master_binding.as_ref())
        {
            let status = e.to_status();
            // A refused binding is not an authenticated caller, except a
            // valid bound token whose certificate is not the master's.
            let caller = (status.code() == tonic::Code::PermissionDenied).then(|| Caller {
                identity: identity.clone(),
                class: class.clone(),
            });
            return Err(Rejected {
                status,
                caller,
                reason: format!("{} ({}): {e}", identity.name, class),
            });
        }
        let caller = Caller { identity, class };
        if let Err(denied) = self.table.authorize(method, &caller.identity) {
            return Err(Rejected {
                status: denied.to_status(),
                caller: Some(caller),
                reason: denied.to_string(),
            });
        }
        if let Some(rate) = &self.rate {
            if let Err(limited) = rate.check(&caller.identity.name, method) {
                return Err(Rejected {
                    status: limited.to_status(),
                    caller: Some(caller),
                    reason: limited.to_string(),
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
    failures: Option<FailureLimiter>,
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
            failures: None,
        }
    }

    /// Limits refused calls (failed authentication, permission denied) per
    /// peer IP: over the limit they are answered `ResourceExhausted`, not
    /// logged or audited one by one, and summarised in one warn line per
    /// interval per peer ([`crate::abuse`]). Calls that authenticate and
    /// are allowed are never limited. Default: no limit.
    pub fn with_failure_limits(self, limits: FailureLimits) -> Self {
        let clock = self.clock.clone();
        self.with_failure_limiter(FailureLimiter::with_clock(limits, clock))
    }

    /// [`AuthLayer::with_failure_limits`] with a limiter built elsewhere
    /// (e.g. with a test clock).
    pub fn with_failure_limiter(mut self, limiter: FailureLimiter) -> Self {
        self.failures = Some(limiter);
        self
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

/// With failure limits: counts an `Unauthenticated` or `PermissionDenied`
/// refusal for the peer and, over the limit, returns the
/// `ResourceExhausted` to answer instead (the caller then skips the
/// per-call log line and audit record; a summary line is written here, at
/// most once per interval per peer).
fn limit_failure(
    layer: &AuthLayer,
    peer: &Peer,
    rejected: &Rejected,
    method: &str,
) -> Option<tonic::Status> {
    let limiter = layer.failures.as_ref()?;
    let ip = peer.ip()?;
    if !matches!(
        rejected.status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    ) {
        return None;
    }
    match limiter.record_failure(ip) {
        FailureVerdict::Counted => None,
        FailureVerdict::Limited { summary } => {
            if let Some(suppressed) = summary {
                tracing::warn!(
                    target: "mcp::audit",
                    peer = %ip,
                    suppressed,
                    last_method = %method,
                    last_code = ?rejected.status.code(),
                    window_s = limiter.limits().window.as_secs(),
                    "refused rpcs over the per-peer limit: answered ResourceExhausted, not logged each"
                );
            }
            Some(tonic::Status::resource_exhausted(
                "too many refused calls from this address; retry later",
            ))
        }
    }
}

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
            let peer = Peer::from_extensions(req.extensions());
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
            match layer
                .authorizer
                .check_peer(&method, header, peer.leaf())
                .await
            {
                Err(rejected) => {
                    if let Some(status) = limit_failure(&layer, &peer, &rejected, &method) {
                        return Ok(status.into_http());
                    }
                    match &rejected.caller {
                        Some(caller) => {
                            record(caller, None, format!("{:?}", rejected.status.code())).await;
                        }
                        None => tracing::warn!(
                            target: "mcp::audit",
                            method = %method,
                            peer = ?peer.addr,
                            code = ?rejected.status.code(),
                            reason = %rejected.reason,
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
