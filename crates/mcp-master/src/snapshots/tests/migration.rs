//! Migration against the fake fleet: the data moves, the source is
//! cleaned only after the target runs, refusals touch nothing, a gone
//! source is restored from its latest snapshot, a failed import puts the
//! service back on the source, and a master killed at every step resumes.

use super::*;
use crate::snapshots::migrate::{Step, STEPS};
use crate::state::JournalStatus;

fn at(node: &str) -> AgentTarget {
    AgentTarget {
        node: node.into(),
        address: format!("https://{node}.overlay:9444"),
    }
}

/// `w1` runs `shop` with two files; `w2` is an empty worker; `orion` the
/// master; `gate` an edge.
async fn fleet() -> Fx {
    let f = fx().await;
    let now = f.clock.now();
    let s = spec("shop");
    let placed = s.clone();
    f.store
        .rec
        .state()
        .write(move |w| {
            for (name, role) in [
                ("w1", NodeRole::Worker),
                ("w2", NodeRole::Worker),
                ("gate", NodeRole::Edge),
            ] {
                w.register_node(
                    &Registration {
                        name: name.into(),
                        role,
                        address: format!("https://{name}.overlay:9444"),
                        arch: "amd64".into(),
                    },
                    now,
                )?;
            }
            w.put_placement(&Placement {
                service: "shop".into(),
                node: "w1".into(),
                tier: Tier::Worker,
                spec_hash: spec_hash(&placed),
                spec: placed,
                deployed_at: now,
            })
        })
        .await
        .unwrap();
    f.agents.undeploy(&target(), "shop", true).await.unwrap();
    f.agents.preload("w1", &s);
    for (path, content) in [("db/data.db", "rows v1"), ("conf/app.toml", "port = 1")] {
        put_on(&f.agents, "w1", path, content).await;
    }
    f.agents.clear_calls();
    f
}

async fn put_on(agents: &FakeAgents, node: &str, path: &str, content: &str) {
    let file = FileContent {
        content: content.as_bytes().to_vec(),
        mode: 0o640,
    };
    agents
        .push_file(&at(node), "shop", path, file)
        .await
        .unwrap();
}

async fn read_on(agents: &FakeAgents, node: &str, path: &str) -> Option<String> {
    let f = agents.pull_file(&at(node), "shop", path).await.ok()?;
    Some(String::from_utf8(f.content).unwrap())
}

async fn placed_on(store: &Snapshots) -> String {
    store
        .rec
        .state()
        .read(|r| r.placement("shop"))
        .await
        .unwrap()
        .unwrap()
        .node
}

/// `shop` ended on w2 with its data, nothing of it left on w1, and the
/// journal says the move succeeded.
async fn assert_moved(agents: &FakeAgents, store: &Snapshots, case: &str) {
    assert_eq!(placed_on(store).await, "w2", "{case}");
    assert_eq!(
        read_on(agents, "w2", "db/data.db").await.as_deref(),
        Some("rows v1"),
        "{case}"
    );
    assert_eq!(read_on(agents, "w1", "db/data.db").await, None, "{case}");
    assert!(
        agents.services_on("w1").is_empty(),
        "{case}: a copy left on w1"
    );
    assert_eq!(agents.services_on("w2").len(), 1, "{case}");
    let recent = store
        .rec
        .state()
        .read(|r| r.journal_recent(Some("shop"), 1))
        .await
        .unwrap();
    assert_eq!(
        recent[0].status,
        JournalStatus::Succeeded,
        "{case}: {recent:?}"
    );
}

fn names(m: &Migration) -> Vec<&str> {
    m.steps.iter().map(|s| s.step.as_str()).collect()
}

