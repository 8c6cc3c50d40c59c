//! Test doubles, the shared suites and (for the real adapters' tests)
//! fixtures that start real servers. Only with `cfg(test)` or the
//! `testing` feature.
//!
//! Each suite is the contract of its trait: the recording fake passes it
//! in this crate's unit tests, every real adapter passes it against its
//! real server, so the fake cannot drift from the servers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic with its message

mod fake;
pub mod servers;
mod suites;

pub use fake::{FakeDns, FakeIssuer, FakeProxy};
pub use suites::{dns_suite, issuer_suite, proxy_suite, ProxySuiteEnv};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_proxy_passes_the_proxy_suite() {
        let dir = tempfile::tempdir().unwrap();
        let p = FakeProxy::new();
        proxy_suite(&p, &ProxySuiteEnv::new(dir.path(), [8443, 9443])).await;
    }

    #[tokio::test]
    async fn the_fake_dns_passes_the_dns_suite() {
        dns_suite(&FakeDns::new("mcp.test")).await;
    }

    #[tokio::test]
    async fn the_fake_issuer_passes_the_issuer_suite() {
        issuer_suite(&FakeIssuer::new(), "web.mcp.test").await;
    }

    #[tokio::test]
    async fn the_local_ca_from_files_passes_the_issuer_suite() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let (c, k) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        std::fs::write(&c, ca.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let local = crate::LocalCa::load(&c, &k).unwrap();
        let chain = issuer_suite(&local, "web.mcp.test").await;
        assert!(chain.ends_with(&ca.pem()), "the chain ends with the CA");
        assert!(matches!(
            crate::LocalCa::load(&dir.path().join("missing.pem"), &k),
            Err(crate::NetError::Io { .. })
        ));
    }
}
