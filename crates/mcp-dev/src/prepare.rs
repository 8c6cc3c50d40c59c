//! Choosing a fleet (ports, node names) and writing its state directory:
//! PKI, signing key, tokens, configs, the demo services repository, and
//! `fleet.json`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{self, IssueOptions, SigningKey, TokenRequest};
use mcp_security::pki::{Ca, Validity};
use serde::{Deserialize, Serialize};

use crate::git::{self, Identity};
use crate::{configs, failed, io, podman, DevError};

/// The demo services (`examples/dev/`), written into a new services
/// repository.
pub const DEMO_SERVICES: &[(&str, &str)] = &[
    (
        "hello.toml",
        include_str!("../../../examples/dev/hello.toml"),
    ),
    ("shop.toml", include_str!("../../../examples/dev/shop.toml")),
    (
        "notes.toml",
        include_str!("../../../examples/dev/notes.toml"),
    ),
];

/// Lifetime of the tokens `mcp dev` issues (within the daemons' default
/// maximum, [`jwt::DEFAULT_MAX_TOKEN_LIFETIME`]); they are reissued on every
/// run.
pub const TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The record of a prepared fleet, in the state directory.
pub(crate) const RECORD: &str = "fleet.json";

/// What to prepare.
#[derive(Debug, Clone, Default)]
pub struct DevOptions {
    /// The services directory; `None`: a git repository seeded with the demo
    /// services, `<state>/services` (created once).
    pub services: Option<PathBuf>,
    /// Number of agents: the first is the master node, the others workers.
    pub agents: u32,
    /// Also an edge node.
    pub edge: bool,
    /// `None`: [`default_state_dir`].
    pub state_dir: Option<PathBuf>,
    /// `CONTAINERS_CONF` for every podman the fleet runs (agents and the
    /// harness's own clean-up); `None`: podman's default.
    pub containers_conf: Option<PathBuf>,
}

/// One agent of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// `master`, `worker` or `edge`.
    pub role: String,
    /// The agent's gRPC port on 127.0.0.1.
    pub port: u16,
    /// The agent's host port range.
    pub range: (u16, u16),
    /// podman's global arguments for this node's storage (`--root`, ...).
    pub podman_args: Vec<String>,
}

/// A prepared fleet: where everything is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    pub state: PathBuf,
    pub master_port: u16,
    pub nodes: Vec<Node>,
    pub services: PathBuf,
    /// The services directory is a git work tree: the master follows its
    /// commits (else push mode).
    pub gitops: bool,
    /// The operator's overlay image store, shared read-only with every
    /// agent (`--storage-opt overlay.imagestore=`), so images built or
    /// pulled later are seen too. `None`: images are copied at prepare.
    pub image_store: Option<String>,
    pub containers_conf: Option<PathBuf>,
}

impl Fleet {
    pub fn master_config(&self) -> PathBuf {
        self.state.join("master/master.toml")
    }

    pub fn agent_config(&self, node: &str) -> PathBuf {
        self.state.join("nodes").join(node).join("agent.toml")
    }

    pub fn cli_config(&self) -> PathBuf {
        self.state.join("mcp.toml")
    }

    /// `logs/<name>.log` (`master` or a node name).
    pub fn log(&self, name: &str) -> PathBuf {
        self.state.join("logs").join(format!("{name}.log"))
    }

    pub fn master_address(&self) -> String {
        format!("127.0.0.1:{}", self.master_port)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The fleet recorded in `state` by [`prepare`].
    pub fn load(state: &Path) -> Result<Fleet, DevError> {
        let file = state.join(RECORD);
        let text =
            std::fs::read_to_string(&file).map_err(io(format!("reading {}", file.display())))?;
        serde_json::from_str(&text).map_err(|e| DevError::Record {
            file,
            message: e.to_string(),
        })
    }

    /// Where everything was written, and how to run it (what `mcp dev
    /// --prepare-only --output json` prints).
    pub fn paths_json(&self) -> serde_json::Value {
        let master = serde_json::json!({
            "config": self.master_config(),
            "address": self.master_address(),
            "log": self.log("master"),
            "command": ["mcp-master", "--config", self.master_config(), "serve"],
        });
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.name,
                    "role": n.role,
                    "config": self.agent_config(&n.name),
                    "address": format!("127.0.0.1:{}", n.port),
                    "log": self.log(&n.name),
                    "podman_args": n.podman_args,
                    "command": ["mcp-agent", "--config", self.agent_config(&n.name), "serve"],
                })
            })
            .collect();
        serde_json::json!({
            "state_dir": self.state,
            "cli_config": self.cli_config(),
            "services": self.services,
            "gitops": self.gitops,
            "master": master,
            "nodes": nodes,
        })
    }
}

