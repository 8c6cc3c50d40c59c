//! GitOps desired state: the committed tree at `HEAD` of a git work tree.
//!
//! The services directory (`[services] dir`) is a git work tree or a
//! directory inside one. What counts is what is **committed**: the files of
//! `HEAD`'s tree under that directory, never the working tree, so
//! uncommitted and untracked edits are ignored until they are committed.
//!
//! [`GitSource::load`] resolves `HEAD` to a commit once, then reads that
//! commit only (a commit landing meanwhile is picked up by the next load):
//!
//! 1. `git rev-parse -q --verify HEAD^{commit}`;
//! 2. `git ls-tree -z <commit> -- <dir>/`, keeping `*.toml` entries that do
//!    not start with `.` (the rules of [`mcp_spec::load_dir`]);
//! 3. one `git cat-file --batch --follow-symlinks` process for all of them
//!    (links are followed inside the commit, as the directory loader follows
//!    them on disk);
//! 4. [`mcp_spec::parse_service`] on each, with the path relative to the
//!    repository root (`services/mcq.toml`) in diagnostics.
//!
//! A file that cannot be read (not UTF-8, too large, a link leaving the
//! repository, a missing object) goes to [`LoadedDir::unreadable`] like a
//! file that does not parse: its service is held, never dropped.
//!
//! A repository without commits yet gives an empty desired state with
//! `commit: None` ([`DesiredTree::describe`] says so). A commit that does not
//! contain the services directory at all is an error
//! ([`GitError::DirNotInCommit`]) rather than an empty desired state, so
//! moving or deleting the directory never reads as "prune everything".
//!
//! Everything here blocks on `git` processes (argv, no shell); async callers
//! use `spawn_blocking`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mcp_spec::{parse_service, Diagnostic, LoadOptions, LoadedDir, Unreadable};

/// Largest service file read; larger blobs are reported unreadable (the
/// limit `mcp validate` applies too).
pub const MAX_FILE_SIZE: u64 = mcp_spec::MAX_SERVICE_FILE_BYTES;

/// A full commit id (hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId(String);

impl CommitId {
    /// Accepts 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
    pub fn new(s: &str) -> Option<CommitId> {
        let ok = (s.len() == 40 || s.len() == 64)
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| CommitId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the desired state could not be read from git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("services directory {dir} does not exist")]
    DirMissing { dir: PathBuf },
    #[error("services directory {dir} is not inside a git work tree: {detail}")]
    NotARepo { dir: PathBuf, detail: String },
    #[error("cannot run git (is it installed and on PATH?): {source}")]
    Spawn { source: std::io::Error },
    #[error("git {args} in {dir} failed: {detail}")]
    Command {
        dir: PathBuf,
        args: String,
        detail: String,
    },
    #[error("HEAD of {root} does not point to a commit: {detail}")]
    BadHead { root: PathBuf, detail: String },
    #[error(
        "commit {commit} of {root} has no directory {prefix} (commit the service files there first)"
    )]
    DirNotInCommit {
        root: PathBuf,
        prefix: String,
        commit: CommitId,
    },
    #[error("unexpected output from git {args} in {dir}: {detail}")]
    Protocol {
        dir: PathBuf,
        args: String,
        detail: String,
    },
}

type Result<T, E = GitError> = std::result::Result<T, E>;

/// The desired state read from one commit.
#[derive(Debug, Clone, Default)]
pub struct DesiredTree {
    /// `None`: the repository has no commits yet (and the desired state is
    /// empty).
    pub commit: Option<CommitId>,
    pub loaded: LoadedDir,
}

impl DesiredTree {
    /// One line for logs and plan summaries, e.g.
    /// `commit 1a2b3c4d5e6f: 12 services, 1 unreadable (held)`.
    pub fn describe(&self) -> String {
        let Some(c) = &self.commit else {
            return "no commits yet: the desired state is empty".to_string();
        };
        let mut s = format!(
            "commit {}: {} services",
            c.short(),
            self.loaded.services.len()
        );
        if !self.loaded.unreadable.is_empty() {
            s.push_str(&format!(
                ", {} unreadable (held)",
                self.loaded.unreadable.len()
            ));
        }
        s
    }
}

