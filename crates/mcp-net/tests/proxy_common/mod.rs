//! What the proxy adapters' tests share: CAs and certificates on disk,
//! small backends (plain HTTP/1.1 and TLS-terminating), and a TLS 1.3
//! client that reports the certificate it was shown.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_net::cert::new_key_and_csr;
use mcp_net::{CertRequest, LocalCa, TlsFiles};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A CA of the test's own, its certificate in `<dir>/<name>-ca.pem`.
pub struct TestCa {
    pub ca: LocalCa,
    pub pem: String,
    pub pem_path: PathBuf,
}

pub fn new_ca(dir: &Path, name: &str) -> TestCa {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem_path = dir.join(format!("{name}-ca.pem"));
    let key_path = dir.join(format!("{name}-ca.key"));
    std::fs::write(&pem_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    TestCa {
        ca: LocalCa::load(&pem_path, &key_path).unwrap(),
        pem: cert.pem(),
        pem_path,
    }
}

/// A certificate for one hostname, written as `<dir>/<stem>.crt` (chain)
/// and `<dir>/<stem>.key` (overwriting: a renewal in place).
pub struct Issued {
    pub files: TlsFiles,
    pub chain_pem: String,
    pub key_pem: String,
    pub serial: String,
}

pub fn issue(ca: &TestCa, host: &str, dir: &Path, stem: &str) -> Issued {
    let names = vec![host.to_string()];
    let (key_pem, csr_der) = new_key_and_csr(&names).unwrap();
    let issued = ca
        .ca
        .sign(&CertRequest {
            hostnames: names,
            csr_der,
        })
        .unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    // Key first: a reader never sees the new chain with the old key for long.
    std::fs::write(&files.key, &key_pem).unwrap();
    std::fs::write(&files.cert, &issued.chain_pem).unwrap();
    Issued {
        files,
        serial: issued.info.serial,
        chain_pem: issued.chain_pem,
        key_pem,
    }
}

/// Reads an HTTP request head, answers `200` with `body`, closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, body: &str) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A plain HTTP/1.1 backend on 127.0.0.1 answering `body`; its port.
pub async fn http_backend(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(answer(s, body));
        }
    });
    port
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A backend terminating TLS 1.3 itself with `chain_pem` / `key_pem`,
/// answering `body`; its port.
pub async fn tls_backend(chain_pem: &str, key_pem: &str, body: &'static str) -> u16 {
    let certs = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    answer(tls, body).await;
                }
            });
        }
    });
    port
}

/// What a TLS client saw: the certificate presented and the HTTP answer.
#[derive(Debug)]
pub struct Seen {
    /// The leaf's serial, hex lowercase.
    pub serial: String,
    /// The leaf's DNS subjectAltNames.
    pub dns_names: Vec<String>,
    pub status: u16,
    pub body: String,
}

/// Connects to 127.0.0.1:`port` with TLS 1.3, SNI `sni`, trusting only
/// `ca_pem`, and sends `GET /` with `Host: <sni>`. `Err` says which step
/// failed (the handshake fails when the certificate does not verify).
pub async fn tls_get(port: u16, sni: &str, ca_pem: &str) -> Result<Seen, String> {
    tokio::time::timeout(TIMEOUT, tls_get_inner(port, sni, ca_pem))
        .await
        .map_err(|_| format!("{sni} on port {port}: no answer within 5 s"))?
}

async fn tls_get_inner(port: u16, sni: &str, ca_pem: &str) -> Result<Seen, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to port {port}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake for {sni} on port {port}: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no peer certificate")?
        .clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let serial: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                dns_names.push(d.to_string());
            }
        }
    }
    let req = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send the request to {sni}: {e}"))?;
    let mut raw = Vec::new();
    // A peer closing without close_notify still gave its answer.
    if let Err(e) = tls.read_to_end(&mut raw).await {
        if raw.is_empty() {
            return Err(format!("read the answer of {sni}: {e}"));
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{sni}: not an HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(Seen {
        serial,
        dns_names,
        status,
        body,
    })
}

/// `tls_get` that must answer 200 with `body`, presenting a certificate
/// for exactly `sni`; returns the serial shown.
pub async fn expect_served(port: u16, sni: &str, ca_pem: &str, body: &str) -> String {
    let seen = tls_get(port, sni, ca_pem)
        .await
        .unwrap_or_else(|e| panic!("{sni} should be served: {e}"));
    assert_eq!(seen.status, 200, "{sni}: status ({seen:?})");
    assert_eq!(seen.body, body, "{sni}: the body of its own backend");
    assert_eq!(
        seen.dns_names,
        vec![sni.to_string()],
        "{sni}: the certificate's SAN"
    );
    seen.serial
}

/// `tls_get` that must not succeed: no handshake, or no 2xx.
pub async fn expect_not_served(port: u16, sni: &str, ca_pem: &str) {
    if let Ok(seen) = tls_get(port, sni, ca_pem).await {
        assert!(
            !(200..300).contains(&seen.status),
            "{sni} should not be served any more, got {seen:?}"
        );
    }
}
