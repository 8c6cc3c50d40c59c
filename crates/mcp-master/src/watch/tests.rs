#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::testutil::{service_toml, Repo};

const ARRIVES_WITHIN: Duration = Duration::from_secs(10);
const QUIET_FOR: Duration = Duration::from_millis(1500);

fn opts(file_events: bool, poll: Duration) -> WatchOptions {
    WatchOptions {
        debounce: Duration::from_millis(100),
        poll,
        file_events,
    }
}

fn commit_id(s: &str) -> Option<CommitId> {
    Some(CommitId::new(s).unwrap())
}

fn start(
    repo: &Repo,
    last_seen: Option<CommitId>,
    o: WatchOptions,
) -> (HeadWatcher, mpsc::Receiver<HeadEvent>) {
    let src = GitSource::open(&repo.join("services")).unwrap();
    let (tx, rx) = mpsc::channel(8);
    (HeadWatcher::spawn(src, last_seen, o, tx), rx)
}

async fn next(rx: &mut mpsc::Receiver<HeadEvent>) -> HeadEvent {
    match tokio::time::timeout(ARRIVES_WITHIN, rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("watcher stopped"),
        Err(_) => panic!("no event within {ARRIVES_WITHIN:?}"),
    }
}

async fn none(rx: &mut mpsc::Receiver<HeadEvent>) {
    if let Ok(got) = tokio::time::timeout(QUIET_FOR, rx.recv()).await {
        panic!("expected no event, got {got:?}");
    }
}

