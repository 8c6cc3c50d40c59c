//! Test support for other crates' tests (feature `testing`, enabled in
//! `[dev-dependencies]` only; the shipped `mcp-agent` binary has none of
//! it).
//!
//! - [`FakeRuntime`] (re-exported from `mcp-runtime`, whose `testing`
//!   feature this one enables): an agent over it is a real agent with fake
//!   containers.
//! - [`fake_agent`]: such an agent with an in-memory registry.
//! - [`TestServer`]: the agent's gRPC server as the daemon assembles it
//!   ([`crate::serve`]: TLS 1.3, the authentication / authorization / audit
//!   layer, the shared message limits) on a free port of 127.0.0.1.
//!
//! ```ignore
//! let agent = Arc::new(mcp_agent::testing::fake_agent("orion", files_root)?);
//! let security = ServerSecurity::new(tls_server_config, Arc::new(verifier), "mcp-master");
//! let server = TestServer::start(agent.clone(), security).await?;
//! // connect to server.url() with a TLS channel and a bearer token ...
//! server.stop().await?;
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use mcp_runtime::ContainerRuntime;
pub use mcp_runtime::{FakeCall, FakeOp, FakeRuntime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent::{Agent, AgentSettings};
use crate::registry::{Registry, RegistryError};
use crate::server::{serve, ServeError, ServerSecurity};

/// An agent named `node` over a new [`FakeRuntime`], with an in-memory
/// registry, data under `files_root` and otherwise default settings.
pub fn fake_agent(
    node: &str,
    files_root: impl Into<PathBuf>,
) -> Result<Agent<FakeRuntime>, RegistryError> {
    let mut settings = AgentSettings::new(node);
    settings.files_root = files_root.into();
    Ok(Agent::new(
        FakeRuntime::new(),
        Registry::open_in_memory()?,
        settings,
    ))
}

/// A running agent gRPC server on 127.0.0.1; stopped by [`TestServer::stop`]
/// or when dropped.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Binds a free port of 127.0.0.1 and serves `agent` there with
    /// `security`, exactly as `mcp-agent serve` does.
    pub async fn start<R: ContainerRuntime + 'static>(
        agent: Arc<Agent<R>>,
        security: ServerSecurity,
    ) -> Result<TestServer, ServeError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(agent, listener, security, async {
            let _ = rx.await;
        }));
        Ok(TestServer {
            addr,
            stop: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops the server (in-flight calls finish first) and returns how it
    /// ended.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
