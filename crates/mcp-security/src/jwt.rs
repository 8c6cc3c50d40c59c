//! Ed25519 (EdDSA) JWT bearer tokens: key pairs, issuing, local verification.
//!
//! JWS parsing and claim validation come from `jsonwebtoken`; signatures
//! come from `ring` (already MCP's TLS crypto) through a small
//! `jsonwebtoken` crypto provider that knows only EdDSA, so `none`, HMAC or
//! RSA tokens cannot be accepted whatever their header says.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier as JwsVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::identity::{
    AccountType, Identity, TokenVerifier, VerifyError, VerifyFuture, MAX_TOKEN_LEN,
};

/// Errors with key files and token issuing.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what} {path}: cannot read: {source}")]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: cannot write: {source}")]
    Write {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("cannot generate key: {0}")]
    Generate(String),
    #[error("cannot sign token: {0}")]
    Sign(String),
}

// ---------------------------------------------------------------- provider

struct RingSigner(Ed25519KeyPair);

impl signature::Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct RingVerifier(Vec<u8>);

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(msg, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwsVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

fn ring_signer(
    alg: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if *alg != Algorithm::EdDSA {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.as_bytes())
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(RingSigner(kp)))
}

fn ring_verifier(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwsVerifier>> {
    if *alg != Algorithm::EdDSA {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let raw = key.try_get_as_bytes()?;
    if raw.len() != 32 {
        return Err(ErrorKind::InvalidEddsaKey.into());
    }
    Ok(Box::new(RingVerifier(raw.to_vec())))
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: ring_signer,
    verifier_factory: ring_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs the EdDSA-only provider as `jsonwebtoken`'s process default (once;
/// if another provider was installed first it is kept: it supports EdDSA too).
fn ensure_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = PROVIDER.install_default();
    });
}

// ---------------------------------------------------------------- keys

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the
/// 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A secret string (token, private key PEM): `Debug` is redacted and there
/// is no `Display`, so it cannot be printed or logged by accident. Use
/// [`Secret::expose`] where the value is really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A freshly generated Ed25519 key pair, PEM encoded.
#[derive(Debug, Clone)]
pub struct GeneratedKeyPair {
    /// PKCS#8 `PRIVATE KEY` PEM. Secret.
    pub private_pem: Secret,
    /// SubjectPublicKeyInfo `PUBLIC KEY` PEM, to give to verifiers.
    pub public_pem: String,
}

/// Generates an Ed25519 key pair (for `mcp token keygen`).
pub fn generate_keypair() -> Result<GeneratedKeyPair, KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| KeyError::Generate(e.to_string()))?;
    let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(kp.public_key().as_ref());
    Ok(GeneratedKeyPair {
        private_pem: Secret(pem_encode("PRIVATE KEY", pkcs8.as_ref())),
        public_pem: pem_encode("PUBLIC KEY", &spki),
    })
}

/// Writes a key pair: the private key with mode 0600, created exclusively
/// (an existing file is never overwritten), the public key next to it.
pub fn write_keypair(
    kp: &GeneratedKeyPair,
    private_path: &Path,
    public_path: &Path,
) -> Result<(), KeyError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    fn werr<'p>(
        what: &'static str,
        path: &'p Path,
    ) -> impl FnOnce(std::io::Error) -> KeyError + 'p {
        move |source| KeyError::Write {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
    let mut f = opts
        .open(private_path)
        .map_err(werr("private key", private_path))?;
    f.write_all(kp.private_pem.expose().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(werr("private key", private_path))?;
    let mut pubopts = std::fs::OpenOptions::new();
    pubopts.write(true).create_new(true);
    let mut p = pubopts
        .open(public_path)
        .map_err(werr("public key", public_path))?;
    p.write_all(kp.public_pem.as_bytes())
        .and_then(|()| p.sync_all())
        .map_err(werr("public key", public_path))?;
    Ok(())
}

/// A private Ed25519 key that signs tokens.
#[derive(Clone)]
pub struct SigningKey {
    key: EncodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// From a PKCS#8 `PRIVATE KEY` PEM.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Self, KeyError> {
        let invalid = |reason: &str| KeyError::Invalid {
            what: what.to_string(),
            reason: reason.to_string(),
        };
        let key = match rustls_pemfile::private_key(&mut &pem[..]) {
            Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(k))) => k,
            Ok(Some(_)) => return Err(invalid("not a PKCS#8 private key")),
            Ok(None) => return Err(invalid("no PRIVATE KEY block")),
            Err(e) => return Err(invalid(&format!("not valid PEM: {e}"))),
        };
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.secret_pkcs8_der())
            .map_err(|e| invalid(&format!("not an Ed25519 key: {e}")))?;
        Ok(Self {
            key: EncodingKey::from_ed_der(key.secret_pkcs8_der()),
        })
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            what: "signing key",
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&bytes, &format!("signing key {}", path.display()))
    }
}

