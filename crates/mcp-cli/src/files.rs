//! Service files on disk: reading one spec, editing `active` in place
//! (comments and layout kept), atomic replacement, and the few git commands
//! the CLI runs (through `mcp_dev::git`: argv only, never a shell).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mcp_spec::{Diagnostic, LoadOptions, ServiceSpec};
use toml_edit::{value, DocumentMut, Value};

/// A service name given on the command line must be a DNS label (which also
/// keeps it from naming a path outside the services directory).
pub fn check_service_name(service: &str) -> Result<()> {
    if !mcp_spec::names::is_dns_label(service) {
        bail!("service name {service:?} must be a DNS label (lowercase letters, digits, '-')");
    }
    Ok(())
}

/// `<dir>/<service>.toml`.
pub fn service_path(dir: &Path, service: &str) -> Result<PathBuf> {
    check_service_name(service)?;
    Ok(dir.join(format!("{service}.toml")))
}

/// Reads `<dir>/<service>.toml`.
pub fn read_service_file(dir: &Path, service: &str) -> Result<(PathBuf, String)> {
    let path = service_path(dir, service)?;
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("service {service}: no {service}.toml in {}", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        Ok(_) => {}
    }
    // The size limit the master applies (and `mcp validate`).
    let bytes = mcp_spec::read_service_bytes(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{}: file must be utf-8: {e}", path.display()))?;
    Ok((path, text))
}

/// Validates the text of `<service>.toml` (shape, rules, name = stem).
pub fn validate(path: &Path, service: &str, text: &str) -> Result<ServiceSpec, Vec<Diagnostic>> {
    mcp_spec::parse_service(
        &path.display().to_string(),
        service,
        text,
        &LoadOptions::default(),
    )
}

/// The valid spec of one service from the local services directory; an
/// invalid file prints its diagnostics (standard error) and fails.
pub fn load_service(dir: &Path, service: &str) -> Result<ServiceSpec> {
    let (path, text) = read_service_file(dir, service)?;
    validate(&path, service, &text).map_err(|diags| {
        for d in &diags {
            eprintln!("{d}");
        }
        anyhow::anyhow!(
            "service {service}: {} is invalid ({} problem{})",
            path.display(),
            diags.len(),
            if diags.len() == 1 { "" } else { "s" }
        )
    })
}

/// Sets `active` in a service file's text, keeping comments and layout.
/// `None` when the file already says so (no key means `true`). An absent
/// key is inserted right after `name`.
pub fn set_active(text: &str, active: bool) -> Result<Option<String>> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| anyhow::anyhow!("{}", e.message()))?;
    let root = doc.as_table_mut();
    if let Some(item) = root.get_mut("active") {
        if item.as_bool() == Some(active) {
            return Ok(None);
        }
        match item.as_value_mut() {
            Some(v) => {
                // Keep the value's surrounding whitespace and trailing comment.
                let decor = v.decor().clone();
                *v = Value::from(active);
                *v.decor_mut() = decor;
            }
            None => *item = value(active),
        }
        return Ok(Some(doc.to_string()));
    }
    if active {
        // No key means `active = true` already.
        return Ok(None);
    }
    // Insert after `name`: move every key that follows it behind `active`.
    // Tables keep their own document position, so only plain keys move.
    let keys: Vec<String> = root.iter().map(|(k, _)| k.to_string()).collect();
    let after: Vec<String> = match keys.iter().position(|k| k == "name") {
        Some(i) => keys.get(i + 1..).unwrap_or_default().to_vec(),
        None => Vec::new(),
    };
    let moved: Vec<_> = after.iter().filter_map(|k| root.remove_entry(k)).collect();
    root.insert("active", value(active));
    for (k, item) in moved {
        root.insert_formatted(&k, item);
    }
    Ok(Some(doc.to_string()))
}

/// Sets the pin `node = "..."` of a service file's text to `node`, keeping
/// comments and layout. `None` when the file has no pin (the planner
/// chooses its node) or already pins `node`.
pub fn set_node(text: &str, node: &str) -> Result<Option<String>> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| anyhow::anyhow!("{}", e.message()))?;
    let Some(item) = doc.as_table_mut().get_mut("node") else {
        return Ok(None);
    };
    if item.as_str() == Some(node) {
        return Ok(None);
    }
    match item.as_value_mut() {
        Some(v) => {
            let decor = v.decor().clone();
            *v = Value::from(node);
            *v.decor_mut() = decor;
        }
        None => *item = value(node),
    }
    Ok(Some(doc.to_string()))
}

/// Replaces `path` atomically with `text`: a hidden temporary file in the
/// same directory (ignored by the loader), flushed, given the original's
/// permissions, then renamed over it.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp.path(), meta.permissions())
            .with_context(|| format!("setting permissions of {}", tmp.path().display()))?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Writes `content` to `dest` atomically with Unix permission bits `mode`
