//! The ACME issuer against a real Pebble with validation on, resolving
//! the challenges through a real Knot (or, for the failure paths, through
//! a DNS server that does not answer).

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use mcp_net::cert::{new_key_and_csr, verify_chain};
use mcp_net::testing::servers::free_port;
use mcp_net::testing::servers::knot::KnotServer;
use mcp_net::testing::servers::pebble::PebbleServer;
use mcp_net::testing::{issuer_suite, FakeDns};
use mcp_net::{
    Acme, AcmeOptions, CertIssuer, CertRequest, DnsRecords, NetError, RecordType, Rfc2136,
    Rfc2136Options,
};

fn options(
    directory: String,
    root_pem: Option<&str>,
    dir: &Path,
    dns: Arc<dyn DnsRecords>,
) -> AcmeOptions {
    AcmeOptions {
        directory,
        root_pem: root_pem.map(str::to_string),
        account_file: dir.join("acme").join("account.json"),
        contact: vec!["mailto:ops@mcp.test".to_string()],
        dns,
        txt_ttl: 30,
        timeout: Duration::from_secs(60),
    }
}

fn request(host: &str) -> CertRequest {
    let names = vec![host.to_string()];
    let (_key, csr_der) = new_key_and_csr(&names).unwrap();
    CertRequest {
        hostnames: names,
        csr_der,
    }
}

/// A UDP address where nothing answers (the port is closed at once: a
/// query gets "connection refused").
fn dead_dns() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

/// Knot serving `mcp.test`, Pebble resolving through it, and the zone
/// written with Knot's TXT-only `acme-key` (as an operator would set up
/// the ACME issuer's DNS access).
fn knot_and_pebble(dir: &Path) -> Option<(KnotServer, PebbleServer, Arc<Rfc2136>)> {
    let knot = KnotServer::start(&dir.join("knot"), &["mcp.test"])?;
    let pebble = PebbleServer::start(&dir.join("pebble"), knot.addr())?;
    let dns = Rfc2136::new(Rfc2136Options {
        key_name: knot.acme_key_name().to_string(),
        secret: base64::engine::general_purpose::STANDARD
            .decode(knot.acme_secret_b64())
            .unwrap(),
        ..knot.options("mcp.test")
    })
    .unwrap();
    Some((knot, pebble, Arc::new(dns)))
}

#[tokio::test]
async fn acme_passes_the_issuer_suite_against_pebble_validating_through_knot() {
    let dir = tempfile::tempdir().unwrap();
    let Some((knot, mut pebble, dns)) = knot_and_pebble(dir.path()) else {
        return;
    };
    let opts = options(
        pebble.directory_url(),
        Some(pebble.listener_ca_pem()),
        dir.path(),
        dns.clone(),
    );
    let acme = Acme::new(opts.clone());
    let chain = issuer_suite(&acme, "web.mcp.test").await;
    verify_chain(&chain, pebble.root_pem(), "web.mcp.test", SystemTime::now())
        .unwrap_or_else(|e| panic!("the chain verifies against Pebble's root: {e}\n{chain}"));
    assert!(
        verify_chain(
            &chain,
            pebble.listener_ca_pem(),
            "web.mcp.test",
            SystemTime::now()
        )
        .is_err(),
        "and not against another root"
    );
    let challenge = "_acme-challenge.web.mcp.test";
    assert_eq!(
        knot.kdig(challenge, "TXT"),
        Vec::<String>::new(),
        "TXT gone"
    );
    assert!(dns
        .lookup(challenge, RecordType::Txt)
        .await
        .unwrap()
        .is_empty());

    // Two names in one order: one authorization (and TXT) each.
    let names = vec!["api.mcp.test".to_string(), "www.mcp.test".to_string()];
    let (_key, csr_der) = new_key_and_csr(&names).unwrap();
    let issued = acme
        .issue(&CertRequest {
            hostnames: names.clone(),
            csr_der,
        })
        .await
        .unwrap_or_else(|e| panic!("two names: {e}; pebble:\n{}", pebble.log()));
    assert_eq!(issued.info.dns_names, names);
    for n in &names {
        verify_chain(&issued.chain_pem, pebble.root_pem(), n, SystemTime::now()).unwrap();
        assert!(knot.kdig(&format!("_acme-challenge.{n}"), "TXT").is_empty());
    }

    // A restarted daemon: a new issuer on the same account file, which
    // it reads and does not rewrite (no new account).
    let account = std::fs::read(&opts.account_file).unwrap();
    let again = Acme::new(opts.clone());
    issuer_suite(&again, "web.mcp.test").await;
    assert_eq!(std::fs::read(&opts.account_file).unwrap(), account);

    // Pebble stopped: unreachable, naming the directory.
    pebble.kill();
    let err = again.issue(&request("web.mcp.test")).await.unwrap_err();
    assert!(
        matches!(&err, NetError::Unreachable { server, .. } if *server == pebble.directory_url()),
        "{err:?}"
    );
    assert!(knot.kdig(challenge, "TXT").is_empty());
}

