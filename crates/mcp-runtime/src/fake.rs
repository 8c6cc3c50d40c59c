//! [`FakeRuntime`]: an in-memory, recording [`ContainerRuntime`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{Result, RuntimeError};
use crate::types::{
    check_image, validate_name, ContainerConfig, ContainerEvent, ContainerInfo, ContainerState,
    EventStream, ExecOutput, LogLine, LogOptions, LogSource, LogStream, PullOutcome, LABEL_SERVICE,
};
use crate::ContainerRuntime;

/// One recorded call, in the order the calls were made (failed calls
/// included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Pull { image: String },
    ImageExists { image: String },
    CreateAndStart(Box<ContainerConfig>),
    Start { name: String },
    Stop { name: String, timeout: Duration },
    Remove { name: String, force: bool },
    Inspect { name: String },
    ListManaged,
    ListByPrefix { prefix: String },
    Logs { name: String, opts: LogOptions },
    Exec { name: String, argv: Vec<String> },
}

impl FakeCall {
    pub fn op(&self) -> FakeOp {
        match self {
            FakeCall::Pull { .. } => FakeOp::Pull,
            FakeCall::ImageExists { .. } => FakeOp::ImageExists,
            FakeCall::CreateAndStart(_) => FakeOp::CreateAndStart,
            FakeCall::Start { .. } => FakeOp::Start,
            FakeCall::Stop { .. } => FakeOp::Stop,
            FakeCall::Remove { .. } => FakeOp::Remove,
            FakeCall::Inspect { .. } => FakeOp::Inspect,
            FakeCall::ListManaged => FakeOp::ListManaged,
            FakeCall::ListByPrefix { .. } => FakeOp::ListByPrefix,
            FakeCall::Logs { .. } => FakeOp::Logs,
            FakeCall::Exec { .. } => FakeOp::Exec,
        }
    }

    /// Calls that change something (not reads).
    pub fn is_mutation(&self) -> bool {
        matches!(
            self.op(),
            FakeOp::Pull | FakeOp::CreateAndStart | FakeOp::Start | FakeOp::Stop | FakeOp::Remove
        )
    }
}

/// The operations of [`ContainerRuntime`], for [`FakeRuntime::fail_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    Pull,
    ImageExists,
    CreateAndStart,
    Start,
    Stop,
    Remove,
    Inspect,
    ListManaged,
    ListByPrefix,
    Logs,
    Exec,
}

/// Handler for `exec` commands the fake does not know (see
/// [`FakeRuntime::set_exec_handler`]): gets the container's env and the
/// argv; `None` means "executable not found".
type ExecHandler = Arc<dyn Fn(&[String], &[String]) -> Option<ExecOutput> + Send + Sync>;

/// A container runtime that lives in memory and records every call.
///
/// Cheap to clone; clones share state, so a test can keep one handle while
/// the code under test owns another.
///
/// Its "programs" are deliberately tiny, but real podman behaves the same
/// for them, which the shared suite checks:
///
/// - On every start, a `["sh", "-c", script]` command "prints" each
///   `echo ...` statement of the script (split on `;` and newlines) to
///   stdout, or to stderr when it ends in `>&2`, with `$VAR`/`${VAR}`
///   expanded from the container env and quotes removed. Other commands
///   print nothing; add lines with [`FakeRuntime::emit_log`].
/// - `stop` makes the process exit with code 0; [`FakeRuntime::crash`]
///   makes it exit with any code. Restart policies are recorded, not
///   emulated: a crashed container stays exited.
/// - `exec` knows `env` (the container env), `echo`, `true` and `false`;
///   anything else goes to the [`FakeRuntime::set_exec_handler`] handler or
///   exits 127.
/// - Images: `create_and_start` needs the image locally
///   ([`FakeRuntime::add_image`]); `pull` succeeds for local pinned images
///   and for images in the fake registry ([`FakeRuntime::add_registry_image`]).
#[derive(Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<FakeState>>,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("FakeRuntime")
            .field("images", &st.local_images)
            .field("containers", &st.containers.keys().collect::<Vec<_>>())
            .field("calls", &st.calls.len())
            .finish()
    }
}

