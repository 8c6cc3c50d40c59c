//! The commands that talk to a daemon: through the master, or with
//! `--direct --node N` to one agent. One module per command family:
//! [`deploy`] (sync, deploy, undeploy), [`lifecycle`] (stop, start,
//! restart), [`status`] (status, ps), [`logs`] (logs, events), [`files`]
//! (push, pull, adopt), [`nodes`] (node list), [`audit`] (audit),
//! [`rollback`] (history, rollback).
//!
//! Every command resolves its peer ([`remote::Target`]) and reads the local
//! files it needs before opening a connection, so configuration mistakes
//! fail fast and name what is missing. Rendering decisions that matter for
//! exit statuses live in [`crate::report`] (pure, unit-tested).

mod audit;
mod deploy;
mod files;
mod lifecycle;
mod logs;
mod migrate;
mod nodes;
mod rollback;
mod snapshots;
mod status;

pub use audit::audit;
pub use deploy::{deploy, sync, undeploy};
pub use files::{adopt, pull, push};
pub use lifecycle::{restart, set_active};
pub use logs::{events, logs};
pub use migrate::migrate;
pub use nodes::{node_forget, node_list};
pub use rollback::{history, rollback};
pub use snapshots::{restore, snapshot_list, snapshot_now};
pub use status::{ps, status};

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use mcp_proto::MAX_MESSAGE_BYTES;
use serde_json::json;

use crate::cli::Output;
use crate::config::Config;
use crate::remote::{self, Target};
use crate::report::{self, StepLine};

/// What every command needs: the config, where it came from, the output format.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    /// The config file, for messages.
    pub label: String,
    pub output: Output,
}

impl Ctx<'_> {
    fn json(&self) -> bool {
        self.output == Output::Json
    }

    fn master(&self) -> Result<Target> {
        remote::master_target(self.cfg, &self.label)
    }

    fn agent(&self, node: &str) -> Result<Target> {
        remote::agent_target(self.cfg, &self.label, node)
    }

    fn services_dir(&self) -> PathBuf {
        self.cfg.services_dir(None)
    }
}

fn block_on<F: Future<Output = Result<T>>, T>(f: F) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

/// [`block_on`] for the long operations (snapshot, restore, migrate): on a
/// terminal a spinner on stderr says what runs and for how long; piped or
/// with `--output json`, nothing is drawn (the step lines follow either
/// way). The RPCs answer once, at the end, so there is no byte count.
fn block_on_progress<F: Future<Output = Result<T>>, T>(
    ctx: &Ctx<'_>,
    what: &str,
    f: F,
) -> Result<T> {
    use std::io::IsTerminal as _;
    if ctx.json() || !std::io::stderr().is_terminal() {
        return block_on(f);
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let r = block_on(f);
    bar.finish_and_clear();
    r
}

/// A master client with the shared gRPC message limit both ways.
async fn master_client(t: &Target) -> Result<remote::MasterClient> {
    Ok(remote::master(t)
        .await?
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// An agent client with the shared gRPC message limit both ways.
async fn agent_client(t: &Target) -> Result<remote::AgentClient> {
    Ok(remote::agent(t)
        .await?
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn print(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    print(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// Colour only on a terminal, and never with `NO_COLOR` set (non-empty).
fn use_color() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints an operation's per-step results (and error); exit 1 when a step
/// failed, `success` is false or `error` is set.
fn finish(
    ctx: &Ctx<'_>,
    title: &str,
    steps: &[StepLine],
    error: &str,
    success: Option<bool>,
) -> Result<ExitCode> {
    let (_, failed, _) = report::tally(steps);
    let ok = failed == 0 && error.is_empty() && success != Some(false);
    if ctx.json() {
        print_json(&json!({"operation": title, "success": ok, "error": error, "results": steps}))?;
    } else {
        println!("{title}");
        print(&report::render_steps(steps))?;
        if !error.is_empty() {
            eprintln!("mcp: error: {error}");
        } else if !ok {
            eprintln!("mcp: error: {title}: failed");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--since T` → the RFC 3339 UTC time sent to the daemons. `T` is either a
/// relative duration meaning "that long before `now`" (`90s`, `10m`,
/// `1h30m`, `2d`: humantime syntax) or a UTC time in RFC 3339
/// (`2026-01-01T12:00:00Z`; the `Z` may be left out).
pub(crate) fn parse_since(s: &str, now: SystemTime) -> Result<String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        let t = now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
        return Ok(humantime::format_rfc3339_seconds(t).to_string());
    }
    match humantime::parse_rfc3339_weak(s) {
        Ok(t) => Ok(humantime::format_rfc3339_seconds(t).to_string()),
        Err(_) => bail!(
            "--since {s:?}: give a duration before now (e.g. 10m, 1h30m, 2d) or a UTC time in \
             RFC 3339 (e.g. 2026-01-01T12:00:00Z)"
        ),
    }
}

/// `parse_since` of an optional flag; empty string for none.
fn since_arg(since: Option<&str>) -> Result<String> {
    match since {
        Some(s) => parse_since(s, SystemTime::now()),
        None => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests;
