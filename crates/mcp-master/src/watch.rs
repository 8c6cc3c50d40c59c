//! A thin adapter that turns "something under `.git` changed" into a tokio
//! channel of [`HeadEvent`]s, sent only when `HEAD` actually resolves to a
//! different commit.
//!
//! Two triggers feed one check (`git rev-parse HEAD`, compared with the last
//! commit seen):
//! - file events (the `notify` crate) on the git directory (`HEAD`,
//!   `packed-refs`) and on `refs/`, debounced: the check runs once the
//!   events have been quiet for `debounce` (at most `10 × debounce` after the
//!   first one, so a steady stream of events cannot starve it);
//! - a periodic poll every `poll`, the fallback when file events are lost or
//!   unavailable (network filesystems, inotify limits).
//!
//! Editing, staging or checking out files without committing changes no
//! ref, so it produces no event. The core consumes the channel and does the
//! loading ([`crate::gitsource::GitSource::load_commit`]); tests of the core
//! push [`HeadEvent`]s into a channel directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::gitsource::{CommitId, GitSource};

/// `HEAD` now resolves to `commit` (`None`: no commits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadEvent {
    pub commit: Option<CommitId>,
    pub trigger: Trigger,
}

/// What noticed the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The check made right after the watcher started.
    Start,
    /// File events under the git directory.
    FileEvent,
    /// The periodic poll.
    Poll,
}

/// Watcher settings (`[services] debounce` and `poll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    pub debounce: Duration,
    pub poll: Duration,
    /// Use file events; `false` leaves only the poll.
    pub file_events: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(500),
            poll: Duration::from_secs(30),
            file_events: true,
        }
    }
}

/// A running watcher; stops when dropped or when the receiver is dropped.
#[derive(Debug)]
pub struct HeadWatcher {
    task: JoinHandle<()>,
    file_events: bool,
    // Kept alive for its OS watches.
    _fs: Option<RecommendedWatcher>,
}

impl HeadWatcher {
    /// Starts watching `source`. `last_seen` is the commit the caller has
    /// already loaded: an event is sent whenever `HEAD` differs from the last
    /// commit reported (starting with one check right away, which covers
    /// commits made between the caller's load and this call).
    ///
    /// Must be called inside a tokio runtime. If file events cannot be set
    /// up, the watcher logs a warning and relies on the poll alone (see
    /// [`file_events_active`](Self::file_events_active)).
    pub fn spawn(
        source: GitSource,
        last_seen: Option<CommitId>,
        opts: WatchOptions,
        tx: mpsc::Sender<HeadEvent>,
    ) -> HeadWatcher {
        let (fs_tx, fs_rx) = mpsc::channel(1);
        let fs = if opts.file_events {
            match watch_git_dirs(&source, fs_tx) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(
                        dir = %source.root().display(),
                        error = %e,
                        "cannot watch the git directory; relying on the {} poll",
                        humantime::format_duration(opts.poll)
                    );
                    None
                }
            }
        } else {
            None
        };
        let file_events = fs.is_some();
        let task = tokio::spawn(run(Arc::new(source), last_seen, opts, tx, fs_rx));
        HeadWatcher {
            task,
            file_events,
            _fs: fs,
        }
    }

    /// True when file events are in use (otherwise only the poll runs).
    pub fn file_events_active(&self) -> bool {
        self.file_events
    }
}

impl Drop for HeadWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sets up the OS watches; each relevant event pushes a wake-up into `fs_tx`
/// (capacity 1: wake-ups coalesce).
fn watch_git_dirs(
    source: &GitSource,
    fs_tx: mpsc::Sender<()>,
) -> notify::Result<RecommendedWatcher> {
    let git_dir = source.git_dir().to_path_buf();
    let common = source.common_dir().to_path_buf();
    let refs = common.join("refs");
    let filter = Filter {
        dirs: vec![git_dir.clone(), common.clone()],
        refs: refs.clone(),
    };
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            // Errors (e.g. a queue overflow) may hide a change: check.
            Err(_) => true,
            Ok(ev) => ev.need_rescan() || ev.paths.iter().any(|p| filter.relevant(p)),
        };
        if relevant {
            let _ = fs_tx.try_send(());
        }
    })?;
    w.watch(&git_dir, RecursiveMode::NonRecursive)?;
    if common != git_dir {
        w.watch(&common, RecursiveMode::NonRecursive)?;
    }
    if refs.is_dir() {
        w.watch(&refs, RecursiveMode::Recursive)?;
    }
    Ok(w)
}

/// Which paths can change what `HEAD` resolves to.
struct Filter {
    dirs: Vec<PathBuf>,
    refs: PathBuf,
}

impl Filter {
    fn relevant(&self, p: &Path) -> bool {
        if p.starts_with(&self.refs) {
            return true;
        }
        let in_git_dir = p.parent().is_some_and(|d| self.dirs.iter().any(|g| g == d));
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        in_git_dir && (name.starts_with("HEAD") || name.starts_with("packed-refs"))
    }
}

async fn run(
    source: Arc<GitSource>,
    mut last: Option<CommitId>,
    opts: WatchOptions,
    tx: mpsc::Sender<HeadEvent>,
    mut fs_rx: mpsc::Receiver<()>,
) {
    let mut last_error: Option<String> = None;
    let mut poll = tokio::time::interval_at(Instant::now() + opts.poll, opts.poll);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut fs_open = true;
    let mut trigger = Some(Trigger::Start);
    loop {
        if let Some(t) = trigger.take() {
            if let Some(commit) = check(&source, &mut last, &mut last_error).await {
                if tx.send(HeadEvent { commit, trigger: t }).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            got = fs_rx.recv(), if fs_open => match got {
                Some(()) => {
                    debounce(&mut fs_rx, opts.debounce).await;
                    trigger = Some(Trigger::FileEvent);
                }
                None => fs_open = false,
            },
            _ = poll.tick() => trigger = Some(Trigger::Poll),
        }
    }
}

/// Waits until no wake-up has arrived for `quiet`, or `10 × quiet` in all.
async fn debounce(rx: &mut mpsc::Receiver<()>, quiet: Duration) {
    let give_up = Instant::now() + quiet * 10;
    loop {
        let wait = quiet.min(give_up.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            return;
        }
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) | Err(_) => return,
        }
    }
}

/// `Some(new head)` when it differs from `last` (and updates `last`).
async fn check(
    source: &Arc<GitSource>,
    last: &mut Option<CommitId>,
    last_error: &mut Option<String>,
) -> Option<Option<CommitId>> {
    let src = source.clone();
    let head = match tokio::task::spawn_blocking(move || src.head()).await {
        Ok(h) => h.map_err(|e| e.to_string()),
        Err(e) => Err(format!("HEAD check did not finish: {e}")),
    };
    match head {
        Ok(head) => {
            if last_error.take().is_some() {
                tracing::info!(dir = %source.root().display(), "HEAD can be read again");
            }
            if head != *last {
                *last = head.clone();
                return Some(head);
            }
            None
        }
        Err(e) => {
            // Logged once per distinct error, not on every poll.
            if last_error.as_deref() != Some(e.as_str()) {
                tracing::warn!(error = %e, "cannot read HEAD of the services repository");
                *last_error = Some(e);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests;
