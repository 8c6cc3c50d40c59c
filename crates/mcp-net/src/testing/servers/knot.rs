//! A Knot DNS server (`knotd`, Debian package `knot`) on loopback, with
//! its zones, two TSIG keys and a configuration of its own in a directory.
//!
//! - `mcp-key` (hmac-sha256) may update every record of every zone;
//! - `acme-key` (hmac-sha256) may update only TXT records (Knot's ACL
//!   `update-type: [TXT]`), as an ACME dns-01 key would be set up.
//!
//! Each zone starts with its SOA, an NS `ns1.<zone>` and that NS's A
//! record (127.0.0.1). Knot writes updates back to the zone files and its
//! journal under the directory; nothing outside it is touched.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use super::{free_tcp_udp_port, server_binary};
use crate::rfc2136::Rfc2136Options;

pub struct KnotServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
    zones: Vec<String>,
    secret_b64: String,
    acme_secret_b64: String,
}

impl std::fmt::Debug for KnotServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnotServer")
            .field("addr", &self.addr)
            .field("dir", &self.dir)
            .field("zones", &self.zones)
            .finish()
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl KnotServer {
    /// Starts `knotd` serving `zones` (e.g. `["mcp.test"]`) with its files
    /// under `dir`, and waits until it answers a SOA query for each zone.
    /// `None` when knotd is missing and `MCP_SKIP_MISSING_SERVERS=1`.
    pub fn start(dir: &Path, zones: &[&str]) -> Option<KnotServer> {
        let knotd = server_binary("knotd", "knot")?;
        let port = free_tcp_udp_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let (secret_b64, acme_secret_b64) = (random_secret(), random_secret());
        for sub in ["run", "db", "zones"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut zone_conf = String::new();
        for z in zones {
            std::fs::write(
                dir.join("zones").join(format!("{z}.zone")),
                format!(
                    "$ORIGIN {z}.\n$TTL 60\n\
                     @ SOA ns1.{z}. hostmaster.{z}. 1 3600 600 86400 60\n\
                     @ NS ns1.{z}.\n\
                     ns1 A 127.0.0.1\n"
                ),
            )
            .unwrap();
            zone_conf.push_str(&format!(
                "  - domain: {z}\n    acl: [mcp-update, acme-update]\n"
            ));
        }
        let d = dir.display();
        let conf = format!(
            "server:\n  rundir: \"{d}/run\"\n  listen: 127.0.0.1@{port}\n\
             \n\
             control:\n  listen: \"{d}/run/knot.sock\"\n\
             \n\
             database:\n  storage: \"{d}/db\"\n\
             \n\
             log:\n  - target: stderr\n    any: info\n\
             \n\
             key:\n\
             \x20 - id: mcp-key\n    algorithm: hmac-sha256\n    secret: {secret_b64}\n\
             \x20 - id: acme-key\n    algorithm: hmac-sha256\n    secret: {acme_secret_b64}\n\
             \n\
             acl:\n\
             \x20 - id: mcp-update\n    key: mcp-key\n    action: update\n\
             \x20 - id: acme-update\n    key: acme-key\n    action: update\n    update-type: [TXT]\n\
             \n\
             template:\n  - id: default\n    storage: \"{d}/zones\"\n    file: \"%s.zone\"\n\
             \n\
             zone:\n{zone_conf}"
        );
        let conf_path = dir.join("knot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.join("knotd.log")).unwrap();
        let child = Command::new(&knotd)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", knotd.display()));
        let mut server = KnotServer {
            child: Some(child),
            addr,
            dir: dir.to_path_buf(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            secret_b64,
            acme_secret_b64,
        };
        server.wait_ready();
        Some(server)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for z in self.zones.clone() {
            loop {
                if soa_answered(self.addr, &z) {
                    break;
                }
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if exited.is_some() || Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(self.dir.join("knotd.log")).unwrap_or_default();
                    panic!(
                        "knotd on {} did not serve {z} (exit: {exited:?}); its log:\n{log}",
                        self.addr
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Where it listens, TCP and UDP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The key allowed to update everything.
    pub fn key_name(&self) -> &str {
        "mcp-key"
    }

    pub fn secret_b64(&self) -> &str {
        &self.secret_b64
    }

    /// The key allowed to update only TXT records.
    pub fn acme_key_name(&self) -> &str {
        "acme-key"
    }

    pub fn acme_secret_b64(&self) -> &str {
        &self.acme_secret_b64
    }

    /// Options for updating `zone` with `mcp-key` (5 s timeout).
    pub fn options(&self, zone: &str) -> Rfc2136Options {
        Rfc2136Options {
            server: self.addr,
            zone: zone.to_string(),
            key_name: self.key_name().to_string(),
            algorithm: "hmac-sha256".to_string(),
            secret: base64::engine::general_purpose::STANDARD
                .decode(&self.secret_b64)
                .unwrap(),
            timeout: Duration::from_secs(5),
        }
    }

    /// What `kdig +short` answers for `name` and `rtype` (`"A"`, `"TXT"`…),
    /// one line per record. Panics naming the package when kdig is missing.
    pub fn kdig(&self, name: &str, rtype: &str) -> Vec<String> {
        let kdig = server_binary("kdig", "knot-dnsutils")
            .unwrap_or_else(|| panic!("kdig is missing (Debian package knot-dnsutils)"));
        let out = Command::new(kdig)
            .arg(format!("@{}", self.addr.ip()))
            .arg("-p")
            .arg(self.addr.port().to_string())
            .args(["+short", "+norecurse", name, rtype])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kdig {name} {rtype}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Deletes the `rtype` record set of `name` with knsupdate and
    /// `mcp-key`, behind the adapter's back (for repair tests).
    pub fn knsupdate_delete(&self, name: &str, rtype: &str) {
        let knsupdate = server_binary("knsupdate", "knot-dnsutils")
            .unwrap_or_else(|| panic!("knsupdate is missing (Debian package knot-dnsutils)"));
        let zone = self
            .zones
            .iter()
            .filter(|z| crate::dns::in_zone(name, z))
            .max_by_key(|z| z.len())
            .unwrap_or_else(|| panic!("{name} is in none of {:?}", self.zones));
        let script = format!(
            "server {} {}\nzone {zone}.\nupdate delete {name}. {rtype}\nsend\nquit\n",
            self.addr.ip(),
            self.addr.port()
        );
        let mut child = Command::new(knsupdate)
            .arg("-y")
            .arg(format!(
                "hmac-sha256:{}:{}",
                self.key_name(),
                self.secret_b64
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "knsupdate delete {name} {rtype}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops knotd (idempotent); it no longer answers afterwards.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for KnotServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the server answers a SOA query for `zone` over UDP with
/// NOERROR and an answer.
fn soa_answered(addr: SocketAddr, zone: &str) -> bool {
    let Ok(mut name) = Name::from_ascii(zone) else {
        return false;
    };
    name.set_fqdn(true);
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(name, RecordType::SOA));
    let Ok(bytes) = m.to_bytes() else {
        return false;
    };
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    if sock.send_to(&bytes, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    let Ok(n) = sock.recv(&mut buf) else {
        return false;
    };
    Message::from_vec(&buf[..n])
        .is_ok_and(|a| a.response_code() == ResponseCode::NoError && !a.answers().is_empty())
}
