//! The local-CA issuer: a CA certificate and key on disk sign the node's
//! CSRs. For small fleets and `mcp dev`; the node holding the CA key can
//! sign any name, so give it only to nodes you would trust with the CA.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::cert::{cert_info, CertIssuer, CertRequest, IssuedCert};
use crate::{NetError, Result};

/// Signs CSRs with a CA held in memory (loaded from PEM files).
pub struct LocalCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    validity: Duration,
    source: String,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("source", &self.source)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// How long the certificates it signs are valid by default (90 days,
    /// like the public ACME CAs, so renewal at 30 days left is exercised).
    pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

    /// The CA of `cert` and `key` (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<LocalCa> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| NetError::io(format!("read {}", p.display()), e))
        };
        let source = cert.display().to_string();
        LocalCa::from_pem(&read(cert)?, &read(key)?, &source)
    }

    /// The CA of a certificate and key given as PEM; `source` names it in
    /// messages.
    pub fn from_pem(cert_pem: &str, key_pem: &str, source: &str) -> Result<LocalCa> {
        let bad = |e: rcgen::Error| NetError::Invalid(format!("local CA {source}: {e}"));
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(bad)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key).map_err(bad)?;
        Ok(LocalCa {
            issuer,
            ca_pem: cert_pem.to_string(),
            validity: LocalCa::DEFAULT_VALIDITY,
            source: source.to_string(),
        })
    }

    /// Certificates valid for `validity` from now (tests of renewal).
    pub fn with_validity(mut self, validity: Duration) -> LocalCa {
        self.validity = validity;
        self
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Signs synchronously (the work is a signature, no I/O).
    pub fn sign(&self, request: &CertRequest) -> Result<IssuedCert> {
        let what = format!("local CA {}", self.source);
        let mut params =
            rcgen::CertificateSigningRequestParams::from_der(&request.csr_der.clone().into())
                .map_err(|e| NetError::Invalid(format!("{what}: CSR: {e}")))?;
        // The names are the request's, whatever the CSR says.
        params.params.subject_alt_names = request
            .hostnames
            .iter()
            .map(|h| {
                rcgen::string::Ia5String::try_from(h.as_str())
                    .map(rcgen::SanType::DnsName)
                    .map_err(|e| NetError::Invalid(format!("{what}: {h:?}: {e}")))
            })
            .collect::<Result<_>>()?;
        let now = time::OffsetDateTime::now_utc();
        params.params.not_before = now - time::Duration::minutes(5);
        params.params.not_after =
            now + time::Duration::try_from(self.validity).unwrap_or(time::Duration::days(90));
        params.params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
        let cert = params
            .signed_by(&self.issuer)
            .map_err(|e| NetError::io(format!("{what}: sign"), e))?;
        let chain_pem = format!("{}{}", cert.pem(), self.ca_pem);
        let info = cert_info(&chain_pem)?;
        Ok(IssuedCert { chain_pem, info })
    }
}

/// 16 random bytes with the top bit clear (a positive serial).
fn random_serial() -> Result<[u8; 16]> {
    use ring::rand::SecureRandom as _;
    let mut out = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| NetError::io("serial number", "no randomness"))?;
    out[0] &= 0x7f;
    out[0] |= 0x01;
    Ok(out)
}

#[async_trait]
impl CertIssuer for LocalCa {
    fn kind(&self) -> &'static str {
        "local-ca"
    }

    async fn issue(&self, request: &CertRequest) -> Result<IssuedCert> {
        self.sign(request)
    }
}
