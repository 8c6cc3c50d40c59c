//! MCP service definitions.
//!
//! - [`model`]: the validated spec types ([`ServiceSpec`] and friends).
//! - [`load`]: reading `<name>.toml` files and whole services directories
//!   into specs, with `file:line:col` diagnostics for every rule violation.
//! - [`canonical`]: the canonical TOML rendering and the spec hash.
//! - [`names`]: DNS label and domain helpers shared with the security layer.

pub mod canonical;
pub mod load;
pub mod model;
pub mod names;

pub use canonical::{canonical_toml, spec_hash};
pub use load::{load_dir, parse_service, Diagnostic, LoadOptions, LoadedDir, Unreadable};
pub use model::*;
