//! The fleet's processes: starting, killing and stopping `mcp-master`,
//! `mcp-agent` and the servers (Knot; per node Caddy and HAProxy), with
//! their process ids recorded under `<state>/run/` so that [`down`] can
//! stop a fleet another process started.
//!
//! Pid files: `master`, `<node>` (agents), `knot`, `caddy-<node>`,
//! `haproxy-<node>`, and `dev` for `mcp dev` itself.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::prepare::{Fleet, RECORD};
use crate::servers::{Probe, CADDY_ADMIN_PORT};
use crate::{failed, io, podman, DevError};

/// How long a daemon gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One process of the fleet: a daemon (`<bin> --config <config> serve`)
/// or a server (Knot, Caddy, HAProxy, each with its own arguments), its
/// output appended to `log`.
#[derive(Debug)]
pub struct Daemon {
    /// `master`, the node's name, `knot`, `caddy-<node>`, `haproxy-<node>`.
    pub name: String,
    pub bin: PathBuf,
    /// Its configuration file (among its arguments: what tells a recorded
    /// pid is still this process).
    pub config: PathBuf,
    pub log: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Removed before each start (HAProxy's master socket).
    stale: Option<PathBuf>,
    probe: Probe,
    pid_file: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts it (an error if it already runs); records its pid.
    pub fn start(&mut self) -> Result<(), DevError> {
        if self.child.is_some() {
            return failed(format!("{} already runs", self.name));
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io(format!("opening {}", self.log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("opening {}", self.log.display())))?;
        if let Some(p) = &self.stale {
            let _ = std::fs::remove_file(p);
        }
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {}", self.bin.display())))?;
        let _ = std::fs::write(&self.pid_file, format!("{}\n", child.id()));
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL (a crash, not a clean stop); waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        stop_many(vec![self]);
    }

    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// It answers (listens, serves its zone, has a worker...).
    pub fn is_ready(&self) -> bool {
        self.probe.ready()
    }

    /// `Some(status)` when it was started and has exited since.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn terminate(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), rustix::process::Signal::TERM);
        }
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// The master, every agent and the servers of a fleet.
#[derive(Debug)]
pub struct Daemons {
    pub master: Daemon,
    pub agents: BTreeMap<String, Daemon>,
    /// Knot, then each node's Caddy and HAProxy.
    pub servers: Vec<Daemon>,
}

/// How long the servers get to answer after their start.
const SERVERS_READY: Duration = Duration::from_secs(30);

impl Fleet {
    /// The fleet's daemons and servers (not started); `bin_dir` holds
    /// `mcp-master` and `mcp-agent`.
    pub fn daemons(&self, bin_dir: &Path) -> Daemons {
        let process = |name: &str, bin: PathBuf, config: PathBuf, probe: Probe| Daemon {
            name: name.to_string(),
            bin,
            config,
            log: self.log(name),
            args: Vec::new(),
            env: Vec::new(),
            stale: None,
            probe,
            pid_file: self.state.join("run").join(format!("{name}.pid")),
            child: None,
        };
        let daemon = |name: &str, bin: &str, config: PathBuf, probe: Probe| {
            let mut d = process(name, bin_dir.join(bin), config.clone(), probe);
            d.args = vec!["--config".into(), config.into(), "serve".into()];
            if let Some(c) = &self.containers_conf {
                d.env.push(("CONTAINERS_CONF".into(), c.into()));
            }
            d
        };
        let tcp = |ip: &str, port: u16| {
            Probe::Tcp(
                format!("{ip}:{port}")
                    .parse()
                    .unwrap_or_else(|_| ([127, 0, 0, 1], port).into()),
            )
        };
        let mut servers = Vec::new();
        if let Some(dns) = self.dns_addr() {
            let mut knot = process(
                "knot",
                self.servers.knotd.clone(),
                self.knot_config(),
                Probe::Soa(dns, self.zone.clone()),
            );
            knot.args = vec!["-c".into(), self.knot_config().into()];
            servers.push(knot);
        }
        for n in &self.nodes {
            let dir = self.caddy_dir(&n.name);
            let admin = format!("{}:{CADDY_ADMIN_PORT}", n.address)
                .parse()
                .unwrap_or_else(|_| ([127, 0, 0, 1], CADDY_ADMIN_PORT).into());
            let config = self.caddy_config(&n.name);
            let mut caddy = process(
                &format!("caddy-{}", n.name),
                self.servers.caddy.clone(),
                config.clone(),
                Probe::CaddyAdmin(admin),
            );
            caddy.args = vec!["run".into(), "--config".into(), config.into()];
            // Caddy's storage and autosave stay in the node's directory.
            caddy.env = vec![
                ("HOME".into(), dir.clone().into()),
                ("XDG_DATA_HOME".into(), dir.join("data").into()),
                ("XDG_CONFIG_HOME".into(), dir.join("config").into()),
            ];
            servers.push(caddy);
            let (cfg, sock) = (self.haproxy_config(&n.name), self.haproxy_socket(&n.name));
            let mut haproxy = process(
                &format!("haproxy-{}", n.name),
                self.servers.haproxy.clone(),
                cfg.clone(),
                Probe::HaproxyWorker(sock.clone()),
            );
            haproxy.args = vec![
                "-W".into(),
                "-S".into(),
                sock.clone().into(),
                "-f".into(),
                cfg.into(),
            ];
            haproxy.stale = Some(sock);
            servers.push(haproxy);
        }
        Daemons {
            master: daemon(
                "master",
                "mcp-master",
                self.master_config(),
                tcp("127.0.0.1", self.master_port),
            ),
            agents: self
                .nodes
                .iter()
                .map(|n| {
                    let d = daemon(
                        &n.name,
                        "mcp-agent",
                        self.agent_config(&n.name),
                        tcp(&n.address, n.port),
                    );
                    (n.name.clone(), d)
                })
                .collect(),
            servers,
        }
    }
}

impl Daemons {
    /// Starts the servers (Knot, every Caddy and HAProxy) and waits until
    /// each answers; on an error, the started ones are stopped.
    pub fn start_servers(&mut self) -> Result<(), DevError> {
        let mut result = Ok(());
        for s in &mut self.servers {
            result = s.start();
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = wait_ready(self.servers.iter_mut().collect(), SERVERS_READY);
        }
        if result.is_err() {
            stop_many(self.servers.iter_mut().collect());
        }
        result
    }

    /// The servers first (and answering: the agents configure the proxies
    /// from their start), then the agents (they keep running their
    /// containers without a master and register, with back-off, once it is
    /// up), then the master. On an error, what was started is stopped.
    pub fn start_all(&mut self) -> Result<(), DevError> {
        self.start_servers()?;
        let mut result = Ok(());
        for a in self.agents.values_mut() {
            result = a.start();
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self.master.start();
        }
        if result.is_err() {
            self.stop_every();
        }
        result
    }

    /// Every process, agents first, then the master, then the servers.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Daemon> {
        self.agents
            .values_mut()
            .chain(std::iter::once(&mut self.master))
            .chain(self.servers.iter_mut())
    }

    /// A started daemon that exited, if any: "<name> exited (<status>); its
    /// log is <file>:" and the log's last lines.
    pub fn first_exited(&mut self) -> Option<String> {
        self.iter_mut().find_map(|d| {
            d.exited().map(|st| {
                format!(
                    "{} exited ({st}); its log is {}:\n{}",
                    d.name,
                    d.log.display(),
                    d.log_tail(15)
                )
            })
        })
    }

    /// Waits until every started process answers (daemons listen on
    /// their ports); an error when one exits or `timeout` passes.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<(), DevError> {
        wait_ready(self.iter_mut().collect(), timeout)
    }

