//! MCP container runtime adapter.
//!
//! The agent runs containers only through the [`ContainerRuntime`] trait and
//! is generic over it. Two implementations live side by side:
//!
//! - [`Podman`]: the podman CLI, run with an argv (never a shell), reading
//!   its JSON output. Binary path, global arguments (`--root`, `--runroot`,
//!   `--tmpdir`, `--storage-driver`, ...) and extra environment
//!   (`CONTAINERS_CONF`, ...) are configurable so that agents and tests can
//!   keep their containers apart.
//! - `FakeRuntime`: an in-memory, recording fake for unit tests and fleet
//!   simulations, with helpers to simulate crashes and inspect the calls.
//!   It is a test double: compiled only for this crate's tests and with the
//!   `testing` feature, which dependents enable in their
//!   `[dev-dependencies]` only, so no shipped binary contains it.
//!
//! Both must pass the same suite, `testing::runtime_suite` (feature
//! `testing` too), so the fake cannot drift from podman.
//!
//! # Semantics shared by every implementation
//!
//! - Every managed container carries the labels [`LABEL_SERVICE`],
//!   [`LABEL_COMPONENT`] and [`LABEL_NODE`]; [`ContainerRuntime::list_managed`]
//!   returns every container with [`LABEL_SERVICE`], running or not, of any
//!   node (filter on [`ContainerInfo::node`] when agents share a runtime).
//! - A missing container is `Ok(None)` from `inspect` and
//!   [`RuntimeError::NotFound`] from every other per-container call.
//! - `create_and_start` never pulls: a missing image is
//!   [`RuntimeError::ImageNotFound`]. [`ContainerRuntime::pull`] skips the
//!   registry when a pinned reference (any tag but `latest`, or a digest) is
//!   already present locally, so pre-loaded images work offline.
//! - `start` of a running and `stop` of a stopped container succeed.
//!
//! # Running the podman tests
//!
//! `tests/podman.rs` runs the suite against real podman. It needs podman,
//! runc and busybox-static (Debian packages `podman runc busybox-static`)
//! and runs as root (rootless podman is untested). It:
//!
//! - uses the engine config `tests/podman/containers.conf` (runc, ulimits
//!   that fit small hosts, cgroupfs, file events) unless `CONTAINERS_CONF`
//!   is already set;
//! - keeps everything in an isolated storage, so it never sees or touches
//!   the operator's containers and images: `--root
//!   $CARGO_TARGET_TMPDIR/mcp-runtime-podman/root` (override the directory
//!   with `MCP_PODMAN_TEST_DIR`), `--runroot /tmp/mcp-podman-<hash of that
//!   dir>` and `--tmpdir <runroot>/tmp` (podman refuses runroots longer
//!   than 50 characters), `--storage-driver vfs` (no kernel overlay mounts,
//!   so it also works inside CI containers; the test images are 2 MB, so
//!   copying them is free). Tests in one run share that storage and use
//!   distinct container names; each removes its leftovers first;
//! - builds its images into that storage with
//!   `scripts/build-test-images.sh` (offline and idempotent: a few seconds
//!   the first time, a tenth of a second once the images exist);
//! - skips with a loud message when podman is missing, unless
//!   `MCP_REQUIRE_PODMAN=1`, which turns a missing podman into a failure.
//!   `MCP_PODMAN` names another podman binary.

mod error;
#[cfg(any(test, feature = "testing"))]
mod fake;
mod lines;
mod podman;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod types;

use std::future::Future;
use std::time::Duration;

pub use error::{Result, RuntimeError};
#[cfg(any(test, feature = "testing"))]
pub use fake::{FakeCall, FakeOp, FakeRuntime};
pub use lines::{MAX_LOG_LINE_BYTES, TRUNCATION_MARKER};
pub use podman::Podman;
pub use types::{
    validate_name, ContainerConfig, ContainerEvent, ContainerInfo, ContainerState, EventStream,
    ExecOutput, LogLine, LogOptions, LogSource, LogStream, PortBinding, Protocol, PullOutcome,
    LABEL_COMPONENT, LABEL_NODE, LABEL_SERVICE,
};

/// The container operations the agent needs. See the crate docs for the
/// semantics every implementation shares.
pub trait ContainerRuntime: Send + Sync {
    /// Makes `image` available locally (see [`PullOutcome`]).
    fn pull(&self, image: &str) -> impl Future<Output = Result<PullOutcome>> + Send;

    /// Whether `image` is present locally.
    fn image_exists(&self, image: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Creates and starts a container; returns its id. Fails with
    /// [`RuntimeError::AlreadyExists`] if the name is taken (remove first
    /// to recreate). If starting fails, the half-created container is
    /// removed again.
    fn create_and_start(
        &self,
        config: &ContainerConfig,
    ) -> impl Future<Output = Result<String>> + Send;

    /// Starts an existing container (no-op if it is running).
    fn start(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Stops a container: SIGTERM, then SIGKILL after `timeout` (whole
    /// seconds, rounded up). No-op if it is not running.
    fn stop(&self, name: &str, timeout: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Removes a container; a running one only with `force`.
    fn remove(&self, name: &str, force: bool) -> impl Future<Output = Result<()>> + Send;

    /// The container's current state; `None` if it does not exist.
    fn inspect(&self, name: &str) -> impl Future<Output = Result<Option<ContainerInfo>>> + Send;

    /// All containers labelled [`LABEL_SERVICE`], running or not, sorted by
    /// name.
    fn list_managed(&self) -> impl Future<Output = Result<Vec<ContainerInfo>>> + Send;

    /// All containers (managed or not) whose name starts with `prefix`,
    /// sorted by name; used by `adopt <service>` with prefix `<service>-`.
    fn list_by_prefix(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<ContainerInfo>>> + Send;

    /// The container's output as a stream of lines.
    fn logs(&self, name: &str, opts: LogOptions) -> impl Future<Output = Result<LogStream>> + Send;

    /// Runs `argv` inside the running container (no shell is added).
    fn exec(&self, name: &str, argv: &[String]) -> impl Future<Output = Result<ExecOutput>> + Send;

    /// Container events from now on (see [`EventStream`]).
    fn events(&self) -> impl Future<Output = Result<EventStream>> + Send;
}
