//! Certificates for the names a node serves.
//!
//! The node makes the private key ([`new_key_and_csr`]) and keeps it; an
//! issuer only ever sees the CSR and answers with a chain.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{NetError, Result};

/// What an issuer is asked: a certificate for `hostnames` (the first is
/// the common name) over the public key of `csr_der`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    pub hostnames: Vec<String>,
    /// The PKCS#10 request, DER.
    pub csr_der: Vec<u8>,
}

/// A certificate's facts, read from the certificate itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// Hex, lowercase, no separators.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The DNS names of the subjectAltName extension.
    pub dns_names: Vec<String>,
}

impl CertInfo {
    /// Whether less than `margin` remains before `not_after` at `now`.
    pub fn due(&self, now: SystemTime, margin: Duration) -> bool {
        self.not_after
            .duration_since(now)
            .map_or(true, |left| left < margin)
    }
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The leaf's facts.
    pub info: CertInfo,
}

/// Something that signs CSRs.
///
/// Semantics every implementation shares (checked by
/// `testing::issuer_suite`): the leaf names exactly the requested
/// hostnames, carries the CSR's public key, is valid now, and chains to
/// the issuer's root; a request the issuer will not sign, or an issuer
/// that cannot be reached, is an error naming the issuer (never a
/// certificate of another name).
#[async_trait]
pub trait CertIssuer: Send + Sync {
    /// `local-ca`, `acme`, `fake`, …
    fn kind(&self) -> &'static str;
    async fn issue(&self, request: &CertRequest) -> Result<IssuedCert>;
}

/// A new private key (ECDSA P-256) and a CSR for `hostnames` over it.
/// Returns (key PEM, CSR DER). The key never leaves the caller.
pub fn new_key_and_csr(hostnames: &[String]) -> Result<(String, Vec<u8>)> {
    let what = || format!("key and CSR for {}", hostnames.join(", "));
    let mut params = rcgen::CertificateParams::new(hostnames.to_vec())
        .map_err(|e| NetError::Invalid(format!("{}: {e}", what())))?;
    if let Some(first) = hostnames.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.clone());
    }
    let key = rcgen::KeyPair::generate().map_err(|e| NetError::io(what(), e))?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| NetError::io(what(), e))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// The facts of the first certificate in `pem` (a chain, leaf first).
pub fn cert_info(pem: &str) -> Result<CertInfo> {
    let bad = |e: &dyn std::fmt::Display| NetError::Invalid(format!("certificate: {e}"));
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(&e))?;
    let cert = block.parse_x509().map_err(|e| bad(&e))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                dns_names.push(d.to_string());
            }
        }
    }
    Ok(CertInfo {
        serial: hex::encode(cert.raw_serial()),
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
        dns_names,
    })
}

/// The public key (SubjectPublicKeyInfo, DER) of the first certificate in
/// `pem`, to check it matches a CSR's.
pub fn cert_public_key(pem: &str) -> Result<Vec<u8>> {
    let bad = |e: &dyn std::fmt::Display| NetError::Invalid(format!("certificate: {e}"));
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(&e))?;
    let cert = block.parse_x509().map_err(|e| bad(&e))?;
    Ok(cert.public_key().raw.to_vec())
}

/// The public key (SubjectPublicKeyInfo, DER) a CSR asks to certify.
pub fn csr_public_key(csr_der: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::FromDer as _;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|e| NetError::Invalid(format!("CSR: {e}")))?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// The certificates of a PEM text, DER, in order.
fn pem_certs(pem: &str, what: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject as _;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| NetError::Invalid(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(NetError::Invalid(format!("{what}: no certificate")));
    }
    Ok(certs)
}

