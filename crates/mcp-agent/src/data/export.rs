//! Writing the tar.zst of a service directory (see [`write_archive`]).
//!
//! ## What goes in
//!
//! The archive's first entry is the directory `.` (the service directory
//! itself: its mode, owner and time), then the tree in name order, paths
//! relative to the service directory. With [`Selection::all`] every
//! directory and regular file is archived; with [`Selection::default_set`]
//! only regular files named `*.toml`, `*.db` or `*.pem` (at any depth) and
//! the directories on their way. `exclude` paths (relative, compared by
//! whole components: `cache` excludes `cache` and `cache/x`, not
//! `cache2`) are skipped with everything below them.
//!
//! A regular file that starts with the SQLite header (`SQLite format 3\0`)
//! is copied with `VACUUM INTO` from a read-only connection (one read
//! transaction: consistent while other processes write, in WAL or rollback
//! mode) into `scratch`, checked with `PRAGMA quick_check`, and archived
//! under the original name with the original's mode, owner and time; the
//! copy is deleted. Files named `<db>-wal`, `<db>-shm` or `<db>-journal`
//! beside such a database are left out, so a restored database never meets
//! a stale journal.
//!
//! ## Confinement
//!
//! The tree is walked with `openat(O_DIRECTORY | O_NOFOLLOW)` from the
//! service directory's descriptor, files opened with `O_NOFOLLOW |
//! O_NONBLOCK` and checked with `fstat` (see [`crate::files`]); symbolic
//! links, fifos, sockets, devices and names that are not UTF-8 are skipped
//! and listed in [`ExportStats::skipped`], never followed. SQLite opens its
//! database by path: the path is built from the canonical files root, the
//! connection is opened with `SQLITE_OPEN_NOFOLLOW` (SQLite refuses a path
//! with a link in it), and the file's device and inode are compared before
//! and after the copy with those of the file the walk found; a mismatch
//! fails the export.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mcp_spec::names::is_dns_label;
use mcp_spec::{SnapshotConfig, SnapshotMethod};
use rusqlite::{Connection, OpenFlags};
use rustix::fs::{FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use super::{DataError, MAX_DEPTH, ZSTD_LEVEL};
use crate::files::{kind_name, statat};

/// The first bytes of every SQLite 3 database file.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// Names the default method archives: `*.toml`, `*.db`, `*.pem`.
pub const DEFAULT_SUFFIXES: [&str; 3] = [".toml", ".db", ".pem"];
/// Journal files left out beside a SQLite database.
pub const SQLITE_SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Which files of the service directory are archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Every file (`true`) or only the default set.
    pub all: bool,
    /// Excluded paths, as components.
    pub exclude: Vec<Vec<String>>,
}

impl Selection {
    /// Only `*.toml`, `*.db`, `*.pem`.
    pub fn default_set() -> Selection {
        Selection {
            all: false,
            exclude: Vec::new(),
        }
    }

    /// Every file.
    pub fn all() -> Selection {
        Selection {
            all: true,
            exclude: Vec::new(),
        }
    }

    /// The selection of a `[snapshot]` section: the default set when the
    /// method is the default (or there is no section), else everything
    /// (`full`, and `grpc` / `cli` / `exec`, whose snapshot lands in the
    /// directory); `exclude` in both cases.
    pub fn of(config: Option<&SnapshotConfig>) -> Selection {
        let Some(c) = config else {
            return Selection::default_set();
        };
        let mut s = if c.method == SnapshotMethod::Default {
            Selection::default_set()
        } else {
            Selection::all()
        };
        s.exclude = c.exclude.iter().map(|p| exclude_components(p)).collect();
        s.exclude.retain(|p| !p.is_empty());
        s
    }

    fn excluded(&self, rel: &[String]) -> bool {
        self.exclude
            .iter()
            .any(|p| p.len() <= rel.len() && p.iter().zip(rel).all(|(a, b)| a == b))
    }

    fn wants_file(&self, name: &str) -> bool {
        self.all || DEFAULT_SUFFIXES.iter().any(|s| name.ends_with(s))
    }
}

