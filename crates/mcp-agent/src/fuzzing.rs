//! The body of the `import_archive` cargo-fuzz target, run by the
//! workspace's fuzz crate (`crates/mcp-security/fuzz`) and, over the
//! committed corpus, by `tests/fuzz_corpus.rs` on stable: both run the same
//! code. It panics only when a property of the import is broken.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::data::{extract, install, ImportLimits, Staging};

/// The names of the fuzz targets, as in `crates/mcp-security/fuzz/Cargo.toml`
/// and its `corpus/<name>/`.
pub const TARGETS: &[&str] = &["import_archive"];

/// Runs the target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "import_archive" => import_archive(data),
        _ => return false,
    }
    true
}

/// The first byte is flags: bit 0 `force`, bit 1 "the rest is the tar.zst
/// as sent" (else the rest is a tar, compressed here, so the fuzzer works
/// on the tar checks rather than on zstd). The rest is imported as the
/// service `app` over an existing `app/` directory, with small limits.
///
/// Properties: nothing appears or changes outside `<root>/app` (no staging
/// directory left either); a refused archive leaves `app/` byte for byte as
/// it was; an accepted one holds only directories and regular files, none
/// setuid, setgid or sticky.
pub fn import_archive(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let force = flags & 1 != 0;
    let archive = if flags & 2 != 0 {
        rest.to_vec()
    } else {
        let mut enc = zstd::Encoder::new(Vec::new(), 1).expect("zstd encoder");
        enc.write_all(rest).expect("zstd in memory");
        enc.finish().expect("zstd in memory")
    };
    let dir = TempDir::new();
    let root = dir.0.join("srv");
    std::fs::create_dir_all(root.join("app/sub")).expect("create app");
    std::fs::write(root.join("app/state.toml"), b"original = true\n").expect("write");
    std::fs::write(root.join("app/sub/key.pem"), b"PEM").expect("write");
    std::fs::write(dir.0.join("outside"), b"outside").expect("write");
    let before = tree(&dir.0);
    let limits = ImportLimits {
        max_bytes: 1 << 20,
        max_file_bytes: 256 << 10,
        max_entries: 1000,
    };
    let res = Staging::create(&root, "app").and_then(|staging| {
        extract(archive.as_slice(), &staging, &limits)?;
        install(staging, force)
    });
    let after = tree(&dir.0);
    let outside = |t: &BTreeMap<String, Node>| -> BTreeMap<String, Node> {
        t.iter()
            .filter(|(k, _)| !k.starts_with("srv/app/") && k.as_str() != "srv/app")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(
        outside(&before),
        outside(&after),
        "written outside the service directory"
    );
    match res {
        Err(_) => assert_eq!(before, after, "a refused archive changed the data"),
        Ok(()) => {
            for (path, node) in &after {
                match node {
                    Node::Dir(_) => {}
                    Node::File(mode, _) => {
                        assert_eq!(mode & 0o7000, 0, "{path}: setuid, setgid or sticky")
                    }
                    Node::Other(kind) => panic!("{path}: a {kind} was extracted"),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Other(String),
}

fn tree(dir: &Path) -> BTreeMap<String, Node> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(base)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_dir() {
                out.insert(rel, Node::Dir(mode));
                walk(base, &p, out);
            } else if m.file_type().is_file() {
                out.insert(rel, Node::File(mode, std::fs::read(&p).unwrap_or_default()));
            } else {
                out.insert(rel, Node::Other(format!("{:?}", m.file_type())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "mcp-fuzz-import-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
