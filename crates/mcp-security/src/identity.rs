//! Caller identities and the trait that turns a bearer token into one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// Whether an account belongs to a person or to a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountType {
    Human,
    System,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::Human => "human",
            AccountType::System => "system",
        }
    }
}

impl fmt::Display for AccountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AccountType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(AccountType::Human),
            "system" => Ok(AccountType::System),
            other => Err(format!(
                "unknown account type {other:?} (expected human or system)"
            )),
        }
    }
}

/// The role that marks a guest account: authenticated, but never allowed
/// to call any MCP RPC.
pub const GUEST_ROLE: &str = "guest";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub account_type: AccountType,
    #[serde(default)]
    pub roles: Vec<String>,
    /// RFC 8705 certificate binding from the token's `cnf` claim: the
    /// base64url SHA-256 thumbprint (`x5t#S256`) of the client certificate
    /// the token may only be used with. `None` for unbound tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_thumbprint: Option<String>,
}

impl Identity {
    pub fn new(name: impl Into<String>, account_type: AccountType, roles: &[&str]) -> Self {
        Self {
            name: name.into(),
            account_type,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            cert_thumbprint: None,
        }
    }

    /// The same identity, bound to a client certificate thumbprint.
    pub fn with_cert_thumbprint(mut self, thumbprint: impl Into<String>) -> Self {
        self.cert_thumbprint = Some(thumbprint.into());
        self
    }

    /// Whether the identity has `role`. Role names are compared
    /// case-insensitively (ASCII): `Guest` is the guest role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }

    /// A guest: an account with the `guest` role, or named `guest`, both
    /// compared case-insensitively.
    pub fn is_guest(&self) -> bool {
        self.has_role(GUEST_ROLE) || self.name.eq_ignore_ascii_case(GUEST_ROLE)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.account_type)
    }
}

/// Why a token did not yield an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not acceptable (bad signature, expired, wrong issuer or
    /// audience, unknown to the identity service): `Unauthenticated`.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The verifier could not decide (identity service unreachable or
    /// answering nonsense): `Unavailable`, the caller may retry.
    #[error("identity verification unavailable: {0}")]
    Unavailable(String),
}

/// The only message an unauthenticated caller is told; the precise reason
/// goes to the server's log.
pub const UNAUTHENTICATED_MESSAGE: &str = "unauthenticated";

impl VerifyError {
    /// The status for the caller: `Unauthenticated` with the generic
    /// [`UNAUTHENTICATED_MESSAGE`] (never why the token failed), or
    /// `Unavailable` when verification could not decide.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            VerifyError::Invalid(_) => tonic::Status::unauthenticated(UNAUTHENTICATED_MESSAGE),
            VerifyError::Unavailable(_) => {
                tonic::Status::unavailable("identity verification unavailable")
            }
        }
    }
}

/// Future returned by [`TokenVerifier::verify`].
pub type VerifyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Identity, VerifyError>> + Send + 'a>>;

/// Turns a bearer token into an identity. Implementations: [`crate::jwt::JwtVerifier`]
/// (local Ed25519 JWT verification) and
/// [`crate::idsvc::IdentityServiceVerifier`] (HTTP validation, cached).
pub trait TokenVerifier: Send + Sync + 'static {
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a>;
}

impl<T: TokenVerifier + ?Sized> TokenVerifier for std::sync::Arc<T> {
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        (**self).verify(token)
    }
}

/// Upper bound on a bearer token's length; longer ones are refused before
/// any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
