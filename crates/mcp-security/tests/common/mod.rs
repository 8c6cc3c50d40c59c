//! Shared test helpers: key pairs, tokens, a throwaway PKI.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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

pub fn verifier(keys: &Keys, clock: &ManualClock) -> JwtVerifier {
    JwtVerifier::new(keys.public.clone(), ISSUER, AUDIENCE).with_clock(Arc::new(clock.clone()))
}

/// A CA that issues leaf certificates into a directory.
pub struct Pki {
    pub dir: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub ca_path: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        let ca_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_path, issuer.pem()).unwrap();
        Self {
            dir: dir.to_path_buf(),
            issuer,
            ca_path,
        }
    }

    /// Issues a leaf for `sans`; `expired` makes it valid only in 2020.
    /// Returns (cert path, key path).
    pub fn leaf(&self, file: &str, sans: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            sans.first().copied().unwrap_or(file),
        );
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 6, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.join(format!("{file}.crt"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}