#[derive(Default)]
struct FakeState {
    local_images: BTreeSet<String>,
    registry: BTreeSet<String>,
    containers: BTreeMap<String, FakeContainer>,
    calls: Vec<FakeCall>,
    failures: Vec<(FakeOp, String)>,
    exec_handler: Option<ExecHandler>,
    next_id: u64,
    events: EventHub,
}

/// The fake's `podman events`: every start, exit and removal.
struct EventHub(broadcast::Sender<ContainerEvent>);

impl Default for EventHub {
    fn default() -> Self {
        EventHub(broadcast::channel(1024).0)
    }
}

impl FakeState {
    fn emit(&self, info: &ContainerInfo, status: &str) {
        let _ = self.events.0.send(ContainerEvent {
            name: info.name.clone(),
            status: status.to_string(),
            labels: info.labels.clone(),
        });
    }
}

struct FakeContainer {
    info: ContainerInfo,
    config: Option<ContainerConfig>,
    env: Vec<String>,
    cmd: Vec<String>,
    /// Output so far, with when it was written (for `since`).
    logs: Vec<(SystemTime, LogLine)>,
    /// `Some(line)` for new output, `None` when the process exits.
    follow: broadcast::Sender<Option<LogLine>>,
}

impl FakeContainer {
    fn start(&mut self) {
        self.info.state = ContainerState::Running;
        self.info.exit_code = None;
        self.info.started_at = Some(SystemTime::now());
        self.info.finished_at = None;
        for line in fake_sh_output(&self.cmd, &self.env) {
            self.push_log(line);
        }
    }

    fn exit(&mut self, code: i32) {
        self.info.state = ContainerState::Exited;
        self.info.exit_code = Some(code);
        self.info.finished_at = Some(SystemTime::now());
        let _ = self.follow.send(None);
    }

    /// Records a line written at `at`, cut at [`crate::MAX_LOG_LINE_BYTES`]
    /// as podman's reader cuts it.
    fn push_log_at(&mut self, at: SystemTime, line: LogLine) {
        let line = LogLine {
            source: line.source,
            line: crate::lines::cap_line(line.line),
        };
        self.logs.push((at, line.clone()));
        let _ = self.follow.send(Some(line));
    }

    fn push_log(&mut self, line: LogLine) {
        self.push_log_at(SystemTime::now(), line);
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        FakeRuntime::default()
    }

    /// A fake with these images present locally.
    pub fn with_images<I, S>(images: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let fake = FakeRuntime::new();
        for i in images {
            fake.add_image(i);
        }
        fake
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `image` present locally.
    pub fn add_image(&self, image: impl Into<String>) {
        self.lock().local_images.insert(image.into());
    }

    /// Removes `image` from local storage.
    pub fn remove_image(&self, image: &str) {
        self.lock().local_images.remove(image);
    }

    /// Puts `image` into the fake registry so that `pull` can fetch it.
    pub fn add_registry_image(&self, image: impl Into<String>) {
        self.lock().registry.insert(image.into());
    }

    /// Local images.
    pub fn images(&self) -> Vec<String> {
        self.lock().local_images.iter().cloned().collect()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Every call so far, clearing the record.
    pub fn take_calls(&self) -> Vec<FakeCall> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Calls that changed something (pull, create, start, stop, remove).
    pub fn mutations(&self) -> Vec<FakeCall> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.is_mutation())
            .cloned()
            .collect()
    }

    /// Makes the next call of `op` fail with a [`RuntimeError::Command`]
    /// carrying `stderr` (after it is recorded, before it has any effect).
    pub fn fail_next(&self, op: FakeOp, stderr: impl Into<String>) {
        self.lock().failures.push((op, stderr.into()));
    }

    /// Handles `exec` commands the fake does not know.
    pub fn set_exec_handler<F>(&self, handler: F)
    where
        F: Fn(&[String], &[String]) -> Option<ExecOutput> + Send + Sync + 'static,
    {
        self.lock().exec_handler = Some(Arc::new(handler));
    }

    /// Simulates the container's process exiting by itself with
    /// `exit_code`. Returns false if it does not exist or is not running.
    pub fn crash(&self, name: &str, exit_code: i32) -> bool {
        let mut st = self.lock();
        match st.containers.get_mut(name) {
            Some(c) if c.info.state == ContainerState::Running => {
                c.exit(exit_code);
                let info = c.info.clone();
                st.emit(&info, "died");
                true
            }
            _ => false,
        }
    }

