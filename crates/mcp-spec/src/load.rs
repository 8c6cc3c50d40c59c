//! Loading and validating service files. (Being written: see the loader task.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::ServiceSpec;

/// Settings the loader needs beyond the file itself.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Domains public route hostnames must fall under (label match). Empty:
    /// not checked here (the master checks against its own config).
    pub allowed_public_domains: Vec<String>,
}

/// One problem in one file, with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// A service file that could not be turned into a spec. Its service is held:
/// never deployed, changed or pruned because of this file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The file stem: the service the file is meant to define.
    pub name: String,
    pub file: PathBuf,
    pub errors: Vec<Diagnostic>,
}

/// The result of loading a services directory.
#[derive(Debug, Clone, Default)]
pub struct LoadedDir {
    pub services: BTreeMap<String, ServiceSpec>,
    pub unreadable: Vec<Unreadable>,
}

pub fn parse_service(
    _display_path: &str,
    _stem: &str,
    _text: &str,
    _opts: &LoadOptions,
) -> Result<ServiceSpec, Vec<Diagnostic>> {
    unimplemented!("loader task")
}

pub fn load_dir(_dir: &Path, _opts: &LoadOptions) -> std::io::Result<LoadedDir> {
    unimplemented!("loader task")
}
