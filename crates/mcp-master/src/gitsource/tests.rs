#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use mcp_spec::LoadOptions;

use super::*;
use crate::testutil::{service_toml, Repo};

fn load(repo: &Repo, sub: &str) -> DesiredTree {
    let src = GitSource::open(&repo.join(sub)).unwrap();
    src.load(&LoadOptions::default()).unwrap()
}

fn unreadable_summary(t: &DesiredTree) -> Vec<(String, String, String)> {
    t.loaded
        .unreadable
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                u.file.display().to_string(),
                u.errors
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" | "),
            )
        })
        .collect()
}

#[test]
fn reads_the_committed_tree_not_the_working_tree() {
    let repo = Repo::new();
    repo.write("services/mcq.toml", service_toml("mcq", "v1"));
    repo.write(
        "services/broken.toml",
        "name = \"broken\"\n[[components]]\nname = 3\n",
    );
    repo.write("README.md", "hi");
    let head = repo.commit_all("first");

    // Uncommitted edits of every kind.
    repo.write("services/mcq.toml", service_toml("mcq", "v2"));
    repo.write("services/untracked.toml", service_toml("untracked", "v1"));
    repo.write("services/staged.toml", service_toml("staged", "v1"));
    repo.git(&["add", "services/staged.toml"]);
    std::fs::remove_file(repo.join("services/broken.toml")).unwrap();

    let t = load(&repo, "services");
    assert_eq!(t.commit.as_ref().map(CommitId::as_str), Some(head.as_str()));
    assert_eq!(t.loaded.services.keys().collect::<Vec<_>>(), vec!["mcq"]);
    assert_eq!(
        t.loaded.services["mcq"].components[0].image,
        "registry.example:8443/mcq:v1"
    );
    let u = unreadable_summary(&t);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].0, "broken");
    assert_eq!(u[0].1, "services/broken.toml");
    assert!(
        u[0].2
            .contains("services/broken.toml:3:8: name must be a string, found integer"),
        "{}",
        u[0].2
    );
    assert_eq!(
        t.describe(),
        format!("commit {}: 1 services, 1 unreadable (held)", &head[..12])
    );
}

#[test]
fn a_new_commit_is_seen_and_older_commits_can_be_loaded() {
    let repo = Repo::new();
    repo.write("services/a.toml", service_toml("a", "v1"));
    let c1 = repo.commit_all("one");
    repo.write("services/b.toml", service_toml("b", "v1"));
    let c2 = repo.commit_all("two");

    let src = GitSource::open(&repo.join("services")).unwrap();
    let t = src.load(&LoadOptions::default()).unwrap();
    assert_eq!(t.commit.unwrap().as_str(), c2);
    assert_eq!(t.loaded.services.len(), 2);

    let old = src
        .load_commit(&CommitId::new(&c1).unwrap(), &LoadOptions::default())
        .unwrap();
    assert_eq!(old.services.keys().collect::<Vec<_>>(), vec!["a"]);
}

#[test]
fn services_dir_may_be_the_repository_root() {
    let repo = Repo::new();
    repo.write("mcq.toml", service_toml("mcq", "v1"));
    repo.write("nested/other.toml", service_toml("other", "v1"));
    repo.commit_all("c");
    let src = GitSource::open(repo.dir.path()).unwrap();
    assert_eq!(src.prefix(), "");
    assert_eq!(src.root(), repo.path());
    let t = src.load(&LoadOptions::default()).unwrap();
    assert_eq!(t.loaded.services.keys().collect::<Vec<_>>(), vec!["mcq"]);
    assert!(t.loaded.unreadable.is_empty());
}

#[test]
fn only_visible_toml_files_directly_in_the_dir_count() {
    let repo = Repo::new();
    repo.write("platform/services/mcq.toml", service_toml("mcq", "v1"));
    repo.write("platform/services/.hidden.toml", "garbage");
    repo.write("platform/services/notes.md", "garbage");
    repo.write("platform/services/sub/x.toml", "garbage");
    repo.write("platform/other/y.toml", "garbage");
    repo.write("platform/services2/z.toml", "garbage");
    repo.commit_all("c");
    let src = GitSource::open(&repo.join("platform/services")).unwrap();
    assert_eq!(src.prefix(), "platform/services/");
    let t = src.load(&LoadOptions::default()).unwrap();
    assert_eq!(t.loaded.services.keys().collect::<Vec<_>>(), vec!["mcq"]);
    assert!(t.loaded.unreadable.is_empty(), "{:?}", t.loaded.unreadable);
}

#[test]
fn name_must_match_the_file_stem() {
    let repo = Repo::new();
    repo.write("services/mcq.toml", service_toml("other", "v1"));
    repo.commit_all("c");
    let t = load(&repo, "services");
    assert!(t.loaded.services.is_empty());
    assert_eq!(t.loaded.unreadable[0].name, "mcq");
    assert!(t.loaded.unreadable[0].errors[0]
        .to_string()
        .starts_with("services/mcq.toml:1:"));
}

