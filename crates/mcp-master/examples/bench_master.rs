//! Heartbeat and Status latency at a real `mcp-master` (docs/BENCHMARKS.md).
//!
//! For each binary given, the bench creates a fresh directory with a CA, the
//! master's certificate, an Ed25519 token issuer and a master config, starts
//! `mcp-master serve`, registers `--agents` agent identities (`agent-nodeNN`),
//! heartbeats each of them every second and calls `Status` in a loop as an
//! operator for `--seconds`, then stops the master with SIGTERM and prints
//! p50/p99 of both calls (client-side round trip over TLS on 127.0.0.1).
//!
//! The agents are not real agents: each registers the address of a
//! 127.0.0.1 port nothing listens on, so the master's calls to them
//! (`ListServices` during Status, the reconcile pass) are refused at once.
//! The config sets `heartbeat_min_interval = "500ms"` so a heartbeat every
//! second is within the rate limit.
//!
//! ```text
//! cargo run --release -p mcp-master --example bench_master -- \
//!     --bin before=/tmp/mcp-before-target/release/mcp-master \
//!     --bin after=target/release/mcp-master --seconds 30
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mcp_proto::pb;
use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;
use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{generate_keypair, issue_token, SigningKey, TokenRequest};
use mcp_security::pki::{Ca, Validity};
use mcp_security::tls::{self, TlsConnector};
use mcp_security::token::BearerInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = McpMasterServiceClient<InterceptedService<Channel, BearerInterceptor>>;

