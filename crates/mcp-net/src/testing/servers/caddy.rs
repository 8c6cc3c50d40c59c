//! A real Caddy for tests: `caddy run --config <dir>/caddy.json`, its
//! admin API on 127.0.0.1:<free port>, nothing else configured.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, server_binary};

/// A Caddy of its own, killed when dropped. Its log is `<dir>/caddy.log`.
#[derive(Debug)]
pub struct CaddyServer {
    dir: PathBuf,
    binary: PathBuf,
    admin: SocketAddr,
    child: Option<Child>,
}

impl CaddyServer {
    /// Starts Caddy with the minimal configuration (admin API only) in
    /// `dir`, and waits until the admin API answers. `None` when caddy is
    /// missing and `MCP_SKIP_MISSING_SERVERS=1`.
    pub fn start(dir: &Path) -> Option<CaddyServer> {
        let binary = server_binary("caddy", "caddy")?;
        std::fs::create_dir_all(dir).unwrap();
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut server = CaddyServer {
            dir: dir.to_path_buf(),
            binary,
            admin,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    /// The admin API's address (for `Caddy::new`).
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Kills Caddy (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills Caddy and starts it again with the minimal configuration: a
    /// proxy restarted empty.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let config = self.dir.join("caddy.json");
        let minimal = serde_json::json!({"admin": {"listen": self.admin.to_string()}});
        std::fs::write(&config, minimal.to_string()).unwrap();
        let log = self.dir.join("caddy.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            // Caddy's storage and autosave stay in the test's directory.
            .env("HOME", &self.dir)
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.answers() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "caddy exited ({status}) before its admin API answered on {}: {}",
                    self.admin,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "caddy admin API on {} did not answer within 15 s: {}",
                    self.admin,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `GET /config/` answers 200.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.admin, Duration::from_secs(1)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /config/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    }
}

impl Drop for CaddyServer {
    fn drop(&mut self) {
        self.kill();
    }
}
