//! `mcp edit <svc>`: edit a copy of the service file in `$VISUAL` /
//! `$EDITOR` (default `vi`), validate it, and only then replace the file.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::files;

/// The editor's argv: `$VISUAL`, else `$EDITOR`, else `vi`, split like a
/// POSIX shell would split words (quotes respected) but never run by one.
fn editor_argv() -> Result<Vec<String>> {
    let (var, raw) = ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|v| {
            std::env::var(v)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|s| (*v, s))
        })
        .unwrap_or(("default", "vi".to_string()));
    match shlex::split(&raw) {
        Some(argv) if !argv.is_empty() => Ok(argv),
        _ => bail!("${var} {raw:?} cannot be split into a command (unbalanced quotes?)"),
    }
}

fn run_editor(argv: &[String], file: &Path) -> Result<()> {
    let Some((prog, args)) = argv.split_first() else {
        bail!("no editor command");
    };
    let status = Command::new(prog)
        .args(args)
        .arg(file)
        .status()
        .with_context(|| format!("running editor {prog}"))?;
    if !status.success() {
        bail!("editor {prog} exited with {status}; the service file is unchanged");
    }
    Ok(())
}

/// Asks `question [Y/n]` on the terminal; Enter means yes.
fn ask_yes(question: &str) -> Result<bool> {
    eprint!("{question} [Y/n] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        return Ok(false);
    }
    let a = line.trim().to_ascii_lowercase();
    Ok(a.is_empty() || a == "y" || a == "yes")
}

pub fn edit(dir: &Path, service: &str) -> Result<ExitCode> {
    let (path, original) = files::read_service_file(dir, service)?;
    let argv = editor_argv()?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{service}-"))
        .suffix(".toml")
        .tempfile()
        .context("creating a temporary file")?;
    tmp.write_all(original.as_bytes())
        .and_then(|()| tmp.flush())
        .context("writing the temporary copy")?;
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    loop {
        run_editor(&argv, tmp.path())?;
        // Editors often replace the file rather than write into it: read by path.
        let text = std::fs::read_to_string(tmp.path())
            .with_context(|| format!("reading the edited copy {}", tmp.path().display()))?;
        if text == original {
            println!("{}: no changes", path.display());
            return Ok(ExitCode::SUCCESS);
        }
        match files::validate(&path, service, &text) {
            Ok(_) => {
                files::write_atomic(&path, &text)?;
                println!(
                    "saved {}; commit it (GitOps) or run `mcp sync` (push mode) to apply",
                    path.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            Err(diags) => {
                for d in &diags {
                    eprintln!("{d}");
                }
                if !interactive {
                    eprintln!("mcp: {} not saved: the edit is invalid", path.display());
                    return Ok(ExitCode::FAILURE);
                }
                if !ask_yes("edit again?")? {
                    eprintln!("{} not saved", path.display());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
}