/// `$XDG_STATE_HOME/mcp/dev`, else `~/.local/state/mcp/dev`.
pub fn default_state_dir() -> Result<PathBuf, DevError> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d).join("mcp/dev"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/mcp/dev")),
        None => failed("no HOME: pass --state-dir"),
    }
}

/// Chooses ports and node names, writes the PKI, tokens, configs and
/// `fleet.json`, and makes the images visible to every agent.
pub fn prepare(opts: &DevOptions) -> Result<Fleet, DevError> {
    if opts.agents == 0 || opts.agents > 16 {
        return failed("--agents must be between 1 and 16 (the master accepts at most 16 nodes)");
    }
    let state = match &opts.state_dir {
        Some(d) => d.clone(),
        None => default_state_dir()?,
    };
    std::fs::create_dir_all(&state).map_err(io(format!("creating {}", state.display())))?;
    let state = state
        .canonicalize()
        .map_err(io(format!("resolving {}", state.display())))?;

    let services = match &opts.services {
        Some(d) => d
            .canonicalize()
            .map_err(io(format!("services directory {}", d.display())))?,
        None => demo_services(&state)?,
    };
    let gitops = git::in_work_tree(&services);

    let mut names = Vec::new();
    for i in 0..opts.agents {
        names.push(if i == 0 {
            ("m1".to_string(), "master")
        } else {
            (format!("w{i}"), "worker")
        });
    }
    if opts.edge {
        names.push(("e1".to_string(), "edge"));
    }
    let image_store = podman::operator_image_store(opts.containers_conf.as_deref());
    let mut nodes = Vec::new();
    for (i, (name, role)) in names.into_iter().enumerate() {
        let base = 20000 + u16::try_from(i).unwrap_or(0) * 1000;
        let podman_args = podman::podman_args(&state, &name, image_store.as_deref());
        nodes.push(Node {
            name,
            role: role.to_string(),
            port: free_port()?,
            range: (base, base + 999),
            podman_args,
        });
    }
    let fleet = Fleet {
        master_port: free_port()?,
        nodes,
        state,
        services,
        gitops,
        image_store,
        containers_conf: opts.containers_conf.clone(),
    };
    write_state(&fleet)?;
    if fleet.image_store.is_none() {
        podman::copy_images(&fleet)?;
    }
    Ok(fleet)
}

fn free_port() -> Result<u16, DevError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free loopback port"))?;
    Ok(l.local_addr()
        .map_err(io("finding a free loopback port"))?
        .port())
}

/// A services repository with the demo services, created once.
fn demo_services(state: &Path) -> Result<PathBuf, DevError> {
    let dir = state.join("services");
    if dir.join(".git").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    for (file, text) in DEMO_SERVICES {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
    }
    let who = Identity {
        name: "mcp dev",
        email: "mcp-dev@localhost",
    };
    git::git(&dir, &["init", "-q", "-b", "main"])?;
    git::git(&dir, &["add", "."])?;
    git::git_as(
        &dir,
        who,
        &["commit", "-q", "-m", "demo services (examples/dev)"],
    )?;
    Ok(dir)
}

fn mkdir(p: &Path) -> Result<(), DevError> {
    std::fs::create_dir_all(p).map_err(io(format!("creating {}", p.display())))
}

fn write(p: &Path, text: &str) -> Result<(), DevError> {
    std::fs::write(p, text).map_err(io(format!("writing {}", p.display())))
}

/// The master identity of a dev fleet, and the name its certificate
/// carries (agents check both, `[auth] master_cert_name`).
pub const MASTER_IDENTITY: &str = "mcp-master";

/// The subject alternative names of the master's certificate: the master
/// identity (agents verify the master by it, as a server and as a client),
/// and the loopback names the CLI dials it by.
pub fn master_sans() -> [&'static str; 3] {
    [MASTER_IDENTITY, "localhost", "127.0.0.1"]
}

