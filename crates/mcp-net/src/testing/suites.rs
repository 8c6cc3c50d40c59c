//! The shared suites: the contract of each trait, run against the fakes
//! here and against every real adapter in its own test. They panic with a
//! message naming the step that failed.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use crate::cert::{
    cert_info, cert_public_key, csr_public_key, new_key_and_csr, CertIssuer, CertRequest,
};
use crate::dns::{DnsRecords, RecordData, RecordType};
use crate::proxy::{ProxyRoute, ProxyRoutes, RouteKey, RouteMode, TlsFiles};
use crate::NetError;

/// What the proxy suite needs from its caller: two proxy ports the
/// adapter may listen on, and a certificate pair for L7 routes (any
/// certificate; the suite does not connect).
#[derive(Debug, Clone)]
pub struct ProxySuiteEnv {
    pub ports: [u16; 2],
    pub tls: TlsFiles,
}

impl ProxySuiteEnv {
    /// An env with a self-signed certificate written under `dir`.
    pub fn new(dir: &std::path::Path, ports: [u16; 2]) -> ProxySuiteEnv {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["suite.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let tls = TlsFiles {
            cert: dir.join("suite.crt"),
            key: dir.join("suite.key"),
        };
        std::fs::write(&tls.cert, cert.pem()).unwrap();
        std::fs::write(&tls.key, key.serialize_pem()).unwrap();
        ProxySuiteEnv { ports, tls }
    }
}

fn route(env: &ProxySuiteEnv, mode: RouteMode, port: u16, host: &str, backend: u16) -> ProxyRoute {
    ProxyRoute {
        listen_port: port,
        hostname: host.to_string(),
        backend: format!("127.0.0.1:{backend}"),
        mode,
        tls: (mode == RouteMode::L7).then(|| env.tls.clone()),
        backend_tls: None,
    }
}

/// The [`ProxyRoutes`] contract. Starts by removing every route the proxy
/// lists, so give it a proxy of its own.
pub async fn proxy_suite(p: &dyn ProxyRoutes, env: &ProxySuiteEnv) {
    for r in p.list().await.expect("list at start") {
        p.remove(&r.key()).await.expect("clean up at start");
    }
    assert!(p.list().await.unwrap().is_empty(), "proxy empty at start");
    let [port, other_port] = env.ports;
    for &mode in p.modes() {
        let m = mode.as_str();
        let a = route(env, mode, port, &format!("a-{m}.suite.test"), 20001);
        let b = route(env, mode, port, &format!("b-{m}.suite.test"), 20002);
        p.add(&a)
            .await
            .unwrap_or_else(|e| panic!("{m}: add a: {e}"));
        assert_eq!(p.list().await.unwrap(), vec![a.clone()], "{m}: after add a");
        p.add(&b)
            .await
            .unwrap_or_else(|e| panic!("{m}: add b: {e}"));
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        assert_eq!(
            p.list().await.unwrap(),
            both,
            "{m}: two hostnames on one port"
        );

        // Same key: replaced, not added; and idempotent.
        let a2 = route(env, mode, port, &a.hostname, 20003);
        p.add(&a2)
            .await
            .unwrap_or_else(|e| panic!("{m}: replace a: {e}"));
        p.add(&a2)
            .await
            .unwrap_or_else(|e| panic!("{m}: add a again: {e}"));
        let mut both = vec![a2.clone(), b.clone()];
        both.sort();
        assert_eq!(p.list().await.unwrap(), both, "{m}: after replacing a");

        // Another port, same hostname: a route of its own.
        let c = route(env, mode, other_port, &a.hostname, 20004);
        p.add(&c)
            .await
            .unwrap_or_else(|e| panic!("{m}: add on the other port: {e}"));
        assert_eq!(p.list().await.unwrap().len(), 3, "{m}: third route");

        // Refused: invalid routes leave everything as it was.
        let mut bad = route(env, mode, port, "bad.suite.test", 20005);
        bad.tls = match mode {
            RouteMode::L7 => None,
            RouteMode::L4 => Some(env.tls.clone()),
        };
        assert!(
            matches!(p.add(&bad).await, Err(NetError::Invalid(_))),
            "{m}: a route failing check() is refused"
        );
        let mut bad = route(env, mode, port, "Bad.Suite.Test.", 20005);
        bad.tls = a.tls.clone();
        assert!(
            matches!(p.add(&bad).await, Err(NetError::Invalid(_))),
            "{m}: a hostname that is not normalised is refused"
        );
        assert_eq!(
            p.list().await.unwrap().len(),
            3,
            "{m}: refusals changed nothing"
        );

        // Remove.
        assert!(p.remove(&a2.key()).await.unwrap(), "{m}: remove a");
        assert!(!p.remove(&a2.key()).await.unwrap(), "{m}: remove a again");
        let mut left = vec![b.clone(), c.clone()];
        left.sort();
        assert_eq!(p.list().await.unwrap(), left, "{m}: after removing a");
        for r in [&b, &c] {
            assert!(
                p.remove(&r.key()).await.unwrap(),
                "{m}: remove {}",
                r.hostname
            );
        }
        assert!(p.list().await.unwrap().is_empty(), "{m}: empty at the end");
        p.reload_certificates()
            .await
            .unwrap_or_else(|e| panic!("{m}: reload certificates: {e}"));
    }

    // A mode the adapter does not serve is refused.
    for mode in [RouteMode::L7, RouteMode::L4] {
        if !p.modes().contains(&mode) {
            let r = route(env, mode, port, "other-mode.suite.test", 20006);
            assert!(
                matches!(p.add(&r).await, Err(NetError::Invalid(_))),
                "{} route refused by a {} adapter",
                mode.as_str(),
                p.kind()
            );
        }
    }
    // Both modes: one port serves one mode.
    if p.modes().len() == 2 {
        let l7 = route(env, RouteMode::L7, port, "seven.suite.test", 20007);
        let l4 = route(env, RouteMode::L4, port, "four.suite.test", 20008);
        p.add(&l7).await.unwrap();
        assert!(
            matches!(p.add(&l4).await, Err(NetError::Invalid(_))),
            "an L4 route on an L7 port is refused"
        );
        p.remove(&l7.key()).await.unwrap();
    }
    let missing = RouteKey {
        listen_port: port,
        hostname: "never.suite.test".into(),
    };
    assert!(
        !p.remove(&missing).await.unwrap(),
        "removing a missing route"
    );
}

