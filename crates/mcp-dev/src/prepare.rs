//! Choosing a fleet (addresses, ports, node names) and writing its state
//! directory: PKI, signing key, tokens, configs, the servers' files, the
//! demo services repository, and `fleet.json`.
//!
//! # Addresses
//!
//! Every fleet gets its own loopback block `127.<a>.<b>.0/24`, `a` in
//! 1..=254 and `b` from a hash (FNV-1a) of the canonical state directory
//! path, so the same directory gets the same block every run and two
//! directories (two dev fleets, fleet tests in parallel) practically never
//! share one; a fresh state directory whose block is in use (something
//! answers on its first node's Caddy admin port) takes the next block, and
//! the block is recorded in `fleet.json` and kept. `127.0.0.0/16` is left
//! alone (127.0.0.1 is everybody's, 127.0.1.1 Debian's host name). Node
//! `i` (0-based, in the order m1, w1, w2, ..., e1) is `127.<a>.<b>.<11+i>`:
//! its agent's gRPC port, its Caddy (admin on port 2019, routes on their
//! ports) and its HAProxy listen there. The master stays on
//! `127.0.0.1:<free port>`, Knot on `127.0.0.1:<free port>` (TCP and UDP).

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{self, IssueOptions, SigningKey, TokenRequest};
use mcp_security::pki::{Ca, Validity};
use serde::{Deserialize, Serialize};