    /// Simulates the container printing a line. Returns false if the
    /// container does not exist.
    pub fn emit_log(&self, name: &str, source: LogSource, line: impl Into<String>) -> bool {
        self.emit_log_at(name, source, line, SystemTime::now())
    }

    /// [`FakeRuntime::emit_log`] with the time the line was written (for
    /// `since` tests).
    pub fn emit_log_at(
        &self,
        name: &str,
        source: LogSource,
        line: impl Into<String>,
        at: SystemTime,
    ) -> bool {
        let mut st = self.lock();
        match st.containers.get_mut(name) {
            Some(c) => {
                c.push_log_at(
                    at,
                    LogLine {
                        source,
                        line: line.into(),
                    },
                );
                true
            }
            None => false,
        }
    }

    /// Adds a running container created outside MCP (no mcp labels), e.g.
    /// for `adopt` tests. Returns false if the name is taken.
    pub fn insert_unmanaged(&self, name: &str, image: &str, env: &[String]) -> bool {
        let mut st = self.lock();
        if st.containers.contains_key(name) {
            return false;
        }
        let id = st.new_id();
        let mut c = new_container(name, image, id, BTreeMap::new(), env.to_vec(), Vec::new());
        c.start();
        st.containers.insert(name.to_string(), c);
        true
    }

    /// The config a managed container was created with.
    pub fn config(&self, name: &str) -> Option<ContainerConfig> {
        self.lock().containers.get(name)?.config.clone()
    }

    /// Every container, managed or not.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.lock()
            .containers
            .values()
            .map(|c| c.info.clone())
            .collect()
    }
}

impl FakeState {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("fake{:060x}", self.next_id)
    }

    /// Records `call` and returns the injected failure for it, if any.
    fn record(&mut self, call: FakeCall, target: &str) -> Result<()> {
        let op = call.op();
        self.calls.push(call);
        if let Some(pos) = self.failures.iter().position(|(o, _)| *o == op) {
            let (_, stderr) = self.failures.remove(pos);
            return Err(RuntimeError::Command {
                target: target.to_string(),
                op: "fake",
                status: "injected failure".to_string(),
                stderr,
            });
        }
        Ok(())
    }

    fn container(&mut self, name: &str) -> Result<&mut FakeContainer> {
        self.containers
            .get_mut(name)
            .ok_or_else(|| RuntimeError::NotFound {
                name: name.to_string(),
            })
    }
}