/// An issuer's Ed25519 public key.
#[derive(Clone)]
pub struct PublicKey {
    key: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(ed25519)")
    }
}

impl PublicKey {
    /// From a SubjectPublicKeyInfo `PUBLIC KEY` PEM holding an Ed25519 key.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::Invalid {
            what: what.to_string(),
            reason,
        };
        let mut spki = None;
        for item in rustls_pemfile::read_all(&mut &pem[..]) {
            match item {
                Ok(rustls_pemfile::Item::SubjectPublicKeyInfo(k)) => {
                    spki = Some(k);
                    break;
                }
                Ok(_) => {}
                Err(e) => return Err(invalid(format!("not valid PEM: {e}"))),
            }
        }
        let spki = spki.ok_or_else(|| invalid("no PUBLIC KEY block".to_string()))?;
        let raw = spki
            .as_ref()
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .filter(|k| k.len() == 32)
            .ok_or_else(|| invalid("not an Ed25519 public key".to_string()))?;
        Ok(Self {
            key: DecodingKey::from_ed_der(raw),
        })
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            what: "issuer public key",
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&bytes, &format!("issuer public key {}", path.display()))
    }
}

// ---------------------------------------------------------------- claims

/// `aud` may be one string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims MCP reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Identity name.
    pub sub: String,
    /// Account type: `human` or `system` (`account_type` also accepted).
    #[serde(rename = "typ", alias = "account_type")]
    pub account_type: AccountType,
    #[serde(default)]
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub iat: Option<u64>,
    /// RFC 8705 confirmation: the token is bound to a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The `cnf` claim (RFC 7800 / RFC 8705): `{"x5t#S256": "<thumbprint>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url (no padding) SHA-256 of the DER of the client certificate.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The RFC 8705 `x5t#S256` thumbprint of a DER certificate: base64url
/// without padding of its SHA-256.
pub fn cert_thumbprint(der: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der))
}

/// The thumbprint of the first certificate of a PEM file (the leaf), for
/// binding a token to the certificate the caller will present
/// (`mcp dev`, `mcp token issue --bind-cert`).
pub fn cert_thumbprint_from_pem_file(path: &Path) -> Result<String, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        what: "certificate",
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| KeyError::Invalid {
        what: format!("certificate {}", path.display()),
        reason,
    };
    let first = rustls_pemfile::certs(&mut bytes.as_slice()).next();
    match first {
        Some(Ok(cert)) => Ok(cert_thumbprint(cert.as_ref())),
        Some(Err(e)) => Err(invalid(format!("not valid PEM: {e}"))),
        None => Err(invalid("no CERTIFICATE block".to_string())),
    }
}

/// What `mcp token issue` asks for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub identity: String,
    pub account_type: AccountType,
    pub roles: Vec<String>,
    pub ttl: Duration,
    pub issuer: String,
    pub audience: String,
}

/// Default issuer and audience when none is configured.
pub const DEFAULT_ISSUER: &str = "mcp";
pub const DEFAULT_AUDIENCE: &str = "mcp";

/// The maximum token lifetime the daemons accept and `mcp token issue`
/// signs unless configured otherwise (`[auth] max_token_lifetime`): 90 days.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// The `cnf` `x5t#S256` thumbprint a token claims, read **without
/// verifying** it: for start-up diagnostics only (the master warning that
/// its own token is not bound to its certificate), never for a decision.
/// `None` for an unbound or unreadable token.
pub fn unverified_cnf_thumbprint(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    #[derive(Deserialize)]
    struct Cnf {
        cnf: Option<Confirmation>,
    }
    let c: Cnf = serde_json::from_slice(&bytes).ok()?;
    c.cnf.map(|c| c.x5t_s256)
}

/// Options of [`issue_token_with`] beyond [`TokenRequest`].
#[derive(Debug, Clone, Default)]
pub struct IssueOptions {
    /// Bind the token to this client certificate thumbprint
    /// ([`cert_thumbprint`]): it becomes the `cnf` claim, and servers refuse
    /// the token over a connection without that certificate.
    pub cert_thumbprint: Option<String>,
    /// Refuse to sign a token whose `ttl` exceeds this
    /// ([`check_token_lifetime`]).
    pub max_lifetime: Option<Duration>,
}

/// Refuses a lifetime over `max` (for `mcp token issue`, before signing;
/// verifiers configured with [`JwtVerifier::with_max_lifetime`] refuse such
/// tokens too).
pub fn check_token_lifetime(ttl: Duration, max: Option<Duration>) -> Result<(), KeyError> {
    match max {
        Some(max) if ttl > max => Err(KeyError::Sign(format!(
            "lifetime {}s exceeds the maximum token lifetime {}s",
            ttl.as_secs(),
            max.as_secs()
        ))),
        _ => Ok(()),
    }
}

