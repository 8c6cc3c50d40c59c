//! The key and certificate files of one hostname: `<dir>/key.pem` (mode
//! 0600) and `<dir>/cert.pem` (the chain), each written to a temporary
//! file, synced and renamed into place, so a reader sees the old file or
//! the new one.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Writes the pair under `dir` (created with mode 0700); returns (cert,
/// key) paths.
pub(super) fn write_pair(
    dir: &Path,
    key_pem: &str,
    chain_pem: &str,
) -> Result<(PathBuf, PathBuf), String> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        return Err(format!(
            "{}: not a certificate directory name",
            dir.display()
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("create {}: {e}", dir.display()))?;
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    write_atomic(&key, key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert, chain_pem.as_bytes(), 0o644)?;
    Ok((cert, key))
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("pem.tmp");
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| err("create", e))?;
    f.write_all(data).map_err(|e| err("write", e))?;
    f.sync_all().map_err(|e| err("sync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_key_is_private_and_files_are_replaced() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("web.mcp.test");
        let (cert, key) = write_pair(&dir, "KEY1", "CERT1").unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "KEY1");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        write_pair(&dir, "KEY2", "CERT2").unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "CERT2");
        assert!(write_pair(&d.path().join(".."), "k", "c").is_err());
    }
}
