//! The alert command runs for real: argv without a shell, alert data in the
//! environment, passed literally.

use std::path::Path;
use std::time::Duration;

use mcp_agent::{Alert, AlertError, Alerter};

/// Writes a script that records its arguments and the MCP_* variables to
/// the file named by its first argument. Run through `/bin/sh script ...`
/// so the test never executes a file it has just written (ETXTBSY).
fn recorder(dir: &Path) -> String {
    let script = dir.join("record.sh");
    std::fs::write(
        &script,
        r#"out="$1"; shift
{
  printf 'argc=%s\n' "$#"
  for a in "$@"; do printf 'arg=%s\n' "$a"; done
  for v in MCP_SERVICE MCP_COMPONENT MCP_NODE MCP_EVENT MCP_DETAIL; do
    eval "val=\${$v}"
    printf '%s=%s\n' "$v" "$val"
  done
} > "$out"
"#,
    )
    .expect("write script");
    script.to_string_lossy().into_owned()
}

fn alert(detail: &str) -> Alert {
    Alert {
        key: "drift:mcq/api".into(),
        service: "mcq".into(),
        component: "api".into(),
        event: "drift".into(),
        detail: detail.into(),
        node: String::new(),
    }
}

#[tokio::test]
async fn argv_and_environment_arrive_literally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.txt");
    let pwned = dir.path().join("pwned");
    let pwned2 = dir.path().join("pwned2");
    let injection = format!(
        "$(touch {}); `touch {}`; echo $HOME",
        pwned.display(),
        pwned2.display()
    );
    let argv = vec![
        "/bin/sh".to_string(),
        recorder(dir.path()),
        out.to_string_lossy().into_owned(),
        "--channel".into(),
        "two words".into(),
        injection.clone(),
    ];
    let alerter = Alerter::new(argv, "orion").expect("alerter");
    alerter.send(&alert(&injection)).await.expect("send");

    let got = std::fs::read_to_string(&out).expect("recorded");
    let want = format!(
        "argc=3\narg=--channel\narg=two words\narg={injection}\n\
         MCP_SERVICE=mcq\nMCP_COMPONENT=api\nMCP_NODE=orion\nMCP_EVENT=drift\n\
         MCP_DETAIL={injection}\n"
    );
    assert_eq!(got, want);
    assert!(!pwned.exists(), "command substitution was executed");
    assert!(!pwned2.exists(), "backticks were executed");
}

#[tokio::test]
async fn failure_carries_stderr() {
    let argv = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        "echo 'webhook refused' >&2; exit 3".into(),
    ];
    let alerter = Alerter::new(argv, "orion").expect("alerter");
    let err = alerter.send(&alert("x")).await.expect_err("exit 3");
    assert!(matches!(err, AlertError::Failed { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("drift:mcq/api"), "{msg}");
    assert!(msg.contains("webhook refused"), "{msg}");
    assert!(msg.contains('3'), "{msg}");
}

#[tokio::test]
async fn missing_program_is_a_spawn_error() {
    let alerter = Alerter::new(vec!["/nonexistent/notify".into()], "orion").expect("alerter");
    let err = alerter.send(&alert("x")).await.expect_err("no program");
    assert!(matches!(err, AlertError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/notify"));
}

#[tokio::test]
async fn a_hung_command_times_out() {
    let alerter = Alerter::new(vec!["/bin/sleep".into(), "30".into()], "orion")
        .expect("alerter")
        .with_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = alerter.send(&alert("x")).await.expect_err("timeout");
    assert!(matches!(err, AlertError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn empty_commands_make_no_alerter() {
    assert!(Alerter::new(vec![], "orion").is_none());
    assert!(Alerter::new(vec![String::new(), "x".into()], "orion").is_none());
    let a = Alerter::new(vec!["notify".into(), "-v".into()], "orion").expect("alerter");
    assert_eq!(a.argv(), vec!["notify".to_string(), "-v".to_string()]);
}