/// The subject alternative names of a node's certificate: its node name
/// (the master verifies the agent by it) and its loopback address. Every
/// node of a dev fleet shares 127.0.0.1, so only the name tells one node's
/// certificate from another's.
pub fn node_sans(node: &str) -> [&str; 2] {
    [node, "127.0.0.1"]
}

/// The PKI is complete and current: the CA, and every certificate with the
/// names it must carry (a state directory from before per-node names, or
/// with other nodes, gets a new PKI).
fn pki_current(f: &Fleet) -> bool {
    let pki = f.state.join("pki");
    if !pki.join("ca.pem").exists() {
        return false;
    }
    let names = |file: &str, sans: &[&str]| {
        let Ok(certs) = mcp_security::tls::load_certs("certificate", &pki.join(file)) else {
            return false;
        };
        certs.first().is_some_and(|leaf| {
            sans.iter()
                .all(|n| mcp_security::binding::certificate_names(leaf.as_ref(), n))
        })
    };
    names("master.crt", &master_sans())
        && f.nodes
            .iter()
            .all(|n| names(&format!("{}.crt", n.name), &node_sans(&n.name)))
}

/// Writes (once) the PKI and signing key; (every time) the tokens, the
/// configs and the record.
fn write_state(f: &Fleet) -> Result<(), DevError> {
    let s = &f.state;
    for d in ["pki", "keys", "tokens", "master", "logs", "run"] {
        mkdir(&s.join(d))?;
    }
    if !pki_current(f) {
        let _ = std::fs::remove_file(s.join("pki/ca.pem"));
        let ca = Ca::generate("mcp dev")?;
        let pki = s.join("pki");
        ca.write_leaf(&pki, "master", &master_sans(), Validity::Days(365))?;
        for n in &f.nodes {
            ca.write_leaf(&pki, &n.name, &node_sans(&n.name), Validity::Days(365))?;
        }
        // Written last: its presence means the whole PKI is there.
        ca.write_cert(&s.join("pki/ca.pem"))?;
    }
    // The master's token is bound to its certificate (RFC 8705 `cnf`):
    // useless without the master's private key.
    let master_thumbprint = jwt::cert_thumbprint_from_pem_file(&s.join("pki/master.crt"))?;
    let key_path = s.join("keys/issuer.pem");
    if !key_path.exists() {
        let kp = jwt::generate_keypair()?;
        jwt::write_keypair(&kp, &key_path, &s.join("keys/issuer.pem.pub"))?;
    }
    let key = SigningKey::from_file(&key_path)?;
    let mut tokens = vec![
        (
            "master".to_string(),
            MASTER_IDENTITY.to_string(),
            AccountType::System,
            Some(master_thumbprint),
        ),
        (
            "operator".to_string(),
            "operator".to_string(),
            AccountType::Human,
            None,
        ),
    ];
    for n in &f.nodes {
        let id = format!("agent-{}", n.name);
        tokens.push((id.clone(), id, AccountType::System, None));
    }
    for (file, identity, account_type, cert_thumbprint) in tokens {
        let req = TokenRequest {
            identity,
            account_type,
            roles: vec![],
            ttl: TOKEN_TTL,
            issuer: jwt::DEFAULT_ISSUER.to_string(),
            audience: jwt::DEFAULT_AUDIENCE.to_string(),
        };
        let opts = IssueOptions {
            cert_thumbprint,
            max_lifetime: Some(jwt::DEFAULT_MAX_TOKEN_LIFETIME),
        };
        let token = jwt::issue_token_with(&key, &req, &opts, &SystemClock)?;
        write_private(&s.join(format!("tokens/{file}.token")), token.expose())?;
    }
    write(&f.master_config(), &configs::master(f))?;
    for n in &f.nodes {
        let dir = s.join("nodes").join(&n.name);
        mkdir(&dir.join("srv"))?;
        mkdir(&dir.join("storage"))?;
        write(&f.agent_config(&n.name), &configs::agent(f, n))?;
    }
    write(&f.cli_config(), &configs::cli(f))?;
    let record = serde_json::to_string_pretty(f).map_err(|e| DevError::Record {
        file: s.join(RECORD),
        message: e.to_string(),
    })?;
    write(&s.join(RECORD), &record)
}