/// Checks that the leaf of `chain_pem` (leaf first, then intermediates)
/// is valid at `now` for TLS server authentication, chains to a root of
/// `root_pem` through the chain's other certificates, and is valid for
/// `hostname`. What a client trusting `root_pem` would accept.
pub fn verify_chain(
    chain_pem: &str,
    root_pem: &str,
    hostname: &str,
    now: SystemTime,
) -> Result<()> {
    let chain = pem_certs(chain_pem, "chain")?;
    let roots = pem_certs(root_pem, "root")?;
    let anchors = roots
        .iter()
        .map(|r| {
            webpki::anchor_from_trusted_cert(r)
                .map(|a| a.to_owned())
                .map_err(|e| NetError::Invalid(format!("root: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| NetError::Invalid("chain: no certificate".into()))?;
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| NetError::Invalid(format!("chain: leaf: {e}")))?;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| NetError::Invalid(format!("time before 1970: {e}")))?;
    let refused = |e: webpki::Error| {
        NetError::Invalid(format!("the chain for {hostname} does not verify: {e}"))
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        rustls_pki_types::UnixTime::since_unix_epoch(since_epoch),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(refused)?;
    let name = rustls_pki_types::ServerName::try_from(hostname)
        .map_err(|e| NetError::Invalid(format!("{hostname:?}: {e}")))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(refused)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_carries_its_key_and_names() {
        let names = vec!["web.mcp.test".to_string()];
        let (key_pem, csr) = new_key_and_csr(&names).unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let spki = csr_public_key(&csr).unwrap();
        use rcgen::PublicKeyData as _;
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(spki, key.subject_public_key_info());
    }

    #[test]
    fn due_means_less_than_the_margin_left() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let info = |days: u64| CertInfo {
            serial: "01".into(),
            not_before: now,
            not_after: now + Duration::from_secs(days * 86_400),
            dns_names: vec![],
        };
        let month = Duration::from_secs(30 * 86_400);
        assert!(info(29).due(now, month));
        assert!(!info(31).due(now, month));
        assert!(info(0).due(now + Duration::from_secs(1), month));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(cert_info("nope"), Err(NetError::Invalid(_))));
    }

    fn local_ca(cn: &str) -> crate::LocalCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        crate::LocalCa::from_pem(&cert.pem(), &key.serialize_pem(), "test").unwrap()
    }

    fn issue(ca: &crate::LocalCa, host: &str) -> String {
        let names = vec![host.to_string()];
        let (_, csr_der) = new_key_and_csr(&names).unwrap();
        ca.sign(&CertRequest {
            hostnames: names,
            csr_der,
        })
        .unwrap()
        .chain_pem
    }

    #[test]
    fn a_chain_verifies_against_its_root_for_its_name() {
        let ca = local_ca("test CA");
        let chain = issue(&ca, "web.mcp.test");
        let now = SystemTime::now();
        verify_chain(&chain, ca.ca_pem(), "web.mcp.test", now).unwrap();
        // The leaf alone (the root is the anchor, no intermediate needed).
        let leaf = chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap();
        verify_chain(leaf, ca.ca_pem(), "web.mcp.test", now).unwrap();
    }

    #[test]
    fn a_chain_of_another_ca_does_not_verify() {
        // Another CA, and one of the same name (a different key: the
        // signature does not verify).
        let ca = local_ca("test CA");
        let chain = issue(&ca, "web.mcp.test");
        for other in [local_ca("other CA"), local_ca("test CA")] {
            let err = verify_chain(&chain, other.ca_pem(), "web.mcp.test", SystemTime::now())
                .unwrap_err();
            assert!(err.to_string().contains("does not verify"), "{err}");
        }
    }

    #[test]
    fn a_chain_does_not_verify_for_another_name_or_time() {
        let ca = local_ca("test CA");
        let chain = issue(&ca, "web.mcp.test");
        let err = verify_chain(&chain, ca.ca_pem(), "api.mcp.test", SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("NotValidForName"), "{err}");
        let later = SystemTime::now() + Duration::from_secs(100 * 86_400);
        assert!(verify_chain(&chain, ca.ca_pem(), "web.mcp.test", later).is_err());
        assert!(matches!(
            verify_chain("nope", ca.ca_pem(), "web.mcp.test", SystemTime::now()),
            Err(NetError::Invalid(_))
        ));
    }
}
