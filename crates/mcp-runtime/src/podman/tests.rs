//! Tests of `podman`.

use std::time::SystemTime;

use super::json::*;
use super::*;

#[test]
fn rfc3339() {
    let t = parse_rfc3339("2026-11-22T02:23:35.504051745Z").expect("parses");
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after epoch");
    assert_eq!(d.as_secs(), 1_795_314_215);
    assert_eq!(d.subsec_nanos(), 504_051_745);
    let t2 = parse_rfc3339("2026-11-22T03:23:35.504051745+01:00").expect("offset");
    assert_eq!(t, t2);
    assert_eq!(
        parse_rfc3339("1970-01-01T00:00:01Z"),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
    );
    assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None);
    assert_eq!(parse_rfc3339("garbage"), None);
}

#[test]
fn inspect_json() {
    let json = br#"[{"Id":"abc","Name":"web","Image":"sha","ImageName":"localhost/x:v1",
        "State":{"Status":"exited","ExitCode":137,"StartedAt":"2026-11-22T02:23:35Z",
                 "FinishedAt":"0001-01-01T00:00:00Z"},
        "RestartCount":2,
        "Config":{"Labels":{"mcp.service":"x"}},
        "HostConfig":{"PortBindings":{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":"18080"}],
                                      "53/udp":null}}}]"#;
    let infos = parse_inspect(json, "web").expect("parses");
    let i = &infos[0];
    assert_eq!(i.state, ContainerState::Exited);
    assert_eq!(i.exit_code, Some(137));
    assert_eq!(i.image, "localhost/x:v1");
    assert_eq!(i.version(), "v1");
    assert_eq!(i.restart_count, 2);
    assert_eq!(i.service(), Some("x"));
    assert!(i.finished_at.is_none());
    assert_eq!(
        i.ports,
        vec![PortBinding::tcp(
            "127.0.0.1".parse().expect("ip"),
            18080,
            8080
        )]
    );
}

#[test]
fn run_args_are_flag_value_pairs() {
    let mut c = ContainerConfig::new("web", "localhost/x:v1", "svc", "web", "n1");
    c.env = vec!["A=1".into()];
    c.cmd = vec!["--not-a-flag".into()];
    c.ports = vec![PortBinding::tcp("127.0.0.1".parse().expect("ip"), 1, 2)];
    let args = run_args(&c);
    assert_eq!(args.last().map(String::as_str), Some("--not-a-flag"));
    assert!(args.contains(&"--label=mcp.node=n1".to_string()));
    assert!(args.contains(&"--env=A=1".to_string()));
    assert!(args.contains(&"--publish=127.0.0.1:1:2/tcp".to_string()));
    let image_pos = args.iter().position(|a| a == "localhost/x:v1");
    assert_eq!(image_pos, Some(args.len() - 2));
}
