//! The RFC 2136 adapter against a real Knot DNS server (Debian `knot`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mcp_net::testing::dns_suite;
use mcp_net::testing::servers::knot::KnotServer;
use mcp_net::{DnsRecords, NetError, RecordData, RecordType, Rfc2136};

const ZONE: &str = "mcp.test";

fn knot(dir: &tempfile::TempDir) -> Option<KnotServer> {
    KnotServer::start(dir.path(), &[ZONE])
}

#[tokio::test]
async fn the_rfc2136_adapter_passes_the_dns_suite_against_knot() {
    let dir = tempfile::tempdir().unwrap();
    let Some(k) = knot(&dir) else { return };
    let d = Rfc2136::new(k.options(ZONE)).unwrap();
    dns_suite(&d).await;
}

#[tokio::test]
async fn kdig_sees_what_replace_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let Some(k) = knot(&dir) else { return };
    let d = Rfc2136::new(k.options(ZONE)).unwrap();
    let name = "web.mcp.test";
    d.replace(
        name,
        60,
        &[
            RecordData::A("10.1.2.4".parse().unwrap()),
            RecordData::A("10.1.2.3".parse().unwrap()),
        ],
    )
    .await
    .unwrap();
    let mut seen = k.kdig(name, "A");
    seen.sort();
    assert_eq!(seen, ["10.1.2.3", "10.1.2.4"]);
    d.replace(name, 60, &[RecordData::Aaaa("fd00::1".parse().unwrap())])
        .await
        .unwrap();
    assert_eq!(k.kdig(name, "AAAA"), ["fd00::1"]);
    assert_eq!(k.kdig(name, "A").len(), 2, "the AAAA set is its own");
    let long = "t".repeat(300);
    d.replace(
        "_acme-challenge.web.mcp.test",
        60,
        &[RecordData::Txt(long.clone())],
    )
    .await
    .unwrap();
    assert_eq!(
        d.lookup("_acme-challenge.web.mcp.test", RecordType::Txt)
            .await
            .unwrap(),
        vec![RecordData::Txt(long)],
        "a TXT value over 255 bytes comes back whole"
    );
    k.knsupdate_delete(name, "A");
    assert!(k.kdig(name, "A").is_empty(), "deleted by hand");
    assert!(d.lookup(name, RecordType::A).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_key_is_rejected_with_the_rcode() {
    let dir = tempfile::tempdir().unwrap();
    let Some(k) = knot(&dir) else { return };
    let mut o = k.options(ZONE);
    o.secret = vec![7; 32];
    let d = Rfc2136::new(o).unwrap();
    let a = [RecordData::A("10.0.0.1".parse().unwrap())];
    match d.replace("web.mcp.test", 60, &a).await {
        Err(NetError::Rejected { server, detail }) => {
            assert_eq!(server, k.addr().to_string());
            assert!(
                detail.contains("NOTAUTH") && detail.contains("BADSIG"),
                "{detail}"
            );
            assert!(detail.contains("web.mcp.test"), "{detail}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let mut o = k.options(ZONE);
    o.key_name = "unknown-key".into();
    let d = Rfc2136::new(o).unwrap();
    match d.delete("web.mcp.test", RecordType::A).await {
        Err(NetError::Rejected { detail, .. }) => {
            assert!(
                detail.contains("NOTAUTH") && detail.contains("BADKEY"),
                "{detail}"
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(k.kdig("web.mcp.test", "A").is_empty(), "nothing written");
}

#[tokio::test]
async fn the_acme_key_writes_txt_but_not_a() {
    let dir = tempfile::tempdir().unwrap();
    let Some(k) = knot(&dir) else { return };
    let mut o = k.options(ZONE);
    o.key_name = k.acme_key_name().to_string();
    o.secret = mcp_net_b64(k.acme_secret_b64());
    let d = Rfc2136::new(o).unwrap();
    let txt = "_acme-challenge.web.mcp.test";
    d.replace(txt, 60, &[RecordData::Txt("token".into())])
        .await
        .unwrap();
    assert_eq!(k.kdig(txt, "TXT"), ["\"token\""]);
    let a = [RecordData::A("10.0.0.1".parse().unwrap())];
    match d.replace("web.mcp.test", 60, &a).await {
        Err(NetError::Rejected { detail, .. }) => {
            // Knot 3.2 answers an update its ACL does not allow for this
            // key as NOTAUTH (TSIG BADKEY).
            assert!(detail.contains("web.mcp.test"), "{detail}");
            assert!(detail.contains("NOTAUTH"), "{detail}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(k.kdig("web.mcp.test", "A").is_empty());
}

#[tokio::test]
async fn a_stopped_server_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut k) = knot(&dir) else { return };
    let mut o = k.options(ZONE);
    o.timeout = Duration::from_millis(500);
    let d = Rfc2136::new(o).unwrap();
    k.kill();
    let a = [RecordData::A("10.0.0.1".parse().unwrap())];
    let e = d.replace("web.mcp.test", 60, &a).await.unwrap_err();
    assert!(matches!(e, NetError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&k.addr().to_string()), "{e}");
    let e = d.lookup("web.mcp.test", RecordType::A).await.unwrap_err();
    assert!(matches!(e, NetError::Unreachable { .. }), "{e:?}");
}

fn mcp_net_b64(s: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret");
    std::fs::write(&p, format!("{s}\n")).unwrap();
    mcp_net::Rfc2136Options::secret_from_base64_file(&p).unwrap()
}