#[test]
fn no_commits_yet_is_an_empty_desired_state() {
    let repo = Repo::new();
    repo.write("services/mcq.toml", service_toml("mcq", "v1"));
    let t = load(&repo, "services");
    assert_eq!(t.commit, None);
    assert!(t.loaded.services.is_empty());
    assert!(t.loaded.unreadable.is_empty());
    assert_eq!(t.describe(), "no commits yet: the desired state is empty");
}

#[test]
fn a_commit_without_the_services_dir_is_an_error() {
    let repo = Repo::new();
    repo.write("README.md", "x");
    let head = repo.commit_all("c");
    std::fs::create_dir(repo.join("services")).unwrap();
    let src = GitSource::open(&repo.join("services")).unwrap();
    let err = src.load(&LoadOptions::default()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "commit {head} of {} has no directory services/ (commit the service files there first)",
            repo.path().display()
        )
    );
}

#[test]
fn not_a_repository_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = GitSource::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GitError::NotARepo { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "services directory {} is not inside a git work tree: ",
            dir.path().display()
        )),
        "{msg}"
    );
    assert!(msg.contains("not a git repository"), "{msg}");

    let missing = dir.path().join("nope");
    let err = GitSource::open(&missing).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("services directory {} does not exist", missing.display())
    );
}

#[test]
fn unreadable_blobs_hold_their_service() {
    let repo = Repo::new();
    repo.write("services/good.toml", service_toml("good", "v1"));
    repo.write("services/latin1.toml", b"name = \"caf\xe9\"\n");
    let big = format!(
        "# {}\n",
        "x".repeat(usize::try_from(MAX_FILE_SIZE).unwrap())
    );
    repo.write("services/big.toml", big);
    repo.write("real/linked.toml", service_toml("linked", "v1"));
    std::os::unix::fs::symlink("../real/linked.toml", repo.join("services/linked.toml")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", repo.join("services/escape.toml")).unwrap();
    std::os::unix::fs::symlink("nothing.toml", repo.join("services/dangling.toml")).unwrap();
    repo.write("services/with space.toml", service_toml("with space", "v1"));
    repo.commit_all("c");

    let t = load(&repo, "services");
    assert_eq!(
        t.loaded.services.keys().collect::<Vec<_>>(),
        vec!["good", "linked"]
    );
    let u = unreadable_summary(&t);
    let by_name: BTreeMap<_, _> = u.iter().map(|(n, _, e)| (n.as_str(), e.as_str())).collect();
    assert_eq!(
        by_name["latin1"],
        "services/latin1.toml:1:1: file must be utf-8, found an invalid byte at offset 11"
    );
    assert_eq!(
        by_name["big"],
        format!(
            "services/big.toml:1:1: file is {} bytes, larger than the {MAX_FILE_SIZE} bytes a service file may have",
            MAX_FILE_SIZE + 3
        )
    );
    assert_eq!(
        by_name["escape"],
        "services/escape.toml:1:1: symbolic link points outside the repository"
    );
    assert_eq!(
        by_name["dangling"],
        "services/dangling.toml:1:1: symbolic link points to nothing in this commit"
    );
    // Read fine; rejected by the spec rules (not a DNS label), not dropped.
    assert!(by_name["with space"].starts_with("services/with space.toml:1:"));
    assert_eq!(u.len(), 5, "{u:?}");
}

#[test]
fn loads_a_thousand_files_quickly() {
    let repo = Repo::new();
    for i in 0..1000 {
        repo.write(
            &format!("services/svc{i:04}.toml"),
            service_toml(&format!("svc{i:04}"), "v1"),
        );
    }
    repo.commit_all("many");
    let src = GitSource::open(&repo.join("services")).unwrap();
    let start = Instant::now();
    let t = src.load(&LoadOptions::default()).unwrap();
    let took = start.elapsed();
    assert_eq!(t.loaded.services.len(), 1000);
    assert!(t.loaded.unreadable.is_empty());
    // Generous for debug builds on a loaded 2-core CI machine.
    assert!(took.as_secs() < 10, "loading 1000 files took {took:?}");
    eprintln!("loaded 1000 files in {took:?}");
}

#[test]
fn caller_git_environment_is_ignored() {
    // A master started from a git hook must still read its own repository.
    let repo = Repo::new();
    repo.write("services/a.toml", service_toml("a", "v1"));
    repo.commit_all("c");
    let other = Repo::new();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "gitsource::tests::env_probe", "--nocapture"])
        .env("GIT_DIR", other.path().join(".git"))
        .env("MCP_TEST_REPO", repo.join("services"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Run by `caller_git_environment_is_ignored` in a child process.
#[test]
fn env_probe() {
    let Some(dir) = std::env::var_os("MCP_TEST_REPO") else {
        return;
    };
    let src = GitSource::open(&PathBuf::from(dir)).unwrap();
    let t = src.load(&LoadOptions::default()).unwrap();
    assert_eq!(t.loaded.services.len(), 1);
}

#[test]
fn commit_ids() {
    assert!(CommitId::new(&"a".repeat(40)).is_some());
    assert!(CommitId::new(&"0".repeat(64)).is_some());
    assert!(CommitId::new(&"A".repeat(40)).is_none());
    assert!(CommitId::new("abc").is_none());
    assert_eq!(
        CommitId::new(&"ab".repeat(20)).unwrap().short(),
        "abababababab"
    );
}
