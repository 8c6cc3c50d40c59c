//! Certificate-bound tokens (RFC 8705) and the master's certificate.
//!
//! A token with a `cnf` claim (`{"x5t#S256": <thumbprint>}`, see
//! [`crate::jwt::cert_thumbprint`]) is usable only over a connection whose
//! client certificate has that thumbprint: a captured token is useless
//! without the certificate's private key. When the [`crate::layer::Authorizer`]
//! is given a [`MasterBinding`], the master identity additionally must
//! present such a bound token *and* a client certificate naming the master.
//!
//! Decisions, made before the authorization table is consulted:
//!
//! | situation | status |
//! |---|---|
//! | token bound (`cnf`), but no client certificate or another one | `Unauthenticated` |
//! | master identity, binding required, token not bound | `Unauthenticated` |
//! | master identity, bound token matching the certificate, but the certificate does not name the master | `PermissionDenied` |
//!
//! That the certificate chains to the fleet CA is rustls's job at the
//! handshake (the server's client verifier): a chain that does not verify
//! never reaches this code.

use rustls::pki_types::{CertificateDer, ServerName};

use crate::authz::CallerClass;
use crate::identity::Identity;
use crate::jwt::cert_thumbprint;

/// What the master's client certificate must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterBinding {
    /// A DNS name (or IP address) the master's certificate must carry as a
    /// subject alternative name; usually the master identity itself
    /// (`mcp-master`).
    pub cert_name: String,
}

impl MasterBinding {
    pub fn new(cert_name: impl Into<String>) -> Self {
        Self {
            cert_name: cert_name.into(),
        }
    }
}

/// Why a caller's token or certificate did not pass the binding checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("token is bound to a client certificate, but the connection presented none")]
    NoCertificate,
    #[error("token is bound to another client certificate")]
    ThumbprintMismatch,
    #[error("master token is not bound to a client certificate")]
    MasterTokenUnbound,
    #[error("client certificate does not name the master ({0})")]
    NotMasterCertificate(String),
}

impl BindingError {
    /// `Unauthenticated` (generic message) for a token that cannot be used
    /// over this connection, `PermissionDenied` for a certificate that is
    /// not the master's.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            BindingError::NotMasterCertificate(_) => {
                tonic::Status::permission_denied("client certificate is not the master's")
            }
            _ => tonic::Status::unauthenticated(crate::identity::UNAUTHENTICATED_MESSAGE),
        }
    }
}

/// Whether the certificate (DER) names `name` in its subject alternative
/// names (DNS names case-insensitively, or an IP address).
pub fn certificate_names(der: &[u8], name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    let cert = CertificateDer::from(der);
    match webpki::EndEntityCert::try_from(&cert) {
        Ok(ee) => ee.verify_is_valid_for_subject_name(&server_name).is_ok(),
        Err(_) => false,
    }
}

/// The binding checks for one authenticated caller over a connection whose
/// client leaf certificate is `leaf` (DER), see the module docs.
pub fn check_binding(
    identity: &Identity,
    class: &CallerClass,
    leaf: Option<&[u8]>,
    master: Option<&MasterBinding>,
) -> Result<(), BindingError> {
    if let Some(want) = &identity.cert_thumbprint {
        let leaf = leaf.ok_or(BindingError::NoCertificate)?;
        if cert_thumbprint(leaf) != *want {
            return Err(BindingError::ThumbprintMismatch);
        }
    }
    if let (CallerClass::Master, Some(binding)) = (class, master) {
        if identity.cert_thumbprint.is_none() {
            return Err(BindingError::MasterTokenUnbound);
        }
        // The thumbprint matched above, so `leaf` is present.
        let named = leaf.is_some_and(|l| certificate_names(l, &binding.cert_name));
        if !named {
            return Err(BindingError::NotMasterCertificate(
                binding.cert_name.clone(),
            ));
        }
    }
    Ok(())
}
