//! End-to-end tests of a whole fleet: the real `mcp`, `mcp-master` and
//! `mcp-agent` binaries over loopback, with real podman.
//!
//! Each test prepares its own fleet with the `mcp-dev` harness, the one
//! behind `mcp dev` (PKI, tokens, configs in a temporary state directory; a
//! fresh services git repository), shortens the intervals in the generated
//! configs, and then starts, kills and restarts the daemons itself through
//! the harness's `Daemon`s. Assertions use the CLI's
//! `--output json` (`status`, `node list`, `sync --dry-run`) and podman
//! itself (`podman ps -a` on each node's storage).
//!
//! - podman missing: the tests are skipped loudly, unless
//!   `MCP_REQUIRE_PODMAN` is set (then they fail).
//! - `mcp-master` / `mcp-agent` missing next to `mcp`: failure
//!   (`cargo build --bins`; `cargo test --workspace` builds them).
//! - Images `localhost/mcp-test/web:v1` and `:v2` are built into the
//!   operator's podman storage by `scripts/build-test-images.sh` (idempotent);
//!   the agents read that image store read-only.
//! - Every fleet runs the real servers `mcp dev` runs (one Knot, per node a
//!   Caddy and an HAProxy on the node's own loopback address); caddy,
//!   haproxy, knotd, kdig and curl missing: failure naming the packages.
//! - On drop every daemon is killed, the servers stopped and every
//!   container of the fleet removed (`mcp_dev::remove_containers`, what
//!   `mcp dev --down` does). When a test fails, the daemons' logs are
//!   printed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mcp_dev::Daemon;
use std::time::{Duration, Instant};

use serde_json::Value;

// Intervals written into the generated configs.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(3);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);
const HEAL_MAX_ATTEMPTS: u64 = 3;

/// Generous deadline for things that take a few loop periods on a loaded
/// 2-core box.
const CONVERGE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// set-up
// ---------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn mcp_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp"))
}

/// `mcp-master` and `mcp-agent`, next to `mcp`.
fn daemon_bin(name: &str) -> PathBuf {
    let p = mcp_bin()
        .parent()
        .expect("mcp has a parent directory")
        .join(name);
    assert!(
        p.is_file(),
        "{name} not found at {}: build every binary first: cargo build --bins",
        p.display()
    );
    p
}

fn require_podman() -> bool {
    std::env::var("MCP_REQUIRE_PODMAN").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn containers_conf() -> OsString {
    std::env::var_os("CONTAINERS_CONF")
        .unwrap_or_else(|| repo_root().join("tests/podman/containers.conf").into())
}

/// podman usable (and the test images built), or `false` after a loud
/// message; panics when `MCP_REQUIRE_PODMAN` is set.
fn podman_ready() -> bool {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let r = READY.get_or_init(|| {
        match Command::new("podman").arg("--version").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "podman --version failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
            Err(e) => return Err(format!("podman not runnable: {e}")),
        }
        let script = repo_root().join("scripts/build-test-images.sh");
        let out = Command::new(&script)
            .env("CONTAINERS_CONF", containers_conf())
            .env_remove("MCP_PODMAN_ROOT")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    });
    match r {
        Ok(()) => true,
        Err(why) if require_podman() => {
            panic!("MCP_REQUIRE_PODMAN is set but podman is unusable: {why}")
        }
        Err(why) => {
            eprintln!(
                "\n{bar}\nSKIPPING fleet tests: {why}\ninstall podman, runc and busybox-static, \
                 or set MCP_REQUIRE_PODMAN=1 to make this a failure\n{bar}\n",
                bar = "!".repeat(72)
            );
            false
        }
    }
}

/// Polls `f` every 250 ms until it is true; panics after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn git(dir: &Path, args: &[&str]) {
    let who = mcp_dev::git::Identity {
        name: "fleet test",
        email: "fleet@test",
    };
    if let Err(e) = mcp_dev::git::git_as(dir, who, args) {
        panic!("{e}");
    }
}

/// A service with one component named like it (so its container is
/// `<name>`) on the test image; `$PORT` is the route's host port.
fn web_service(name: &str, version: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\n{extra}\n[[components]]\nname = \"{name}\"\nimage = \"localhost/mcp-test/web:{version}\"\n\n[[components.routes]]\nport = 8080\nmode = \"l4\"\n"
    )
}

// ---------------------------------------------------------------------------
// the fleet
// ---------------------------------------------------------------------------

/// The harness's daemon, with the test's expectations.
trait DaemonExt {
    fn started(&mut self);
    fn assert_alive(&mut self);
}

impl DaemonExt for Daemon {
    fn started(&mut self) {
        if let Err(e) = self.start() {
            panic!("starting {}: {e}", self.name);
        }
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} exited: {status}", self.log.display());
        }
    }
}

/// One container as podman on a node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ctr {
    node: String,
    name: String,
    id: String,
    state: String,
    image: String,
}

struct FleetOptions {
    agents: u32,
    edge: bool,
    /// First host port of this fleet's agents' port ranges (400 per node),
    /// so fleets running at once never allocate the same port.
    port_base: u16,
    /// `[reconcile] concurrency`.
    concurrency: usize,
    /// The services directory is a git repository the master follows;
    /// `false`: a plain directory (push mode, `mcp sync`).
    gitops: bool,
    /// The master's loop and the agents' safety-net monitor every 60 s:
    /// only events make things happen quickly.
    slow_timers: bool,
}

struct Fleet {
    _tmp: tempfile::TempDir,
    dev: mcp_dev::Fleet,
    repo: PathBuf,
    cli_config: PathBuf,
    master: Daemon,
    agents: BTreeMap<String, Daemon>,
    /// Knot, each node's Caddy and HAProxy (started first).
    servers: Vec<Daemon>,
    podman_args: BTreeMap<String, Vec<String>>,
    started: Instant,
}

fn edit_toml(path: &Path, f: impl FnOnce(&mut toml_edit::DocumentMut)) {
    let text = std::fs::read_to_string(path).expect("reading a generated config");
    let mut doc: toml_edit::DocumentMut = text.parse().expect("generated config is TOML");
    f(&mut doc);
    std::fs::write(path, doc.to_string()).expect("writing a generated config");
}

