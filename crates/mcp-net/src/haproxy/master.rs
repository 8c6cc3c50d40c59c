//! HAProxy's master CLI (`haproxy -W -S <socket>`): one command per
//! connection; `@1 <command>` goes to the current worker.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{NetError, Result};

/// How long one command may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reload may take until its new worker serves.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct Master {
    path: PathBuf,
}

/// What `show proc` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Procs {
    /// The master's reload count and failed reload count.
    pub reloads: u64,
    pub failed: u64,
    /// The pids of the current workers (not the old ones finishing).
    pub workers: BTreeSet<u32>,
}

impl Master {
    pub(crate) fn new(path: PathBuf) -> Master {
        Master { path }
    }

    pub(crate) fn server(&self) -> String {
        format!("haproxy master socket {}", self.path.display())
    }

    /// Sends `command`, returns the whole answer. The master answers a
    /// non-interactive command and closes once our side is shut down.
    pub(crate) async fn command(&self, command: &str) -> Result<String> {
        let unreachable = |e: &dyn std::fmt::Display| {
            NetError::unreachable(self.server(), format!("{command}: {e}"))
        };
        let exchange = async {
            let mut s = self.connect(command).await?;
            s.write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(|e| unreachable(&e))?;
            s.shutdown().await.map_err(|e| unreachable(&e))?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.map_err(|e| unreachable(&e))?;
            Ok(String::from_utf8_lossy(&out).into_owned())
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(&format!("no answer within {} s", TIMEOUT.as_secs())))?
    }

    async fn connect(&self, command: &str) -> Result<tokio::net::UnixStream> {
        let connect = tokio::net::UnixStream::connect(&self.path);
        match tokio::time::timeout(TIMEOUT, connect).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(NetError::unreachable(
                self.server(),
                format!("{command}: connect: {e}"),
            )),
            Err(_) => Err(NetError::unreachable(
                self.server(),
                format!(
                    "{command}: connect: no answer within {} s",
                    TIMEOUT.as_secs()
                ),
            )),
        }
    }

    pub(crate) async fn show_proc(&self) -> Result<Procs> {
        let text = self.command("show proc").await?;
        parse_procs(&text).ok_or_else(|| {
            NetError::protocol(self.server(), format!("show proc: {:?}", text.trim()))
        })
    }

    /// The backends the current worker runs (`@1 show backend`).
    pub(crate) async fn backends(&self) -> Result<BTreeSet<String>> {
        let text = self.command("@1 show backend").await?;
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some("# name") {
            return Err(NetError::protocol(
                self.server(),
                format!("@1 show backend: {:?}", text.trim()),
            ));
        }
        Ok(lines
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Reloads (the master re-reads the configuration file and starts a
    /// new worker; old workers finish their connections) and waits until a
    /// new worker runs exactly the backends `expected` among those named
    /// with `prefix`. A failed reload (the old worker keeps serving) is
    /// [`NetError::Rejected`].
    pub(crate) async fn reload(&self, expected: &BTreeSet<String>, prefix: &str) -> Result<()> {
        let before = self.show_proc().await?;
        // HAProxy 2.6 answers nothing and may drop the connection while the
        // master re-executes itself: only a failure to connect counts.
        let mut s = self.connect("reload").await?;
        let _ = tokio::time::timeout(TIMEOUT, async {
            s.write_all(b"reload\n").await?;
            s.shutdown().await?;
            s.read_to_end(&mut Vec::new()).await
        })
        .await;
        let deadline = tokio::time::Instant::now() + RELOAD_TIMEOUT;
        let mut last;
        loop {
            match self.show_proc().await {
                Ok(p) if p.reloads > before.reloads && p.failed > before.failed => {
                    return Err(NetError::rejected(
                        self.server(),
                        "the reload failed (HAProxy's log says why); the previous \
                         configuration still serves",
                    ))
                }
                Ok(p) if p.reloads > before.reloads && !p.workers.is_subset(&before.workers) => {
                    match self.backends().await {
                        Ok(b) => {
                            let ours: BTreeSet<String> =
                                b.into_iter().filter(|n| n.starts_with(prefix)).collect();
                            if &ours == expected {
                                return Ok(());
                            }
                            last = format!("the new worker runs backends {ours:?}");
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Ok(p) => last = format!("show proc: {p:?}"),
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NetError::rejected(
                    self.server(),
                    format!(
                        "reload: no new worker serving the new configuration within {} s ({last})",
                        RELOAD_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Parses HAProxy 2.6's `show proc`:
///
/// ```text
/// #<PID>          <type>          <reloads>       <uptime>        <version>
/// 13139           master          2 [failed: 1]   0d00h10m40s     2.6.12
/// # workers
/// 14917           worker          1               0d00h00m10s     2.6.12
/// # old workers
/// …
/// ```
fn parse_procs(text: &str) -> Option<Procs> {
    let mut master = None;
    let mut workers = BTreeSet::new();
    let mut section = "";
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('#') {
            section = header.trim();
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.get(1) {
            Some(&"master") => {
                let reloads = fields.get(2)?.parse().ok()?;
                let failed = match fields.iter().position(|f| *f == "[failed:") {
                    Some(i) => fields.get(i + 1)?.trim_end_matches(']').parse().ok()?,
                    None => 0,
                };
                master = Some((reloads, failed));
            }
            Some(&"worker") if section == "workers" => {
                workers.insert(fields.first()?.parse().ok()?);
            }
            _ => {}
        }
    }
    let (reloads, failed) = master?;
    Some(Procs {
        reloads,
        failed,
        workers,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn show_proc_of_haproxy_2_6() {
        let text =
            "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
            13139           master          2 [failed: 1]   0d00h10m40s     2.6.12-1+deb12u3\n\
            # workers\n\
            14917           worker          1               0d00h00m10s     2.6.12-1+deb12u3\n\
            # old workers\n\
            14000           worker          3               0d00h00m10s     2.6.12-1+deb12u3\n\
            # programs\n\n";
        assert_eq!(
            parse_procs(text),
            Some(Procs {
                reloads: 2,
                failed: 1,
                workers: [14917].into()
            })
        );
        assert_eq!(parse_procs("Unknown command.\n"), None);
    }
}