/// A services directory inside a git work tree.
#[derive(Debug, Clone)]
pub struct GitSource {
    dir: PathBuf,
    root: PathBuf,
    /// The directory relative to `root`, with a trailing `/`; empty at the root.
    prefix: String,
    git_dir: PathBuf,
    common_dir: PathBuf,
}

impl GitSource {
    /// Locates the work tree containing `dir`.
    pub fn open(dir: &Path) -> Result<GitSource> {
        if !dir.is_dir() {
            return Err(GitError::DirMissing {
                dir: dir.to_path_buf(),
            });
        }
        let out = git_output(
            dir,
            &[
                "rev-parse",
                "--show-toplevel",
                "--show-prefix",
                "--absolute-git-dir",
                "--git-common-dir",
            ],
        )?;
        if !out.status.success() {
            let mut detail = stderr_text(&out.stderr);
            if detail.contains("dubious ownership") {
                detail.push_str(
                    " (the repository belongs to another user than the master's; \
                     add it to safe.directory in the master user's git config)",
                );
            }
            return Err(GitError::NotARepo {
                dir: dir.to_path_buf(),
                detail,
            });
        }
        let protocol = |detail: &str| GitError::Protocol {
            dir: dir.to_path_buf(),
            args: "rev-parse --show-toplevel ...".to_string(),
            detail: detail.to_string(),
        };
        let text = String::from_utf8(out.stdout).map_err(|_| protocol("paths are not utf-8"))?;
        let lines: Vec<&str> = text.split('\n').collect();
        let [root, prefix, git_dir, common_dir, ..] = lines.as_slice() else {
            return Err(protocol(&format!("expected 4 lines, got {text:?}")));
        };
        let root = PathBuf::from(root);
        let git_dir = PathBuf::from(git_dir);
        let common_dir = dir.join(common_dir);
        Ok(GitSource {
            dir: dir.to_path_buf(),
            root,
            prefix: prefix.to_string(),
            git_dir,
            common_dir,
        })
    }

    /// The services directory as configured.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The work tree's top directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The services directory relative to [`root`](Self::root), ending in
    /// `/` (empty when it is the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This work tree's git directory (holds `HEAD`).
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// The repository's common git directory (holds `refs/` and
    /// `packed-refs`; differs from [`git_dir`](Self::git_dir) in linked
    /// worktrees).
    pub fn common_dir(&self) -> &Path {
        &self.common_dir
    }