impl Fleet {
    /// Prepares and starts a fleet; `None` when podman is missing (skip).
    fn start(opts: &FleetOptions) -> Option<Fleet> {
        let master_bin = daemon_bin("mcp-master");
        let agent_bin = daemon_bin("mcp-agent");
        if !podman_ready() {
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("mcp-fleet-")
            .tempdir()
            .expect("tempdir");
        let repo = tmp.path().join("services");
        std::fs::create_dir_all(&repo).unwrap();
        if opts.gitops {
            git(&repo, &["init", "-q", "-b", "main"]);
            std::fs::write(repo.join("README.md"), "Services of the fleet test.\n").unwrap();
            git(&repo, &["add", "README.md"]);
            git(&repo, &["commit", "-q", "-m", "init"]);
        }

        let dev = mcp_dev::prepare(&mcp_dev::DevOptions {
            services: Some(repo.clone()),
            agents: opts.agents,
            edge: opts.edge,
            state_dir: Some(tmp.path().join("state")),
            containers_conf: Some(containers_conf().into()),
        })
        .unwrap_or_else(|e| panic!("preparing the fleet: {e}"));
        let bin_dir = master_bin.parent().expect("a bin directory").to_path_buf();
        assert_eq!(agent_bin.parent(), Some(bin_dir.as_path()));

        // Short intervals for the tests.
        edit_toml(&dev.master_config(), |d| {
            let interval = if opts.slow_timers {
                Duration::from_secs(60)
            } else {
                RECONCILE_INTERVAL
            };
            d["reconcile"]["interval"] = toml_edit::value(secs(interval));
            d["reconcile"]["heal_backoff"] = toml_edit::value("1s");
            d["reconcile"]["heal_max_attempts"] = toml_edit::value(HEAL_MAX_ATTEMPTS as i64);
            d["reconcile"]["concurrency"] = toml_edit::value(opts.concurrency as i64);
            d["registration"]["heartbeat_interval"] = toml_edit::value("1s");
            d["registration"]["heartbeat_timeout"] = toml_edit::value(secs(HEARTBEAT_TIMEOUT));
            d["registration"]["heartbeat_min_interval"] = toml_edit::value("500ms");
            if opts.gitops {
                d["services"]["debounce"] = toml_edit::value("100ms");
                d["services"]["poll"] = toml_edit::value("1s");
            }
        });
        for (i, n) in dev.nodes.iter().enumerate() {
            let lo = opts.port_base + u16::try_from(i).unwrap() * 400;
            edit_toml(&dev.agent_config(&n.name), |d| {
                d["master"]["heartbeat_interval"] = toml_edit::value("1s");
                let monitor = if opts.slow_timers { "60s" } else { "1s" };
                d["monitor"]["interval"] = toml_edit::value(monitor);
                let mut range = toml_edit::Array::new();
                range.push(i64::from(lo));
                range.push(i64::from(lo + 399));
                d["ports"]["range"] = toml_edit::value(range);
            });
        }
        let mut daemons = dev.daemons(&bin_dir);
        if let Err(e) = daemons.start_servers() {
            panic!("starting the fleet's servers: {e}");
        }
        let mut fleet = Fleet {
            repo,
            cli_config: dev.cli_config(),
            master: daemons.master,
            agents: daemons.agents,
            servers: daemons.servers,
            podman_args: dev
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.podman_args.clone()))
                .collect(),
            dev,
            _tmp: tmp,
            started: Instant::now(),
        };
        for a in fleet.agents.values_mut() {
            a.started();
        }
        fleet.master.started();
        let names: Vec<String> = fleet.agents.keys().cloned().collect();
        fleet.wait(CONVERGE, "every node is registered and healthy", |f| {
            names.iter().all(|n| f.node_status(n) == "healthy")
        });
        Some(fleet)
    }

    fn wait(
        &mut self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&Fleet) -> bool,
    ) -> Duration {
        let me: &Fleet = self;
        let d = wait_until(timeout, what, || f(me));
        self.master.assert_alive();
        d
    }

    // -- the CLI --------------------------------------------------------------

    fn mcp(&self, args: &[&str]) -> Output {
        Command::new(mcp_bin())
            .args(args)
            .env("MCP_CONFIG", &self.cli_config)
            .env("NO_COLOR", "1")
            .current_dir(&self.repo)
            .output()
            .expect("running mcp")
    }

    /// `mcp --output json <args>` → the JSON, or `None` when it fails (the
    /// master is restarting, ...).
    fn try_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.mcp(&all);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The master's status of every service, by name.
    fn statuses(&self) -> BTreeMap<String, Value> {
        let Some(v) = self.try_json(&["status"]) else {
            return BTreeMap::new();
        };
        v["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or_default().to_string(),
                    s.clone(),
                )
            })
            .collect()
    }

    fn status(&self, service: &str) -> Value {
        self.statuses().remove(service).unwrap_or(Value::Null)
    }

    fn status_is(&self, service: &str, status: &str) -> bool {
        self.status(service)["status"] == status
    }

    fn node_status(&self, node: &str) -> String {
        self.try_json(&["node", "list"])
            .and_then(|v| {
                v["nodes"]
                    .as_array()?
                    .iter()
                    .find(|n| n["name"] == node)
                    .map(|n| n["status"].as_str().unwrap_or_default().to_string())
            })
            .unwrap_or_default()
    }

    /// Containers the master's registry counts per node (from heartbeats).
    fn node_containers(&self) -> BTreeMap<String, u64> {
        self.try_json(&["node", "list"])
            .and_then(|v| {
                Some(
                    v["nodes"]
                        .as_array()?
                        .iter()
                        .map(|n| {
                            (
                                n["name"].as_str().unwrap_or_default().to_string(),
                                n["containers"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect(),
                )
            })
            .unwrap_or_default()
    }

    // -- the services repository ---------------------------------------------

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.repo.join(file), text).unwrap();
    }

    fn commit(&self, message: &str) {
        git(&self.repo, &["add", "-A", "."]);
        git(&self.repo, &["commit", "-q", "-m", message]);
    }

    // -- podman ---------------------------------------------------------------

    fn podman(&self, node: &str) -> Command {
        let mut c = Command::new("podman");
        c.args(&self.podman_args[node])
            .env("CONTAINERS_CONF", containers_conf());
        c
    }

    fn containers_on(&self, node: &str) -> Vec<Ctr> {
        let out = self
            .podman(node)
            .args(["ps", "-a", "--format", "json"])
            .output()
            .expect("podman ps");
        assert!(
            out.status.success(),
            "podman ps on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
        v.as_array()
            .into_iter()
            .flatten()
            .map(|c| Ctr {
                node: node.to_string(),
                name: c["Names"][0].as_str().unwrap_or_default().to_string(),
                id: c["Id"].as_str().unwrap_or_default().to_string(),
                state: c["State"].as_str().unwrap_or_default().to_string(),
                image: c["Image"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// Every container of the fleet, every node.
    fn containers(&self) -> Vec<Ctr> {
        self.podman_args
            .keys()
            .flat_map(|n| self.containers_on(n))
            .collect()
    }

    /// The containers named `name`, on any node.
    fn named(&self, name: &str) -> Vec<Ctr> {
        self.containers()
            .into_iter()
            .filter(|c| c.name == name)
            .collect()
    }

    /// The only container named `name` (panics on duplicates).
    fn one(&self, name: &str) -> Option<Ctr> {
        let mut all = self.named(name);
        assert!(
            all.len() <= 1,
            "duplicate containers named {name}: {all:#?}"
        );
        all.pop()
    }

    fn running(&self, name: &str) -> bool {
        self.one(name).is_some_and(|c| c.state == "running")
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        let tail = |d: &Daemon| {
            let t = d.log_text();
            // Audit lines (one per RPC) would drown everything else.
            let lines: Vec<&str> = t.lines().filter(|l| !l.contains("mcp::audit")).collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        out.push_str(&format!(
            "===== {} =====\n{}\n",
            self.master.log.display(),
            tail(&self.master)
        ));
        for a in self.agents.values() {
            out.push_str(&format!("===== {} =====\n{}\n", a.log.display(), tail(a)));
        }
        out
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fleet logs (the test failed):\n{}", self.logs());
        }
        self.master.kill();
        for a in self.agents.values_mut() {
            a.kill();
        }
        // SIGTERM: HAProxy's master stops its workers, freeing the ports.
        for s in &mut self.servers {
            s.stop();
        }
        let (_, problems) = mcp_dev::remove_containers(&self.dev);
        for p in problems {
            eprintln!("fleet clean-up: {p}");
        }
        eprintln!("fleet ran for {:?}", self.started.elapsed());
    }
}

// ---------------------------------------------------------------------------
// the tests
// ---------------------------------------------------------------------------

/// The GitOps flow on master + 2 workers + an edge node: new service on the
/// least-loaded worker, image change redeploys only that service, `active =
/// false` stops it, deleting the file undeploys it; a broken file holds its
/// service; the mass-deletion guard.
#[test]
fn gitops_changes_follow_commits() {
    let Some(mut f) = Fleet::start(&FleetOptions {
        agents: 3,
        edge: true,
        port_base: 31000,
        concurrency: 4,
        gitops: true,
        slow_timers: false,
    }) else {
        return;
    };

    // A first service goes to a worker (tie between empty workers: by name).
    f.write("alpha.toml", &web_service("alpha", "v1", ""));
    f.commit("add alpha");
    f.wait(CONVERGE, "alpha runs", |f| {
        f.status_is("alpha", "running") && f.running("alpha")
    });
    assert_eq!(f.status("alpha")["node"], "w1");
    assert_eq!(f.one("alpha").unwrap().node, "w1");
    f.wait(CONVERGE, "the registry counts alpha on w1", |f| {
        f.node_containers().get("w1") == Some(&1)
    });

    // The next one goes to the least-loaded worker.
    f.write("web.toml", &web_service("web", "v1", ""));
    f.commit("add web");
    f.wait(CONVERGE, "web runs", |f| {
        f.status_is("web", "running") && f.running("web")
    });
    assert_eq!(f.status("web")["node"], "w2", "{:#?}", f.status("web"));
    let web_v1 = f.one("web").unwrap();
    assert_eq!(web_v1.node, "w2");
    let alpha = f.one("alpha").unwrap();
    // Nothing application-level on the master or edge node.
    for c in f.containers() {
        assert!(
            c.node == "w1" || c.node == "w2",
            "unexpected container {c:?}"
        );
    }

    // An image change redeploys that service only.
    f.write("web.toml", &web_service("web", "v2", ""));
    f.commit("web v2");
    f.wait(CONVERGE, "web runs v2", |f| {
        f.one("web")
            .is_some_and(|c| c.state == "running" && c.image.ends_with("web:v2"))
    });
    let web_v2 = f.one("web").unwrap();
    assert_ne!(web_v2.id, web_v1.id, "web was recreated");
    assert_eq!(web_v2.node, "w2", "web stays on its node");
    assert_eq!(f.one("alpha").unwrap(), alpha, "alpha was left alone");
    f.wait(CONVERGE, "the master reports v2", |f| {
        f.status("web")["components"][0]["version"] == "v2"
    });

    // `mcp stop` commits active = false; the master stops the container.
    let out = f.mcp(&["stop", "web"]);
    assert!(out.status.success(), "{out:?}");
    f.wait(CONVERGE, "web is stopped", |f| {
        f.status_is("web", "stopped") && f.one("web").is_some_and(|c| c.state != "running")
    });
    assert_eq!(
        f.one("web").unwrap().id,
        web_v2.id,
        "stopped, not recreated"
    );

    // A broken file: its service is held (nothing pruned), and the dry run
    // says where the error is.
    f.write(
        "alpha.toml",
        "name = \"alpha\"\n[[components]\nname = \"alpha\"\n",
    );
    f.commit("break alpha");
    f.wait(CONVERGE, "the master holds alpha", |f| {
        f.status("alpha")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("held"))
    });
    let out = f.mcp(&["sync", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("alpha") && text.contains("held"),
        "dry run does not show alpha held:\n{text}"
    );
    assert!(
        text.contains("alpha.toml:2:") || err.contains("alpha.toml:2:"),
        "dry run does not give file:line:col:\n{text}\n{err}"
    );
    std::thread::sleep(RECONCILE_INTERVAL * 2);
    assert_eq!(
        f.one("alpha").unwrap(),
        alpha,
        "a held service is left alone"
    );

    // Deleting a file undeploys its service.
    f.write("alpha.toml", &web_service("alpha", "v1", ""));
    std::fs::remove_file(f.repo.join("web.toml")).unwrap();
    f.commit("fix alpha, remove web");
    f.wait(CONVERGE, "web is undeployed", |f| {
        f.one("web").is_none() && !f.statuses().contains_key("web")
    });
    assert_eq!(f.one("alpha").unwrap(), alpha, "alpha was left alone");

    // A realistic change set for `mcp sync --dry-run` (the working tree,
    // not committed): new, update with a diff, stop, prune, held.
    f.wait(CONVERGE, "the registry counts w1: 1, w2: 0", |f| {
        let c = f.node_containers();
        c.get("w1") == Some(&1) && c.get("w2") == Some(&0)
    });
    f.write("beta.toml", &web_service("beta", "v1", ""));
    f.write("delta.toml", &web_service("delta", "v1", ""));
    f.write("epsilon.toml", &web_service("epsilon", "v1", ""));
    f.commit("add beta, delta, epsilon");
    f.wait(CONVERGE, "four services run", |f| {
        ["alpha", "beta", "delta", "epsilon"]
            .iter()
            .all(|s| f.status_is(s, "running") && f.running(s))
    });
    f.wait(CONVERGE, "the registry counts what runs", |f| {
        let mut podman: BTreeMap<String, u64> = BTreeMap::new();
        for c in f.containers() {
            *podman.entry(c.node).or_default() += 1;
        }
        let reg = f.node_containers();
        ["m1", "w1", "w2", "e1"]
            .iter()
            .all(|n| reg.get(*n).copied().unwrap_or(0) == podman.get(*n).copied().unwrap_or(0))
    });
    let out = f.mcp(&["sync", "--dry-run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "converged: nothing to do: {out:?}"
    );
    f.write("gamma.toml", &web_service("gamma", "v1", ""));
    f.write("alpha.toml", &web_service("alpha", "v2", ""));
    f.write("beta.toml", &web_service("beta", "v1", "active = false\n"));
    std::fs::remove_file(f.repo.join("delta.toml")).unwrap();
    f.write(
        "epsilon.toml",
        "name = \"epsilon\"\n\n[[components]]\nname = \"epsilon\"\nimage = 42\n",
    );
    let out = f.mcp(&["sync", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "changes pending: {out:?}");
    let text = normalize(&String::from_utf8_lossy(&out.stdout), &f.repo, &f.dev);
    expect_test::expect![[r#"
        Plan (source <repo> @ <hex> (dirty)): 1 to deploy, 1 to update, 1 to undeploy, 1 to stop, 1 held

        ~ alpha on w1
            spec changed (<hex> -> <hex>): redeploy on the same node
            1. deploy alpha on w1 (spec <hex>)
            --- alpha (deployed <hex>)
            +++ alpha (desired <hex>)
            @@ -4,7 +4,7 @@

             [[components]]
             name = "alpha"
            -image = "localhost/mcp-test/web:v1"
            +image = "localhost/mcp-test/web:v2"

             [[components.routes]]
             port = 8080

        v beta on w2
            desired stopped, beta running
            1. stop beta on w2

        - delta on w1
            no longer desired: prune
            1. undeploy delta from w1
            2. dns remove delta.mcp.test

        ! epsilon on w2
            file <repo>/epsilon.toml is unreadable: service left as it is
              <repo>/epsilon.toml:5:9: image must be a string, found integer

        + gamma on w1
            new service, least containers among healthy workers (w1 has 2)
            1. deploy gamma on w1 (spec <hex>)
            2. dns set gamma.mcp.test -> <ip w1>
    "#]].assert_eq(&text);
    let err = normalize(&String::from_utf8_lossy(&out.stderr), &f.repo, &f.dev);
    expect_test::expect![[r#"
        <repo>/epsilon.toml:5:9: image must be a string, found integer
        mcp: warning: <repo>/epsilon.toml is invalid; service epsilon is held (left as it is)
    "#]]
    .assert_eq(&err);
    let json = f.mcp(&["--output", "json", "sync", "--dry-run"]);
    assert_eq!(json.status.code(), Some(2));
    let plan: Value = serde_json::from_slice(&json.stdout).expect("JSON plan");
    let kinds: BTreeMap<String, String> = plan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["service"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");

    // Committed: the fleet follows; the held service is left as it is.
    f.commit("the change set");
    f.wait(CONVERGE, "the change set is applied", |f| {
        f.one("gamma").is_some_and(|c| c.state == "running")
            && f.one("alpha")
                .is_some_and(|c| c.state == "running" && c.image.ends_with("web:v2"))
            && f.status_is("beta", "stopped")
            && f.one("delta").is_none()
    });
    assert!(f.running("epsilon"), "held, not pruned");
    f.write("epsilon.toml", &web_service("epsilon", "v1", ""));
    f.commit("fix epsilon");
    f.wait(CONVERGE, "nothing left to do", |f| {
        f.mcp(&["sync", "--dry-run"]).status.code() == Some(0)
    });

    // All files removed in one commit: refused, and status says why.
    let before = f.containers();
    git(
        &f.repo,
        &[
            "rm",
            "-q",
            "alpha.toml",
            "beta.toml",
            "epsilon.toml",
            "gamma.toml",
        ],
    );
    f.commit("remove everything");
    f.wait(CONVERGE, "status explains the refused prune", |f| {
        f.status("alpha")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("mass-deletion"))
    });
    std::thread::sleep(RECONCILE_INTERVAL * 2);
    assert_eq!(f.containers(), before, "nothing was pruned");
    let out = f.mcp(&["sync"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused sync exits 1: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing applied"),
        "{out:?}"
    );
    let out = f.mcp(&["sync", "--allow-mass-prune"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    f.wait(CONVERGE, "everything is undeployed", |f| {
        f.containers().is_empty() && f.statuses().is_empty()
    });
}

/// Volatile parts of CLI output: hex ids (commits, spec hashes) of 7 or more
/// digits, the services directory, and the nodes' addresses (`<ip w1>`).
fn normalize(text: &str, repo: &Path, dev: &mcp_dev::Fleet) -> String {
    let mut text = text.replace(&repo.display().to_string(), "<repo>");
    let mut nodes: Vec<&mcp_dev::Node> = dev.nodes.iter().collect();
    nodes.sort_by_key(|n| std::cmp::Reverse(n.address.len()));
    for n in nodes {
        text = text.replace(&n.address, &format!("<ip {}>", n.name));
    }
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 7 && run.chars().any(|c| c.is_ascii_digit()) {
            out.push_str("<hex>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for ch in text.chars() {
        if ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase() {
            run.push(ch);
        } else {
            flush(&mut run, &mut out);
            out.push(ch);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Failures on master + 2 workers: a component killed with podman comes
/// back within a loop period; one that keeps dying ends degraded with one
/// alert; an agent killed turns its node unhealthy while its containers keep
/// running and nothing moves; restarted, it is healthy again with no
/// duplicates.
#[test]
fn self_heal_and_agent_failure() {
    let Some(mut f) = Fleet::start(&FleetOptions {
        agents: 3,
        edge: false,
        port_base: 33000,
        concurrency: 4,
        gitops: true,
        slow_timers: false,
    }) else {
        return;
    };
    f.write("web.toml", &web_service("web", "v1", ""));
    f.write(
        "crashy.toml",
        "name = \"crashy\"\n\n[[components]]\nname = \"crashy\"\nimage = \"localhost/mcp-test/web:v1\"\ncmd = [\"false\"]\nrestart = \"no\"\n",
    );
    f.commit("add web and crashy");
    f.wait(CONVERGE, "web runs", |f| {
        f.status_is("web", "running") && f.running("web")
    });

    // Killed with podman: the master's loop starts it again.
    let web = f.one("web").unwrap();
    let out = f.podman(&web.node).args(["kill", "web"]).output().unwrap();
    assert!(out.status.success(), "podman kill: {out:?}");
    f.wait(Duration::from_secs(20), "web is down", |f| {
        !f.running("web")
    });
    let back = f.wait(
        RECONCILE_INTERVAL + Duration::from_secs(8),
        "web is running again (one loop period, plus podman's time)",
        |f| f.running("web"),
    );
    eprintln!("web back {back:?} after podman kill (loop period {RECONCILE_INTERVAL:?})");
    let healed = f.one("web").unwrap();
    assert_eq!(healed.node, web.node, "healed in place");
    assert_eq!(healed.id, web.id, "started again, not recreated");

    // A component that keeps dying: degraded and one alert, no hot loop.
    f.wait(CONVERGE, "crashy is degraded", |f| {
        f.status_is("crashy", "degraded")
    });
    let detail = f.status("crashy")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains(&format!("after {HEAL_MAX_ATTEMPTS} heal attempts")),
        "{detail}"
    );
    let alerts = |f: &Fleet| {
        f.master
            .log_text()
            .lines()
            .filter(|l| l.contains("mcp::alert") && l.contains("service=crashy"))
            .count()
    };
    let heals = |f: &Fleet| {
        f.master
            .log_text()
            .lines()
            .filter(|l| l.contains("step succeeded service=crashy step=heal"))
            .count()
    };
    f.wait(Duration::from_secs(20), "the alert is logged", |f| {
        alerts(f) == 1
    });
    let heals_then = heals(&f);
    assert_eq!(heals_then as u64, HEAL_MAX_ATTEMPTS, "heal attempts");
    std::thread::sleep(RECONCILE_INTERVAL * 3);
    assert_eq!(heals(&f), heals_then, "no more heal attempts once degraded");
    assert_eq!(alerts(&f), 1, "one alert, not one per pass");
    assert!(f.status_is("crashy", "degraded"));

    // The agent of web's node killed: unhealthy after the threshold; its
    // containers keep running; nothing is rescheduled.
    let node = web.node.clone();
    f.agents.get_mut(&node).unwrap().kill();
    let t = f.wait(HEARTBEAT_TIMEOUT + CONVERGE, "the node is unhealthy", |f| {
        f.node_status(&node) == "unhealthy"
    });
    eprintln!("{node} unhealthy {t:?} after its agent was killed (timeout {HEARTBEAT_TIMEOUT:?})");
    f.wait(CONVERGE, "status reports web unhealthy", |f| {
        f.status_is("web", "unhealthy")
    });
    std::thread::sleep(RECONCILE_INTERVAL * 3);
    assert_eq!(
        f.named("web"),
        vec![healed.clone()],
        "web keeps running, nowhere else"
    );
    assert_eq!(f.status("web")["node"], node.as_str());
    assert_eq!(f.node_status(&node), "unhealthy");

    // Restarted: healthy again, the same container, no duplicate.
    f.agents.get_mut(&node).unwrap().started();
    f.wait(CONVERGE, "the node is healthy again", |f| {
        f.node_status(&node) == "healthy"
    });
    f.wait(CONVERGE, "web runs", |f| f.status_is("web", "running"));
    std::thread::sleep(RECONCILE_INTERVAL * 2);
    assert_eq!(f.named("web"), vec![healed], "the same container, once");
    let out = f.mcp(&["sync", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("+ web") && !text.contains("~ web"),
        "nothing to redeploy:\n{text}"
    );
}

/// The master killed while it applies a plan (one service at a time), then
/// restarted: the fleet converges with no duplicate containers, every
/// placement where its container runs, and nothing left to do.
#[test]
fn master_killed_mid_apply_converges() {
    let Some(mut f) = Fleet::start(&FleetOptions {
        agents: 3,
        edge: false,
        port_base: 35000,
        concurrency: 1,
        gitops: true,
        slow_timers: false,
    }) else {
        return;
    };
    let names = ["one", "two", "three", "four", "five", "six"];
    for n in names {
        f.write(&format!("{n}.toml"), &web_service(n, "v1", ""));
    }
    f.commit("six services");
    // Killed as soon as the second container exists: the master is in the
    // middle of the plan, most likely inside that service's deploy call.
    f.wait(CONVERGE, "the master is applying the plan", |f| {
        f.containers().len() >= 2
    });
    f.master.kill();
    let at_kill = f.containers().len();
    assert!(at_kill < names.len(), "killed in the middle of the plan");
    eprintln!(
        "master killed with {at_kill} of {} containers created",
        names.len()
    );

    // Without a master: the CLI says so (exit 1); agents keep running.
    let out = f.mcp(&["sync", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    f.master.started();
    f.wait(CONVERGE, "every service runs", |f| {
        let st = f.statuses();
        names
            .iter()
            .all(|n| st.get(*n).is_some_and(|s| s["status"] == "running"))
    });
    f.wait(CONVERGE, "nothing left to do", |f| {
        f.mcp(&["sync", "--dry-run"]).status.code() == Some(0)
    });
    let all = f.containers();
    assert_eq!(
        all.len(),
        names.len(),
        "one container per service: {all:#?}"
    );
    let st = f.statuses();
    for n in names {
        let c = f.one(n).unwrap_or_else(|| panic!("{n} has no container"));
        assert_eq!(c.state, "running", "{c:?}");
        assert_eq!(
            st[n]["node"],
            c.node.as_str(),
            "{n} is placed where it runs"
        );
        assert!(c.node.starts_with('w'), "{c:?} on a worker");
    }
    let log = f.master.log_text();
    eprintln!(
        "after the restart: {} operation(s) marked abandoned",
        log.lines()
            .filter(|l| l.contains("interrupted by a master restart: marked abandoned"))
            .count()
    );
}

/// Push mode (a services directory that is not a git repository) on a master
/// and one worker: `mcp sync` deploys; `mcp push`/`mcp pull` without `--direct`
/// reach the service's node through the master; a 50 MiB file goes to the
/// agent and back intact with `--direct`, an over-limit one is refused
/// naming the limit; `mcp deploy --component` recreates that component
/// only; `mcp events --limit` bounds the rows; `mcp dev --down` stops the
/// daemons and removes the containers.
#[test]
fn push_mode_files_components_and_down() {
    let Some(mut f) = Fleet::start(&FleetOptions {
        agents: 2,
        edge: false,
        port_base: 37000,
        concurrency: 2,
        gitops: false,
        slow_timers: false,
    }) else {
        return;
    };
    let duo = |a: &str| {
        format!(
            "name = \"duo\"\n\n[[components]]\nname = \"a\"\nimage = \"localhost/mcp-test/web:{a}\"\n\n[[components.routes]]\nport = 8081\nmode = \"l4\"\n\n[[components]]\nname = \"b\"\nimage = \"localhost/mcp-test/web:v1\"\n\n[[components.routes]]\nport = 8082\nmode = \"l4\"\n"
        )
    };
    f.write("duo.toml", &duo("v1"));
    let out = f.mcp(&["sync"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    f.wait(CONVERGE, "duo runs", |f| {
        f.status_is("duo", "running") && f.running("duo-a") && f.running("duo-b")
    });
    let node = f.status("duo")["node"].as_str().unwrap().to_string();
    assert_eq!(node, "w1");
    let srv = f.dev.state.join("nodes/w1/srv/duo");
    let tmp = tempfile::tempdir().unwrap();
    let local = |name: &str| tmp.path().join(name);

    // Through the master: the file lands on the service's node.
    std::fs::write(local("app.conf"), "greeting = \"hi\"\n").unwrap();
    let out = f.mcp(&[
        "push",
        local("app.conf").to_str().unwrap(),
        "duo",
        "conf/app.conf",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(srv.join("conf/app.conf")).unwrap(),
        "greeting = \"hi\"\n"
    );
    std::fs::write(srv.join("conf/state.txt"), "written on w1\n").unwrap();
    let out = f.mcp(&[
        "pull",
        "duo",
        "conf/state.txt",
        local("state.txt").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(local("state.txt")).unwrap(),
        "written on w1\n"
    );

    // 50 MiB straight to the agent and back, byte for byte.
    let big: Vec<u8> = (0..50u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (big_path, huge_path) = (local("big.bin"), local("huge.bin"));
    std::fs::write(&big_path, &big).unwrap();
    let direct = ["--direct", "--node", "w1"];
    let mut args = vec!["push", big_path.to_str().unwrap(), "duo", "data/big.bin"];
    args.extend(direct);
    let out = f.mcp(&args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        std::fs::read(srv.join("data/big.bin")).unwrap() == big,
        "pushed intact"
    );
    let back = local("back.bin");
    let mut args = vec!["pull", "duo", "data/big.bin", back.to_str().unwrap()];
    args.extend(direct);
    let out = f.mcp(&args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(std::fs::read(&back).unwrap() == big, "pulled intact");
    drop(big);

    // Over the limit: refused before anything is sent, naming the limit.
    let huge = std::fs::File::create(&huge_path).unwrap();
    huge.set_len(64 * 1024 * 1024 + 1).unwrap();
    let mut args = vec!["push", huge_path.to_str().unwrap(), "duo", "data/huge.bin"];
    args.extend(direct);
    let out = f.mcp(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("64 MiB"), "{err}");
    assert!(!srv.join("data/huge.bin").exists());

    // One component redeployed: a is recreated on v2, b is left alone.
    let (a1, b1) = (f.one("duo-a").unwrap(), f.one("duo-b").unwrap());
    f.write("duo.toml", &duo("v2"));
    let out = f.mcp(&["deploy", "duo", "--component", "a"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let a2 = f.one("duo-a").unwrap();
    assert_ne!(a2.id, a1.id, "a was recreated");
    assert!(a2.image.ends_with("web:v2"), "{a2:?}");
    assert_eq!(f.one("duo-b").unwrap(), b1, "b was left alone");
    let out = f.mcp(&["sync", "--dry-run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "what runs is what is desired: {out:?}"
    );

    // Events: bounded, and every row says what happened.
    for _ in 0..3 {
        let out = f.mcp(&["restart", "duo"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let all = f.try_json(&["events", "duo"]).unwrap();
    let all = all["events"].as_array().unwrap().len();
    let five = f.try_json(&["events", "duo", "--limit", "5"]).unwrap();
    let five = five["events"].as_array().unwrap().len();
    assert!(all > 5, "duo has {all} events");
    assert_eq!(five, 5);
    let out = f.mcp(&["events", "duo", "--limit", "5"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 6, "a header and 5 rows:\n{text}");
    assert!(!text.contains("- -> -"), "{text}");
    eprintln!("mcp events duo --limit 5:\n{text}");

    // `mcp dev --down`: the daemons stop, the containers go.
    let out = Command::new(mcp_bin())
        .args(["dev", "--down", "--state-dir"])
        .arg(&f.dev.state)
        .env("CONTAINERS_CONF", containers_conf())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(f.master.exited().is_some(), "the master was stopped");
    for a in f.agents.values_mut().chain(f.servers.iter_mut()) {
        assert!(a.exited().is_some(), "{} was stopped", a.name);
    }
    assert_eq!(f.containers(), vec![], "no container is left");
}

/// A running `mcp dev` (its own process, reaped and purged on drop).
struct DevRun {
    child: std::process::Child,
    state: PathBuf,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl DevRun {
    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until `mcp dev` printed a line starting with `prefix`.
    fn line(&mut self, prefix: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.output().lines().find(|l| l.starts_with(prefix)) {
                return l.to_string();
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("mcp dev exited ({st}):\n{}", self.output());
            }
            assert!(
                start.elapsed() < timeout,
                "mcp dev printed no {prefix:?} line within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for DevRun {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("mcp dev printed:\n{}", self.output());
            for log in ["master", "m1", "w1", "knot", "caddy-w1", "haproxy-w1"] {
                let p = self.state.join("logs").join(format!("{log}.log"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().filter(|l| !l.contains("mcp::audit")).collect();
                eprintln!(
                    "===== {} =====\n{}",
                    p.display(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
        let _ = Command::new(mcp_bin())
            .args(["dev", "--purge", "--state-dir"])
            .arg(&self.state)
            .env("CONTAINERS_CONF", containers_conf())
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kdig @<dns> +short <name> A`: the addresses the dev DNS has for it.
fn kdig(dns: &str, name: &str) -> Vec<String> {
    let (host, port) = dns.rsplit_once(':').unwrap();
    let out = Command::new("kdig")
        .arg(format!("@{host}"))
        .args(["-p", port, "+short", "+norecurse", name, "A"])
        .output()
        .unwrap_or_else(|e| panic!("kdig (Debian package knot-dnsutils): {e}"));
    assert!(out.status.success(), "kdig {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `curl -sS <args>` in `dir`: (exit code, body).
fn curl(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("curl (Debian package curl): {e}"));
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `mcp dev` for real, as a user runs it (relative state directory, the
/// demo services): the banner names the DNS server; the curl line it
/// prints once hello is placed works as printed (TLS by name through the
/// node's Caddy, verified against the dev CA); every active demo route
/// answers by the name the dev DNS resolves to its node's address;
/// fleet.json carries dns, zone, ca_cert and each node's bare address;
/// `mcp dev --down` stops everything.
#[test]
fn mcp_dev_demo_routes_answer_by_name() {
    daemon_bin("mcp-master");
    daemon_bin("mcp-agent");
    if !podman_ready() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("mcp-dev-")
        .tempdir()
        .unwrap();
    let cwd = tmp.path().to_path_buf();
    let mut child = Command::new(mcp_bin())
        .args(["dev", "--agents", "2", "--state-dir", "state"])
        .current_dir(&cwd)
        .env("CONTAINERS_CONF", containers_conf())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let out = out.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
    }
    let mut dev = DevRun {
        child,
        state: cwd.join("state"),
        out,
    };

    // The banner: the DNS server and how to ask it.
    let dns_line = dev.line("  dns      ", CONVERGE);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(cwd.join("state/fleet.json")).unwrap())
            .unwrap();
    let dns = record["dns"].as_str().unwrap().to_string();
    let port = dns.strip_prefix("127.0.0.1:").expect("Knot on 127.0.0.1");
    assert_eq!(dns_line, format!("  dns      {dns} (zone mcp.test)"));
    assert!(
        dev.output()
            .contains(&format!("kdig @127.0.0.1 -p {port} hello.mcp.test\n")),
        "{}",
        dev.output()
    );
    assert_eq!(record["zone"], "mcp.test");
    let state = cwd.join("state").canonicalize().unwrap();
    assert_eq!(
        record["ca_cert"],
        state.join("pki/ca.pem").to_str().unwrap()
    );
    let nodes: BTreeMap<String, String> = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let addr = n["address"].as_str().unwrap();
            let ip: std::net::Ipv4Addr = addr.parse().expect("a bare IP address");
            assert!(ip.is_loopback() && ip.octets()[1] != 0, "{ip}");
            assert!(n["role"].is_string());
            (n["name"].as_str().unwrap().to_string(), addr.to_string())
        })
        .collect();
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["m1", "w1"]);

    // The curl line, run as printed (from where `mcp dev` was started).
    let line = dev.line("  curl ", Duration::from_secs(180));
    let argv: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(argv[..2], ["curl", "--cacert"]);
    assert_eq!(
        argv[2], "state/pki/ca.pem",
        "the CA as the state dir was given"
    );
    let ip = kdig(&dns, "hello.mcp.test");
    assert_eq!(ip.len(), 1, "{ip:?}");
    assert_eq!(argv[4], format!("hello.mcp.test:8443:{}", ip[0]));
    assert_eq!(argv[5], "https://hello.mcp.test:8443/");
    assert!(nodes.values().any(|a| *a == ip[0]), "{ip:?} is a node's");
    let mut answer = (None, String::new());
    wait_until(
        Duration::from_secs(30),
        "the printed curl line answers",
        || {
            answer = curl(&cwd, &argv[1..]);
            answer.0 == Some(0)
        },
    );
    assert_eq!(answer.1, "mcp-test web v1\n");

    // Every active demo route, by the name the dev DNS gives its node.
    wait_until(CONVERGE, "shop.mcp.test resolves", || {
        !kdig(&dns, "shop.mcp.test").is_empty()
    });
    let shop = kdig(&dns, "shop.mcp.test").remove(0);
    for (port, body) in [(8443, "mcp-test web v1\n"), (8444, "mcp-test web v2\n")] {
        let resolve = format!("shop.mcp.test:{port}:{shop}");
        let url = format!("https://shop.mcp.test:{port}/");
        let mut answer = (None, String::new());
        wait_until(Duration::from_secs(30), &format!("{url} answers"), || {
            answer = curl(
                &cwd,
                &["--cacert", "state/pki/ca.pem", "--resolve", &resolve, &url],
            );
            answer.0 == Some(0)
        });
        assert_eq!(answer.1, body, "{url}");
    }
    // Not through another name: the proxy matches SNI and Host.
    let resolve = format!("nope.mcp.test:8443:{shop}");
    let (code, _) = curl(
        &cwd,
        &[
            "--cacert",
            "state/pki/ca.pem",
            "--resolve",
            &resolve,
            "https://nope.mcp.test:8443/",
        ],
    );
    assert_ne!(code, Some(0), "an unknown name is not served");

    // `mcp dev --down`: `mcp dev` and its servers stop.
    let out = Command::new(mcp_bin())
        .args(["dev", "--down", "--state-dir", "state"])
        .current_dir(&cwd)
        .env("CONTAINERS_CONF", containers_conf())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    wait_until(Duration::from_secs(20), "mcp dev exits", || {
        dev.child.try_wait().unwrap().is_some()
    });
    assert!(kdig_fails(&dns), "Knot was stopped");
}

/// kdig gets no answer (the server is gone).
fn kdig_fails(dns: &str) -> bool {
    let (host, port) = dns.rsplit_once(':').unwrap();
    Command::new("kdig")
        .arg(format!("@{host}"))
        .args([
            "-p", port, "+short", "+retry=0", "+time=1", "mcp.test", "SOA",
        ])
        .output()
        .map(|o| !o.status.success() || o.stdout.is_empty())
        .unwrap_or(true)
}

/// `mcp migrate` on a master and two workers: a pinned service's data
/// written under `/srv/<svc>/` on w1 is on w2 after the move, it runs on
/// w2 only, its DNS name points at w2, w1's copy is gone, and its file is
/// re-pinned and committed; `mcp sync --expect-commit` refuses a stale
/// commit and applies HEAD. Then w2's agent dies with the data: `mcp
/// migrate` back to w1 restores it from the latest stored snapshot, and
/// says so.
#[test]
fn migrate_moves_a_service_and_its_data() {
    let Some(mut f) = Fleet::start(&FleetOptions {
        agents: 3,
        edge: false,
        port_base: 36000,
        concurrency: 2,
        gitops: true,
        slow_timers: false,
    }) else {
        return;
    };
    let state = f.dev.state.clone();
    let srv = |node: &str| state.join("nodes").join(node).join("srv/mv");
    f.write(
        "mv.toml",
        &web_service("mv", "v1", "# on w1 for now\nnode = \"w1\" # pinned\n"),
    );
    f.commit("mv on w1");
    f.wait(CONVERGE, "mv runs on w1", |f| {
        f.status_is("mv", "running") && f.status("mv")["node"] == "w1"
    });
    std::fs::create_dir_all(srv("w1").join("db")).unwrap();
    std::fs::write(srv("w1").join("db/app.db"), "rows written on w1\n").unwrap();
    std::fs::write(srv("w1").join("app.toml"), "greeting = \"hi\"\n").unwrap();

    let out = f.mcp(&["--output", "json", "migrate", "mv", "--to", "w2"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(v["success"], true, "{v:#}");
    let steps: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps[0], "stop mv on w1", "{v:#}");
    assert!(steps.contains(&"clean up mv on w1"), "{v:#}");
    assert!(steps.contains(&"pin mv"), "{v:#}");
    assert_eq!(
        std::fs::read_to_string(srv("w2").join("db/app.db")).unwrap(),
        "rows written on w1\n"
    );
    assert_eq!(
        std::fs::read_to_string(srv("w2").join("app.toml")).unwrap(),
        "greeting = \"hi\"\n"
    );
    assert!(!srv("w1").exists(), "w1's copy is removed after the move");
    let c = f.one("mv").expect("mv has a container");
    assert_eq!((c.node.as_str(), c.state.as_str()), ("w2", "running"));
    let w2 = f.dev.nodes.iter().find(|n| n.name == "w2").unwrap();
    assert_eq!(
        kdig(&f.dev.dns, "mv.mcp.test"),
        std::slice::from_ref(&w2.address)
    );
    // The file is re-pinned (comments kept) in its own commit.
    let text = std::fs::read_to_string(f.repo.join("mv.toml")).unwrap();
    assert!(
        text.contains("# on w1 for now\nnode = \"w2\" # pinned"),
        "{text}"
    );
    let log = Command::new("git")
        .args(["log", "-1", "--format=%s"])
        .current_dir(&f.repo)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout).trim(),
        "mcp migrate mv --to w2"
    );
    // GitOps agrees: nothing to do, the service stays on w2.
    f.wait(CONVERGE, "nothing left to do", |f| {
        f.mcp(&["sync", "--dry-run"]).status.code() == Some(0)
    });
    assert_eq!(f.status("mv")["node"], "w2");
    // `mcp sync --expect-commit` (issue 12 item 9): a stale commit is
    // refused, HEAD applies.
    let out = f.mcp(&["sync", "--expect-commit", "0000000"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("moved since the preview"),
        "{out:?}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&f.repo)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let out = f.mcp(&["sync", "--expect-commit", &head[..10]]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // w2 is lost with its data; the stored snapshot brings mv back on w1.
    let out = f.mcp(&["snapshot", "mv"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    f.agents.get_mut("w2").unwrap().kill();
    let _ = f.podman("w2").args(["stop", "-t", "1", "mv"]).output();
    std::fs::remove_dir_all(srv("w2")).unwrap();
    f.wait(CONVERGE, "w2 is unhealthy", |f| {
        f.node_status("w2") == "unhealthy"
    });
    let out = f.mcp(&["migrate", "mv", "--to", "w1"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text.contains("latest snapshot"), "{text}");
    assert_eq!(
        std::fs::read_to_string(srv("w1").join("db/app.db")).unwrap(),
        "rows written on w1\n"
    );
    f.wait(CONVERGE, "mv runs on w1", |f| {
        f.status("mv")["node"] == "w1"
            && f.containers_on("w1")
                .iter()
                .any(|c| c.name == "mv" && c.state == "running")
    });
}

/// Issue 12 items 1–4: a new version whose http check never passes is
/// rolled back by the agent to the running version, the master holds the
/// failed spec (not retried across passes) and says so; `mcp history`
/// shows both outcomes; `mcp rollback --dry-run` changes nothing, `mcp
/// rollback` commits the file of the healthy version and the fleet
/// converges to it; a new good version deploys.
#[test]
fn a_failing_health_check_rolls_back_and_mcp_rollback_restores_the_file() {
    let Some(mut f) = Fleet::start(&FleetOptions {
        agents: 2,
        edge: false,
        port_base: 38000,
        concurrency: 2,
        gitops: true,
        slow_timers: false,
    }) else {
        return;
    };
    let hc = |path: &str| {
        format!("[components.health]\nkind = \"http\"\npath = \"{path}\"\ntimeout = \"1s\"\n")
    };
    let svc = |version: &str, path: &str| format!("{}{}", web_service("hc", version, ""), hc(path));
    f.write("hc.toml", &svc("v1", "/version"));
    f.commit("hc v1");
    f.wait(CONVERGE, "hc v1 runs healthy", |f| {
        f.status_is("hc", "running") && f.status("hc")["components"][0]["health"] == "healthy"
    });
    let v1_file = std::fs::read_to_string(f.repo.join("hc.toml")).unwrap();

    // v2 checks a path the image does not serve (404).
    f.write("hc.toml", &svc("v2", "/healthz"));
    f.commit("hc v2 (broken check)");
    f.wait(CONVERGE, "hc v2 rolled back", |f| {
        f.status_is("hc", "failed")
    });
    let st = f.status("hc");
    let detail = st["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.starts_with("v2 failed its health check (not healthy within 20s: hc: http GET /healthz on 127.0.0.1:"),
        "{detail}"
    );
    assert!(detail.contains("status 404"), "{detail}");
    assert!(
        detail.contains("rolled back to v1 (spec ") && detail.contains("run `mcp rollback hc`"),
        "{detail}"
    );
    let c = f.one("hc").expect("hc has one container");
    assert_eq!(c.state, "running");
    assert_eq!(st["components"][0]["version"], "v1", "{st:#}");
    // Not retried: three more passes' worth of time, one v2 deploy.
    std::thread::sleep(Duration::from_secs(4));
    assert!(f.status_is("hc", "failed"));
    let attempts: usize = f
        .agents
        .values()
        .map(|a| {
            a.log_text()
                .matches("deploy failed its health check")
                .count()
        })
        .sum();
    assert_eq!(attempts, 1, "the failed spec was tried again\n{}", f.logs());

    // History: v2 rolled back, v1 deployed (and the desired one marked).
    let out = f.mcp(&["--output", "json", "history", "hc"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<&str> = h["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["rolled_back", "deployed"], "{h:#}");
    assert_eq!(h["commits"][0]["desired"], true);

    // --dry-run changes nothing.
    let head = |f: &Fleet| {
        let o = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&f.repo)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let before = head(&f);
    let out = f.mcp(&["rollback", "hc", "--dry-run"]);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(2),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would restore hc.toml as of"),
        "{out:?}"
    );
    assert_eq!(head(&f), before);
    assert_eq!(
        std::fs::read_to_string(f.repo.join("hc.toml")).unwrap(),
        svc("v2", "/healthz")
    );

    // The rollback commit holds v1's file exactly; the fleet converges.
    let out = f.mcp(&["rollback", "hc"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_ne!(head(&f), before);
    assert_eq!(
        std::fs::read_to_string(f.repo.join("hc.toml")).unwrap(),
        v1_file
    );
    f.wait(CONVERGE, "hc v1 runs again, not failed", |f| {
        f.status_is("hc", "running")
    });

    // A new good version deploys.
    f.write("hc.toml", &svc("v2", "/version"));
    f.commit("hc v2 (fixed)");
    f.wait(CONVERGE, "hc v2 runs healthy", |f| {
        let st = f.status("hc");
        st["status"] == "running" && st["components"][0]["version"] == "v2"
    });
}

/// Issue 12 items 5 and 7: with the master's loop and the agents' monitor
/// both at 60 s, a container killed with podman runs again within seconds:
/// podman's event wakes the agent's monitor, the agent reports the change
/// (`ReportChanges`) and the master's pass heals it.
#[test]
fn a_killed_container_is_back_within_seconds_without_timers() {
    let Some(mut f) = Fleet::start(&FleetOptions {
        agents: 2,
        edge: false,
        port_base: 38800,
        concurrency: 2,
        gitops: true,
        slow_timers: true,
    }) else {
        return;
    };
    f.write("ev.toml", &web_service("ev", "v1", ""));
    f.commit("ev");
    f.wait(CONVERGE, "ev runs", |f| {
        f.status_is("ev", "running") && f.running("ev")
    });
    let before = f.one("ev").unwrap();
    let killed = Instant::now();
    let out = f
        .podman(&before.node)
        .args(["kill", "ev"])
        .output()
        .unwrap();
    assert!(out.status.success(), "podman kill: {out:?}");
    // Well under either 60 s timer.
    let back = f.wait(Duration::from_secs(20), "ev is running again", |f| {
        f.one("ev").is_some_and(|c| c.state == "running")
            && killed.elapsed() > Duration::from_millis(100)
    });
    eprintln!("ev back {back:?} after podman kill (master loop and agent monitor at 60 s)");
    let after = f.one("ev").unwrap();
    assert_eq!(after.id, before.id, "started again, not recreated");
}
