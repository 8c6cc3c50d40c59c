//! Client side: finding the caller's token and attaching it to every call.

use std::fmt;
use std::path::Path;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use crate::identity::MAX_TOKEN_LEN;
use crate::jwt::Secret;

/// Environment variable that overrides the token file.
pub const TOKEN_ENV: &str = "MCP_TOKEN";

/// Why no usable token was found.
#[derive(Debug, thiserror::Error)]
pub enum TokenSourceError {
    #[error("token file {path}: cannot read: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: token is empty")]
    Empty { origin: String },
    #[error("{origin}: token is not a single line of printable ASCII")]
    Malformed { origin: String },
    #[error("no token: set {TOKEN_ENV} or configure a token file")]
    Missing,
}

/// Resolves the caller's token: `env_value` (the value of `MCP_TOKEN`, when
/// set and non-empty) wins over the file. Surrounding whitespace is trimmed.
/// Pure except for reading the file; daemons and the CLI call
/// [`read_token`].
pub fn resolve_token(
    env_value: Option<&str>,
    file: Option<&Path>,
) -> Result<Secret, TokenSourceError> {
    if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
        return check(v, TOKEN_ENV.to_string());
    }
    let path = file.ok_or(TokenSourceError::Missing)?;
    let text = std::fs::read_to_string(path).map_err(|source| TokenSourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    check(&text, format!("token file {}", path.display()))
}

/// [`resolve_token`] with the real `MCP_TOKEN`.
pub fn read_token(file: Option<&Path>) -> Result<Secret, TokenSourceError> {
    let env = std::env::var(TOKEN_ENV).ok();
    resolve_token(env.as_deref(), file)
}

fn check(raw: &str, origin: String) -> Result<Secret, TokenSourceError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(TokenSourceError::Empty { origin });
    }
    if t.len() > MAX_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenSourceError::Malformed { origin });
    }
    Ok(Secret::new(t.to_string()))
}

/// A tonic client interceptor adding `authorization: Bearer <token>` (marked
/// sensitive, so HTTP/2 never indexes it and it is not logged).
///
/// ```ignore
/// let client = McpMasterServiceClient::with_interceptor(channel, BearerInterceptor::new(&token)?);
/// ```
#[derive(Clone)]
pub struct BearerInterceptor {
    value: AsciiMetadataValue,
}

impl fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerInterceptor(<redacted>)")
    }
}

impl BearerInterceptor {
    pub fn new(token: &Secret) -> Result<Self, TokenSourceError> {
        let mut value: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {}", token.expose())).map_err(|_| {
                TokenSourceError::Malformed {
                    origin: "token".to_string(),
                }
            })?;
        value.set_sensitive(true);
        Ok(Self { value })
    }
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("authorization", self.value.clone());
        Ok(req)
    }
}
