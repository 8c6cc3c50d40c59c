//! Tests of `fake`.

use super::*;
use crate::testing;

const IMAGE: &str = "localhost/mcp-test/web:v1";

#[tokio::test]
async fn fake_passes_the_runtime_suite() {
    let fake = FakeRuntime::with_images([IMAGE]);
    testing::runtime_suite(&fake, IMAGE, "mcpsuite-fake").await;
    // The suite leaves nothing behind.
    assert!(fake.containers().is_empty());
}

#[test]
fn fake_sh_prints_echo_statements() {
    let cmd: Vec<String> = [
        "sh",
        "-c",
        "echo \"hi $WHO\"; echo err ${WHO}! >&2; sleep 1",
    ]
    .map(String::from)
    .to_vec();
    let lines = fake_sh_output(&cmd, &["WHO=you".to_string()]);
    assert_eq!(
        lines,
        vec![
            LogLine {
                source: LogSource::Stdout,
                line: "hi you".to_string()
            },
            LogLine {
                source: LogSource::Stderr,
                line: "err you!".to_string()
            },
        ]
    );
}

#[tokio::test]
async fn crash_records_exit_and_calls_are_recorded() {
    let fake = FakeRuntime::with_images([IMAGE]);
    let cfg = ContainerConfig::new("svc-api", IMAGE, "svc", "api", "n1");
    fake.create_and_start(&cfg).await.expect("create");
    assert!(fake.crash("svc-api", 3));
    assert!(!fake.crash("svc-api", 3), "already exited");
    let info = fake
        .inspect("svc-api")
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit_code, Some(3));
    assert_eq!(
        fake.mutations(),
        vec![FakeCall::CreateAndStart(Box::new(cfg.clone()))]
    );
    assert_eq!(fake.calls().len(), 2);

    fake.fail_next(FakeOp::Start, "boom");
    let err = fake.start("svc-api").await.expect_err("injected");
    assert!(err.to_string().contains("boom"), "{err}");
    fake.start("svc-api").await.expect("second start works");
    assert_eq!(fake.take_calls().len(), 4);
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn pull_and_adopt_helpers() {
    let fake = FakeRuntime::new();
    assert!(fake.pull("r.example/a:v1").await.is_err());
    fake.add_registry_image("r.example/a:v1");
    assert_eq!(
        fake.pull("r.example/a:v1").await.expect("pull"),
        PullOutcome::Pulled
    );
    assert_eq!(
        fake.pull("r.example/a:v1").await.expect("pull"),
        PullOutcome::AlreadyPresent
    );

    assert!(fake.insert_unmanaged("legacy-web", "r.example/a:v1", &[]));
    assert!(fake.list_managed().await.expect("list").is_empty());
    let adopted = fake.list_by_prefix("legacy-").await.expect("list");
    assert_eq!(adopted.len(), 1);
    assert!(!adopted[0].is_managed());
}