/// (0 means 0644).
pub fn write_atomic_mode(dest: &Path, content: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".mcp-pull.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(content)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    let mode = if mode == 0 { 0o644 } else { mode & 0o7777 };
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", tmp.path().display()))?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", dest.display()))?;
    Ok(())
}

/// The one git helper, shared with the dev fleet (`mcp_dev::git`).
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    Ok(mcp_dev::git::git(dir, args)?)
}

/// True when `dir` is inside a git work tree (false when git is missing).
pub fn in_git_work_tree(dir: &Path) -> bool {
    mcp_dev::git::in_work_tree(dir)
}

/// `abc1234`, or `abc1234 (dirty)` when files under `dir` have uncommitted
/// changes; `None` outside a git work tree or before the first commit.
pub fn git_revision(dir: &Path) -> Option<String> {
    if !in_git_work_tree(dir) {
        return None;
    }
    let head = git(dir, &["rev-parse", "--short", "HEAD"]).ok()?;
    let dirty = git(dir, &["status", "--porcelain", "--", "."]).is_ok_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{head} (dirty)")
    } else {
        head
    })
}

/// The plan header's source: the directory, plus its git revision.
pub fn source_label(dir: &Path) -> String {
    match git_revision(dir) {
        Some(rev) => format!("{} @ {rev}", dir.display()),
        None => dir.display().to_string(),
    }
}

/// How `file` (a name inside `dir`) differs from `HEAD`: empty when it is
/// committed as it is, else "untracked" or git's short status (e.g. "M").
pub fn git_file_status(dir: &Path, file: &str) -> Result<String> {
    let s = git(dir, &["status", "--porcelain", "--", file])?;
    let code = s.get(..2).unwrap_or(&s).trim();
    Ok(match code {
        "" => String::new(),
        "??" => "untracked".to_string(),
        c => format!("git status {c}"),
    })
}

/// Commits exactly `file` (a name inside `dir`) with `message`; returns the
/// new commit's short id. Other staged or modified files are left alone.
pub fn git_commit_file(dir: &Path, file: &str, message: &str) -> Result<String> {
    git(dir, &["add", "--", file])?;
    git(dir, &["commit", "-q", "-m", message, "--", file])?;
    git(dir, &["rev-parse", "--short", "HEAD"])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const FILE: &str = "# the queue\nname = \"mcq\" # its name\ntier = \"worker\"\n\n[[components]]\n# api\nname = \"api\"\nimage = \"r/mcq:v1\"\n";

    #[test]
    fn set_node_changes_only_a_pin_keeping_comments() {
        let pinned = "name = \"mcq\"\nnode = \"w1\" # pinned: local disk\n\n[[components]]\nname = \"api\"\nimage = \"r/mcq:v1\"\n";
        let out = set_node(pinned, "w2").unwrap().unwrap();
        assert_eq!(out, pinned.replace("\"w1\"", "\"w2\""));
        assert_eq!(set_node(&out, "w2").unwrap(), None);
        assert_eq!(
            set_node(FILE, "w2").unwrap(),
            None,
            "not pinned: left alone"
        );
        assert!(set_node("name = [", "w2").is_err());
    }

    #[test]
    fn inserts_active_after_name_keeping_comments() {
        let out = set_active(FILE, false).unwrap().unwrap();
        assert_eq!(
            out,
            "# the queue\nname = \"mcq\" # its name\nactive = false\ntier = \"worker\"\n\n[[components]]\n# api\nname = \"api\"\nimage = \"r/mcq:v1\"\n"
        );
        let spec = mcp_spec::parse_service("mcq.toml", "mcq", &out, &LoadOptions::default());
        assert!(!spec.unwrap().active);
    }

    #[test]
    fn flips_an_existing_value_keeping_its_comment() {
        let text = "name = \"mcq\"\nactive = true   # on\n[[components]]\nname = \"a\"\nimage = \"r/a:v1\"\n";
        let out = set_active(text, false).unwrap().unwrap();
        assert_eq!(
            out,
            "name = \"mcq\"\nactive = false   # on\n[[components]]\nname = \"a\"\nimage = \"r/a:v1\"\n"
        );
        assert_eq!(set_active(&out, false).unwrap(), None, "already stopped");
        assert_eq!(set_active(&out, true).unwrap().unwrap(), text);
        // A file without the key is already active.
        assert_eq!(set_active(FILE, true).unwrap(), None);
    }

    #[test]
    fn atomic_write_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.toml");
        std::fs::write(&p, "a").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let d = dir.path().join("pulled");
        write_atomic_mode(&d, b"data", 0o600).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
