//! The store against the fake fleet: files, rows, checksums, retention,
//! the mirror, staleness, the schedule, restore, and a master rebuilt from
//! the mirror restoring a service.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mcp_planner::Policy;
use mcp_security::clock::{Clock, ManualClock};
use mcp_spec::{parse_service, spec_hash, LoadOptions, ServiceSpec, Tier};

use super::*;
use crate::agents::{AgentApi, AgentTarget, FileContent};
use crate::config::NodeRole;
use crate::fake::{Call, FakeAgents};
use crate::reconcile::{DesiredSource, Settings};
use crate::state::{Placement, Registration, State};

const T0: u64 = 1_735_689_600;
const DAY: Duration = Duration::from_secs(86_400);

struct Fx {
    dir: tempfile::TempDir,
    agents: Arc<FakeAgents>,
    clock: ManualClock,
    store: Snapshots,
}

fn spec(name: &str) -> ServiceSpec {
    let text = format!(
        "name = \"{name}\"\n[[components]]\nname = \"api\"\nimage = \"registry.example:8443/{name}:v1\"\n"
    );
    parse_service(
        &format!("{name}.toml"),
        name,
        &text,
        &LoadOptions::default(),
    )
    .unwrap()
}

fn target() -> AgentTarget {
    AgentTarget {
        node: "orion".into(),
        address: "https://orion.overlay:9444".into(),
    }
}

fn store_on(root: &Path, agents: &Arc<FakeAgents>, clock: &ManualClock, mirror: bool) -> Snapshots {
    let state = Arc::new(State::open(&root.join("master.db")).unwrap());
    let rec = Arc::new(Reconciler::new(
        state,
        agents.clone(),
        Arc::new(clock.clone()),
        DesiredSource::Push,
        Settings {
            policy: Policy::default(),
            concurrency: 1,
            list_timeout: Duration::from_secs(2),
            heal_settle: Duration::from_secs(10),
            interval: Duration::from_secs(60),
        },
    ));
    Snapshots::new(
        rec,
        StoreSettings {
            dir: root.join("snapshots"),
            interval: DAY,
            retain: 3,
            mirror: mirror.then(|| root.join("mirror")),
            timeout: Duration::from_secs(10),
            database: Some(root.join("master.db")),
        },
    )
}

/// orion runs `shop` (placed at T0) with two files.
async fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let agents = Arc::new(FakeAgents::new());
    let clock = ManualClock::at_unix(T0);
    let store = store_on(dir.path(), &agents, &clock, true);
    let now = clock.now();
    let s = spec("shop");
    let placed = s.clone();
    store
        .rec
        .state()
        .write(move |w| {
            w.register_node(
                &Registration {
                    name: "orion".into(),
                    role: NodeRole::Master,
                    address: "https://orion.overlay:9444".into(),
                    arch: "amd64".into(),
                },
                now,
            )?;
            w.put_placement(&Placement {
                service: "shop".into(),
                node: "orion".into(),
                tier: Tier::Worker,
                spec_hash: spec_hash(&placed),
                spec: placed,
                deployed_at: now,
            })
        })
        .await
        .unwrap();
    agents.preload("orion", &s);
    for (path, content) in [("db/data.db", "rows v1"), ("conf/app.toml", "port = 1")] {
        put(&agents, path, content).await;
    }
    Fx {
        dir,
        agents,
        clock,
        store,
    }
}

async fn put(agents: &FakeAgents, path: &str, content: &str) {
    agents
        .push_file(
            &target(),
            "shop",
            path,
            FileContent {
                content: content.as_bytes().to_vec(),
                mode: 0o640,
            },
        )
        .await
        .unwrap();
}

async fn read(agents: &FakeAgents, path: &str) -> String {
    let f = agents.pull_file(&target(), "shop", path).await.unwrap();
    String::from_utf8(f.content).unwrap()
}

#[tokio::test]
async fn a_snapshot_is_a_file_a_row_and_a_verified_mirror_copy() {
    let f = fx().await;
    let t = f.store.take("shop").await.unwrap();
    let r = &t.record;
    assert_eq!(r.file, "2025-01-01T00-00-00Z.tar.zst");
    assert_eq!((r.service.as_str(), r.node.as_str()), ("shop", "orion"));
    let path = f.dir.path().join("snapshots/shop").join(&r.file);
    assert_eq!(f.store.path_of(r), path);
    let (sha, size) = files::hash_file(&path).unwrap();
    assert_eq!((sha.as_str(), size), (r.checksum.as_str(), r.size));
    let mirror = f.dir.path().join("mirror/shop").join(&r.file);
    assert_eq!(t.mirrored, Mirrored::Copied(mirror.clone()));
    assert_eq!(
        std::fs::read(&mirror).unwrap(),
        std::fs::read(&path).unwrap()
    );
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, std::slice::from_ref(&r.file));
    assert_eq!(f.store.list("shop").await.unwrap(), std::slice::from_ref(r));
    // A second one in the same second gets its own name.
    let again = f.store.take("shop").await.unwrap();
    assert_eq!(again.record.file, "2025-01-01T00-00-00Z-1.tar.zst");
    // Unknown services are named.
    let e = f.store.take("nope").await.unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[tokio::test]