use crate::git::{self, Identity};
use crate::servers::{self, ServerBins, ZONE};
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
    /// The node's own loopback address, bare (`127.<a>.<b>.<11+i>`): its
    /// agent, its Caddy and its HAProxy listen there.
    #[serde(default)]
    pub address: String,
    /// The agent's gRPC port on `address`.
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
    /// Knot's `127.0.0.1:<port>`, serving [`Fleet::zone`].
    #[serde(default)]
    pub dns: String,
    /// The internal zone (`mcp.test`): routes are `<service>.<zone>`.
    #[serde(default)]
    pub zone: String,
    /// The CA the routes' certificates chain to (`pki/ca.pem`).
    #[serde(default)]
    pub ca_cert: PathBuf,
    /// The fleet's loopback block, `127.<a>.<b>.0/24`.
    #[serde(default)]
    pub subnet: String,
    /// The Caddy, HAProxy and Knot binaries.
    #[serde(default)]
    pub servers: ServerBins,
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
                    "address": format!("{}:{}", n.address, n.port),
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
            "dns": self.dns,
            "zone": self.zone,
            "ca_cert": self.ca_cert,
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
    let bins = servers::check_servers()?;
    let previous = Fleet::load(&state).ok();
    let block = previous
        .as_ref()
        .and_then(|p| parse_subnet(&p.subnet))
        .unwrap_or_else(|| choose_block(&state));

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
        let ip = node_ip(block, i);
        nodes.push(Node {
            name,
            role: role.to_string(),
            address: ip.to_string(),
            port: free_port_on(IpAddr::V4(ip))?,
            range: (base, base + 999),
            podman_args,
        });
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let fleet = Fleet {
        master_port: free_port_on(localhost)?,
        dns: format!("127.0.0.1:{}", servers::free_tcp_udp_port(localhost)?),
        zone: ZONE.to_string(),
        ca_cert: state.join("pki/ca.pem"),
        subnet: format!("127.{}.{}.0/24", block.0, block.1),
        servers: bins,
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

/// A free TCP port on `ip` (bound, read, released).
pub(crate) fn free_port_on(ip: IpAddr) -> Result<u16, DevError> {
    let what = || format!("finding a free port on {ip}");
    let l = TcpListener::bind((ip, 0)).map_err(io(what()))?;
    Ok(l.local_addr().map_err(io(what()))?.port())
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The block `(a, b)` of `127.<a>.<b>.0/24` a state directory hashes to,
/// `a` in 1..=254.
pub(crate) fn block_of(state: &Path) -> (u8, u8) {
    use std::os::unix::ffi::OsStrExt as _;
    let h = fnv1a(state.as_os_str().as_bytes());
    let n = (h % (254 * 256)) as u16;
    block_at(n)
}

/// The `n`th block (0-based) of the 254 * 256 usable ones.
fn block_at(n: u16) -> (u8, u8) {
    let n = n % (254 * 256);
    ((n / 256 + 1) as u8, (n % 256) as u8)
}

/// A fresh state directory's block: its hash's, or the next one not in
/// use (nothing answers on its first node's Caddy admin port).
fn choose_block(state: &Path) -> (u8, u8) {
    let (a, b) = block_of(state);
    let first = (u16::from(a) - 1) * 256 + u16::from(b);
    (0..64)
        .map(|k| block_at(first.wrapping_add(k)))
        .find(|blk| {
            let admin = std::net::SocketAddr::from((node_ip(*blk, 0), servers::CADDY_ADMIN_PORT));
            std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(200)).is_err()
        })
        .unwrap_or((a, b))
}

fn parse_subnet(s: &str) -> Option<(u8, u8)> {
    let ip: Ipv4Addr = s
        .strip_suffix(".0/24")
        .map(|p| format!("{p}.0"))?
        .parse()
        .ok()?;
    let [x, a, b, _] = ip.octets();
    (x == 127 && a != 0).then_some((a, b))
}

/// Node `i`'s address in `block`: `127.<a>.<b>.<11+i>`.
fn node_ip(block: (u8, u8), i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, block.0, block.1, 11 + u8::try_from(i).unwrap_or(0))
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

pub(crate) fn write(p: &Path, text: &str) -> Result<(), DevError> {
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
/// (the master verifies the agent by it) and its own loopback address
/// (the host of the address it registers with, which the master checks).
pub fn node_sans(node: &Node) -> [&str; 2] {
    [&node.name, &node.address]
}

/// The PKI is complete and current: the CA, and every certificate with the
/// names it must carry (a state directory from before per-node names, or
/// with other nodes, gets a new PKI).
fn pki_current(f: &Fleet) -> bool {
    let pki = f.state.join("pki");
    if !pki.join("ca.pem").exists() || !pki.join("ca.key").exists() {
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
            .all(|n| names(&format!("{}.crt", n.name), &node_sans(n)))
}

/// Writes (once) the PKI and signing key; (every time) the tokens, the
/// configs and the record.
fn write_state(f: &Fleet) -> Result<(), DevError> {
    let s = &f.state;
    for d in ["pki", "keys", "tokens", "master", "logs", "run", "dns"] {
        mkdir(&s.join(d))?;
    }
    if !pki_current(f) {
        let _ = std::fs::remove_file(s.join("pki/ca.pem"));
        let ca = Ca::generate("mcp dev")?;
        let pki = s.join("pki");
        ca.write_leaf(&pki, "master", &master_sans(), Validity::Days(365))?;
        for n in &f.nodes {
            ca.write_leaf(&pki, &n.name, &node_sans(n), Validity::Days(365))?;
        }
        // The agents issue their routes' certificates from this CA
        // (`[certs] issuer = "local-ca"`): every agent of a dev fleet holds
        // the CA key. Fine on one machine, never in production.
        ca.write_key(&pki.join("ca.key"))?;
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
    servers::write_dns(f)?;
    write(&f.master_config(), &configs::master(f))?;
    for n in &f.nodes {
        let dir = s.join("nodes").join(&n.name);
        mkdir(&dir.join("srv"))?;
        mkdir(&dir.join("storage"))?;
        servers::write_proxies(f, n)?;
        write(&f.agent_config(&n.name), &configs::agent(f, n))?;
    }
    write(&f.cli_config(), &configs::cli(f))?;
    let record = serde_json::to_string_pretty(f).map_err(|e| DevError::Record {
        file: s.join(RECORD),
        message: e.to_string(),
    })?;
    write(&s.join(RECORD), &record)
}

pub(crate) fn write_private(path: &Path, data: &str) -> Result<(), DevError> {
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

    /// Blocks are 127.<1..=254>.<0..=255>, the hash's stable.
    #[test]
    fn blocks_are_stable_and_outside_127_0() {
        assert_eq!(block_of(Path::new("/a/b")), block_of(Path::new("/a/b")));
        assert_ne!(block_of(Path::new("/a/b")), block_of(Path::new("/a/c")));
        assert_eq!(block_at(0), (1, 0));
        assert_eq!(block_at(254 * 256 - 1), (254, 255));
        assert_eq!(block_at(254 * 256), (1, 0), "wraps");
        assert_eq!(parse_subnet("127.3.4.0/24"), Some((3, 4)));
        assert_eq!(parse_subnet("127.0.4.0/24"), None);
        assert_eq!(node_ip((3, 4), 1), Ipv4Addr::new(127, 3, 4, 12));
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
        // The record's contract: dns, zone, ca_cert, nodes' bare addresses.
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f.state.join(RECORD)).unwrap()).unwrap();
        let (a, b) = block_of(&f.state);
        assert_ne!(a, 0, "127.0.x.x is left alone");
        assert!(record["dns"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(record["zone"], "mcp.test");
        assert_eq!(
            record["ca_cert"],
            f.state.join("pki/ca.pem").to_str().unwrap()
        );
        for (i, n) in record["nodes"].as_array().unwrap().iter().enumerate() {
            let ip: Ipv4Addr = n["address"].as_str().unwrap().parse().unwrap();
            assert_eq!(ip.octets()[3], 11 + i as u8);
            assert_eq!(ip.octets()[0], 127);
            assert!(n["name"].is_string() && n["role"].is_string());
            if record["subnet"] == format!("127.{a}.{b}.0/24") {
                assert_eq!(ip, node_ip((a, b), i));
            }
        }
        for n in &f.nodes {
            let cfg = std::fs::read_to_string(f.agent_config(&n.name)).unwrap();
            assert!(cfg.contains(&format!("name = \"{}\"", n.name)), "{cfg}");
            assert!(
                cfg.contains(&format!("grpc_addr = \"{}:{}\"", n.address, n.port)),
                "{cfg}"
            );
            assert!(
                cfg.contains(&format!("admin = \"{}:2019\"", n.address)),
                "{cfg}"
            );
            assert!(cfg.contains("issuer = \"local-ca\""), "{cfg}");
        }
        let master = std::fs::read_to_string(f.master_config()).unwrap();
        assert!(
            master.contains(&format!("server = \"{}\"", f.dns)),
            "{master}"
        );
        use std::os::unix::fs::PermissionsExt as _;
        for key in ["pki/ca.key", "dns/mcp-key.tsig", "dns/acme-key.tsig"] {
            let mode = std::fs::metadata(f.state.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        // The same directory keeps its addresses.
        let again = prepare(&DevOptions {
            services: Some(dir.path().join("services")),
            agents: 2,
            edge: true,
            state_dir: Some(dir.path().join("state")),
            containers_conf: None,
        })
        .unwrap();
        let addrs = |f: &Fleet| {
            f.nodes
                .iter()
                .map(|n| n.address.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(addrs(&again), addrs(&f));
        let cli = std::fs::read_to_string(f.cli_config()).unwrap();
        assert!(
            cli.contains(&format!("127.0.0.1:{}", again.master_port)),
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
            let ip = &f.node(node).unwrap().address;
            let other_ip = &f.node(other).unwrap().address;
            assert!(certificate_names(c.as_ref(), ip), "{node} lacks {ip}");
            assert!(!certificate_names(c.as_ref(), other_ip));
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
            &["w1", "127.0.0.1"],
            Validity::Days(1),
        )
        .unwrap();
        let f = prepare(&opts).unwrap();
        assert_ne!(std::fs::read(f.state.join("pki/ca.pem")).unwrap(), before);
        assert!(certificate_names(leaf("w1").as_ref(), "w1"));
    }
}
