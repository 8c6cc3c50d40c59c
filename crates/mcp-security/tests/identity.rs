//! Token verifiers: local Ed25519 JWTs, and the identity service over real
//! HTTP on 127.0.0.1 (hyper server started in the test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mcp_security::clock::ManualClock;
use mcp_security::identity::AccountType::{Human, System};
use mcp_security::identity::{Identity, TokenVerifier, VerifyError};
use mcp_security::idsvc::{token_fingerprint, IdentityServiceVerifier};
use mcp_security::jwt::JwtVerifier;

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn jwt_roundtrip_and_claims() {
    let clock = ManualClock::at_unix(common::T0);
    let keys = common::keys();
    let v = common::verifier(&keys, &clock);
    let t = common::token(
        &keys.signing,
        "alice",
        Human,
        &["admin", "ops"],
        HOUR,
        &clock,
    );
    assert_eq!(
        v.verify_token(&t).unwrap(),
        Identity::new("alice", Human, &["admin", "ops"])
    );
    let a = common::token(&keys.signing, "agent-orion", System, &[], HOUR, &clock);
    assert_eq!(v.verify_token(&a).unwrap().account_type, System);
}

#[test]
fn jwt_time_checks_use_the_clock() {
    let clock = ManualClock::at_unix(common::T0);
    let keys = common::keys();
    let v = common::verifier(&keys, &clock).with_leeway(0);
    let t = common::token(&keys.signing, "alice", Human, &[], HOUR, &clock);
    clock.advance(HOUR - Duration::from_secs(1));
    assert!(v.verify_token(&t).is_ok());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        v.verify_token(&t),
        Err(VerifyError::Invalid("token expired".into()))
    );
    // Not yet valid: issued in the future.
    let future = ManualClock::at_unix(common::T0 + 7200);
    let early = common::token(&keys.signing, "alice", Human, &[], HOUR, &future);
    assert_eq!(
        v.verify_token(&early),
        Err(VerifyError::Invalid("token not yet valid".into()))
    );
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn jwt_rejections() {
    let clock = ManualClock::at_unix(common::T0);
    let keys = common::keys();
    let other = common::keys();
    let v = common::verifier(&keys, &clock);
    let reason = |t: &str| match v.verify_token(t) {
        Err(VerifyError::Invalid(r)) => r,
        other => panic!("expected rejection, got {other:?}"),
    };
    let foreign = common::token(&other.signing, "alice", Human, &[], HOUR, &clock);
    assert_eq!(reason(&foreign), "bad signature");

    let wrong_iss = JwtVerifier::new(keys.public.clone(), "someone-else", common::AUDIENCE)
        .with_clock(Arc::new(clock.clone()));
    let t = common::token(&keys.signing, "alice", Human, &[], HOUR, &clock);
    assert_eq!(
        wrong_iss.verify_token(&t),
        Err(VerifyError::Invalid("wrong issuer".into()))
    );
    let wrong_aud = JwtVerifier::new(keys.public.clone(), common::ISSUER, "other-app")
        .with_clock(Arc::new(clock.clone()));
    assert_eq!(
        wrong_aud.verify_token(&t),
        Err(VerifyError::Invalid("wrong audience".into()))
    );

    // alg confusion: "none" and HS256 headers over the same claims.
    let parts: Vec<&str> = t.split('.').collect();
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    assert!(v.verify_token(&none).is_err());
    let hs = format!("{}.{}.{}", b64(r#"{"alg":"HS256"}"#), parts[1], parts[2]);
    assert_eq!(reason(&hs), "algorithm not EdDSA");
    // Tampered claims keep the old signature.
    let claims =
        r#"{"sub":"root","typ":"human","roles":[],"iss":"mcias","aud":"mcp","exp":9999999999}"#;
    let tampered = format!("{}.{}.{}", parts[0], b64(claims), parts[2]);
    assert_eq!(reason(&tampered), "bad signature");
    for junk in ["", ".", "..", "a.b.c", "not a token", &"x".repeat(10_000)] {
        assert!(v.verify_token(junk).is_err(), "{junk:.20}");
    }
}

#[test]
fn secrets_are_not_printed() {
    let kp = mcp_security::jwt::generate_keypair().unwrap();
    let dbg = format!("{kp:?}");
    assert!(!dbg.contains("PRIVATE"), "{dbg}");
    assert!(dbg.contains("PUBLIC KEY"));
    let keys = common::keys();
    assert_eq!(format!("{:?}", keys.signing), "SigningKey(<redacted>)");
}

#[test]
fn keypair_files() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = (dir.path().join("issuer.key"), dir.path().join("issuer.pub"));
    let kp = mcp_security::jwt::generate_keypair().unwrap();
    mcp_security::jwt::write_keypair(&kp, &sk, &pk).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&sk).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never overwritten.
    let again = mcp_security::jwt::write_keypair(&kp, &sk, &pk).unwrap_err();
    assert!(
        again.to_string().contains("issuer.key: cannot write"),
        "{again}"
    );
    let signing = mcp_security::jwt::SigningKey::from_file(&sk).unwrap();
    let public = mcp_security::jwt::PublicKey::from_file(&pk).unwrap();
    let clock = ManualClock::at_unix(common::T0);
    let t = common::token(&signing, "bob", Human, &[], HOUR, &clock);
    let v = JwtVerifier::new(public, common::ISSUER, common::AUDIENCE).with_clock(Arc::new(clock));
    assert_eq!(v.verify_token(&t).unwrap().name, "bob");
    // Wrong kinds of files are named.
    let e = mcp_security::jwt::PublicKey::from_file(&sk).unwrap_err();
    assert!(
        e.to_string().contains("issuer.key: no PUBLIC KEY block"),
        "{e}"
    );
    let e = mcp_security::jwt::SigningKey::from_file(&pk).unwrap_err();
    assert!(
        e.to_string().contains("issuer.pub: no PRIVATE KEY block"),
        "{e}"
    );
    let e = mcp_security::jwt::SigningKey::from_file(&dir.path().join("nope")).unwrap_err();
    assert!(e.to_string().contains("nope: cannot read"), "{e}");
}