    /// The commit `HEAD` points to; `None` when there are no commits yet.
    pub fn head(&self) -> Result<Option<CommitId>> {
        let args = ["rev-parse", "-q", "--verify", "HEAD^{commit}"];
        let out = git_output(&self.root, &args)?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let id = text.trim();
            return CommitId::new(id)
                .map(Some)
                .ok_or_else(|| GitError::Protocol {
                    dir: self.root.clone(),
                    args: args.join(" "),
                    detail: format!("not a commit id: {id:?}"),
                });
        }
        // Unborn branch: HEAD names a branch that does not exist yet.
        let sym = git_output(&self.root, &["symbolic-ref", "-q", "HEAD"])?;
        if sym.status.success() {
            let branch = String::from_utf8_lossy(&sym.stdout).trim().to_string();
            let exists = git_output(&self.root, &["rev-parse", "-q", "--verify", &branch])?;
            if !exists.status.success() {
                return Ok(None);
            }
        }
        Err(GitError::BadHead {
            root: self.root.clone(),
            detail: non_empty(stderr_text(&out.stderr), "rev-parse found no commit"),
        })
    }

    /// Reads the desired state at `HEAD`.
    pub fn load(&self, opts: &LoadOptions) -> Result<DesiredTree> {
        match self.head()? {
            None => Ok(DesiredTree::default()),
            Some(commit) => {
                let loaded = self.load_commit(&commit, opts)?;
                Ok(DesiredTree {
                    commit: Some(commit),
                    loaded,
                })
            }
        }
    }

    /// Reads the desired state at `commit`.
    pub fn load_commit(&self, commit: &CommitId, opts: &LoadOptions) -> Result<LoadedDir> {
        let files = self.list(commit)?;
        let mut out = LoadedDir::default();
        let mut requests = Vec::new();
        for (stem, path) in files {
            if path.contains('\n') {
                out.unreadable.push(unreadable(
                    &stem,
                    &path,
                    "file name contains a line break".to_string(),
                ));
            } else {
                requests.push((stem, path));
            }
        }
        let blobs = self.cat_files(commit, &requests)?;
        for ((stem, path), blob) in requests.into_iter().zip(blobs) {
            let result = match blob {
                Blob::Text(text) => parse_service(&path, &stem, &text, opts),
                Blob::Problem(msg) => Err(vec![at_start(&path, msg)]),
            };
            match result {
                Ok(spec) => {
                    out.services.insert(stem, spec);
                }
                Err(errors) => out.unreadable.push(Unreadable {
                    name: stem,
                    file: PathBuf::from(path),
                    errors,
                }),
            }
        }
        out.unreadable.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(out)
    }

    /// `(stem, path from root)` of each service file in the commit, by name.
    fn list(&self, commit: &CommitId) -> Result<BTreeMap<String, String>> {
        let mut args = vec!["ls-tree", "-z", commit.as_str()];
        if !self.prefix.is_empty() {
            args.extend(["--", self.prefix.as_str()]);
        }
        let out = git_output(&self.root, &args)?;
        if !out.status.success() {
            return Err(self.command_error(&args, &out.stderr));
        }
        let mut files = BTreeMap::new();
        let mut any = false;
        for entry in out.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            any = true;
            let entry = String::from_utf8_lossy(entry);
            let Some((meta, path)) = entry.split_once('\t') else {
                return Err(GitError::Protocol {
                    dir: self.root.clone(),
                    args: args.join(" "),
                    detail: format!("entry without a tab: {entry:?}"),
                });
            };
            // `<mode> <type> <object>`; trees and submodules are not files.
            let kind = meta.split(' ').nth(1).unwrap_or("");
            if kind != "blob" {
                continue;
            }
            let name = path.strip_prefix(self.prefix.as_str()).unwrap_or(path);
            if name.starts_with('.') || name.contains('/') {
                continue;
            }
            if let Some(stem) = name.strip_suffix(".toml") {
                files.insert(stem.to_string(), path.to_string());
            }
        }
        if !any && !self.prefix.is_empty() {
            return Err(GitError::DirNotInCommit {
                root: self.root.clone(),
                prefix: self.prefix.clone(),
                commit: commit.clone(),
            });
        }
        Ok(files)
    }

    /// Reads `<commit>:<path>` of each request through one `cat-file`.
    fn cat_files(&self, commit: &CommitId, requests: &[(String, String)]) -> Result<Vec<Blob>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let args = ["cat-file", "--batch", "--follow-symlinks"];
        let mut child = git_command(&self.root, &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GitError::Spawn { source })?;
        let protocol = |detail: String| GitError::Protocol {
            dir: self.root.clone(),
            args: args.join(" "),
            detail,
        };
        let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(protocol("pipes missing".to_string()));
        };
        let mut input = Vec::new();
        for (_, path) in requests {
            input.extend_from_slice(commit.as_str().as_bytes());
            input.push(b':');
            input.extend_from_slice(path.as_bytes());
            input.push(b'\n');
        }
        // Written from another thread so a full stdout pipe cannot deadlock us.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let errs = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stderr.read_to_end(&mut s);
            s
        });

        let mut reader = BufReader::new(stdout);
        let mut blobs = Vec::with_capacity(requests.len());
        let mut failure = None;
        for (_, path) in requests {
            match read_one(&mut reader, path) {
                Ok(b) => blobs.push(b),
                Err(detail) => {
                    failure = Some(detail);
                    break;
                }
            }
        }
        drop(reader);
        let wrote = writer.join();
        let status = child.wait().map_err(|source| GitError::Spawn { source })?;
        let stderr = errs.join().unwrap_or_default();
        if let Some(detail) = failure {
            let err = stderr_text(&stderr);
            return Err(protocol(if err.is_empty() {
                detail
            } else {
                format!("{detail}; git said: {err}")
            }));
        }
        if !status.success() {
            return Err(self.command_error(&args, &stderr));
        }
        if let Ok(Err(e)) = wrote {
            return Err(protocol(format!("writing requests: {e}")));
        }
        Ok(blobs)
    }

    fn command_error(&self, args: &[&str], stderr: &[u8]) -> GitError {
        GitError::Command {
            dir: self.root.clone(),
            args: args.join(" "),
            detail: non_empty(stderr_text(stderr), "exited with an error"),
        }
    }
}