#[tokio::test]
async fn the_data_moves_and_the_source_is_cleaned_after_the_target_runs() {
    let f = fleet().await;
    let m = f.store.migrate("shop", "w2", false).await.unwrap();
    assert!(m.moved, "{m:?}");
    assert_eq!(
        names(&m),
        [
            "stop shop on w1",
            "export shop from w1",
            // The import's step names the snapshot it reads.
            m.steps[2].step.as_str(),
            "deploy shop on w2",
            "dns shop.mcp.internal",
            "edge routes of shop",
            "clean up shop on w1",
            "placement of shop",
        ]
    );
    assert!(m.steps[2].step.starts_with("import "), "{m:?}");
    // No DNS adapter: skipped, not success.
    assert_eq!(m.steps[4].state, StepState::Skipped);
    assert_eq!(
        read_on(&f.agents, "w2", "db/data.db").await.as_deref(),
        Some("rows v1")
    );
    assert_eq!(
        read_on(&f.agents, "w2", "conf/app.toml").await.as_deref(),
        Some("port = 1")
    );
    assert_eq!(read_on(&f.agents, "w1", "db/data.db").await, None);
    assert!(f.agents.services_on("w1").is_empty());
    assert!(f.agents.services_on("w2").contains_key("shop"));
    assert_eq!(placed_on(&f.store).await, "w2");
    // The order of what touched the nodes: the source's data goes last.
    let calls: Vec<String> = f
        .agents
        .mutations()
        .iter()
        .map(|c| match c {
            Call::Stop { node, .. } => format!("stop {node}"),
            Call::ImportServiceData { node, .. } => format!("import {node}"),
            Call::Deploy { node, .. } => format!("deploy {node}"),
            Call::Undeploy { node, .. } => format!("undeploy {node}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(calls, ["stop w1", "import w2", "deploy w2", "undeploy w1"]);
    // The export is a stored snapshot like any other.
    assert_eq!(f.store.list("shop").await.unwrap().len(), 1);
    let done = f
        .store
        .rec
        .state()
        .read(|r| r.journal_recent(Some("shop"), 5))
        .await
        .unwrap();
    assert_eq!(done[0].op, MIGRATE_OP);
    assert_eq!(done[0].status, JournalStatus::Succeeded);
    assert!(
        done[0].detail.contains("moved from w1 to w2"),
        "{:?}",
        done[0]
    );
}

#[tokio::test]
async fn refusals_touch_nothing() {
    let f = fleet().await;
    for (to, why) in [
        ("w1", "already runs on w1"),
        ("gate", "edge node"),
        ("orion", "master node"),
        ("nowhere", "not registered"),
    ] {
        let e = f.store.migrate("shop", to, false).await.unwrap_err();
        assert!(e.to_string().contains(why), "{to}: {e}");
    }
    let e = f.store.migrate("ghost", "w2", false).await.unwrap_err();
    assert!(e.to_string().contains("ghost"), "{e}");
    assert!(
        f.agents.mutations().is_empty(),
        "{:?}",
        f.agents.mutations()
    );
    assert_eq!(placed_on(&f.store).await, "w1");
}

#[tokio::test]
async fn a_gone_source_is_restored_from_its_latest_snapshot() {
    let f = fleet().await;
    // Without a snapshot there is nothing to move.
    f.agents.set_unreachable("w1", true);
    let m = f.store.migrate("shop", "w2", false).await.unwrap();
    assert!(!m.moved);
    assert!(
        matches!(&m.steps[0].state, StepState::Failed(e) if e.contains("nothing to restore")),
        "{m:?}"
    );
    assert_eq!(placed_on(&f.store).await, "w1");

    f.agents.set_unreachable("w1", false);
    f.store.take("shop").await.unwrap();
    f.agents.set_unreachable("w1", true);
    f.clock.advance(Duration::from_secs(3 * 3600));
    let m = f.store.migrate("shop", "w2", false).await.unwrap();
    assert!(m.moved, "{m:?}");
    assert_eq!(m.steps[0].state, StepState::Skipped);
    assert!(
        m.steps[0].detail.contains("latest snapshot") && m.steps[0].detail.contains("3h"),
        "{m:?}"
    );
    assert_eq!(m.steps[6].state, StepState::Skipped, "no cleanup: {m:?}");
    assert_eq!(
        read_on(&f.agents, "w2", "db/data.db").await.as_deref(),
        Some("rows v1")
    );
    assert_eq!(placed_on(&f.store).await, "w2");
}

#[tokio::test]
async fn a_refused_import_puts_the_service_back_on_the_source() {
    let f = fleet().await;
    f.agents.preload("w2", &spec("shop"));
    put_on(&f.agents, "w2", "db/data.db", "someone else's").await;
    f.agents.undeploy(&at("w2"), "shop", false).await.unwrap();
    f.agents.clear_calls();
    let m = f.store.migrate("shop", "w2", false).await.unwrap();
    assert!(!m.moved);
    assert!(
        matches!(&m.steps[2].state, StepState::Failed(e) if e.contains("--force")),
        "{m:?}"
    );
    assert_eq!(m.steps.last().unwrap().step, "start shop on w1 again");
    assert!(m.steps.last().unwrap().ok(), "{m:?}");
    assert_eq!(
        read_on(&f.agents, "w1", "db/data.db").await.as_deref(),
        Some("rows v1")
    );
    assert_eq!(
        read_on(&f.agents, "w2", "db/data.db").await.as_deref(),
        Some("someone else's")
    );
    assert_eq!(placed_on(&f.store).await, "w1");
    // --force replaces the target's data.
    let m = f.store.migrate("shop", "w2", true).await.unwrap();
    assert!(m.moved, "{m:?}");
    assert_eq!(
        read_on(&f.agents, "w2", "db/data.db").await.as_deref(),
        Some("rows v1")
    );
}

/// The master dies while the n-th call that changes a node hangs (during
/// the stop, the import, the deploy, the cleanup); a new master over the
/// same database and store resumes the move from the journal.
#[tokio::test]
async fn a_master_killed_at_any_step_resumes_the_move() {
    for n in 0..4 {
        let f = fleet().await;
        f.agents.hang_after(Some(n));
        let store = Arc::new(f.store);
        let running = {
            let s = store.clone();
            tokio::spawn(async move { s.migrate("shop", "w2", false).await })
        };
        // Wait until the n-th mutation hangs, then "kill" the master.
        for _ in 0..200 {
            if f.agents.mutations().len() > n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        running.abort();
        let _ = running.await;
        let open = store
            .rec
            .state()
            .read(|r| r.journal_unfinished())
            .await
            .unwrap();
        assert_eq!(open.len(), 1, "n={n}: {open:?}");
        // The source's data is intact until the cleanup.
        if n < 3 {
            assert_eq!(
                read_on(&f.agents, "w1", "db/data.db").await.as_deref(),
                Some("rows v1"),
                "n={n}"
            );
        }
        drop(store);
        f.agents.hang_after(None);

        let again = Arc::new(store_on(f.dir.path(), &f.agents, &f.clock, true));
        let pending = again.pending_migrations().await.unwrap();
        assert_eq!(pending.len(), 1, "n={n}");
        // Claimed: a pass leaves the service alone until it is done.
        assert!(again.rec.begin_move("shop").is_none(), "n={n}");
        again.clone().resume(pending).await;
        assert_moved(&f.agents, &again, &format!("n={n}")).await;
        assert!(again
            .rec
            .state()
            .read(|r| r.journal_unfinished())
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn all_moves_every_service_off_a_node() {
    let f = fleet().await;
    let s = spec("cart");
    let placed = s.clone();
    let now = f.clock.now();
    f.store
        .rec
        .state()
        .write(move |w| {
            w.put_placement(&Placement {
                service: "cart".into(),
                node: "w1".into(),
                tier: Tier::Worker,
                spec_hash: spec_hash(&placed),
                spec: placed,
                deployed_at: now,
            })
        })
        .await
        .unwrap();
    f.agents.preload("w1", &s);
    let m = f.store.migrate_all("w1", "w2", false).await.unwrap();
    assert!(m.moved, "{m:?}");
    assert!(f.agents.services_on("w1").is_empty());
    assert_eq!(f.agents.services_on("w2").len(), 2);
    let e = f.store.migrate_all("w2", "w2", false).await.unwrap_err();
    assert!(e.to_string().contains("both w2"), "{e}");
}

/// The master dies right after journaling each step in turn — before the
/// step acts, and after it acted but before the next is journaled — and a
/// new master over the same database and store resumes: every run ends
/// moved, the source's data intact until the cleanup, one copy running.
#[tokio::test]
async fn a_master_killed_after_each_journaled_step_resumes_or_reports() {
    for step in STEPS.map(Step::name) {
        for after in [false, true] {
            let case = format!("{step} ({})", if after { "after" } else { "before" });
            let f = fleet().await;
            f.store.crash_at(Some((step, after)));
            let m = f.store.migrate("shop", "w2", false).await.unwrap();
            assert!(!m.moved, "{case}");
            let open = f
                .store
                .rec
                .state()
                .read(|r| r.journal_unfinished())
                .await
                .unwrap();
            assert_eq!(open.len(), 1, "{case}: {open:?}");
            assert_eq!(open[0].step, step, "{case}");
            let cleaned = step == "cleanup" && after || step == "placement";
            if !cleaned {
                assert_eq!(
                    read_on(&f.agents, "w1", "db/data.db").await.as_deref(),
                    Some("rows v1"),
                    "{case}: the source's data is intact until the cleanup"
                );
            }
            let again = Arc::new(store_on(f.dir.path(), &f.agents, &f.clock, true));
            let pending = again.pending_migrations().await.unwrap();
            assert_eq!(pending.len(), 1, "{case}");
            again.clone().resume(pending).await;
            if (step, after) == ("import", true) {
                // The import completed, then the master died: the target
                // holds the data, and it cannot tell that copy from one that
                // was there before. Reported, the service back on the
                // source, nothing overwritten without --force.
                let recent = again
                    .rec
                    .state()
                    .read(|r| r.journal_recent(Some("shop"), 1))
                    .await
                    .unwrap();
                assert_eq!(recent[0].status, JournalStatus::Failed, "{case}");
                assert!(recent[0].detail.contains("--force"), "{case}: {recent:?}");
                assert_eq!(placed_on(&again).await, "w1", "{case}");
                assert!(f.agents.services_on("w1").contains_key("shop"), "{case}");
                let m = again.migrate("shop", "w2", true).await.unwrap();
                assert!(m.moved, "{case}: {m:?}");
            }
            assert_moved(&f.agents, &again, &case).await;
        }
    }
}