/// An `exclude` path as components (`a//b/`, `./a` normalised; `..` is
/// refused by the spec's validation).
fn exclude_components(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
        .collect()
}

/// What [`write_archive`] archived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Entries written (directories and files, `.` included).
    pub entries: u64,
    /// Bytes of file content archived.
    pub bytes: u64,
    /// SQLite databases archived as `VACUUM INTO` copies (relative paths).
    pub sqlite: Vec<String>,
    /// Entries left out, with why (links, special files, sidecars...).
    pub skipped: Vec<(String, String)>,
}

/// Writes the tar.zst of `<root>/<service>/` into `out` (see the module
/// docs); SQLite copies are made in `scratch` (a directory outside the
/// tree, removed by the caller). Returns `out` after the zstd frame is
/// finished, and what was archived.
pub fn write_archive<W: Write>(
    root: &Path,
    service: &str,
    selection: &Selection,
    scratch: &Path,
    out: W,
) -> Result<(W, ExportStats), DataError> {
    if !is_dns_label(service) {
        return Err(DataError::InvalidService {
            service: service.to_owned(),
        });
    }
    let root = std::fs::canonicalize(root)
        .map_err(|e| DataError::io(service, format!("open files root {}", root.display()), e))?;
    let dir = open_service_dir(&root, service)?;
    let encoder =
        zstd::Encoder::new(out, ZSTD_LEVEL).map_err(|e| DataError::io(service, "start zstd", e))?;
    let mut w = Walker {
        service,
        base: root.join(service),
        selection,
        scratch,
        builder: tar::Builder::new(encoder),
        stats: ExportStats::default(),
        dirs: Vec::new(),
    };
    let st = rustix::fs::fstat(&dir).map_err(|e| w.io(".", "stat", e))?;
    w.dirs.push((".".to_owned(), st, false));
    if selection.all {
        w.flush_dirs()?;
    }
    w.walk(&dir, &mut Vec::new())?;
    let Walker { builder, stats, .. } = w;
    let encoder = builder
        .into_inner()
        .map_err(|e| DataError::io(service, "finish tar", e))?;
    let out = encoder
        .finish()
        .map_err(|e| DataError::io(service, "finish zstd", e))?;
    Ok((out, stats))
}

/// Opens `<root>/<service>` as a directory without following a link.
pub(crate) fn open_service_dir(root: &Path, service: &str) -> Result<OwnedFd, DataError> {
    let root_fd = rustix::fs::openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| DataError::io(service, format!("open files root {}", root.display()), e))?;
    let path = root.join(service);
    match rustix::fs::openat(
        &root_fd,
        service,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) => Err(DataError::NoData {
            service: service.to_owned(),
            path,
        }),
        Err(Errno::LOOP | Errno::NOTDIR) => match statat(&root_fd, service) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                Err(DataError::Link {
                    service: service.to_owned(),
                    path,
                })
            }
            _ => Err(DataError::NoData {
                service: service.to_owned(),
                path,
            }),
        },
        Err(e) => Err(DataError::io(
            service,
            format!("open {}", path.display()),
            e,
        )),
    }
}

struct Walker<'a, W: Write> {
    service: &'a str,
    /// `<canonical root>/<service>`, for SQLite only.
    base: PathBuf,
    selection: &'a Selection,
    scratch: &'a Path,
    builder: tar::Builder<zstd::Encoder<'static, W>>,
    stats: ExportStats,
    /// The directories from `.` down to the one being walked, and whether
    /// each is archived yet (default set: only when a file below is).
    dirs: Vec<(String, Stat, bool)>,
}