async fn retention_keeps_exactly_n_in_the_store_and_the_mirror() {
    let f = fx().await;
    let mut all = Vec::new();
    for _ in 0..5 {
        all.push(f.store.take("shop").await.unwrap().record.file);
        f.clock.advance(Duration::from_secs(3600));
    }
    let kept: Vec<String> = f
        .store
        .list("shop")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.file)
        .collect();
    let newest: Vec<String> = all.iter().rev().take(3).cloned().collect();
    assert_eq!(kept, newest);
    for root in ["snapshots/shop", "mirror/shop"] {
        let mut on_disk: Vec<String> = std::fs::read_dir(f.dir.path().join(root))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        on_disk.sort();
        let mut want = newest.clone();
        want.sort();
        assert_eq!(on_disk, want, "{root}");
    }
    // A file MCP did not record is never touched.
    let stranger = f.dir.path().join("snapshots/shop/keep-me.tar.zst");
    std::fs::write(&stranger, "mine").unwrap();
    f.store.take("shop").await.unwrap();
    assert!(stranger.exists());
    assert_eq!(f.store.list("shop").await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_failed_export_stores_nothing() {
    let f = fx().await;
    // A failing export leaves nothing.
    f.agents.fail_next("ExportServiceData", "orion", 1);
    assert!(f.store.take("shop").await.is_err());
    assert!(f.store.list("shop").await.unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(f.dir.path().join("snapshots/shop"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn stale_after_twice_the_interval_and_the_schedule_snapshots_due_services() {
    let f = fx().await;
    let fresh = f.store.freshness_all().await.unwrap();
    assert_eq!(
        fresh,
        [(
            "shop".to_string(),
            Freshness {
                last: None,
                stale: false
            }
        )]
    );
    // Placed two days and a second ago, never snapshotted: stale.
    f.clock.advance(2 * DAY + Duration::from_secs(1));
    assert!(f.store.freshness_all().await.unwrap()[0].1.stale);
    let out = f.store.scheduled_pass().await;
    assert_eq!(out.stale, ["shop"]);
    assert_eq!(out.taken.len(), 1);
    // The pass also snapshotted the database, mirrored.
    let dbs = files::db_snapshots(&f.dir.path().join("snapshots/_master")).unwrap();
    assert_eq!(dbs.len(), 1);
    assert_eq!(
        files::db_snapshots(&f.dir.path().join("mirror/_master"))
            .unwrap()
            .len(),
        1
    );
    let fresh = f.store.freshness_all().await.unwrap();
    assert!(!fresh[0].1.stale);
    assert_eq!(fresh[0].1.last, Some(f.clock.now()));
    // Not due again within the interval.
    f.clock.advance(DAY / 2);
    assert!(f.store.scheduled_pass().await.taken.is_empty());
    // Due after it (live: no stop or start).
    f.clock.advance(DAY / 2);
    f.agents.clear_calls();
    assert_eq!(f.store.scheduled_pass().await.taken.len(), 1);
    assert_eq!(
        f.agents.mutations(),
        Vec::<Call>::new(),
        "a scheduled snapshot changes nothing on the node"
    );
    // Older than twice the interval: stale again.
    f.clock.advance(2 * DAY + Duration::from_secs(1));
    assert!(f.store.freshness_all().await.unwrap()[0].1.stale);
}

#[tokio::test]
async fn restore_stops_imports_and_starts() {
    let f = fx().await;
    let first = f.store.take("shop").await.unwrap().record;
    put(&f.agents, "db/data.db", "rows v2").await;
    f.clock.advance(Duration::from_secs(60));
    f.store.take("shop").await.unwrap();
    put(&f.agents, "db/data.db", "rows v3").await;

    // Without --force, existing data is not replaced; the service runs again.
    let steps = f.store.restore("shop", None, false).await.unwrap();
    assert!(
        matches!(&steps[1].state, StepState::Failed(e) if e.contains("--force")),
        "{steps:?}"
    );
    assert_eq!(steps[2].state, StepState::Done);
    assert_eq!(read(&f.agents, "db/data.db").await, "rows v3");

    f.agents.clear_calls();
    let steps = f.store.restore("shop", None, true).await.unwrap();
    assert!(steps.iter().all(RestoreStep::ok), "{steps:?}");
    let names: Vec<&str> = steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(names[0], "stop shop on orion");
    assert!(
        names[1].starts_with("import 2025-01-01T00-01-00Z.tar.zst into shop"),
        "{names:?}"
    );
    assert_eq!(names[2], "start shop on orion");
    assert_eq!(read(&f.agents, "db/data.db").await, "rows v2");
    let kinds: Vec<&str> = f
        .agents
        .mutations()
        .iter()
        .map(|c| match c {
            Call::Stop { .. } => "stop",
            Call::ImportServiceData { force: true, .. } => "import",
            Call::Start { .. } => "start",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["stop", "import", "start"]);

    // A chosen snapshot.
    let steps = f
        .store
        .restore("shop", Some(&first.file), true)
        .await
        .unwrap();
    assert!(steps.iter().all(RestoreStep::ok), "{steps:?}");
    assert_eq!(read(&f.agents, "db/data.db").await, "rows v1");
    let e = f
        .store
        .restore("shop", Some("1999.tar.zst"), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1999.tar.zst"), "{e}");
}

#[tokio::test]
async fn a_master_rebuilt_from_the_mirror_restores_a_service() {
    let f = fx().await;
    let taken = f.store.take("shop").await.unwrap().record;
    let db = f.store.snapshot_db().await.unwrap().unwrap();
    let stored = std::fs::read(f.store.path_of(&taken)).unwrap();
    // The master node is lost: only the mirror remains.
    let mirror = f.dir.path().join("mirror");
    let fresh = tempfile::tempdir().unwrap();
    let db_copy = mirror.join(MASTER_DIR).join(db.path.file_name().unwrap());
    std::fs::copy(&db_copy, fresh.path().join("master.db")).unwrap();
    copy_tree(&mirror, &fresh.path().join("snapshots"));
    drop(f.store);
    std::fs::remove_dir_all(f.dir.path().join("snapshots")).unwrap();

    // A new node runs the service, with no data yet.
    let agents = Arc::new(FakeAgents::new());
    agents.preload("orion", &spec("shop"));
    let rebuilt = store_on(fresh.path(), &agents, &f.clock, false);
    let listed = rebuilt.list("shop").await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&taken));
    let steps = rebuilt.restore("shop", None, false).await.unwrap();
    assert!(steps.iter().all(RestoreStep::ok), "{steps:?}");
    let imports = agents.imports();
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].2, stored, "the node received the stored bytes");
    assert_eq!(read(&agents, "db/data.db").await, "rows v1");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn database_snapshots_keep_n_and_mirror_verified() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("master.db");
    drop(State::open(&db).unwrap());
    let (store, mirror) = (dir.path().join("s"), dir.path().join("m"));
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(T0);
    for i in 0..4 {
        let out =
            snapshot_database(&db, &store, Some(&mirror), 2, t0 + Duration::from_secs(i)).unwrap();
        assert_eq!(
            files::hash_file(out.mirrored.as_ref().unwrap()).unwrap().0,
            out.sha256
        );
    }
    let kept = files::db_snapshots(&store.join(MASTER_DIR)).unwrap();
    let names: Vec<String> = kept
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "mcp-master-2025-01-01T00-00-02Z.db",
            "mcp-master-2025-01-01T00-00-03Z.db"
        ]
    );
    assert_eq!(
        files::db_snapshots(&mirror.join(MASTER_DIR)).unwrap().len(),
        2
    );
    // The copy opens as a master database.
    State::open(&kept[1]).unwrap();
    let e = snapshot_database(&dir.path().join("none.db"), &store, None, 2, t0).unwrap_err();
    assert!(e.to_string().contains("none.db"), "{e}");
}

mod migration;

#[test]
fn partial_snapshots_left_by_a_dead_master_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let shop = dir.path().join("shop");
    std::fs::create_dir_all(&shop).unwrap();
    for name in [
        ".tmp-2025-01-01T00-00-00Z.tar.zst",
        "2025-01-01T00-00-00Z.tar.zst",
        "notes.txt",
    ] {
        std::fs::write(shop.join(name), "x").unwrap();
    }
    let removed = files::remove_leftovers(dir.path());
    assert_eq!(removed, [shop.join(".tmp-2025-01-01T00-00-00Z.tar.zst")]);
    let mut left: Vec<String> = std::fs::read_dir(&shop)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["2025-01-01T00-00-00Z.tar.zst", "notes.txt"]);
    assert!(files::remove_leftovers(&dir.path().join("missing")).is_empty());
}