/// The [`DnsRecords`] contract, on names `*.suite.<zone>` (give it a zone
/// where those may be written).
pub async fn dns_suite(d: &dyn DnsRecords) {
    let zone = d.zone().to_string();
    let name = format!("web.suite.{zone}");
    let txt = format!("_acme-challenge.web.suite.{zone}");
    let a = |x: u8| RecordData::A(Ipv4Addr::new(10, 0, 0, x));
    for rt in [RecordType::A, RecordType::Txt] {
        d.delete(&name, rt).await.expect("clean up at start");
        d.delete(&txt, rt).await.expect("clean up at start");
    }
    assert_eq!(
        d.lookup(&name, RecordType::A).await.unwrap(),
        vec![],
        "missing name"
    );

    d.replace(&name, 60, &[a(1)]).await.expect("replace a(1)");
    assert_eq!(
        d.lookup(&name, RecordType::A).await.unwrap(),
        vec![a(1)],
        "after set"
    );
    d.replace(&name, 60, &[a(2)]).await.expect("replace a(2)");
    assert_eq!(
        d.lookup(&name, RecordType::A).await.unwrap(),
        vec![a(2)],
        "replace leaves only the new value"
    );
    d.replace(&name, 60, &[a(4), a(3)])
        .await
        .expect("replace two");
    assert_eq!(
        d.lookup(&name, RecordType::A).await.unwrap(),
        vec![a(3), a(4)],
        "two values, sorted"
    );
    d.replace(&name, 60, &[a(3), a(4)])
        .await
        .expect("replace again: idempotent");

    let token = RecordData::Txt("dns-01-token_value".into());
    d.replace(&txt, 60, std::slice::from_ref(&token))
        .await
        .expect("TXT");
    assert_eq!(d.lookup(&txt, RecordType::Txt).await.unwrap(), vec![token]);
    d.delete(&txt, RecordType::Txt).await.expect("delete TXT");
    assert_eq!(d.lookup(&txt, RecordType::Txt).await.unwrap(), vec![]);
    assert_eq!(
        d.lookup(&name, RecordType::A).await.unwrap().len(),
        2,
        "deleting the TXT set left the A set"
    );

    d.delete(&name, RecordType::A).await.expect("delete A");
    assert_eq!(
        d.lookup(&name, RecordType::A).await.unwrap(),
        vec![],
        "after delete"
    );
    d.delete(&name, RecordType::A)
        .await
        .expect("deleting again succeeds");

    let outside = "web.elsewhere.invalid";
    assert!(
        matches!(
            d.replace(outside, 60, &[a(1)]).await,
            Err(NetError::Invalid(_))
        ),
        "a name outside the zone is refused"
    );
    let evil = format!("evil{zone}");
    assert!(
        matches!(
            d.replace(&evil, 60, &[a(1)]).await,
            Err(NetError::Invalid(_))
        ),
        "a name under the zone only by suffix is refused"
    );
    assert!(
        matches!(d.replace(&name, 60, &[]).await, Err(NetError::Invalid(_))),
        "an empty replace is refused"
    );
}

/// The [`CertIssuer`] contract for `hostname` (a name the issuer will
/// sign; for ACME, one it can validate). Returns the chain for further
/// checks (e.g. verification against the issuer's real root).
pub async fn issuer_suite(i: &dyn CertIssuer, hostname: &str) -> String {
    let names = vec![hostname.to_string()];
    let (_key, csr) = new_key_and_csr(&names).expect("key and CSR");
    let issued = i
        .issue(&CertRequest {
            hostnames: names.clone(),
            csr_der: csr.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{}: issue {hostname}: {e}", i.kind()));
    let info = cert_info(&issued.chain_pem).expect("the chain parses");
    assert_eq!(info, issued.info, "IssuedCert.info describes the leaf");
    assert_eq!(info.dns_names, names, "the leaf names exactly the hostname");
    let now = SystemTime::now();
    assert!(info.not_before <= now && now < info.not_after, "valid now");
    assert_eq!(
        cert_public_key(&issued.chain_pem).unwrap(),
        csr_public_key(&csr).unwrap(),
        "the leaf certifies the CSR's key (the key never left the caller)"
    );
    assert!(
        issued.chain_pem.matches("BEGIN CERTIFICATE").count() >= 2,
        "a chain, not a lone leaf"
    );
    issued.chain_pem
}