/// A fake identity service: knows one token, counts calls, records whether
/// the token ever appeared in anything but the Authorization header.
struct IdService {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    status: Arc<Mutex<u16>>,
}

async fn start_id_service(valid_token: &'static str) -> IdService {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(Mutex::new(200u16));
    let (c, s) = (calls.clone(), status.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (c, s) = (c.clone(), s.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (c, s) = (c.clone(), s.clone());
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(req.method(), hyper::Method::POST);
                        assert_eq!(req.uri().path(), "/v1/validate");
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        let forced = *s.lock().unwrap();
                        let (code, body) = if forced != 200 {
                            (forced, String::from("{}"))
                        } else if auth == format!("Bearer {valid_token}") {
                            (
                                200,
                                r#"{"name":"alice","account_type":"human","roles":["admin"]}"#
                                    .to_string(),
                            )
                        } else {
                            (401, String::from(r#"{"error":"invalid token"}"#))
                        };
                        let resp = hyper::Response::builder()
                            .status(code)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    IdService {
        addr,
        calls,
        status,
    }
}

#[tokio::test]
async fn identity_service_validates_and_caches_by_hash() {
    let svc = start_id_service("good-token").await;
    let clock = ManualClock::at_unix(common::T0);
    let v = IdentityServiceVerifier::new(&format!("http://{}/v1/validate", svc.addr), None)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));

    let alice = Identity::new("alice", Human, &["admin"]);
    assert_eq!(v.verify("good-token").await.unwrap(), alice);
    assert_eq!(svc.calls.load(Ordering::SeqCst), 1);
    // Cached: no second call within 30 s, even if the service would now fail.
    *svc.status.lock().unwrap() = 500;
    clock.advance(Duration::from_secs(29));
    assert_eq!(v.verify("good-token").await.unwrap(), alice);
    assert_eq!(svc.calls.load(Ordering::SeqCst), 1);
    // Expired entry: asked again; a 500 is "unavailable", not cached.
    clock.advance(Duration::from_secs(2));
    assert!(matches!(
        v.verify("good-token").await,
        Err(VerifyError::Unavailable(_))
    ));
    assert_eq!(svc.calls.load(Ordering::SeqCst), 2);
    *svc.status.lock().unwrap() = 200;
    assert_eq!(v.verify("good-token").await.unwrap(), alice);
    assert_eq!(svc.calls.load(Ordering::SeqCst), 3);

    // Rejections are Invalid, and cached too.
    assert!(matches!(
        v.verify("bad-token").await,
        Err(VerifyError::Invalid(_))
    ));
    assert!(matches!(
        v.verify("bad-token").await,
        Err(VerifyError::Invalid(_))
    ));
    assert_eq!(svc.calls.load(Ordering::SeqCst), 4);

    // The cache key is the SHA-256 of the token, never the token.
    let fp = token_fingerprint("good-token");
    assert_eq!(
        fp.as_slice(),
        <sha2::Sha256 as sha2::Digest>::digest(b"good-token").as_slice()
    );
    let dbg = format!("{v:?}");
    assert!(!dbg.contains("good-token"), "{dbg}");
}

#[tokio::test]
async fn identity_service_unreachable_is_unavailable() {
    // Bind then drop: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let v = IdentityServiceVerifier::new(&format!("http://{addr}/v1/validate"), None).unwrap();
    assert!(matches!(
        v.verify("t").await,
        Err(VerifyError::Unavailable(_))
    ));
    assert!(IdentityServiceVerifier::new("ftp://x/", None).is_err());
    assert!(IdentityServiceVerifier::new("https://x/", None).is_err());
}