/// One answer of `cat-file --batch`, turned into file text or a problem.
enum Blob {
    Text(String),
    Problem(String),
}

/// Reads one `cat-file --batch --follow-symlinks` answer. `Err` means the
/// stream itself is broken.
fn read_one(r: &mut impl BufRead, path: &str) -> std::result::Result<Blob, String> {
    let mut header = String::new();
    let n = r
        .read_line(&mut header)
        .map_err(|e| format!("reading answer for {path}: {e}"))?;
    if n == 0 {
        return Err(format!("output ended before the answer for {path}"));
    }
    let header = header.trim_end_matches('\n');
    let fields: Vec<&str> = header.split(' ').collect();
    // Answers with a body: `<oid> <type> <size>`, and `<kind> <size>` for
    // dangling/loop/notdir/symlink. Without: `<name> missing`, `<name> ambiguous`.
    // The object name echoed in `missing` answers may contain spaces.
    if header.ends_with(" missing") {
        return Ok(Blob::Problem(
            "cannot read file: not found in the commit".to_string(),
        ));
    }
    let (kind, size) = match fields.as_slice() {
        [_, kind, size] => (*kind, *size),
        [kind, size] => (*kind, *size),
        _ => return Err(format!("unexpected answer for {path}: {header:?}")),
    };
    let size: u64 = size
        .parse()
        .map_err(|_| format!("unexpected size for {path}: {header:?}"))?;
    let body = if kind == "blob" && size <= MAX_FILE_SIZE {
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        r.take(size)
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading {path}: {e}"))?;
        if buf.len() as u64 != size {
            return Err(format!("output ended inside {path}"));
        }
        Some(buf)
    } else {
        let skipped = std::io::copy(&mut r.take(size), &mut std::io::sink())
            .map_err(|e| format!("reading {path}: {e}"))?;
        if skipped != size {
            return Err(format!("output ended inside {path}"));
        }
        None
    };
    let mut nl = [0u8; 1];
    r.read_exact(&mut nl)
        .map_err(|e| format!("reading after {path}: {e}"))?;
    let problem = match (kind, body) {
        ("blob", Some(bytes)) => {
            return Ok(match String::from_utf8(bytes) {
                Ok(text) => Blob::Text(text),
                Err(e) => Blob::Problem(format!(
                    "file must be utf-8, found an invalid byte at offset {}",
                    e.utf8_error().valid_up_to()
                )),
            })
        }
        ("blob", None) => mcp_spec::file_size_problem(size).unwrap_or_else(|| {
            format!("file is {size} bytes, larger than the {MAX_FILE_SIZE} bytes a service file may have")
        }),
        ("symlink", _) => "symbolic link points outside the repository".to_string(),
        ("dangling", _) => "symbolic link points to nothing in this commit".to_string(),
        ("loop", _) => "symbolic links form a loop".to_string(),
        ("notdir", _) => "symbolic link goes through a file as if it were a directory".to_string(),
        (other, _) => format!("is a {other}, not a file"),
    };
    Ok(Blob::Problem(problem))
}

fn unreadable(stem: &str, path: &str, message: String) -> Unreadable {
    Unreadable {
        name: stem.to_string(),
        file: PathBuf::from(path),
        errors: vec![at_start(path, message)],
    }
}

fn at_start(path: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: path.to_string(),
        line: 1,
        column: 1,
        message,
    }
}

/// A `git` command run in `dir`, isolated from the caller's git environment.
pub(crate) fn git_command<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).arg("--literal-pathspecs").args(args);
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    cmd
}

fn git_output(dir: &Path, args: &[&str]) -> Result<std::process::Output> {
    git_command(dir, args)
        .output()
        .map_err(|source| GitError::Spawn { source })
}

fn stderr_text(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn non_empty(s: String, fallback: &str) -> String {
    if s.is_empty() {
        fallback.to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests;
