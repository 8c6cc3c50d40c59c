//! `mcp history <svc>` and `mcp rollback <svc> [--to COMMIT] [--dry-run]`.
//!
//! Git stays the source of truth: the history is the commits that changed
//! `<svc>.toml` in the services repository, each matched (by the spec hash
//! of the file at that commit) to the master's record of how that spec
//! fared when deployed (`DeployHistory`: deployed, failed, rolled back). A
//! rollback writes the file as it was at the chosen commit — by default
//! the newest one whose spec the master deployed healthy and that differs
//! from the file now — and commits that change alone; the master then
//! converges to it like to any commit.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mcp_proto::pb;
use serde_json::json;

use super::{block_on, master_client, print, print_json, Ctx};
use crate::files;
use crate::report;

/// One commit that changed the service's file.
#[derive(Debug, Clone)]
struct Revision {
    commit: String,
    short: String,
    date: String,
    subject: String,
    /// The file at that commit: `None` when the commit deleted it.
    text: Option<Vec<u8>>,
    /// Its spec hash; `None` when absent or invalid.
    spec_hash: Option<String>,
}

/// The commits that changed `<service>.toml`, newest first.
fn revisions(dir: &Path, service: &str) -> Result<Vec<Revision>> {
    if !files::in_git_work_tree(dir) {
        bail!(
            "{} is not in a git work tree: history and rollback read the commits of the \
             service's file",
            dir.display()
        );
    }
    let file = format!("{service}.toml");
    let log = mcp_dev::git::git(dir, &["log", "--format=%H%x09%h%x09%cI%x09%s", "--", &file])?;
    let mut out = Vec::new();
    for line in log.lines() {
        let mut f = line.splitn(4, '\t');
        let (Some(commit), Some(short), Some(date), subject) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let text = mcp_dev::git::git_bytes(dir, &["show", &format!("{commit}:./{file}")]).ok();
        let spec_hash = text.as_ref().and_then(|t| {
            let t = std::str::from_utf8(t).ok()?;
            mcp_spec::parse_service(&file, service, t, &mcp_spec::LoadOptions::default())
                .ok()
                .map(|s| mcp_spec::spec_hash(&s))
        });
        out.push(Revision {
            commit: commit.to_string(),
            short: short.to_string(),
            date: date.to_string(),
            subject: subject.unwrap_or_default().to_string(),
            text,
            spec_hash,
        });
    }
    Ok(out)
}

fn deploy_history(ctx: &Ctx<'_>, service: &str) -> Result<pb::DeployHistoryResponse> {
    let t = ctx.master()?;
    block_on(async {
        master_client(&t)
            .await?
            .deploy_history(pb::DeployHistoryRequest {
                service: service.to_string(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| t.rpc_error("DeployHistory", &s))
    })
}

fn outcome_of<'a>(h: &'a pb::DeployHistoryResponse, r: &Revision) -> Option<&'a pb::DeployOutcome> {
    let hash = r.spec_hash.as_deref()?;
    h.outcomes.iter().find(|o| o.spec_hash == hash)
}

