//! Real podman for tests, in an isolated storage with the test images
//! built (see the crate docs, "Running the podman tests").
//!
//! Shared by this crate's `tests/podman.rs` and by other crates' podman
//! tests (the agent's), so every podman test gets the same isolation:
//!
//! ```ignore
//! let Some(p) = mcp_runtime::testing::podman::shared(
//!     std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-agent-podman"),
//! ) else { return };
//! let rt = p.runtime();
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{ContainerRuntime, Podman};

/// Image built by `scripts/build-test-images.sh`: busybox httpd serving
/// `/www` on `$PORT`; `/version` and `/www/version` hold `v1`.
pub const WEB_V1: &str = "localhost/mcp-test/web:v1";
/// Like [`WEB_V1`], with `v2`.
pub const WEB_V2: &str = "localhost/mcp-test/web:v2";

/// A usable podman with its isolated storage.
#[derive(Debug, Clone)]
pub struct TestPodman {
    /// The podman binary (`MCP_PODMAN`, default `podman`).
    pub binary: OsString,
    /// `--root`, `--runroot`, `--tmpdir`, `--storage-driver` of the test
    /// storage.
    pub global_args: Vec<OsString>,
    /// `CONTAINERS_CONF` for podman.
    pub conf: OsString,
}

impl TestPodman {
    /// A [`Podman`] runtime on the test storage.
    pub fn runtime(&self) -> Podman {
        Podman::new()
            .binary(&self.binary)
            .global_args(&self.global_args)
            .env("CONTAINERS_CONF", &self.conf)
            .command_timeout(Duration::from_secs(60))
    }

    /// Raw podman CLI with the same storage, for what the trait cannot do
    /// (unlabelled containers, `podman kill`, ...).
    pub fn cli(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(&self.global_args).env("CONTAINERS_CONF", &self.conf);
        c
    }

    /// The global arguments as UTF-8 strings (for configuration files);
    /// `None` if a path is not UTF-8.
    pub fn global_args_utf8(&self) -> Option<Vec<String>> {
        self.global_args
            .iter()
            .map(|a| a.to_str().map(str::to_string))
            .collect()
    }
}

/// The repository root (where `scripts/` and `tests/` are).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `MCP_REQUIRE_PODMAN` is set (to anything but `0`): a missing podman is a
/// failure, not a skip.
pub fn require_podman() -> bool {
    std::env::var("MCP_REQUIRE_PODMAN").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Checks podman, builds the test images into the storage under
/// `default_dir` (or `MCP_PODMAN_TEST_DIR`) and returns the handle.
/// `Err` when podman is not usable; panics when podman works but the image
/// build fails (a real failure, not a reason to skip).
pub fn setup(default_dir: &Path) -> Result<TestPodman, String> {
    let binary: OsString = std::env::var_os("MCP_PODMAN").unwrap_or_else(|| "podman".into());
    match Command::new(&binary).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "{} --version failed: {}",
                binary.to_string_lossy(),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
        Err(e) => return Err(format!("{} not runnable: {e}", binary.to_string_lossy())),
    }
    let dir = std::env::var_os("MCP_PODMAN_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_dir.to_path_buf());
    let conf = std::env::var_os("CONTAINERS_CONF")
        .unwrap_or_else(|| repo_root().join("tests/podman/containers.conf").into());
    let runroot = short_runroot(&dir);
    let script = repo_root().join("scripts/build-test-images.sh");
    let out = Command::new(&script)
        .env("MCP_PODMAN", &binary)
        .env("MCP_PODMAN_ROOT", &dir)
        .env("MCP_PODMAN_RUNROOT", &runroot)
        .env("CONTAINERS_CONF", &conf)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        panic!(
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Keep in sync with scripts/build-test-images.sh.
    let global_args = vec![
        "--root".into(),
        dir.join("root").into(),
        "--runroot".into(),
        runroot.clone().into(),
        "--tmpdir".into(),
        runroot.join("tmp").into(),
        "--storage-driver".into(),
        "vfs".into(),
    ];
    Ok(TestPodman {
        binary,
        global_args,
        conf,
    })
}

/// podman refuses runroots longer than 50 characters, so the runroot lives
/// in `/tmp`, named after the storage dir (FNV-1a) so that each storage
/// always gets the same one (podman checks) and different checkouts do not
/// share one. Like a real runroot it may vanish on reboot; podman copes.
pub fn short_runroot(dir: &Path) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    PathBuf::from(format!("/tmp/mcp-podman-{h:016x}"))
}

/// The test podman of this process (set up once, on first use, in
/// `default_dir`), or `None` after a loud message when podman is missing
/// and [`require_podman`] is not set.
pub fn shared(default_dir: PathBuf) -> Option<&'static TestPodman> {
    static SETUP: OnceLock<Result<TestPodman, String>> = OnceLock::new();
    match SETUP.get_or_init(|| setup(&default_dir)) {
        Ok(p) => Some(p),
        Err(why) if require_podman() => {
            panic!("MCP_REQUIRE_PODMAN is set but podman is unusable: {why}")
        }
        Err(why) => {
            eprintln!(
                "\n{bar}\nSKIPPING podman tests: {why}\n\
                 install podman, runc and busybox-static, or set MCP_REQUIRE_PODMAN=1 \
                 to make this a failure\n{bar}\n",
                bar = "!".repeat(72)
            );
            None
        }
    }
}

/// Removes the named containers, ignoring those that do not exist.
pub async fn remove_quietly<R: ContainerRuntime>(rt: &R, names: &[&str]) {
    for n in names {
        match rt.remove(n, true).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => panic!("removing {n}: {e}"),
        }
    }
}
