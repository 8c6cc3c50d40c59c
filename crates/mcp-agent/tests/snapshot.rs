//! `snapshot_database`: valid backups, naming, retention.

mod common;

use common::{hash, service, T0};
use mcp_agent::snapshot::list_snapshots;
use mcp_agent::{snapshot_database, PortRange, Registry, SnapshotError, Timestamp};

/// A registry with rows, left open (returned): the backup must work while
/// the agent runs, with committed data still in the WAL.
fn populated(dir: &std::path::Path) -> (std::path::PathBuf, Registry) {
    let path = dir.join("agent.db");
    let mut r = Registry::open(&path).expect("open");
    let s = service("app", &[("web", &[""])]);
    r.upsert_service(&s, &hash(&s)).expect("deploy");
    r.allocate_service_ports(
        &s,
        PortRange::new(20000, 20010).expect("range"),
        &|_: u16| true,
    )
    .expect("ports");
    (path, r)
}

#[test]
fn backup_is_a_valid_database_with_the_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, _live) = populated(dir.path());
    let snaps = dir.path().join("snapshots");
    let out = snapshot_database(&db, &snaps, 7, Timestamp::from_unix(T0)).expect("snapshot");
    assert_eq!(out.path, snaps.join("mcp-agent-20240501T120000Z.db"));
    assert!(out.size > 0);
    assert!(out.removed.is_empty());

    // No -wal / -shm next to the copy, no leftover temporary file.
    let names: Vec<String> = std::fs::read_dir(&snaps)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["mcp-agent-20240501T120000Z.db".to_string()]);

    let copy = Registry::open(&out.path).expect("open backup");
    let svc = copy.get_service("app").expect("read").expect("service row");
    assert_eq!(svc.components.len(), 1);
    assert_eq!(copy.ports(Some("app")).expect("ports").len(), 1);
}

#[test]
fn keeps_the_newest_n() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, _live) = populated(dir.path());
    let snaps = dir.path().join("snapshots");
    std::fs::create_dir_all(&snaps).expect("mkdir");
    std::fs::write(snaps.join("notes.txt"), "not a snapshot").expect("write");

    let day = 86_400;
    let mut all_removed = Vec::new();
    for i in 0..5 {
        let out = snapshot_database(&db, &snaps, 3, Timestamp::from_unix(T0 + i * day))
            .expect("snapshot");
        all_removed.extend(out.removed);
    }
    let kept: Vec<String> = list_snapshots(&snaps)
        .expect("list")
        .iter()
        .map(|s| {
            s.path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        kept,
        vec![
            "mcp-agent-20240503T120000Z.db",
            "mcp-agent-20240504T120000Z.db",
            "mcp-agent-20240505T120000Z.db",
        ]
    );
    let removed: Vec<String> = all_removed
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        removed,
        vec![
            "mcp-agent-20240501T120000Z.db",
            "mcp-agent-20240502T120000Z.db",
        ]
    );
    assert!(
        snaps.join("notes.txt").exists(),
        "other files are left alone"
    );
}

#[test]
fn same_second_gets_a_suffix_and_orders_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, _live) = populated(dir.path());
    let snaps = dir.path().join("snapshots");
    let t = Timestamp::from_unix(T0);
    let a = snapshot_database(&db, &snaps, 2, t).expect("first");
    let b = snapshot_database(&db, &snaps, 2, t).expect("second");
    let c = snapshot_database(&db, &snaps, 2, t).expect("third");
    assert_eq!(
        b.path.file_name().expect("name"),
        "mcp-agent-20240501T120000Z-1.db"
    );
    assert_eq!(c.removed, vec![a.path]);
    let kept: Vec<_> = list_snapshots(&snaps)
        .expect("list")
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(kept, vec![b.path, c.path]);
}

#[test]
fn missing_database_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("absent.db");
    let err = snapshot_database(&db, &dir.path().join("s"), 7, Timestamp::from_unix(T0))
        .expect_err("no database");
    assert!(matches!(err, SnapshotError::NoDatabase { .. }));
    assert!(err.to_string().contains("absent.db"), "{err}");
    assert!(!db.exists());
}

#[test]
fn keep_zero_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, _live) = populated(dir.path());
    let err = snapshot_database(&db, dir.path(), 0, Timestamp::from_unix(T0)).expect_err("keep 0");
    assert!(matches!(err, SnapshotError::KeepZero));
}
