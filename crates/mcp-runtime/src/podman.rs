//! [`ContainerRuntime`] over the podman CLI.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{Result, RuntimeError};
use crate::lines::{line_text, read_capped_line, MAX_LOG_LINE_BYTES};
use crate::types::{
    check_image, validate_name, ContainerConfig, ContainerInfo, ContainerState, EventStream,
    ExecOutput, LogLine, LogOptions, LogSource, LogStream, PortBinding, Protocol, PullOutcome,
    LABEL_SERVICE,
};
use crate::ContainerRuntime;

mod json;

use json::{parse_event, parse_inspect, parse_json, PsRow};

/// Longest stderr excerpt kept in an error.
const MAX_STDERR: usize = 4096;

/// The podman CLI. Every call runs `<binary> <global args> <subcommand>
/// ...` as an argv (never through a shell) with the configured extra
/// environment, and is killed when it exceeds its timeout.
///
/// ```
/// # use mcp_runtime::Podman;
/// let podman = Podman::new()
///     .global_args(["--root", "/var/lib/mcp/storage", "--runroot", "/run/mcp/storage"])
///     .env("CONTAINERS_CONF", "/etc/mcp/containers.conf");
/// ```
#[derive(Debug, Clone)]
pub struct Podman {
    binary: PathBuf,
    global_args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    command_timeout: Duration,
    pull_timeout: Duration,
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}

impl Podman {
    /// `podman` from `$PATH`, no extra arguments, 2 minute command timeout,
    /// 15 minute pull timeout.
    pub fn new() -> Self {
        Podman {
            binary: PathBuf::from("podman"),
            global_args: Vec::new(),
            env: Vec::new(),
            command_timeout: Duration::from_secs(120),
            pull_timeout: Duration::from_secs(15 * 60),
        }
    }

    /// Path of the podman binary.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Arguments placed before every subcommand, e.g. `--root DIR`,
    /// `--runroot DIR`, `--tmpdir DIR`, `--storage-driver vfs`.
    pub fn global_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.global_args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An environment variable for podman itself (not the containers),
    /// e.g. `CONTAINERS_CONF`.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Timeout of every call except `pull` (and `stop`, which adds its own
    /// grace period on top).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Timeout of `pull`.
    pub fn pull_timeout(mut self, timeout: Duration) -> Self {
        self.pull_timeout = timeout;
        self
    }

    /// `podman --version`, e.g. `podman version 4.3.1`. A cheap probe of
    /// whether podman is usable.
    pub async fn version(&self) -> Result<String> {
        let out = self
            .run_ok(
                "--version",
                "podman",
                [OsStr::new("--version")],
                self.command_timeout,
            )
            .await?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.global_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    fn spawn_error(&self, op: &'static str, target: &str, source: std::io::Error) -> RuntimeError {
        RuntimeError::Spawn {
            target: target.to_string(),
            op,
            binary: self.binary.display().to_string(),
            source,
        }
    }

    /// Runs podman with `args` and returns its output whatever the exit
    /// status.
    async fn run<I, S>(
        &self,
        op: &'static str,
        target: &str,
        args: I,
        timeout: Duration,
    ) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args);
        tracing::debug!(op, target, "podman");
        let child = cmd.spawn().map_err(|e| self.spawn_error(op, target, e))?;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => Err(RuntimeError::Timeout {
                target: target.to_string(),
                op,
                after: timeout,
            }),
            Ok(Err(e)) => Err(self.spawn_error(op, target, e)),
            Ok(Ok(out)) => Ok(out),
        }
    }

    /// Like [`Podman::run`] but a non-zero exit is an error; returns stdout.
    async fn run_ok<I, S>(
        &self,
        op: &'static str,
        target: &str,
        args: I,
        timeout: Duration,
    ) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(op, target, args, timeout).await?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(classify(op, target, &out))
        }
    }

    async fn inspect_many(&self, ids: &[String]) -> Result<Vec<ContainerInfo>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["container".to_string(), "inspect".to_string()];
        args.extend(ids.iter().cloned());
        match self
            .run_ok("inspect", &ids.join(","), &args, self.command_timeout)
            .await
        {
            Ok(out) => parse_inspect(&out, &ids.join(",")),
            // One of them went away between `ps` and `inspect`: one by one.
            Err(e) if e.is_not_found() => {
                let mut infos = Vec::new();
                for id in ids {
                    if let Some(info) = self.inspect_id(id).await? {
                        infos.push(info);
                    }
                }
                Ok(infos)
            }
            Err(e) => Err(e),
        }
    }

    async fn inspect_id(&self, id: &str) -> Result<Option<ContainerInfo>> {
        match self
            .run_ok(
                "inspect",
                id,
                ["container", "inspect", id],
                self.command_timeout,
            )
            .await
        {
            Ok(out) => Ok(parse_inspect(&out, id)?.into_iter().next()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Ids of `podman ps -a` (optionally filtered).
    async fn ps_ids(&self, filter: Option<&str>) -> Result<Vec<(String, String)>> {
        let mut args = vec!["ps", "--all", "--format", "json"];
        if let Some(f) = filter {
            args.push("--filter");
            args.push(f);
        }
        let out = self
            .run_ok("ps", "containers", &args, self.command_timeout)
            .await?;
        let rows: Vec<PsRow> = parse_json(&out, "ps", "containers")?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let name = r.names.into_iter().next().unwrap_or_default();
                (r.id, name)
            })
            .collect())
    }
}

