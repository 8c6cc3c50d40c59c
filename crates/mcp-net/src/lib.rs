//! MCP networking integrations, in the shape of `mcp-runtime`: one narrow
//! trait per concern, real adapters tested against real servers, a
//! recording fake per trait, and one shared suite per trait that the fake
//! and every real adapter pass.
//!
//! | trait | what it does | real adapters |
//! |---|---|---|
//! | [`ProxyRoutes`] | routes on a node's reverse proxy: L7 (TLS terminated with the route's certificate, matched by SNI and Host) and L4 (TLS passthrough by SNI) | `Caddy` (L7, admin API), `Haproxy` (L4, rendered configuration and graceful reload) |
//! | [`DnsRecords`] | records in a zone: replace a record set atomically, delete, look up | `Rfc2136` (dynamic update signed with TSIG) |
//! | [`CertIssuer`] | a certificate chain for a CSR | `LocalCa` (a CA key on disk), `Acme` (RFC 8555, dns-01 through a [`DnsRecords`]) |
//!
//! The private key of a certificate is made by [`cert::new_key_and_csr`] on
//! the node that serves the name; only the CSR goes to an issuer.
//!
//! The traits are object safe (`Arc<dyn ProxyRoutes>` …): the daemons pick
//! an adapter from their configuration at run time. An integration that is
//! not configured has no adapter at all; callers report its steps as
//! skipped, never as done.
//!
//! The fakes and suites (`mcp_net::testing`) exist only with `cfg(test)` or
//! the `testing` feature.

pub mod acme;
pub mod caddy;
pub mod cert;
pub mod dns;
mod error;
pub mod haproxy;
pub mod localca;
pub mod proxy;
pub mod rfc2136;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use acme::{Acme, AcmeOptions};
pub use caddy::Caddy;
pub use cert::{CertInfo, CertIssuer, CertRequest, IssuedCert};
pub use dns::{DnsRecords, RecordData, RecordType};
pub use error::{NetError, Result};
pub use haproxy::{Haproxy, HaproxyOptions};
pub use localca::LocalCa;
pub use proxy::{ProxyRoute, ProxyRoutes, RouteKey, TlsFiles};
pub use rfc2136::{Rfc2136, Rfc2136Options};
