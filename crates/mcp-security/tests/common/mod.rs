//! Shared test helpers: key pairs, tokens, a throwaway PKI.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod fake_master;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_security::clock::{Clock, ManualClock};
use mcp_security::identity::AccountType;
use mcp_security::jwt::{
    generate_keypair, issue_token, JwtVerifier, PublicKey, SigningKey, TokenRequest,
};

pub const ISSUER: &str = "mcias";
pub const AUDIENCE: &str = "mcp";
/// 2025-01-01T00:00:00Z
pub const T0: u64 = 1_735_689_600;

pub struct Keys {
    pub signing: SigningKey,
    pub public: PublicKey,
}

pub fn keys() -> Keys {
    let kp = generate_keypair().unwrap();
    Keys {
        signing: SigningKey::from_pem(kp.private_pem.expose().as_bytes(), "test key").unwrap(),
        public: PublicKey::from_pem(kp.public_pem.as_bytes(), "test key").unwrap(),
    }
}

pub fn token(
    key: &SigningKey,
    name: &str,
    account_type: AccountType,
    roles: &[&str],
    ttl: Duration,
    clock: &dyn Clock,
) -> String {
    issue_token(
        key,
        &TokenRequest {
            identity: name.to_string(),
            account_type,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ttl,
            issuer: ISSUER.to_string(),
            audience: AUDIENCE.to_string(),
        },
        clock,
    )
    .unwrap()
    .expose()
    .to_string()
}

/// A token bound (RFC 8705 `cnf`) to the certificate with `thumbprint`.
pub fn bound_token(
    key: &SigningKey,
    name: &str,
    account_type: AccountType,
    thumbprint: &str,
    clock: &dyn Clock,
) -> String {
    mcp_security::jwt::issue_token_with(
        key,
        &TokenRequest {
            identity: name.to_string(),
            account_type,
            roles: vec![],
            ttl: Duration::from_secs(3600),
            issuer: ISSUER.to_string(),
            audience: AUDIENCE.to_string(),
        },
        &mcp_security::jwt::IssueOptions {
            cert_thumbprint: Some(thumbprint.to_string()),
            ..Default::default()
        },
        clock,
    )
    .unwrap()
    .expose()
    .to_string()
}

/// The DER of the first certificate of a PEM file.
pub fn leaf_der(cert: &Path) -> Vec<u8> {
    mcp_security::tls::load_certs("test certificate", cert).unwrap()[0]
        .as_ref()
        .to_vec()
}

pub fn verifier(keys: &Keys, clock: &ManualClock) -> JwtVerifier {
    JwtVerifier::new(keys.public.clone(), ISSUER, AUDIENCE).with_clock(Arc::new(clock.clone()))
}

/// A CA that issues leaf certificates into a directory (over `mcp_security::pki`).
pub struct Pki {
    pub dir: PathBuf,
    ca: mcp_security::pki::Ca,
    pub ca_path: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca = mcp_security::pki::Ca::generate(name).unwrap();
        let ca_path = dir.join(format!("{name}-ca.pem"));
        ca.write_cert(&ca_path).unwrap();
        Self {
            dir: dir.to_path_buf(),
            ca,
            ca_path,
        }
    }

    /// Issues a leaf for `sans`; `expired` makes it valid only in 2020.
    /// Returns (cert path, key path).
    pub fn leaf(&self, file: &str, sans: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let validity = if expired {
            mcp_security::pki::Validity::Expired
        } else {
            mcp_security::pki::Validity::Days(30)
        };
        let files = self.ca.write_leaf(&self.dir, file, sans, validity).unwrap();
        (files.cert, files.key)
    }
}
