//! Security for every MCP gRPC channel (CLI → master, agent → master,
//! master → agent): TLS 1.3 with verified peers, bearer-token identities,
//! per-RPC authorization by caller class, rate limits, audit, and the
//! validation helpers for registrations and edge routes.
//!
//! Layers: [`authz`], [`registration`], [`edge`] and [`identity`] are pure
//! data and logic; [`jwt`] is pure crypto; [`tls`], [`idsvc`], [`token`] and
//! [`layer`] do I/O. Time is always injected ([`clock::Clock`]).
//!
//! # Server: the master or an agent
//!
//! ```ignore
//! use std::sync::Arc;
//! use mcp_security::{authz::AuthzTable, jwt::{JwtVerifier, PublicKey}, layer::{AuthLayer, Authorizer},
//!                    registration::{RateLimiter, RateLimits}, tls};
//!
//! let tls = tls::server_config(
//!     &tls::CertKeyPaths { cert: cfg.tls_cert.clone(), key: cfg.tls_key.clone() },
//!     &tls::ClientAuth::Optional(cfg.ca_cert.clone()),
//! )?;
//! let verifier = JwtVerifier::new(PublicKey::from_file(&cfg.issuer_key)?, "mcias", "mcp");
//! let authorizer = Authorizer::new(Arc::new(verifier), AuthzTable::standard("mcp-master"))
//!     .with_rate_limiter(RateLimiter::new(RateLimits::default())); // master only
//! let listener = tls::bind(cfg.grpc_addr).await?;
//! tonic::transport::Server::builder()
//!     .layer(AuthLayer::new(authorizer).with_audit_sink(db_audit_sink))
//!     .add_service(McpMasterServiceServer::new(master))
//!     .serve_with_incoming(tls::tls_incoming(listener, Arc::new(tls)))
//!     .await?;
//! ```
//!
//! Hardening, each off unless asked for (see the modules):
//! `Authorizer::with_master_binding` (the master's calls need its client
//! certificate and a token bound to it, [`binding`]),
//! `AuthLayer::with_failure_limits` (per-peer limits on refused calls,
//! [`abuse`]), `tls::tls_incoming_with` (HTTP/2 preface timeout — 10 s by
//! default in `tls_incoming` too — and a per-peer connection cap, [`conn`]),
//! `JwtVerifier::with_max_lifetime` / `with_leeway` (default 5 s).
//!
//! The layer refuses a call before any handler runs: no/invalid token →
//! `Unauthenticated`; identity service unreachable → `Unavailable`; caller
//! class not allowed by [`authz::RPC_TABLE`] (or method not in it) →
//! `PermissionDenied`; over a rate limit → `ResourceExhausted`. Handlers get
//! the caller with [`layer::caller`] / [`layer::require_caller`] (a
//! [`layer::Caller`] in the request extensions; the `authorization` header
//! is removed) and should name what the call is about with
//! [`audit::set_audit_target`] so the audit line carries it:
//!
//! ```ignore
//! async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
//!     let caller = mcp_security::layer::require_caller(&req)?.clone();
//!     let name = &req.get_ref().name;
//!     mcp_security::audit::set_audit_target(&req, mcp_security::audit::target(None, Some(name)));
//!     let node = self.policy.check_register(&caller.identity, name, &self.known_nodes())
//!         .map_err(|e| e.to_status())?;
//!     ...
//! }
//! ```
//!
//! Every authenticated call is logged once at info (target `mcp::audit`)
//! with method, caller, class, target, outcome and duration, when its
//! response starts; the optional [`audit::AuditSink`] receives the same
//! [`audit::AuditEvent`]. Refused unauthenticated calls are logged at warn
//! without any token material.
//!
//! # Client: the CLI, the master calling agents, agents calling the master
//!
//! ```ignore
//! let tls = mcp_security::tls::client_config(&ca_path, client_cert.as_ref())?;
//! let channel = mcp_security::tls::connect_channel(
//!     "https://master.internal:7443",
//!     mcp_security::tls::TlsConnector::new(Arc::new(tls)),
//! ).await?;
//! let token = mcp_security::token::read_token(Some(&token_path))?; // MCP_TOKEN wins
//! let auth = mcp_security::token::BearerInterceptor::new(&token)?;
//! let client = McpMasterServiceClient::with_interceptor(channel, auth);
//! ```
//!
//! # Tokens
//!
//! [`jwt::generate_keypair`] / [`jwt::write_keypair`] back `mcp token
//! keygen`; [`jwt::issue_token`] backs `mcp token issue`. Secrets are
//! [`jwt::Secret`], whose `Debug` is redacted and which has no `Display`.

pub mod abuse;
pub mod audit;
pub mod authz;
pub mod binding;
pub mod clock;
pub mod config;
pub mod conn;
pub mod edge;
pub mod fuzzing;
pub mod identity;
pub mod idsvc;
pub mod jwt;
pub mod layer;
pub mod pki;
pub mod registration;
pub mod tls;
pub mod token;

pub use authz::{AuthzTable, CallerClass, RPC_TABLE};
pub use identity::{AccountType, Identity, TokenVerifier, VerifyError};
pub use jwt::{generate_keypair, issue_token, JwtVerifier, Secret};
pub use layer::{AuthLayer, Authorizer, Caller};