fn new_container(
    name: &str,
    image: &str,
    id: String,
    labels: BTreeMap<String, String>,
    env: Vec<String>,
    cmd: Vec<String>,
) -> FakeContainer {
    let (follow, _) = broadcast::channel(256);
    FakeContainer {
        info: ContainerInfo {
            name: name.to_string(),
            id,
            image: image.to_string(),
            image_id: format!("fake-image:{image}"),
            state: ContainerState::Created,
            exit_code: None,
            started_at: None,
            finished_at: None,
            restart_count: 0,
            labels,
            ports: Vec::new(),
        },
        config: None,
        env,
        cmd,
        logs: Vec::new(),
        follow,
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn pull(&self, image: &str) -> Result<PullOutcome> {
        let mut st = self.lock();
        st.record(
            FakeCall::Pull {
                image: image.to_string(),
            },
            image,
        )?;
        check_image(image)?;
        let pinned = mcp_spec::image_version(image) != "latest";
        if pinned && st.local_images.contains(image) {
            return Ok(PullOutcome::AlreadyPresent);
        }
        if st.registry.contains(image) {
            st.local_images.insert(image.to_string());
            return Ok(PullOutcome::Pulled);
        }
        Err(RuntimeError::Command {
            target: image.to_string(),
            op: "pull",
            status: "exit status 125".to_string(),
            stderr: format!("Error: {image}: not in the fake registry"),
        })
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        let mut st = self.lock();
        st.record(
            FakeCall::ImageExists {
                image: image.to_string(),
            },
            image,
        )?;
        check_image(image)?;
        Ok(st.local_images.contains(image))
    }

    async fn create_and_start(&self, config: &ContainerConfig) -> Result<String> {
        let mut st = self.lock();
        st.record(
            FakeCall::CreateAndStart(Box::new(config.clone())),
            &config.name,
        )?;
        config.validate()?;
        if st.containers.contains_key(&config.name) {
            return Err(RuntimeError::AlreadyExists {
                name: config.name.clone(),
            });
        }
        if !st.local_images.contains(&config.image) {
            return Err(RuntimeError::ImageNotFound {
                image: config.image.clone(),
            });
        }
        let id = st.new_id();
        let mut c = new_container(
            &config.name,
            &config.image,
            id.clone(),
            config.all_labels(),
            config.env.clone(),
            config.cmd.clone(),
        );
        c.info.ports = config.ports.clone();
        c.info.ports.sort();
        c.config = Some(config.clone());
        c.start();
        st.emit(&c.info, "start");
        st.containers.insert(config.name.clone(), c);
        Ok(id)
    }

    async fn start(&self, name: &str) -> Result<()> {
        let mut st = self.lock();
        st.record(
            FakeCall::Start {
                name: name.to_string(),
            },
            name,
        )?;
        validate_name(name)?;
        let c = st.container(name)?;
        match c.info.state {
            ContainerState::Running => Ok(()),
            ContainerState::Paused => Err(RuntimeError::WrongState {
                name: name.to_string(),
                op: "start",
                detail: "container is paused".to_string(),
            }),
            _ => {
                c.start();
                let info = c.info.clone();
                st.emit(&info, "start");
                Ok(())
            }
        }
    }

    async fn stop(&self, name: &str, timeout: Duration) -> Result<()> {
        let mut st = self.lock();
        st.record(
            FakeCall::Stop {
                name: name.to_string(),
                timeout,
            },
            name,
        )?;
        validate_name(name)?;
        let c = st.container(name)?;
        if matches!(
            c.info.state,
            ContainerState::Running | ContainerState::Paused
        ) {
            c.exit(0);
            let info = c.info.clone();
            st.emit(&info, "died");
        }
        Ok(())
    }

    async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let mut st = self.lock();
        st.record(
            FakeCall::Remove {
                name: name.to_string(),
                force,
            },
            name,
        )?;
        validate_name(name)?;
        let c = st.container(name)?;
        if !force
            && matches!(
                c.info.state,
                ContainerState::Running | ContainerState::Paused
            )
        {
            return Err(RuntimeError::WrongState {
                name: name.to_string(),
                op: "rm",
                detail: "running or paused containers cannot be removed without force".to_string(),
            });
        }
        if let Some(mut c) = st.containers.remove(name) {
            let _ = c.follow.send(None);
            c.info.state = ContainerState::Removing;
            st.emit(&c.info, "remove");
        }
        Ok(())
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>> {
        let mut st = self.lock();
        st.record(
            FakeCall::Inspect {
                name: name.to_string(),
            },
            name,
        )?;
        validate_name(name)?;
        Ok(st.containers.get(name).map(|c| c.info.clone()))
    }

    async fn list_managed(&self) -> Result<Vec<ContainerInfo>> {
        let mut st = self.lock();
        st.record(FakeCall::ListManaged, "containers")?;
        Ok(st
            .containers
            .values()
            .filter(|c| c.info.labels.contains_key(LABEL_SERVICE))
            .map(|c| c.info.clone())
            .collect())
    }

    async fn list_by_prefix(&self, prefix: &str) -> Result<Vec<ContainerInfo>> {
        let mut st = self.lock();
        st.record(
            FakeCall::ListByPrefix {
                prefix: prefix.to_string(),
            },
            "containers",
        )?;
        Ok(st
            .containers
            .values()
            .filter(|c| c.info.name.starts_with(prefix))
            .map(|c| c.info.clone())
            .collect())
    }

    async fn logs(&self, name: &str, opts: LogOptions) -> Result<LogStream> {
        let (lines, follow) = {
            let mut st = self.lock();
            st.record(
                FakeCall::Logs {
                    name: name.to_string(),
                    opts,
                },
                name,
            )?;
            validate_name(name)?;
            let c = st.container(name)?;
            // podman compares whole seconds.
            let since = opts.since.map(whole_seconds);
            let lines: Vec<LogLine> = c
                .logs
                .iter()
                .filter(|(at, _)| since.is_none_or(|s| whole_seconds(*at) >= s))
                .map(|(_, l)| l.clone())
                .collect();
            let skip = opts.tail.map_or(0, |n| lines.len().saturating_sub(n));
            let lines = lines[skip..].to_vec();
            // Subscribe under the same lock so no line is lost or doubled.
            let follow = (opts.follow && c.info.state == ContainerState::Running)
                .then(|| c.follow.subscribe());
            (lines, follow)
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            for line in lines {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            let Some(mut follow) = follow else { return };
            loop {
                let ev = tokio::select! {
                    () = tx.closed() => return,
                    ev = follow.recv() => ev,
                };
                match ev {
                    Ok(Some(line)) => {
                        if tx.send(Ok(line)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) | Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn events(&self) -> Result<EventStream> {
        let rx = self.lock().events.0.subscribe();
        let stream = tokio_stream::StreamExt::filter_map(
            tokio_stream::wrappers::BroadcastStream::new(rx),
            |e| e.ok().map(Ok),
        );
        Ok(Box::pin(stream))
    }

    async fn exec(&self, name: &str, argv: &[String]) -> Result<ExecOutput> {
        let (env, handler) = {
            let mut st = self.lock();
            st.record(
                FakeCall::Exec {
                    name: name.to_string(),
                    argv: argv.to_vec(),
                },
                name,
            )?;
            validate_name(name)?;
            if argv.is_empty() {
                return Err(RuntimeError::Invalid {
                    target: name.to_string(),
                    what: "exec argv",
                    reason: "empty".to_string(),
                });
            }
            let handler = st.exec_handler.clone();
            let c = st.container(name)?;
            if c.info.state != ContainerState::Running {
                return Err(RuntimeError::WrongState {
                    name: name.to_string(),
                    op: "exec",
                    detail: "can only create exec sessions on running containers".to_string(),
                });
            }
            (c.env.clone(), handler)
        };
        let out = |exit_code, stdout: String| ExecOutput {
            exit_code,
            stdout,
            stderr: String::new(),
        };
        let program = argv[0].rsplit('/').next().unwrap_or_default();
        if let Some(h) = handler {
            if let Some(o) = h(&env, argv) {
                return Ok(o);
            }
        }
        Ok(match program {
            "env" if argv.len() == 1 => out(0, env.iter().map(|e| format!("{e}\n")).collect()),
            "echo" => out(0, format!("{}\n", argv[1..].join(" "))),
            "true" => out(0, String::new()),
            "false" => out(1, String::new()),
            _ => ExecOutput {
                exit_code: 127,
                stdout: String::new(),
                stderr: format!("fake: {program}: executable file not found\n"),
            },
        })
    }
}

/// What a `["sh", "-c", script]` command "prints" at start (see
/// [`FakeRuntime`]).
fn fake_sh_output(cmd: &[String], env: &[String]) -> Vec<LogLine> {
    let [sh, flag, script, ..] = cmd else {
        return Vec::new();
    };
    if !(sh == "sh" || sh.ends_with("/sh")) || flag != "-c" {
        return Vec::new();
    }
    script
        .split([';', '\n'])
        .filter_map(|stmt| {
            let rest = stmt.trim().strip_prefix("echo ")?.trim();
            let (words, source) = match rest.strip_suffix(">&2") {
                Some(w) => (w.trim_end(), LogSource::Stderr),
                None => (rest, LogSource::Stdout),
            };
            Some(LogLine {
                source,
                line: expand(words, env),
            })
        })
        .collect()
}

/// Expands `$VAR` and `${VAR}` from `env` and drops quotes.
fn expand(words: &str, env: &[String]) -> String {
    let lookup = |k: &str| {
        env.iter()
            .filter_map(|e| e.split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    let mut out = String::new();
    let mut chars = words.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {}
            '$' => {
                let braced = chars.next_if_eq(&'{').is_some();
                let mut var = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        var.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if braced {
                    chars.next_if_eq(&'}');
                }
                if var.is_empty() {
                    out.push('$');
                } else {
                    out.push_str(&lookup(&var));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Seconds since the epoch (0 before it).
fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
