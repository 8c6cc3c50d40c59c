//! The fleet's real network servers: one Knot serving the internal zone
//! on loopback, and per node one Caddy (L7) and one HAProxy (L4) listening
//! on the node's own loopback address. This module finds their binaries,
//! writes what they start from (Knot's configuration, zone and TSIG keys;
//! Caddy's admin-only configuration; HAProxy's configuration of no
//! routes), and checks that each answers. The agents configure the
//! proxies; the master writes the DNS records.
//!
//! ```text
//! dns/    knot.conf, zones/mcp.test.zone (created once; Knot writes the
//!         master's updates back to it), db/ (journal), run/ (control socket),
//!         mcp-key.tsig (the master's key: any record), acme-key.tsig (TXT only,
//!         for ACME dns-01); each one line of base64, mode 0600, made once
//! nodes/<node>/caddy/    caddy.json (admin API on <ip>:2019 only), its HOME
//! nodes/<node>/haproxy/  haproxy.cfg (the agent renders it), master.sock
//! ```

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::prepare::{Fleet, Node};
use crate::{failed, io, DevError};

/// The internal zone Knot serves (`[edge] internal_zone`).
pub const ZONE: &str = "mcp.test";

/// The Debian packages of the servers (`knot-dnsutils`: kdig, for the
/// banner's DNS line).
pub const SERVER_PACKAGES: &str = "caddy haproxy knot knot-dnsutils";

/// Caddy's admin API port, on each node's own address.
pub const CADDY_ADMIN_PORT: u16 = 2019;

/// The TSIG key the master updates any record with.
pub const MCP_KEY: &str = "mcp-key";
/// The TSIG key allowed to update only TXT records (ACME dns-01).
pub const ACME_KEY: &str = "acme-key";

/// Where the server binaries are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerBins {
    pub caddy: PathBuf,
    pub haproxy: PathBuf,
    pub knotd: PathBuf,
}

/// `binary` in `PATH`, then `/usr/sbin`, `/sbin`, `/usr/bin`.
fn find(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// The servers' binaries, or an error naming the missing ones and the
/// Debian packages to install.
pub fn check_servers() -> Result<ServerBins, DevError> {
    let (caddy, haproxy, knotd) = (find("caddy"), find("haproxy"), find("knotd"));
    match (caddy, haproxy, knotd) {
        (Some(caddy), Some(haproxy), Some(knotd)) => Ok(ServerBins {
            caddy,
            haproxy,
            knotd,
        }),
        (c, h, k) => {
            let missing: Vec<&str> = [("caddy", c), ("haproxy", h), ("knotd", k)]
                .into_iter()
                .filter(|(_, p)| p.is_none())
                .map(|(n, _)| n)
                .collect();
            failed(format!(
                "{} not found: `mcp dev` runs a real Caddy, HAProxy and Knot; install them \
                 with `sudo apt-get install {SERVER_PACKAGES}`, or run scripts/dev.sh, which does",
                missing.join(", ")
            ))
        }
    }
}

impl Fleet {
    pub fn dns_dir(&self) -> PathBuf {
        self.state.join("dns")
    }

    pub fn knot_config(&self) -> PathBuf {
        self.dns_dir().join("knot.conf")
    }

    /// The base64 secret of `key` ([`MCP_KEY`] or [`ACME_KEY`]).
    pub fn tsig_secret_file(&self, key: &str) -> PathBuf {
        self.dns_dir().join(format!("{key}.tsig"))
    }

    pub fn caddy_dir(&self, node: &str) -> PathBuf {
        self.state.join("nodes").join(node).join("caddy")
    }

    pub fn caddy_config(&self, node: &str) -> PathBuf {
        self.caddy_dir(node).join("caddy.json")
    }

    pub fn haproxy_dir(&self, node: &str) -> PathBuf {
        self.state.join("nodes").join(node).join("haproxy")
    }

    pub fn haproxy_config(&self, node: &str) -> PathBuf {
        self.haproxy_dir(node).join("haproxy.cfg")
    }

    pub fn haproxy_socket(&self, node: &str) -> PathBuf {
        self.haproxy_dir(node).join("master.sock")
    }

    /// Knot's address (`dns` in `fleet.json`).
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.parse().ok()
    }
}

impl Node {
    /// Caddy's admin API: `<address>:2019`.
    pub fn caddy_admin(&self) -> String {
        format!("{}:{CADDY_ADMIN_PORT}", self.address)
    }
}