/// `mcp history <svc>`.
pub fn history(ctx: &Ctx<'_>, service: &str) -> Result<ExitCode> {
    files::check_service_name(service)?;
    let dir = ctx.services_dir();
    let revs = revisions(&dir, service)?;
    let (hist, problem) = match deploy_history(ctx, service) {
        Ok(h) => (h, None),
        Err(e) => (pb::DeployHistoryResponse::default(), Some(e)),
    };
    let outcome = |r: &Revision| -> String {
        match (&r.text, &r.spec_hash) {
            (None, _) => "removed".to_string(),
            (Some(_), None) => "invalid file".to_string(),
            (Some(_), Some(_)) => {
                outcome_of(&hist, r).map_or_else(|| "-".to_string(), |o| o.outcome.clone())
            }
        }
    };
    let current = |r: &Revision| {
        !hist.desired_hash.is_empty() && r.spec_hash.as_deref() == Some(hist.desired_hash.as_str())
    };
    if ctx.json() {
        let commits: Vec<_> = revs
            .iter()
            .map(|r| {
                let o = outcome_of(&hist, r);
                json!({
                    "commit": r.commit, "date": r.date, "subject": r.subject,
                    "spec_hash": r.spec_hash, "outcome": outcome(r),
                    "node": o.map(|o| o.node.clone()), "at": o.map(|o| o.at.clone()),
                    "detail": o.map(|o| o.detail.clone()), "desired": current(r),
                })
            })
            .collect();
        print_json(&json!({"service": service, "commits": commits}))?;
    } else {
        let rows: Vec<Vec<String>> = revs
            .iter()
            .map(|r| {
                let o = outcome_of(&hist, r);
                vec![
                    format!("{}{}", r.short, if current(r) { " *" } else { "" }),
                    r.date.clone(),
                    outcome(r),
                    o.map_or_else(|| "-".to_string(), |o| report::cell(&o.node)),
                    r.subject.clone(),
                ]
            })
            .collect();
        print(&report::table(
            &["COMMIT", "DATE", "OUTCOME", "NODE", "SUBJECT"],
            &rows,
        ))?;
        if !hist.desired_hash.is_empty() {
            println!("* the spec the master deploys now");
        }
    }
    if let Some(e) = problem {
        eprintln!("mcp: the master's deploy outcomes are not shown: {e:#}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `mcp rollback <svc> [--to COMMIT] [--dry-run]`.
pub fn rollback(ctx: &Ctx<'_>, service: &str, to: Option<&str>, dry_run: bool) -> Result<ExitCode> {
    files::check_service_name(service)?;
    let dir = ctx.services_dir();
    let file = format!("{service}.toml");
    let path = files::service_path(&dir, service)?;
    let revs = revisions(&dir, service)?;
    let now = std::fs::read(&path).ok();
    let now_hash = now.as_ref().and_then(|t| {
        let t = std::str::from_utf8(t).ok()?;
        files::validate(&path, service, t)
            .ok()
            .map(|s| mcp_spec::spec_hash(&s))
    });
    let chosen = match to {
        Some(rev) => {
            let commit = mcp_dev::git::git(
                &dir,
                &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
            )
            .with_context(|| format!("{rev} is not a commit of {}", dir.display()))?;
            let text = mcp_dev::git::git_bytes(&dir, &["show", &format!("{commit}:./{file}")])
                .with_context(|| format!("{file} does not exist at {rev}"))?;
            let subject = mcp_dev::git::git(&dir, &["log", "-1", "--format=%s", &commit])?;
            let short = mcp_dev::git::git(&dir, &["rev-parse", "--short", &commit])?;
            Revision {
                commit,
                short,
                date: String::new(),
                subject,
                text: Some(text),
                spec_hash: None,
            }
        }
        None => {
            let hist = deploy_history(ctx, service)?;
            revs.iter()
                .find(|r| {
                    r.text.is_some()
                        && r.spec_hash.is_some()
                        && r.spec_hash != now_hash
                        && outcome_of(&hist, r).is_some_and(|o| o.outcome == "deployed")
                })
                .cloned()
                .with_context(|| {
                    format!(
                        "no earlier commit of {file} has a spec the master deployed healthy \
                         (see `mcp history {service}`); name one with --to COMMIT"
                    )
                })?
        }
    };
    let text = chosen.text.clone().unwrap_or_default();
    let text = String::from_utf8(text)
        .with_context(|| format!("{file} at {} is not UTF-8", chosen.short))?;
    let spec = match files::validate(&path, service, &text) {
        Ok(s) => s,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            bail!("{file} at {} is invalid; nothing changed", chosen.short);
        }
    };
    let what = format!("{file} as of {} ({})", chosen.short, chosen.subject);
    if now.as_deref() == Some(text.as_bytes()) {
        if ctx.json() {
            print_json(&json!({"file": path, "commit": chosen.commit, "changed": false}))?;
        } else {
            println!("{} is already {what}; nothing to change", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        // The master's plan for the services directory with this one file
        // restored; nothing is written.
        let mut loaded = mcp_spec::load_dir(&dir, &mcp_spec::LoadOptions::default())
            .with_context(|| format!("reading services directory {}", dir.display()))?;
        loaded.unreadable.retain(|u| u.name != service);
        loaded.services.insert(service.to_string(), spec);
        if !ctx.json() {
            println!("mcp rollback {service}: would restore {what}");
        }
        let source = format!(
            "{} with {file} from {}",
            files::source_label(&dir),
            chosen.short
        );
        let t = ctx.master()?;
        return super::deploy::sync_loaded(ctx, &t, &loaded, source, true, false, None);
    }
    let dirty = files::git_file_status(&dir, &file)?;
    if !dirty.is_empty() {
        bail!(
            "{} has uncommitted changes ({dirty}); commit or discard them first, so the \
             rollback commit contains only this change",
            path.display()
        );
    }
    files::write_atomic(&path, &text)?;
    let message = format!(
        "mcp rollback {service} to {} ({})",
        chosen.short, chosen.subject
    );
    let commit = files::git_commit_file(&dir, &file, &message)?;
    if ctx.json() {
        print_json(&json!({
            "file": path, "commit": commit, "restored_from": chosen.commit, "changed": true,
        }))?;
    } else {
        println!("restored {what}; committed {commit} (the master deploys it on its next pass)");
    }
    Ok(ExitCode::SUCCESS)
}