impl ContainerRuntime for Podman {
    async fn pull(&self, image: &str) -> Result<PullOutcome> {
        check_image(image)?;
        if mcp_spec::image_version(image) != "latest" && self.image_exists(image).await? {
            return Ok(PullOutcome::AlreadyPresent);
        }
        self.run_ok("pull", image, ["pull", "--quiet", image], self.pull_timeout)
            .await?;
        Ok(PullOutcome::Pulled)
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        check_image(image)?;
        let out = self
            .run(
                "image exists",
                image,
                ["image", "exists", image],
                self.command_timeout,
            )
            .await?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(classify("image exists", image, &out)),
        }
    }

    async fn create_and_start(&self, config: &ContainerConfig) -> Result<String> {
        config.validate()?;
        let args = run_args(config);
        let name = config.name.as_str();
        let out = self.run("run", name, &args, self.command_timeout).await?;
        if out.status.success() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            return match stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
                Some(id) => Ok(id.to_string()),
                None => Err(RuntimeError::Parse {
                    target: name.to_string(),
                    op: "run",
                    reason: "no container id printed".to_string(),
                }),
            };
        }
        let err = match classify("run", name, &out) {
            RuntimeError::Command { stderr, .. } if is_image_missing(&stderr) => {
                RuntimeError::ImageNotFound {
                    image: config.image.clone(),
                }
            }
            other => other,
        };
        if !matches!(err, RuntimeError::AlreadyExists { .. }) {
            // `podman run` may have created the container before failing to
            // start it; leave nothing half-made behind.
            match self.remove(name, true).await {
                Ok(()) => tracing::debug!(container = name, "removed after failed run"),
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(container = name, error = %e, "cleanup after failed run"),
            }
        }
        Err(err)
    }

    async fn start(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        self.run_ok("start", name, ["start", name], self.command_timeout)
            .await?;
        Ok(())
    }

    async fn stop(&self, name: &str, timeout: Duration) -> Result<()> {
        validate_name(name)?;
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let time = format!("--time={secs}");
        self.run_ok(
            "stop",
            name,
            ["stop", time.as_str(), name],
            self.command_timeout + Duration::from_secs(secs),
        )
        .await?;
        Ok(())
    }

    async fn remove(&self, name: &str, force: bool) -> Result<()> {
        validate_name(name)?;
        let args: &[&str] = if force {
            // Force means now: no grace period.
            &["rm", "--force", "--time=0", name]
        } else {
            &["rm", name]
        };
        let out = self.run_ok("rm", name, args, self.command_timeout).await?;
        // `rm --force` succeeds silently for a missing container; it prints
        // the name of each container it did remove.
        if force && String::from_utf8_lossy(&out).trim().is_empty() {
            return Err(RuntimeError::NotFound {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>> {
        validate_name(name)?;
        self.inspect_id(name).await
    }

    async fn list_managed(&self) -> Result<Vec<ContainerInfo>> {
        let filter = format!("label={LABEL_SERVICE}");
        let ids: Vec<String> = self
            .ps_ids(Some(&filter))
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut infos = self.inspect_many(&ids).await?;
        // podman's filter is trusted but cheap to double-check.
        infos.retain(ContainerInfo::is_managed);
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    async fn list_by_prefix(&self, prefix: &str) -> Result<Vec<ContainerInfo>> {
        // Filter by name here rather than with podman's regex filter.
        let ids: Vec<String> = self
            .ps_ids(None)
            .await?
            .into_iter()
            .filter(|(_, name)| name.starts_with(prefix))
            .map(|(id, _)| id)
            .collect();
        let mut infos = self.inspect_many(&ids).await?;
        infos.retain(|i| i.name.starts_with(prefix));
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    async fn logs(&self, name: &str, opts: LogOptions) -> Result<LogStream> {
        validate_name(name)?;
        // Report a missing container as NotFound up front rather than as a
        // failed stream.
        if self.inspect_id(name).await?.is_none() {
            return Err(RuntimeError::NotFound {
                name: name.to_string(),
            });
        }
        let mut cmd = self.command();
        cmd.arg("logs");
        if opts.follow {
            cmd.arg("--follow");
        }
        if let Some(n) = opts.tail {
            cmd.arg(format!("--tail={n}"));
        }
        if let Some(t) = opts.since {
            // Unix seconds: podman reads them as a timestamp.
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            cmd.arg(format!("--since={secs}"));
        }
        cmd.arg(name);
        let mut child = cmd.spawn().map_err(|e| self.spawn_error("logs", name, e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(RuntimeError::Parse {
                target: name.to_string(),
                op: "logs",
                reason: "no output pipes".to_string(),
            });
        };
        let (tx, rx) = mpsc::channel(256);
        let out_task = tokio::spawn(forward_lines(stdout, LogSource::Stdout, tx.clone()));
        let err_task = tokio::spawn(forward_lines(stderr, LogSource::Stderr, tx.clone()));
        let target = name.to_string();
        tokio::spawn(async move {
            let status = tokio::select! {
                // The reader went away: stop podman (kill_on_drop does the rest).
                () = tx.closed() => {
                    let _ = child.start_kill();
                    return;
                }
                status = child.wait() => status,
            };
            let _ = out_task.await;
            let last_stderr = err_task.await.unwrap_or_default();
            let status = match status {
                Ok(s) if s.success() => return,
                Ok(s) => s.code().map_or("killed by signal".to_string(), |c| {
                    format!("exit status {c}")
                }),
                Err(e) => e.to_string(),
            };
            let _ = tx
                .send(Err(RuntimeError::Command {
                    target,
                    op: "logs",
                    status,
                    stderr: last_stderr,
                }))
                .await;
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn events(&self) -> Result<EventStream> {
        follow_events(self).await
    }

    async fn exec(&self, name: &str, argv: &[String]) -> Result<ExecOutput> {
        validate_name(name)?;
        if argv.is_empty() {
            return Err(RuntimeError::Invalid {
                target: name.to_string(),
                what: "exec argv",
                reason: "empty".to_string(),
            });
        }
        let mut args: Vec<&str> = vec!["exec", name];
        args.extend(argv.iter().map(String::as_str));
        let out = self.run("exec", name, &args, self.command_timeout).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        // podman's own failures exit 125 (or 255 for some exec errors) with
        // an `Error:` line; anything else is the command's result.
        if matches!(code, Some(125) | Some(255)) && stderr.contains("Error: ") {
            return Err(classify("exec", name, &out));
        }
        Ok(ExecOutput {
            exit_code: code.unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: stderr.into_owned(),
        })
    }
}

/// Sends every line of `pipe` to `tx`, each cut at
/// [`crate::MAX_LOG_LINE_BYTES`] (see [`crate::lines`]); returns the last
/// line (for errors).
/// `podman events --format json --filter type=container` as a stream;
/// it ends when podman exits (or its output cannot be read).
async fn follow_events(rt: &Podman) -> Result<EventStream> {
    let mut cmd = rt.command();
    cmd.args(["events", "--format", "json", "--filter", "type=container"]);
    let mut child = cmd.spawn().map_err(|e| rt.spawn_error("events", "", e))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(RuntimeError::Parse {
            target: String::new(),
            op: "events",
            reason: "no output pipe".to_string(),
        });
    };
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            tokio::select! {
                () = tx.closed() => break,
                line = read_capped_line(&mut reader, &mut buf, MAX_LOG_LINE_BYTES) => match line {
                    Ok(Some(_)) => {
                        if let Some(e) = parse_event(&buf) {
                            if tx.send(Ok(e)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        // The reader left or podman ended: make sure it is gone.
        let _ = child.kill().await;
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

async fn forward_lines<R: AsyncRead + Unpin>(
    pipe: R,
    source: LogSource,
    tx: mpsc::Sender<Result<LogLine>>,
) -> String {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    let mut last = String::new();
    loop {
        match read_capped_line(&mut reader, &mut buf, MAX_LOG_LINE_BYTES).await {
            Ok(None) | Err(_) => return last,
            Ok(Some(truncated)) => {
                let line = line_text(&buf, truncated);
                last.clone_from(&line);
                if tx.send(Ok(LogLine { source, line })).await.is_err() {
                    return last;
                }
            }
        }
    }
}

/// `podman run` argv for `config` (options in `--flag=value` form so that
/// no value can be read as an option; the image is validated not to start
/// with `-`, and podman stops option parsing at the image).
fn run_args(config: &ContainerConfig) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--detach".to_string(),
        "--pull=never".to_string(),
        format!("--name={}", config.name),
    ];
    for (k, v) in config.all_labels() {
        args.push(format!("--label={k}={v}"));
    }
    for e in &config.env {
        args.push(format!("--env={e}"));
    }
    for v in &config.volumes {
        args.push(format!("--volume={v}"));
    }
    if let Some(u) = &config.user {
        args.push(format!("--user={u}"));
    }
    if let Some(n) = &config.network {
        args.push(format!("--network={n}"));
    }
    if let Some(r) = &config.restart {
        args.push(format!("--restart={r}"));
    }
    for p in &config.ports {
        args.push(format!("--publish={p}"));
    }
    args.push(config.image.clone());
    args.extend(config.cmd.iter().cloned());
    args
}

fn is_image_missing(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("image not known") || s.contains("no such image")
}

/// Turns a failed podman run into the most specific error.
fn classify(op: &'static str, target: &str, out: &Output) -> RuntimeError {
    let stderr = trim_stderr(&out.stderr);
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("no such container") || lower.contains("no container with name or id") {
        RuntimeError::NotFound {
            name: target.to_string(),
        }
    } else if lower.contains("already in use") {
        RuntimeError::AlreadyExists {
            name: target.to_string(),
        }
    } else if lower.contains("container state improper") {
        RuntimeError::WrongState {
            name: target.to_string(),
            op,
            detail: stderr,
        }
    } else {
        RuntimeError::Command {
            target: target.to_string(),
            op,
            status: out
                .status
                .code()
                .map_or("killed by signal".to_string(), |c| {
                    format!("exit status {c}")
                }),
            stderr,
        }
    }
}

fn trim_stderr(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    let s = s.trim();
    if s.len() <= MAX_STDERR {
        return s.to_string();
    }
    // Keep the end: podman prints the error last.
    let mut start = s.len() - MAX_STDERR;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

#[cfg(test)]
mod tests;