/// 32 random bytes, base64: a TSIG secret.
fn random_secret() -> Result<String, DevError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| DevError::Failed("generating a TSIG secret: no randomness".into()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The secret of `file`, made once.
fn secret(file: &Path) -> Result<String, DevError> {
    if let Ok(text) = std::fs::read_to_string(file) {
        let text = text.trim();
        if !text.is_empty() {
            return Ok(text.to_string());
        }
    }
    let s = random_secret()?;
    crate::prepare::write_private(file, &s)?;
    Ok(s)
}

/// Knot's files under `dns/`: keys and zone once, the configuration every
/// time (its port is chosen by every `prepare`).
pub(crate) fn write_dns(f: &Fleet) -> Result<(), DevError> {
    let dir = f.dns_dir();
    for sub in ["run", "db", "zones"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
    }
    let mcp = secret(&f.tsig_secret_file(MCP_KEY))?;
    let acme = secret(&f.tsig_secret_file(ACME_KEY))?;
    let zone_file = dir.join("zones").join(format!("{ZONE}.zone"));
    if !zone_file.exists() {
        let z = ZONE;
        let text = format!(
            "$ORIGIN {z}.\n$TTL 60\n\
             @ SOA ns1.{z}. hostmaster.{z}. 1 3600 600 86400 60\n\
             @ NS ns1.{z}.\n\
             ns1 A 127.0.0.1\n"
        );
        std::fs::write(&zone_file, text).map_err(io(format!("writing {}", zone_file.display())))?;
    }
    let addr = f
        .dns_addr()
        .ok_or_else(|| DevError::Failed(format!("fleet dns {:?} is not ip:port", f.dns)))?;
    let d = dir.display();
    let conf = format!(
        "# Generated by `mcp dev`; rewritten on every run.\n\
         server:\n  rundir: \"{d}/run\"\n  listen: {ip}@{port}\n\
         \n\
         control:\n  listen: \"{d}/run/knot.sock\"\n\
         \n\
         database:\n  storage: \"{d}/db\"\n\
         \n\
         log:\n  - target: stderr\n    any: info\n\
         \n\
         key:\n\
         \x20 - id: {MCP_KEY}\n    algorithm: hmac-sha256\n    secret: {mcp}\n\
         \x20 - id: {ACME_KEY}\n    algorithm: hmac-sha256\n    secret: {acme}\n\
         \n\
         acl:\n\
         \x20 - id: mcp-update\n    key: {MCP_KEY}\n    action: update\n\
         \x20 - id: acme-update\n    key: {ACME_KEY}\n    action: update\n    update-type: [TXT]\n\
         \n\
         template:\n  - id: default\n    storage: \"{d}/zones\"\n    file: \"%s.zone\"\n\
         \n\
         zone:\n  - domain: {ZONE}\n    acl: [mcp-update, acme-update]\n",
        ip = addr.ip(),
        port = addr.port(),
    );
    crate::prepare::write(&f.knot_config(), &conf)
}

/// What HAProxy starts from: the configuration of no routes, as the
/// agent's adapter renders it (`mcp_net::haproxy::empty_config`); the
/// agent rewrites it with its routes and reloads.
const HAPROXY_EMPTY: &str = "\
# MCP's HAProxy configuration, rendered by mcp-net (mcp_net::haproxy).
# Do not edit: the next route change rewrites it. The `# mcp-route` lines
# are the routes MCP wants; `list` reports those the running HAProxy has.

global
    # Run under `haproxy -W -S <master socket>` (master-worker, foreground);
    # a reload lets old workers finish their connections for this long.
    hard-stop-after 30s

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
";

/// A node's proxies' files: Caddy's admin-only configuration (every time:
/// the agent loads its routes through the admin API), HAProxy's
/// configuration of no routes (when there is none: the agent keeps it
/// current and repairs it).
pub(crate) fn write_proxies(f: &Fleet, n: &Node) -> Result<(), DevError> {
    let caddy = f.caddy_dir(&n.name);
    let haproxy = f.haproxy_dir(&n.name);
    for d in [&caddy, &haproxy] {
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    let admin = serde_json::json!({
        "admin": {"listen": n.caddy_admin(), "config": {"persist": false}}
    });
    crate::prepare::write(&f.caddy_config(&n.name), &admin.to_string())?;
    let cfg = f.haproxy_config(&n.name);
    if !cfg.exists() {
        crate::prepare::write(&cfg, HAPROXY_EMPTY)?;
    }
    Ok(())
}

/// How to tell a started server (or daemon) is ready.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    /// Accepts TCP connections.
    Tcp(SocketAddr),
    /// Answers an HTTP GET of `/config/` with 200 (Caddy's admin API).
    CaddyAdmin(SocketAddr),
    /// Answers a SOA query for the zone (Knot, zone loaded).
    Soa(SocketAddr, String),
    /// The master socket lists a worker (HAProxy).
    HaproxyWorker(PathBuf),
}

impl Probe {
    pub(crate) fn ready(&self) -> bool {
        match self {
            Probe::Tcp(a) => TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok(),
            Probe::CaddyAdmin(a) => caddy_answers(*a),
            Probe::Soa(a, zone) => crate::dns::query(*a, zone, crate::dns::SOA)
                .is_some_and(|(rcode, answers)| rcode == 0 && !answers.is_empty()),
            Probe::HaproxyWorker(sock) => haproxy_has_worker(sock),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Probe::Tcp(a) => format!("listening on {a}"),
            Probe::CaddyAdmin(a) => format!("admin API answering on {a}"),
            Probe::Soa(a, z) => format!("serving {z} on {a}"),
            Probe::HaproxyWorker(s) => format!("a worker behind {}", s.display()),
        }
    }
}

fn caddy_answers(admin: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /config/ HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn haproxy_has_worker(sock: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"show proc\n").is_err() {
        return false;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("worker"))
}

/// A free port on `ip` for both TCP and UDP (Knot).
pub(crate) fn free_tcp_udp_port(ip: std::net::IpAddr) -> Result<u16, DevError> {
    for _ in 0..50 {
        let port = crate::prepare::free_port_on(ip)?;
        if UdpSocket::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    failed(format!("no port free for both TCP and UDP on {ip}"))
}

#[cfg(test)]
mod tests {
    /// The file HAProxy starts from is exactly the adapter's rendering of
    /// no routes (so the agent's first reload changes only the routes).
    #[test]
    fn the_empty_haproxy_config_is_the_adapters() {
        assert_eq!(super::HAPROXY_EMPTY, mcp_net::haproxy::empty_config());
    }
}
