//! Schema and state round trips of the registry.

use super::*;

fn version(conn: &Connection) -> u32 {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version")
}

fn has_table(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )
    .expect("sqlite_master")
}

#[test]
fn migrations_apply_in_order_and_only_once() {
    let mut conn = Connection::open_in_memory().expect("open");
    let path = Path::new(":memory:");
    let v1 = ["CREATE TABLE a (x INTEGER) STRICT;"];
    migrate(&mut conn, path, &v1).expect("v1");
    assert_eq!(version(&conn), 1);
    // Re-running does not re-apply (CREATE TABLE a would fail).
    migrate(&mut conn, path, &v1).expect("v1 again");
    let v2 = [v1[0], "ALTER TABLE a ADD COLUMN y TEXT;"];
    migrate(&mut conn, path, &v2).expect("v2");
    assert_eq!(version(&conn), 2);
}

#[test]
fn a_failing_migration_leaves_the_schema_untouched() {
    let mut conn = Connection::open_in_memory().expect("open");
    let path = Path::new("/var/lib/mcp/agent.db");
    let broken = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (oops"];
    let err = migrate(&mut conn, path, &broken).expect_err("broken v2");
    assert!(
        matches!(err, RegistryError::Migrate { version: 2, .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with("cannot migrate registry /var/lib/mcp/agent.db to schema version 2"));
    assert_eq!(version(&conn), 0);
    assert!(!has_table(&conn, "a"), "v1 rolled back with v2");
}

#[test]
fn in_memory_registry_works() {
    let mut r = Registry::open_in_memory().expect("open");
    assert_eq!(r.user_version().expect("version"), schema_version());
    r.mark_alert_sent("k", Timestamp::from_unix(1))
        .expect("write");
    assert_eq!(r.alerts_sent().expect("read").len(), 1);
}

#[test]
fn states_round_trip() {
    for s in ["running", "stopped", "ignore"] {
        assert_eq!(DesiredState::parse(s).map(DesiredState::as_str), Some(s));
    }
    assert_eq!(DesiredState::parse("Running"), None);
    for s in [
        "unknown",
        "missing",
        "created",
        "running",
        "paused",
        "restarting",
        "stopping",
        "exited",
        "stopped",
        "removing",
    ] {
        assert_eq!(ObservedState::parse(s).as_str(), s);
    }
    assert_eq!(ObservedState::parse("Up"), ObservedState::Running);
    assert_eq!(ObservedState::parse("dead"), ObservedState::Exited);
    for k in ["state", "restart", "drift", "flapping", "deploy"] {
        assert_eq!(EventKind::parse(k).as_str(), k);
    }
}
