//! The one git helper of the CLI and the dev fleet: `git -C <dir> <args>`
//! as argv (never a shell), standard output returned trimmed, a failure
//! reported with the command, the directory and git's own message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A git command that could not run or exited non-zero.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("running git {args} (install it: `sudo apt-get install git`): {source}")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("git {args} in {dir}: {message}")]
    Failed {
        args: String,
        dir: PathBuf,
        message: String,
    },
}

/// A commit identity passed with `-c user.name=… -c user.email=…`, for
/// repositories created by a program (no global git identity needed).
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub name: &'a str,
    pub email: &'a str,
}

/// `git -C dir args…` with the caller's git configuration; the standard
/// output, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    run(dir, None, args)
}

/// Like [`git`], committing as `who`.
pub fn git_as(dir: &Path, who: Identity<'_>, args: &[&str]) -> Result<String, GitError> {
    run(dir, Some(who), args)
}

/// Like [`git`], returning standard output exactly as git wrote it (e.g.
/// a file's bytes from `git show <rev>:<path>`).
pub fn git_bytes(dir: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    run_raw(dir, None, args)
}

fn run(dir: &Path, who: Option<Identity<'_>>, args: &[&str]) -> Result<String, GitError> {
    let out = run_raw(dir, who, args)?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

fn run_raw(dir: &Path, who: Option<Identity<'_>>, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir);
    if let Some(w) = who {
        cmd.arg("-c")
            .arg(format!("user.name={}", w.name))
            .arg("-c")
            .arg(format!("user.email={}", w.email));
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| GitError::Spawn {
            args: args.join(" "),
            source,
        })?;
    if !out.status.success() {
        return Err(GitError::Failed {
            args: args.join(" "),
            dir: dir.to_path_buf(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// True when `dir` is inside a git work tree (false when git is missing).
pub fn in_work_tree(dir: &Path) -> bool {
    git(dir, &["rev-parse", "--is-inside-work-tree"]).is_ok_and(|s| s == "true")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const WHO: Identity<'static> = Identity {
        name: "test",
        email: "test@localhost",
    };

    #[test]
    fn runs_in_the_directory_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!in_work_tree(dir.path()));
        git(dir.path(), &["init", "-q", "-b", "main"]).unwrap();
        assert!(in_work_tree(dir.path()));
        std::fs::write(dir.path().join("a"), "a").unwrap();
        git(dir.path(), &["add", "a"]).unwrap();
        git_as(dir.path(), WHO, &["commit", "-q", "-m", "one"]).unwrap();
        let author = git(dir.path(), &["log", "-1", "--format=%an <%ae>"]).unwrap();
        assert_eq!(author, "test <test@localhost>");

        let e = git(dir.path(), &["rev-parse", "no-such-ref"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("git rev-parse no-such-ref in "), "{msg}");
        assert!(msg.contains("no-such-ref"), "{msg}");
    }
}
