//! One shape for configuration problems, shared by the agent's and the
//! master's config files: every problem names the file, the key (a dotted
//! path such as `server.grpc_addr`, or the TOML position for syntax errors)
//! and what is wrong.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a config file's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `podman.port_range` or `nodes[1].address`.
    pub key: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, unknown key or wrong type (the message carries line and
    /// column as the TOML parser reports them).
    #[error("invalid config {}: {message}", file.display())]
    Parse { file: PathBuf, message: String },
    /// Parsed, but the values break the config's rules.
    #[error("invalid config {}:\n{}", file.display(), bullets(problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

fn bullets(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The config file this error is about.
    pub fn file(&self) -> &std::path::Path {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Parse { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }
}

/// Reads `file` and parses it with `toml` into `T`, mapping errors to
/// [`ConfigError`]; validation is the caller's.
pub fn read_toml<T: serde::de::DeserializeOwned>(file: &std::path::Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse_toml(&text, file)
}

/// Parses `text` (read from `file`) into `T`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &std::path::Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}