impl<W: Write> Walker<'_, W> {
    fn walk(&mut self, dir: &OwnedFd, rel: &mut Vec<String>) -> Result<(), DataError> {
        if rel.len() >= MAX_DEPTH {
            return Err(DataError::refused(
                self.service,
                &rel.join("/"),
                format!("directories nested deeper than {MAX_DEPTH}"),
            ));
        }
        let names = self.list(dir, rel)?;
        for name in &names {
            rel.push(name.clone());
            let res = self.entry(dir, name, &names, rel);
            rel.pop();
            res?;
        }
        Ok(())
    }

    /// The names in `dir`, sorted; names that are not UTF-8 are skipped.
    fn list(&mut self, dir: &OwnedFd, rel: &[String]) -> Result<Vec<String>, DataError> {
        let at = if rel.is_empty() {
            ".".into()
        } else {
            rel.join("/")
        };
        let d = rustix::fs::Dir::read_from(dir).map_err(|e| self.io(&at, "list", e))?;
        let mut names = Vec::new();
        for e in d {
            let e = e.map_err(|e| self.io(&at, "list", e))?;
            let raw = e.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            match std::str::from_utf8(raw) {
                Ok(n) => names.push(n.to_owned()),
                Err(_) => self.stats.skipped.push((
                    format!("{at}/{}", String::from_utf8_lossy(raw)),
                    "name is not UTF-8".into(),
                )),
            }
        }
        names.sort();
        Ok(names)
    }

    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &str,
        siblings: &[String],
        rel: &mut Vec<String>,
    ) -> Result<(), DataError> {
        let path = rel.join("/");
        if self.selection.excluded(rel) {
            return Ok(());
        }
        let st = match statat(dir, name) {
            Ok(st) => st,
            // Gone since the listing.
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.io(&path, "stat", e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let sub = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => return Ok(()),
                    Err(Errno::LOOP | Errno::NOTDIR) => {
                        self.skip(&path, "replaced by a non-directory during the export");
                        return Ok(());
                    }
                    Err(e) => return Err(self.io(&path, "open directory", e)),
                };
                let st = rustix::fs::fstat(&sub).map_err(|e| self.io(&path, "stat", e))?;
                self.dirs.push((path, st, false));
                let walked = if self.selection.all {
                    self.flush_dirs().and_then(|()| self.walk(&sub, rel))
                } else {
                    self.walk(&sub, rel)
                };
                self.dirs.pop();
                walked
            }
            FileType::RegularFile => self.file(dir, name, siblings, &path),
            other => {
                self.skip(&path, kind_name(other));
                Ok(())
            }
        }
    }

    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &str,
        siblings: &[String],
        path: &str,
    ) -> Result<(), DataError> {
        if !self.selection.wants_file(name) {
            return Ok(());
        }
        if let Some(db) = sidecar_of(name) {
            if siblings.iter().any(|s| s == db) && self.is_sqlite_at(dir, db) {
                self.skip(path, "SQLite journal of a database archived as a copy");
                return Ok(());
            }
        }
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(Errno::LOOP) => {
                self.skip(path, "replaced by a symbolic link during the export");
                return Ok(());
            }
            Err(e) => return Err(self.io(path, "open", e)),
        };
        let fst = rustix::fs::fstat(&fd).map_err(|e| self.io(path, "stat", e))?;
        if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile {
            self.skip(path, kind_name(FileType::from_raw_mode(fst.st_mode)));
            return Ok(());
        }
        let mut file = File::from(fd);
        let mut head = [0u8; 16];
        let n = read_full(&mut file, &mut head).map_err(|e| self.io(path, "read", e))?;
        if n == head.len() && &head == SQLITE_HEADER {
            return self.sqlite(path, &fst);
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| self.io(path, "seek", e))?;
        let size = u64::try_from(fst.st_size).unwrap_or(0);
        self.flush_dirs()?;
        let mut h = header(tar::EntryType::Regular, &fst, size);
        let reader = Exact::new(file, size);
        self.builder
            .append_data(&mut h, path, reader)
            .map_err(|e| self.io(path, "archive", e))?;
        self.stats.entries += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// Archives a `VACUUM INTO` copy of the database at `path`.
    fn sqlite(&mut self, path: &str, st: &Stat) -> Result<(), DataError> {
        let copy = scratch_name(self.scratch);
        let made = vacuum_copy(&self.base.join(path), &copy, (st.st_dev, st.st_ino))
            .map_err(|m| DataError::Io {
                service: self.service.to_owned(),
                op: format!("copy SQLite database {path}"),
                source: std::io::Error::other(m),
            })
            .and_then(|()| {
                let f = File::open(&copy).map_err(|e| self.io(path, "open the copy", e))?;
                let size = f
                    .metadata()
                    .map_err(|e| self.io(path, "stat the copy", e))?
                    .len();
                self.flush_dirs()?;
                let mut h = header(tar::EntryType::Regular, st, size);
                self.builder
                    .append_data(&mut h, path, Exact::new(f, size))
                    .map_err(|e| self.io(path, "archive", e))?;
                self.stats.entries += 1;
                self.stats.bytes += size;
                self.stats.sqlite.push(path.to_owned());
                Ok(())
            });
        let _ = std::fs::remove_file(&copy);
        made
    }

    fn is_sqlite_at(&self, dir: &OwnedFd, name: &str) -> bool {
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(dir, name, flags, Mode::empty()) else {
            return false;
        };
        match rustix::fs::fstat(&fd) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
            _ => return false,
        }
        let mut head = [0u8; 16];
        matches!(read_full(&mut File::from(fd), &mut head), Ok(16)) && &head == SQLITE_HEADER
    }

    /// Writes the pending directory entries.
    fn flush_dirs(&mut self) -> Result<(), DataError> {
        for i in 0..self.dirs.len() {
            if self.dirs[i].2 {
                continue;
            }
            let (path, st, _) = &self.dirs[i];
            let mut h = header(tar::EntryType::Directory, st, 0);
            let path = path.clone();
            self.builder
                .append_data(&mut h, &path, std::io::empty())
                .map_err(|e| self.io(&path, "archive", e))?;
            self.dirs[i].2 = true;
            self.stats.entries += 1;
        }
        Ok(())
    }

    fn skip(&mut self, path: &str, why: &str) {
        self.stats.skipped.push((path.to_owned(), why.to_owned()));
    }

    fn io(&self, path: &str, op: &str, e: impl Into<std::io::Error>) -> DataError {
        DataError::io(self.service, format!("{op} {path}"), e)
    }
}