fn repo_with_commit() -> (Repo, String) {
    let repo = Repo::new();
    repo.write("services/a.toml", service_toml("a", "v1"));
    let head = repo.commit_all("one");
    (repo, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_produces_an_event_and_uncommitted_edits_do_not() {
    let (repo, head) = repo_with_commit();
    let (w, mut rx) = start(
        &repo,
        commit_id(&head),
        opts(true, Duration::from_secs(3600)),
    );
    assert!(w.file_events_active());
    none(&mut rx).await;

    // Working-tree edits, untracked files, staging: no ref changes.
    repo.write("services/a.toml", service_toml("a", "v2"));
    repo.write("services/b.toml", service_toml("b", "v1"));
    none(&mut rx).await;
    repo.git(&["add", "-A"]);
    none(&mut rx).await;

    let c2 = repo.commit_all("two");
    let ev = next(&mut rx).await;
    assert_eq!(
        ev,
        HeadEvent {
            commit: commit_id(&c2),
            trigger: Trigger::FileEvent
        }
    );
    none(&mut rx).await;

    // Amending moves HEAD too.
    repo.git(&["commit", "-q", "--amend", "-m", "two, amended"]);
    let amended = repo.git(&["rev-parse", "HEAD"]);
    assert_ne!(amended, c2);
    assert_eq!(next(&mut rx).await.commit, commit_id(&amended));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_switches_report_only_commit_changes() {
    let (repo, c1) = repo_with_commit();
    repo.write("services/b.toml", service_toml("b", "v1"));
    let c2 = repo.commit_all("two");
    let (_w, mut rx) = start(&repo, commit_id(&c2), opts(true, Duration::from_secs(3600)));

    // A new branch at the same commit: HEAD's commit is unchanged.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    none(&mut rx).await;

    repo.git(&["checkout", "-q", &c1]);
    assert_eq!(next(&mut rx).await.commit, commit_id(&c1));
    repo.git(&["checkout", "-q", "main"]);
    assert_eq!(next(&mut rx).await.commit, commit_id(&c2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_refs_and_reset_are_seen() {
    let (repo, c1) = repo_with_commit();
    let c2 = repo.commit_all("two");
    let (_w, mut rx) = start(&repo, commit_id(&c2), opts(true, Duration::from_secs(3600)));
    repo.git(&["pack-refs", "--all"]);
    none(&mut rx).await;
    repo.git(&["reset", "-q", "--hard", &c1]);
    assert_eq!(next(&mut rx).await.commit, commit_id(&c1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_alone_notices_commits() {
    let (repo, head) = repo_with_commit();
    let (w, mut rx) = start(
        &repo,
        commit_id(&head),
        opts(false, Duration::from_millis(200)),
    );
    assert!(!w.file_events_active());
    none(&mut rx).await;
    let c2 = repo.commit_all("two");
    let ev = next(&mut rx).await;
    assert_eq!(
        ev,
        HeadEvent {
            commit: commit_id(&c2),
            trigger: Trigger::Poll
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_made_before_the_watch_started_is_reported_at_start() {
    let (repo, c1) = repo_with_commit();
    let c2 = repo.commit_all("two");
    let (_w, mut rx) = start(&repo, commit_id(&c1), opts(true, Duration::from_secs(3600)));
    assert_eq!(
        next(&mut rx).await,
        HeadEvent {
            commit: commit_id(&c2),
            trigger: Trigger::Start
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_commit_of_an_empty_repository_is_reported() {
    let repo = Repo::new();
    std::fs::create_dir(repo.join("services")).unwrap();
    let (_w, mut rx) = start(&repo, None, opts(true, Duration::from_secs(3600)));
    none(&mut rx).await;
    repo.write("services/a.toml", service_toml("a", "v1"));
    let c1 = repo.commit_all("first");
    assert_eq!(next(&mut rx).await.commit, commit_id(&c1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_worktrees_are_watched() {
    let (repo, _) = repo_with_commit();
    let wt_parent = tempfile::tempdir().unwrap();
    let wt = wt_parent.path().join("wt");
    repo.git(&[
        "worktree",
        "add",
        "-q",
        "-b",
        "deploy",
        wt.to_str().unwrap(),
    ]);
    let src = GitSource::open(&wt.join("services")).unwrap();
    assert_ne!(src.git_dir(), src.common_dir());
    let head = src.head().unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let _w = HeadWatcher::spawn(src, head, opts(true, Duration::from_secs(3600)), tx);
    none(&mut rx).await;

    // A commit on another branch of the same repository changes nothing here.
    repo.write("services/b.toml", service_toml("b", "v1"));
    repo.commit_all("on main");
    none(&mut rx).await;

    let run = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&wt)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    std::fs::write(wt.join("services/c.toml"), service_toml("c", "v1")).unwrap();
    run(&["add", "-A"]);
    run(&["commit", "-q", "-m", "on deploy"]);
    let c = run(&["rev-parse", "HEAD"]);
    assert_eq!(next(&mut rx).await.commit, commit_id(&c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_stops_when_the_receiver_is_dropped() {
    let (repo, head) = repo_with_commit();
    let (w, rx) = start(
        &repo,
        commit_id(&head),
        opts(true, Duration::from_secs(3600)),
    );
    drop(rx);
    let deadline = Instant::now() + ARRIVES_WITHIN;
    while !w.task.is_finished() {
        assert!(Instant::now() < deadline, "watcher task still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn debounce_waits_for_quiet_but_not_forever() {
    let (tx, mut rx) = mpsc::channel(1);
    // A steady stream of wake-ups every 50ms never leaves 100ms of quiet.
    tokio::spawn(async move {
        loop {
            if tx.send(()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let t0 = Instant::now();
    debounce(&mut rx, Duration::from_millis(100)).await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert!(took <= Duration::from_millis(1100), "{took:?}");

    let (_tx2, mut quiet_rx) = mpsc::channel::<()>(1);
    let t0 = Instant::now();
    debounce(&mut quiet_rx, Duration::from_millis(100)).await;
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
}

#[test]
fn the_filter_keeps_ref_changes_only() {
    let f = Filter {
        dirs: vec![PathBuf::from("/r/.git")],
        refs: PathBuf::from("/r/.git/refs"),
    };
    for yes in [
        "/r/.git/HEAD",
        "/r/.git/HEAD.lock",
        "/r/.git/packed-refs",
        "/r/.git/refs/heads/main",
        "/r/.git/refs/heads/feature/x.lock",
    ] {
        assert!(f.relevant(Path::new(yes)), "{yes}");
    }
    for no in [
        "/r/.git/index",
        "/r/.git/index.lock",
        "/r/.git/ORIG_HEADX",
        "/r/.git/objects/ab/cdef",
        "/r/.git/logs/HEAD",
        "/r/services/HEAD",
    ] {
        assert!(!f.relevant(Path::new(no)), "{no}");
    }
}
