//! PushFile / PullFile under `<files root>/<service>/` (see [`crate::files`]).

use mcp_runtime::ContainerRuntime;

use crate::files::{self};

use super::*;

impl<R: ContainerRuntime + 'static> Agent<R> {
    // ----- files -------------------------------------------------------------

    /// Writes one file under `<files root>/<service>/` (see [`files`]).
    pub async fn push_file(
        &self,
        service: &str,
        path: &str,
        content: Vec<u8>,
        mode: u32,
    ) -> Result<()> {
        let root = self.settings.files_root.clone();
        let (svc, rel) = (service.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || files::push_file(&root, &svc, &rel, &content, mode))
            .await
            .map_err(|e| AgentError::Internal {
                message: format!("push file task failed: {e}"),
            })?
            .map_err(AgentError::from)
    }

    /// Reads one file under `<files root>/<service>/`: content and mode.
    pub async fn pull_file(&self, service: &str, path: &str) -> Result<(Vec<u8>, u32)> {
        let root = self.settings.files_root.clone();
        let (svc, rel) = (service.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || files::pull_file(&root, &svc, &rel))
            .await
            .map_err(|e| AgentError::Internal {
                message: format!("pull file task failed: {e}"),
            })?
            .map_err(AgentError::from)
    }
}