fn write_private(path: &Path, data: &str) -> Result<(), DevError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("creating {}", path.display())))?;
    writeln!(file, "{data}").map_err(io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The demo fleet starts from valid files only.
    #[test]
    fn demo_services_are_valid() {
        for (file, text) in DEMO_SERVICES {
            let stem = file.trim_end_matches(".toml");
            if let Err(d) = mcp_spec::parse_service(file, stem, text, &Default::default()) {
                panic!("{file}: {d:?}");
            }
        }
    }

    /// A prepared fleet is recorded, and the record reads back as the same
    /// fleet (what `down` relies on).
    #[test]
    fn prepare_records_the_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let services = dir.path().join("services");
        std::fs::create_dir(&services).unwrap();
        let f = prepare(&DevOptions {
            services: Some(services),
            agents: 2,
            edge: true,
            state_dir: Some(dir.path().join("state")),
            containers_conf: None,
        })
        .unwrap();
        let names: Vec<&str> = f.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["m1", "w1", "e1"]);
        assert!(!f.gitops, "a plain directory is push mode");
        assert_eq!(Fleet::load(&f.state).unwrap(), f);
        for n in &f.nodes {
            let cfg = std::fs::read_to_string(f.agent_config(&n.name)).unwrap();
            assert!(cfg.contains(&format!("name = \"{}\"", n.name)), "{cfg}");
        }
        let cli = std::fs::read_to_string(f.cli_config()).unwrap();
        assert!(
            cli.contains(&format!("127.0.0.1:{}", f.master_port)),
            "{cli}"
        );
    }

    /// Each certificate names its own node (and not the others, nor the
    /// master); the master's names mcp-master; the master's token is bound
    /// to the master's certificate and the others are not; a state
    /// directory whose certificates lack those names gets a new PKI.
    #[test]
    fn certificates_carry_each_nodes_names_and_the_master_token_is_bound() {
        use mcp_security::binding::certificate_names;
        let dir = tempfile::tempdir().unwrap();
        let services = dir.path().join("services");
        std::fs::create_dir(&services).unwrap();
        let opts = DevOptions {
            services: Some(services),
            agents: 2,
            edge: false,
            state_dir: Some(dir.path().join("state")),
            containers_conf: None,
        };
        let f = prepare(&opts).unwrap();
        let leaf = |name: &str| {
            mcp_security::tls::load_certs("cert", &f.state.join(format!("pki/{name}.crt")))
                .unwrap()
                .remove(0)
        };
        let master = leaf("master");
        for n in ["mcp-master", "localhost", "127.0.0.1"] {
            assert!(certificate_names(master.as_ref(), n), "master lacks {n}");
        }
        for (node, other) in [("m1", "w1"), ("w1", "m1")] {
            let c = leaf(node);
            assert!(certificate_names(c.as_ref(), node));
            assert!(certificate_names(c.as_ref(), "127.0.0.1"));
            assert!(
                !certificate_names(c.as_ref(), other),
                "{node} names {other}"
            );
            assert!(!certificate_names(c.as_ref(), "mcp-master"));
        }
        let public = jwt::PublicKey::from_file(&f.state.join("keys/issuer.pem.pub")).unwrap();
        let verifier = jwt::JwtVerifier::new(public, jwt::DEFAULT_ISSUER, jwt::DEFAULT_AUDIENCE)
            .with_max_lifetime(jwt::DEFAULT_MAX_TOKEN_LIFETIME);
        let token = |file: &str| {
            let t = std::fs::read_to_string(f.state.join(format!("tokens/{file}.token"))).unwrap();
            verifier.verify_token(t.trim()).unwrap()
        };
        assert_eq!(
            token("master").cert_thumbprint,
            Some(jwt::cert_thumbprint(master.as_ref()))
        );
        assert_eq!(token("operator").cert_thumbprint, None);
        assert_eq!(token("agent-w1").cert_thumbprint, None);

        // Kept when current; replaced when a certificate lacks its names
        // (a state directory from before per-node names).
        let before = std::fs::read(f.state.join("pki/ca.pem")).unwrap();
        prepare(&opts).unwrap();
        assert_eq!(std::fs::read(f.state.join("pki/ca.pem")).unwrap(), before);
        let ca = Ca::generate("old").unwrap();
        ca.write_leaf(
            &f.state.join("pki"),
            "w1",
            &["localhost", "127.0.0.1"],
            Validity::Days(1),
        )
        .unwrap();
        let f = prepare(&opts).unwrap();
        assert_ne!(std::fs::read(f.state.join("pki/ca.pem")).unwrap(), before);
        assert!(certificate_names(leaf("w1").as_ref(), "w1"));
    }
}
