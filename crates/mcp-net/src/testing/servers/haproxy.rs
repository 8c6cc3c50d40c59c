//! A real HAProxy for tests: `haproxy -W -S <dir>/master.sock -f
//! <dir>/haproxy.cfg` (master-worker, in the foreground), starting with
//! the adapter's configuration of no routes.

use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server_binary;
use crate::haproxy::{empty_config, HaproxyOptions};

/// An HAProxy of its own, killed when dropped. Its log is
/// `<dir>/haproxy.log`.
#[derive(Debug)]
pub struct HaproxyServer {
    dir: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl HaproxyServer {
    /// Writes the configuration of no routes to `<dir>/haproxy.cfg`,
    /// starts HAProxy on it and waits until the master socket answers.
    /// `None` when haproxy is missing and `MCP_SKIP_MISSING_SERVERS=1`.
    pub fn start(dir: &Path) -> Option<HaproxyServer> {
        let binary = server_binary("haproxy", "haproxy")?;
        std::fs::create_dir_all(dir).unwrap();
        let mut server = HaproxyServer {
            dir: dir.to_path_buf(),
            binary,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    /// The configuration file (the adapter's `config`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }

    /// The master socket (the adapter's `master_socket`).
    pub fn master_socket(&self) -> PathBuf {
        self.dir.join("master.sock")
    }

    /// The haproxy binary (the adapter's `binary`).
    pub fn binary(&self) -> PathBuf {
        self.binary.clone()
    }

    /// The adapter's options for this HAProxy, proxy ports on `listen`.
    pub fn options(&self, listen: IpAddr) -> HaproxyOptions {
        HaproxyOptions {
            config: self.config_path(),
            master_socket: self.master_socket(),
            binary: self.binary(),
            listen,
        }
    }

    /// Stops HAProxy: SIGTERM to the master, which stops its workers, reaps
    /// them and exits (SIGKILL after 10 s), so the proxy ports are free
    /// when this returns.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers = self.worker_pids();
        let term = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .map(|pid| rustix::process::kill_process(pid, rustix::process::Signal::TERM));
        let deadline = Instant::now() + Duration::from_secs(10);
        if matches!(term, Some(Ok(()))) {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        while workers.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills HAProxy, rewrites the configuration of no routes and starts
    /// it again: a proxy restarted empty.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        std::fs::write(self.config_path(), empty_config()).unwrap();
        let _ = std::fs::remove_file(self.master_socket());
        let log = self.dir.join("haproxy.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("-W")
            .arg("-S")
            .arg(self.master_socket())
            .arg("-f")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.worker_pids().is_empty() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "haproxy exited ({status}) before its master socket answered: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "haproxy master socket {} did not answer within 15 s: {}",
                    self.master_socket().display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The current workers' pids, from `show proc` on the master socket
    /// (empty when it does not answer).
    fn worker_pids(&self) -> Vec<u32> {
        let Ok(mut s) = UnixStream::connect(self.master_socket()) else {
            return Vec::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"show proc\n").is_err() {
            return Vec::new();
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(1) == Some(&"worker")).then(|| f[0].parse().ok())?
            })
            .collect()
    }
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

impl Drop for HaproxyServer {
    fn drop(&mut self) {
        self.kill();
    }
}
