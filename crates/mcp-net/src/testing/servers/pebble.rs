//! Pebble, Let's Encrypt's ACME test CA (Debian package `pebble`), on
//! loopback with real challenge validation: dns-01 answers are looked up
//! through the DNS server given to [`PebbleServer::start`].
//!
//! Facts of the real server this relies on:
//! - its ACME listener needs a certificate of ours (`certificate` and
//!   `privateKey` in its JSON config): [`PebbleServer::listener_ca_pem`] is
//!   the CA that signed it, the root an ACME client must trust to talk to
//!   it (`AcmeOptions::root_pem`);
//! - the CA that signs the certificates it issues is made afresh at every
//!   start; its root and intermediate are served by the management
//!   listener (`/roots/0`, `/intermediates/0`, HTTPS with the listener's
//!   certificate) and fetched here once started;
//! - `PEBBLE_VA_NOSLEEP=1` drops its random validation delays;
//!   `PEBBLE_WFE_NONCEREJECT` is left at its default, 5 % of good nonces
//!   refused with `badNonce` (clients must retry, instant-acme does);
//!   `PEBBLE_AUTHZREUSE` too (50 %: a second order of one account may find
//!   its authorization already valid);
//! - accounts and orders live in memory: a restarted Pebble knows none.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{free_port, server_binary};

/// A running Pebble, killed when dropped.
#[derive(Debug)]
pub struct PebbleServer {
    child: Option<Child>,
    dir: PathBuf,
    listen: SocketAddr,
    management: SocketAddr,
    listener_ca_pem: String,
    root_pem: String,
    intermediate_pem: String,
}

impl PebbleServer {
    /// Starts Pebble with its files under `dir`, resolving challenge
    /// names through `dns_server`; returns once its directory answers and
    /// its roots are fetched. `None` (after a loud skip line) when the
    /// binary is missing and `MCP_SKIP_MISSING_SERVERS=1`; panics otherwise
    /// on any failure, with Pebble's log.
    pub fn start(dir: &Path, dns_server: SocketAddr) -> Option<PebbleServer> {
        let binary = server_binary("pebble", "pebble")?;
        std::fs::create_dir_all(dir).unwrap();
        let (listener_ca_pem, cert_pem, key_pem) = listener_certificate();
        let (cert, key) = (dir.join("listener.crt"), dir.join("listener.key"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let management = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": cert,
                "privateKey": key,
                "httpPort": free_port(),
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_file = dir.join("pebble-config.json");
        std::fs::write(&config_file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
        let child = Command::new(&binary)
            .arg("-config")
            .arg(&config_file)
            .arg("-dnsserver")
            .arg(dns_server.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut pebble = PebbleServer {
            child: Some(child),
            dir: dir.to_path_buf(),
            listen,
            management,
            listener_ca_pem,
            root_pem: String::new(),
            intermediate_pem: String::new(),
        };
        pebble.wait_ready();
        pebble.root_pem = pebble.management_get("/roots/0");
        pebble.intermediate_pem = pebble.management_get("/intermediates/0");
        Some(pebble)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "pebble exited at start ({status}); its log:\n{}",
                        self.log()
                    );
                }
            }
            match https_get(self.listen, &self.listener_ca_pem, "/dir") {
                Ok((200, body)) if body.contains("newOrder") => return,
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => panic!(
                    "pebble's directory at {} did not answer within 30 s ({other:?}); its log:\n{}",
                    self.directory_url(),
                    self.log()
                ),
            }
        }
    }

    fn management_get(&self, path: &str) -> String {
        match https_get(self.management, &self.listener_ca_pem, path) {
            Ok((200, body)) if body.contains("BEGIN CERTIFICATE") => body,
            other => panic!(
                "pebble management {path} at {}: {other:?}; its log:\n{}",
                self.management,
                self.log()
            ),
        }
    }

    /// `https://127.0.0.1:<port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// The CA of Pebble's own HTTPS listener (trust it to talk ACME to it).
    pub fn listener_ca_pem(&self) -> &str {
        &self.listener_ca_pem
    }

    /// The root of the certificates this Pebble issues (fetched from its
    /// management listener at start; a new one at every start).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The intermediate that signs the leaves (fetched at start).
    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// Pebble's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// Stops Pebble (idempotent); the URL then refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PebbleServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// (CA PEM, certificate PEM, key PEM) for a listener on 127.0.0.1 and
/// localhost.
fn listener_certificate() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "pebble listener test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "pebble listener");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A blocking `GET path` over HTTPS/1.0 to `addr`, trusting only `ca_pem`:
/// (status, body). HTTP/1.0 so the body ends with the connection (no
/// chunked encoding to undo).
fn https_get(addr: SocketAddr, ca_pem: &str, path: &str) -> std::io::Result<(u16, String)> {
    use rustls_pki_types::pem::PemObject as _;
    let io = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| io(&e))?).map_err(|e| io(&e))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| io(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| io(&e))?;
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(tls, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    tls.flush()?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer closing without close_notify: the body is complete anyway
        // (HTTP/1.0, the connection ends it).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io(&"no end of the HTTP header"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io(&format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}