    /// SIGTERM to every started daemon, SIGKILL to those still running
    /// after the grace period.
    pub fn stop_every(&mut self) {
        stop_many(self.iter_mut().collect());
    }
}

/// Waits until every started process of `all` is ready.
fn wait_ready(mut all: Vec<&mut Daemon>, timeout: Duration) -> Result<(), DevError> {
    all.retain(|d| d.is_started());
    let deadline = Instant::now() + timeout;
    loop {
        for d in &mut all {
            if let Some(st) = d.exited() {
                return failed(format!(
                    "while starting: {} exited ({st}); its log is {}:\n{}",
                    d.name,
                    d.log.display(),
                    d.log_tail(15)
                ));
            }
        }
        all.retain(|d| !d.is_ready());
        if all.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let waiting: Vec<String> = all
                .iter()
                .map(|d| {
                    format!(
                        "{} ({}; log {})",
                        d.name,
                        d.probe.describe(),
                        d.log.display()
                    )
                })
                .collect();
            return failed(format!(
                "not ready within {}s: {}",
                timeout.as_secs(),
                waiting.join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop_many(mut daemons: Vec<&mut Daemon>) {
    for d in &daemons {
        d.terminate();
    }
    let deadline = Instant::now() + STOP_GRACE;
    for d in &mut daemons {
        if let Some(c) = &mut d.child {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            d.child = None;
            let _ = std::fs::remove_file(&d.pid_file);
        }
    }
}

/// The `mcp dev` process's own pid file name (its daemons use theirs).
const DEV_PID: &str = "dev";

/// Records the calling process as the fleet's `mcp dev` (removed on drop),
/// or fails when processes recorded for this fleet still run.
pub struct DevProcess {
    pid_file: PathBuf,
}

impl DevProcess {
    /// Claims `state` (created if missing) for this process. Call it before
    /// [`crate::prepare`], which rewrites the configs of a running fleet.
    pub fn claim(state: &Path) -> Result<DevProcess, DevError> {
        let state = ensure_running_none(state)?;
        let run = state.join("run");
        std::fs::create_dir_all(&run).map_err(io(format!("creating {}", run.display())))?;
        let pid_file = run.join(format!("{DEV_PID}.pid"));
        std::fs::write(&pid_file, format!("{}\n", std::process::id()))
            .map_err(io(format!("writing {}", pid_file.display())))?;
        Ok(DevProcess { pid_file })
    }
}

/// Fails when processes recorded in `state` (created if missing) still
/// run; the canonical state path otherwise.
pub fn ensure_running_none(state: &Path) -> Result<PathBuf, DevError> {
    std::fs::create_dir_all(state).map_err(io(format!("creating {}", state.display())))?;
    let state = state
        .canonicalize()
        .map_err(io(format!("resolving {}", state.display())))?;
    let live = live_processes(&state);
    if !live.is_empty() {
        let names: Vec<String> = live.iter().map(|(n, p)| format!("{n} (pid {p})")).collect();
        return failed(format!(
            "a fleet already runs from {}: {}; stop it with `mcp dev --down --state-dir {}`",
            state.display(),
            names.join(", "),
            state.display()
        ));
    }
    Ok(state)
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Whether `pid` runs (a zombie does not) with `needle` among its arguments.
fn runs_with_arg(pid: u32, needle: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) S ...`: the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z" | "X")) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .any(|a| a == needle.as_bytes())
}

/// What a recorded pid must have among its arguments to be the process
/// that recorded it (pids are reused): the daemon's config, or `dev` for
/// `mcp dev` itself.
fn expected_arg(state: &Path, name: &str) -> String {
    if name == DEV_PID {
        return "dev".to_string();
    }
    let config = if name == "master" {
        state.join("master/master.toml")
    } else if name == "knot" {
        state.join("dns/knot.conf")
    } else if let Some(node) = name.strip_prefix("caddy-") {
        state.join("nodes").join(node).join("caddy/caddy.json")
    } else if let Some(node) = name.strip_prefix("haproxy-") {
        state.join("nodes").join(node).join("haproxy/haproxy.cfg")
    } else {
        state.join("nodes").join(name).join("agent.toml")
    };
    config.to_string_lossy().into_owned()
}

/// The fleet's recorded processes that still run: (name, pid).
pub fn live_processes(state: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(state.join("run")) else {
        return Vec::new();
    };
    let mut live = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pid"))
        else {
            continue;
        };
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        match pid {
            Some(pid) if runs_with_arg(pid, &expected_arg(state, name)) => {
                live.push((name.to_string(), pid));
            }
            // Stale: the process is gone (or the pid was reused).
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    live.sort();
    live
}

/// What [`down`] did.
#[derive(Debug, Default)]
pub struct DownReport {
    /// Processes stopped: `mcp dev`, daemons.
    pub stopped: Vec<String>,
    /// Containers removed, per node.
    pub containers: Vec<(String, usize)>,
    /// What could not be done (best effort goes on).
    pub problems: Vec<String>,
    /// The state directory was deleted.
    pub purged: bool,
}

/// Stops the fleet recorded in `state` (its `mcp dev` first, which stops
/// its daemons; then any daemon still recorded: SIGTERM, SIGKILL after a
/// grace period), removes its containers, and with `purge` deletes the
/// state directory.
pub fn down(state: &Path, purge: bool) -> Result<DownReport, DevError> {
    let state = state
        .canonicalize()
        .map_err(io(format!("state directory {}", state.display())))?;
    if !state.join(RECORD).is_file() {
        return failed(format!(
            "{} holds no dev fleet (no {RECORD}); nothing was changed",
            state.display()
        ));
    }
    let fleet = Fleet::load(&state)?;
    let mut report = DownReport::default();
    let wait_gone = |pids: &[(String, u32)], grace: Duration| {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && pids
                .iter()
                .any(|(n, p)| runs_with_arg(*p, &expected_arg(&state, n)))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // `mcp dev` first: on SIGTERM it stops its own daemons.
    let live = live_processes(&state);
    let dev: Vec<(String, u32)> = live.iter().filter(|(n, _)| n == DEV_PID).cloned().collect();
    for (_, pid) in &dev {
        signal(*pid, rustix::process::Signal::TERM);
        report.stopped.push(format!("mcp dev (pid {pid})"));
    }
    wait_gone(&dev, STOP_GRACE + Duration::from_secs(5));
    let daemons: Vec<(String, u32)> = live_processes(&state)
        .into_iter()
        .filter(|(n, _)| n != DEV_PID)
        .collect();
    for (name, pid) in &daemons {
        signal(*pid, rustix::process::Signal::TERM);
        report.stopped.push(format!("{name} (pid {pid})"));
    }
    wait_gone(&daemons, STOP_GRACE);
    for (name, pid) in &daemons {
        if runs_with_arg(*pid, &expected_arg(&state, name)) {
            signal(*pid, rustix::process::Signal::KILL);
        }
    }
    wait_gone(&daemons, Duration::from_secs(2));
    for (name, _) in dev.iter().chain(&daemons) {
        let _ = std::fs::remove_file(state.join("run").join(format!("{name}.pid")));
    }
    match podman::check_podman() {
        Ok(()) => {
            let (removed, problems) = podman::remove_containers(&fleet);
            report.containers = removed;
            report.problems.extend(problems);
        }
        Err(e) => report.problems.push(format!("containers not removed: {e}")),
    }
    if purge {
        std::fs::remove_dir_all(&state).map_err(io(format!("removing {}", state.display())))?;
        report.purged = true;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A pid file whose process is not the daemon it names (a reused pid:
    /// here the test itself) is stale: removed, and never signalled.
    #[test]
    fn a_reused_pid_is_not_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("w1.pid"), format!("{}\n", std::process::id())).unwrap();
        std::fs::write(run.join("master.pid"), "not a pid\n").unwrap();
        assert_eq!(live_processes(dir.path()), vec![]);
        assert_eq!(
            std::fs::read_dir(&run).unwrap().count(),
            0,
            "stale files removed"
        );
        assert!(ensure_running_none(dir.path()).is_ok());
    }

    #[test]
    fn down_needs_a_recorded_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let e = down(dir.path(), true).unwrap_err().to_string();
        assert!(e.contains("holds no dev fleet"), "{e}");
        assert!(dir.path().exists());
    }
}