#[tokio::test]
async fn a_challenge_the_ca_cannot_see_is_rejected_and_its_record_removed() {
    let dir = tempfile::tempdir().unwrap();
    // Pebble resolves through a DNS server that does not answer: the TXT
    // written to the fake zone is never seen, validation fails for real.
    let Some(pebble) = PebbleServer::start(&dir.path().join("pebble"), dead_dns()) else {
        return;
    };
    let dns = Arc::new(FakeDns::new("mcp.test"));
    let acme = Acme::new(options(
        pebble.directory_url(),
        Some(pebble.listener_ca_pem()),
        dir.path(),
        dns.clone(),
    ));
    let err = acme.issue(&request("web.mcp.test")).await.unwrap_err();
    let NetError::Rejected { server, detail } = &err else {
        panic!("expected Rejected, got {err:?}; pebble:\n{}", pebble.log());
    };
    assert_eq!(server, &pebble.directory_url());
    assert!(detail.contains("web.mcp.test"), "{detail}");
    assert!(
        detail.contains("urn:ietf:params:acme:error:"),
        "the problem's type: {detail}"
    );
    let calls = dns.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("replace _acme-challenge.web.mcp.test TXT")),
        "{calls:?}"
    );
    assert_eq!(
        calls.last().unwrap(),
        "delete _acme-challenge.web.mcp.test TXT",
        "the challenge record is removed after a failed order"
    );
    assert!(dns.records().is_empty(), "{:?}", dns.records());
}

#[tokio::test]
async fn a_dns_refusing_the_challenge_record_fails_the_order_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pebble) = PebbleServer::start(&dir.path().join("pebble"), dead_dns()) else {
        return;
    };
    let dns = Arc::new(FakeDns::new("mcp.test"));
    dns.reject_updates(Some("NOTAUTH"));
    let acme = Acme::new(options(
        pebble.directory_url(),
        Some(pebble.listener_ca_pem()),
        dir.path(),
        dns.clone(),
    ));
    let err = acme.issue(&request("web.mcp.test")).await.unwrap_err();
    let NetError::Rejected { server, detail } = &err else {
        panic!("expected the DNS's Rejected, got {err:?}");
    };
    assert_eq!(server, "fake DNS", "the DNS error, not the CA's");
    assert!(detail.contains("NOTAUTH"), "{detail}");
    assert!(detail.contains("_acme-challenge.web.mcp.test"), "{detail}");
    assert!(detail.contains(&pebble.directory_url()), "{detail}");

    // A name outside the DNS zone: the zone's check, with the same context.
    dns.reject_updates(None);
    let err = acme.issue(&request("web.other.test")).await.unwrap_err();
    assert!(
        matches!(&err, NetError::Invalid(d) if d.contains("outside the zone")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_acme_server_that_is_not_there_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let dns: Arc<dyn DnsRecords> = Arc::new(FakeDns::new("mcp.test"));
    let url = format!("https://127.0.0.1:{}/dir", free_port());
    let acme = Acme::new(options(url.clone(), None, dir.path(), dns.clone()));
    let err = acme.issue(&request("web.mcp.test")).await.unwrap_err();
    assert!(
        matches!(&err, NetError::Unreachable { server, .. } if *server == url),
        "{err:?}"
    );
    assert!(
        !dir.path().join("acme/account.json").exists(),
        "no account without a server"
    );

    // A Pebble that was there (account created) and is stopped.
    let Some(mut pebble) = PebbleServer::start(&dir.path().join("pebble"), dead_dns()) else {
        return;
    };
    let acme = Acme::new(options(
        pebble.directory_url(),
        Some(pebble.listener_ca_pem()),
        dir.path(),
        dns,
    ));
    let _ = acme.issue(&request("web.mcp.test")).await.unwrap_err();
    pebble.kill();
    let err = acme.issue(&request("web.mcp.test")).await.unwrap_err();
    assert!(
        matches!(&err, NetError::Unreachable { server, detail } if *server == pebble.directory_url() && detail.contains("new order")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_listener_must_be_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pebble) = PebbleServer::start(&dir.path().join("pebble"), dead_dns()) else {
        return;
    };
    // Without Pebble's listener CA the TLS handshake fails: no account.
    let acme = Acme::new(options(
        pebble.directory_url(),
        None,
        dir.path(),
        Arc::new(FakeDns::new("mcp.test")),
    ));
    let err = acme.issue(&request("web.mcp.test")).await.unwrap_err();
    assert!(
        matches!(&err, NetError::Unreachable { detail, .. } if detail.contains("certificate")),
        "{err:?}"
    );
    // A root that is not PEM is refused as such.
    let acme = Acme::new(options(
        pebble.directory_url(),
        Some("garbage"),
        dir.path(),
        Arc::new(FakeDns::new("mcp.test")),
    ));
    let err = acme.issue(&request("web.mcp.test")).await.unwrap_err();
    assert!(matches!(&err, NetError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn the_account_file_is_private_and_reused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let Some(pebble) = PebbleServer::start(&dir.path().join("pebble"), dead_dns()) else {
        return;
    };
    let dns: Arc<dyn DnsRecords> = Arc::new(FakeDns::new("mcp.test"));
    let opts = options(
        pebble.directory_url(),
        Some(pebble.listener_ca_pem()),
        dir.path(),
        dns,
    );
    let file = opts.account_file.clone();
    // The orders fail (nobody answers Pebble's DNS queries) but the
    // account is made first.
    let _ = Acme::new(opts.clone())
        .issue(&request("web.mcp.test"))
        .await;
    let first = std::fs::read(&file).unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the account key is private");
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();

    // A new issuer (a restarted daemon) loads it and writes nothing.
    let err = Acme::new(opts.clone())
        .issue(&request("web.mcp.test"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::Rejected { .. }),
        "the account works: {err:?}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        first,
        "the account file is unchanged"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        modified
    );

    // The file of another directory is refused, not used against this one.
    let mut other = opts.clone();
    other.directory = format!("{}?other", pebble.directory_url());
    let err = Acme::new(other)
        .issue(&request("web.mcp.test"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NetError::Invalid(d) if d.contains("account.json")),
        "{err:?}"
    );
}