/// `<db>` when `name` is `<db>-wal`, `<db>-shm` or `<db>-journal`.
fn sidecar_of(name: &str) -> Option<&str> {
    SQLITE_SIDECARS
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|db| !db.is_empty())
}

fn header(kind: tar::EntryType, st: &Stat, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    h
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Exactly `size` bytes of a file that may change while it is read: cut
/// when it grew, padded with zeros when it shrank (the archive stays
/// well-formed; a consistent copy is the snapshot method's job).
struct Exact<R> {
    inner: R,
    left: u64,
    eof: bool,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, size: u64) -> Exact<R> {
        Exact {
            inner,
            left: size,
            eof: false,
        }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = if self.eof {
            buf[..want].fill(0);
            want
        } else {
            match self.inner.read(&mut buf[..want])? {
                0 => {
                    self.eof = true;
                    buf[..want].fill(0);
                    want
                }
                n => n,
            }
        };
        self.left -= n as u64;
        Ok(n)
    }
}

fn scratch_name(scratch: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    scratch.join(format!(
        "copy-{}-{}.db",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// `VACUUM INTO` of the database at `db` (which must still be the file
/// with `(dev, ino)` before and after) into `dest`, checked.
fn vacuum_copy(db: &Path, dest: &Path, id: (u64, u64)) -> Result<(), String> {
    let same = || -> Result<(), String> {
        let m = std::fs::symlink_metadata(db).map_err(|e| format!("stat: {e}"))?;
        use std::os::unix::fs::MetadataExt;
        if (m.dev(), m.ino()) == id && m.file_type().is_file() {
            Ok(())
        } else {
            Err("the file was replaced during the export".into())
        }
    };
    same()?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(db, flags).map_err(|e| format!("open: {e}"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| format!("busy timeout: {e}"))?;
    crate::registry::vacuum_into(&conn, dest).map_err(|e| e.to_string())?;
    drop(conn);
    same()?;
    let copy = Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open the copy: {e}"))?;
    let check: String = copy
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| format!("check the copy: {e}"))?;
    if check != "ok" {
        return Err(format!("the copy fails its check: {check}"));
    }
    Ok(())
}