/// Signs a token (for `mcp token issue`). `now` is passed in.
pub fn issue_token(
    key: &SigningKey,
    req: &TokenRequest,
    now: &dyn Clock,
) -> Result<Secret, KeyError> {
    issue_token_with(key, req, &IssueOptions::default(), now)
}

/// [`issue_token`] with a certificate binding and/or a lifetime cap.
pub fn issue_token_with(
    key: &SigningKey,
    req: &TokenRequest,
    opts: &IssueOptions,
    now: &dyn Clock,
) -> Result<Secret, KeyError> {
    ensure_provider();
    if req.identity.is_empty() {
        return Err(KeyError::Sign("identity name is empty".to_string()));
    }
    check_token_lifetime(req.ttl, opts.max_lifetime)?;
    let iat = now.unix_seconds();
    let claims = Claims {
        sub: req.identity.clone(),
        account_type: req.account_type,
        roles: req.roles.clone(),
        iss: req.issuer.clone(),
        aud: Audience::One(req.audience.clone()),
        exp: iat.saturating_add(req.ttl.as_secs()),
        nbf: Some(iat),
        iat: Some(iat),
        cnf: opts
            .cert_thumbprint
            .clone()
            .map(|x5t_s256| Confirmation { x5t_s256 }),
    };
    let header = Header::new(Algorithm::EdDSA);
    jsonwebtoken::encode(&header, &claims, &key.key)
        .map(Secret)
        .map_err(|e| KeyError::Sign(e.to_string()))
}

// ---------------------------------------------------------------- verify

/// Verifies Ed25519 JWTs locally with the issuer's public key: signature,
/// algorithm (EdDSA only), `iss`, `aud`, `exp` and `nbf` (with leeway).
pub struct JwtVerifier {
    key: PublicKey,
    validation: Validation,
    leeway: u64,
    max_lifetime: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("iss", &self.validation.iss)
            .field("aud", &self.validation.aud)
            .field("leeway", &self.leeway)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

/// Default clock-skew allowance for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;

impl JwtVerifier {
    pub fn new(key: PublicKey, issuer: &str, audience: &str) -> Self {
        ensure_provider();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Time is checked below against the injected clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        Self {
            key,
            validation: v,
            leeway: DEFAULT_LEEWAY_SECS,
            max_lifetime: None,
            clock: Arc::new(SystemClock),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Clock-skew allowance for `exp` and `nbf` (default
    /// [`DEFAULT_LEEWAY_SECS`]).
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    /// Refuses tokens whose lifetime — `exp` minus `iat` (or `nbf` without
    /// `iat`, or now when the token has neither) — exceeds `max`. Default:
    /// no maximum.
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }

    /// Synchronous verification (the trait method wraps this).
    pub fn verify_token(&self, token: &str) -> Result<Identity, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Invalid("token too long".to_string()));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key.key, &self.validation)
            .map_err(|e| VerifyError::Invalid(describe(e.kind())))?;
        let c = data.claims;
        let now = self.clock.unix_seconds();
        if now >= c.exp.saturating_add(self.leeway) {
            return Err(VerifyError::Invalid("token expired".to_string()));
        }
        if let Some(nbf) = c.nbf {
            if now.saturating_add(self.leeway) < nbf {
                return Err(VerifyError::Invalid("token not yet valid".to_string()));
            }
        }
        if let Some(max) = self.max_lifetime {
            let start = c.iat.or(c.nbf).unwrap_or(now);
            if c.exp.saturating_sub(start) > max.as_secs() {
                return Err(VerifyError::Invalid(
                    "token lifetime exceeds the maximum".to_string(),
                ));
            }
        }
        if c.sub.is_empty() {
            return Err(VerifyError::Invalid("empty subject".to_string()));
        }
        if c.cnf.as_ref().is_some_and(|cnf| cnf.x5t_s256.is_empty()) {
            return Err(VerifyError::Invalid("empty cnf thumbprint".to_string()));
        }
        Ok(Identity {
            name: c.sub,
            account_type: c.account_type,
            roles: c.roles,
            cert_thumbprint: c.cnf.map(|cnf| cnf.x5t_s256),
        })
    }
}

/// A short reason that never includes token contents.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "algorithm not EdDSA".into()
        }
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
        ErrorKind::InvalidToken => "malformed token".into(),
        ErrorKind::Base64(_) => "malformed token (base64)".into(),
        ErrorKind::Json(_) => "malformed token (json)".into(),
        ErrorKind::Utf8(_) => "malformed token (utf-8)".into(),
        _ => "token rejected".into(),
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        let r = self.verify_token(token);
        Box::pin(async move { r })
    }
}
