//! MCP service definitions.
//!
//! - [`model`]: the validated spec types ([`ServiceSpec`] and friends).
//! - [`load`]: reading `<name>.toml` files and whole services directories
//!   into specs, with `file:line:col` diagnostics for every rule violation.
//! - [`validate`](mod@validate): the semantic rules over the model types, reporting field
//!   paths; shared by the loader and the protocol conversion (`mcp-proto`).
//! - [`canonical`]: the canonical TOML rendering and the spec hash.
//! - [`names`]: DNS label and domain helpers shared with the security layer.
//! - [`volumes`]: the host paths a volume may mount (`/srv/<service>/` and
//!   configured extras).
//! - `testing` (feature `testing`): proptest strategies for valid specs.
//! - [`fuzzing`]: the bodies of its cargo-fuzz targets (in the workspace's
//!   fuzz crate, `crates/mcp-security/fuzz`).

pub mod canonical;
pub mod filesize;
pub mod fuzzing;
pub mod image;
pub mod load;
pub mod model;
pub mod names;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod validate;
pub mod volumes;

pub use canonical::{canonical_toml, spec_hash};
pub use filesize::{file_size_problem, read_service_bytes, MAX_SERVICE_FILE_BYTES};
pub use load::{load_dir, parse_service, Diagnostic, LoadOptions, LoadedDir, Unreadable};
pub use model::*;
pub use validate::{validate, Violation};