struct Args {
    bins: Vec<(String, PathBuf)>,
    seconds: u64,
    agents: usize,
    dir: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        bins: Vec::new(),
        seconds: 30,
        agents: 16,
        dir: PathBuf::from("target/bench-master"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => {
                let v = value()?;
                let (label, path) = v
                    .split_once('=')
                    .with_context(|| format!("--bin LABEL=PATH, found {v:?}"))?;
                a.bins.push((label.to_string(), PathBuf::from(path)));
            }
            "--seconds" => a.seconds = value()?.parse()?,
            "--agents" => a.agents = value()?.parse()?,
            "--dir" => a.dir = PathBuf::from(value()?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if a.bins.is_empty() {
        bail!("give at least one --bin LABEL=PATH");
    }
    Ok(a)
}

fn token(key: &SigningKey, name: &str, t: AccountType) -> mcp_security::Secret {
    issue_token(
        key,
        &TokenRequest {
            identity: name.to_string(),
            account_type: t,
            roles: Vec::new(),
            ttl: Duration::from_secs(3600),
            issuer: "mcias".to_string(),
            audience: "mcp".to_string(),
        },
        &SystemClock,
    )
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

struct Master {
    child: Child,
    port: u16,
    dir: PathBuf,
    signing: SigningKey,
    log: PathBuf,
}

fn start(bin: &Path, dir: &Path, agents: usize) -> anyhow::Result<Master> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let ca = Ca::generate("bench")?;
    ca.write_cert(&dir.join("ca.pem"))?;
    ca.write_leaf(dir, "master", &["127.0.0.1"], Validity::Days(1))?;
    // The agents' client certificate names the address they register (the
    // master accepts a new node address only when the certificate names it).
    ca.write_leaf(dir, "agent", &["127.0.0.1"], Validity::Days(1))?;
    let kp = generate_keypair()?;
    std::fs::write(dir.join("issuer.pub"), &kp.public_pem)?;
    let signing = SigningKey::from_pem(kp.private_pem.expose().as_bytes(), "bench key")?;
    std::fs::write(
        dir.join("master.token"),
        token(&signing, "mcp-master", AccountType::System).expose(),
    )?;
    let port = free_port();
    let allowed: Vec<String> = (0..agents)
        .map(|i| format!("\"agent-node{i:02}\""))
        .collect();
    std::fs::write(
        dir.join("master.toml"),
        format!(
            r#"
[server]
grpc_addr = "127.0.0.1:{port}"
tls_cert = "master.crt"
tls_key = "master.key"
ca_cert = "ca.pem"

[database]
path = "master.db"

[auth]
issuer_public_key = "issuer.pub"
issuer = "mcias"
audience = "mcp"
token_file = "master.token"

[edge]
internal_zone = "svc.test"

[registration]
allowed_agents = [{allowed}]
max_nodes = {agents}
heartbeat_interval = "2s"
heartbeat_min_interval = "500ms"

[timeouts]
health_check = "1s"
"#,
            allowed = allowed.join(", ")
        ),
    )?;
    let log = dir.join("master.log");
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(dir.join("master.toml"))
        .env_remove("MCP_TOKEN")
        .env("MCP_LOG", "warn,mcp_master=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut m = Master {
        child,
        port,
        dir: dir.to_path_buf(),
        signing,
        log,
    };
    let t0 = Instant::now();
    while !read(&m.log).contains("mcp-master ready") {
        if let Some(status) = m.child.try_wait()? {
            bail!("mcp-master exited early ({status}):\n{}", read(&m.log));
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = m.child.kill();
            bail!("mcp-master not ready in 30 s:\n{}", read(&m.log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(m)
}

async fn client(m: &Master, identity: &str, t: AccountType) -> anyhow::Result<Client> {
    let cert = tls::CertKeyPaths {
        cert: m.dir.join("agent.crt"),
        key: m.dir.join("agent.key"),
    };
    let cert = (t == AccountType::System).then_some(&cert);
    let config = tls::client_config(&m.dir.join("ca.pem"), cert)?;
    let channel = tls::connect_channel(
        &format!("https://127.0.0.1:{}", m.port),
        TlsConnector::new(Arc::new(config)),
    )
    .await?;
    let tok = token(&m.signing, identity, t);
    Ok(McpMasterServiceClient::with_interceptor(
        channel,
        BearerInterceptor::new(&tok)?,
    ))
}

#[derive(Default)]
struct Samples {
    ok: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

impl Samples {
    fn add(&mut self, d: Duration, r: Result<(), tonic::Status>) {
        match r {
            Ok(()) => self.ok.push(d),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    fn merge(&mut self, o: Samples) {
        self.ok.extend(o.ok);
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
    fn pct(&mut self, p: usize) -> f64 {
        self.ok.sort();
        if self.ok.is_empty() {
            return f64::NAN;
        }
        let i = (self.ok.len() * p / 100).min(self.ok.len() - 1);
        self.ok[i].as_secs_f64() * 1000.0
    }
}

async fn run_one(label: &str, bin: &Path, a: &Args) -> anyhow::Result<(Samples, Samples)> {
    let dir = a.dir.join(label);
    let mut m = start(bin, &dir, a.agents)?;
    let dead = free_port();
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for i in 0..a.agents {
        let name = format!("node{i:02}");
        let mut c = client(&m, &format!("agent-{name}"), AccountType::System).await?;
        c.register(pb::RegisterRequest {
            name: name.clone(),
            role: "worker".to_string(),
            address: format!("https://127.0.0.1:{dead}"),
            arch: "amd64".to_string(),
        })
        .await
        .with_context(|| format!("register {name}"))?;
        let stagger = Duration::from_millis(1000 * i as u64 / a.agents as u64);
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            tokio::time::sleep(stagger).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < deadline {
                tick.tick().await;
                let t = Instant::now();
                let r = c
                    .heartbeat(pb::HeartbeatRequest {
                        name: name.clone(),
                        cpu_millicores: 250,
                        memory_bytes: 1 << 30,
                        disk_bytes: 10 << 30,
                        containers: 3,
                    })
                    .await;
                s.add(t.elapsed(), r.map(|_| ()));
            }
            s
        }));
    }
    let mut op = client(&m, "alice", AccountType::Human).await?;
    let status = tokio::spawn(async move {
        let mut s = Samples::default();
        while Instant::now() < deadline {
            let t = Instant::now();
            let r = op
                .status(pb::StatusRequest {
                    service_name: String::new(),
                })
                .await;
            s.add(t.elapsed(), r.map(|_| ()));
        }
        s
    });
    let mut hb = Samples::default();
    for t in tasks {
        hb.merge(t.await?);
    }
    let st = status.await?;
    let pid = m.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let t0 = Instant::now();
    while m.child.try_wait()?.is_none() {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = m.child.kill();
            bail!("{label}: mcp-master did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((hb, st))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    println!(
        "{} agents heartbeating every 1 s, one operator calling Status in a loop, {} s per binary\n",
        a.agents, a.seconds
    );
    println!("| binary | call | calls | errors | p50 ms | p99 ms | max ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (label, bin) in &a.bins {
        let (mut hb, mut st) = run_one(label, bin, &a).await?;
        for (call, s) in [("Heartbeat", &mut hb), ("Status", &mut st)] {
            let max =
                s.ok.iter()
                    .max()
                    .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
            let (p50, p99) = (s.pct(50), s.pct(99));
            println!(
                "| {label} | {call} | {} | {} | {p50:.2} | {p99:.2} | {max:.2} |",
                s.ok.len(),
                s.errors,
            );
            if let Some(e) = &s.first_error {
                eprintln!("{label} {call}: first error: {e}");
            }
        }
    }
    Ok(())
}
