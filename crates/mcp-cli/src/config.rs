//! The CLI config, `~/.config/mcp/mcp.toml` (docs/CLI.md).
//!
//! ```toml
//! [master]
//! address = "https://100.64.0.1:9443"
//!
//! [[nodes]]            # agents, for `--direct`
//! name = "orion"
//! address = "https://100.64.0.2:9444"
//!
//! [auth]
//! token_path = "~/.config/mcp/token"
//! username = "mcp-operator"          # optional, unattended use
//! password_file = "~/.config/mcp/credentials"
//!
//! [services]
//! dir = "~/src/platform/services"
//!
//! [tls]
//! ca_cert = "~/.config/mcp/ca.pem"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub master: Option<MasterConfig>,
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub services: ServicesConfig,
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    pub address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    pub address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub token_path: Option<PathBuf>,
    /// System-account credentials for unattended use; read by `mcp login`,
    /// which needs an identity-service client this build does not have.
    #[allow(dead_code)]
    pub username: Option<String>,
    #[allow(dead_code)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesConfig {
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_cert: Option<PathBuf>,
}

/// The default config path: `$XDG_CONFIG_HOME/mcp/mcp.toml` or `~/.config/mcp/mcp.toml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("mcp/mcp.toml"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/mcp/mcp.toml"))
}

/// Loads the config. An explicitly named file must exist; the default one may
/// be absent (then every setting has its default).
pub fn load(explicit: Option<&Path>) -> Result<Config> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok(Config::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Config::default())
        }
        Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
    };
    let mut cfg: Config =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))?;
    cfg.services.dir = cfg.services.dir.map(|d| expand_tilde(&d));
    cfg.auth.token_path = cfg.auth.token_path.map(|d| expand_tilde(&d));
    cfg.auth.password_file = cfg.auth.password_file.map(|d| expand_tilde(&d));
    cfg.tls.ca_cert = cfg.tls.ca_cert.map(|d| expand_tilde(&d));
    Ok(cfg)
}

/// `~/x` → `$HOME/x`; anything else unchanged.
pub fn expand_tilde(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

impl Config {
    /// The services directory: the flag, else the config, else ".".
    pub fn services_dir(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| self.services.dir.clone())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}
