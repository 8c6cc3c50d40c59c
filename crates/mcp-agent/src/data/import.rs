//! Reading a tar.zst into a staging directory ([`extract`]) and swapping
//! it into place ([`install`]).
//!
//! ## What is refused
//!
//! Every entry is checked before anything is written for it, and the first
//! refused entry fails the whole import (nothing is ever skipped):
//!
//! - paths: not UTF-8, absolute, empty, with an empty, `.` or `..`
//!   component, longer than 1024 bytes or a component longer than 255
//!   (the rules of [`crate::files`]); one trailing `/` is allowed on
//!   directories, and `.` (or `./`) only as the directory entry of the
//!   service directory itself; nesting deeper than [`super::MAX_DEPTH`];
//! - types: only regular files and directories are accepted. Symbolic
//!   links and hard links are refused wherever they point (an archive made
//!   by `ExportServiceData` has none: the export skips links), as are
//!   character and block devices, fifos, sparse files, GNU long link names
//!   and pax extended headers (the export writes GNU headers only);
//! - duplicates: a path given twice (except a directory twice), or a file
//!   under a path that is a file;
//! - sizes: a file over [`ImportLimits::max_file_bytes`], file content over
//!   [`ImportLimits::max_bytes`] in all, more than
//!   [`ImportLimits::max_entries`] entries, a GNU long name over 4096
//!   bytes, and (against decompression bombs) more uncompressed bytes than
//!   the limits allow. A header's size is checked before its data is read.
//!
//! Permission bits are kept without setuid, setgid and sticky (`& 0o777`);
//! owner and group are kept when the agent runs as root; times are kept.
//!
//! ## Where it is written
//!
//! [`Staging::create`] makes `<root>/.mcp-import-<service>-<pid>-<n>/`
//! (mode 0700, on the same filesystem as the service directory, out of
//! reach of containers, which only mount below `<root>/<service>/`).
//! Files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` and directories
//! walked with `O_NOFOLLOW` from the staging directory's descriptor, so
//! nothing can land outside it. [`install`] syncs it and exchanges it with
//! `<root>/<service>` in one `renameat2(RENAME_EXCHANGE)` (a reader sees
//! the old tree or the new one; where the filesystem cannot exchange, the
//! old directory is renamed aside, the new one renamed in, and the old one
//! renamed back if that fails), then deletes the old tree. A staging
//! directory that is not installed is deleted when dropped, so a refused
//! archive leaves `<root>/<service>` exactly as it was.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use mcp_spec::names::is_dns_label;
use rustix::fs::{Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;

use super::{DataError, MAX_DEPTH, MAX_IMPORT_ENTRIES};
use crate::files::{split_relative, statat};

/// Longest GNU long name accepted.
pub const MAX_LONG_NAME: u64 = 4096;

/// The size limits of one import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// File content in all.
    pub max_bytes: u64,
    /// One file.
    pub max_file_bytes: u64,
    /// Entries (files and directories).
    pub max_entries: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_bytes: super::DEFAULT_MAX_IMPORT_BYTES,
            max_file_bytes: super::DEFAULT_MAX_IMPORT_FILE_BYTES,
            max_entries: MAX_IMPORT_ENTRIES,
        }
    }
}

impl ImportLimits {
    /// Uncompressed bytes an archive within the limits can need: the
    /// content plus, per entry, a header, a long name and padding.
    fn max_tar_bytes(&self) -> u64 {
        self.max_bytes
            .saturating_add(
                self.max_entries
                    .saturating_mul(2 * 512 + MAX_LONG_NAME + 512),
            )
            .saturating_add(1024 * 1024)
    }
}

/// What [`extract`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Files and directories (the service directory's own entry included).
    pub entries: u64,
    /// Bytes of file content.
    pub bytes_written: u64,
}

/// A staging directory beside the service directory; deleted when dropped
/// unless [`install`]ed (see the module docs).
#[derive(Debug)]
pub struct Staging {
    service: String,
    root: PathBuf,
    root_fd: OwnedFd,
    name: String,
    fd: OwnedFd,
}

impl Staging {
    /// Creates `<root>/.mcp-import-<service>-<pid>-<n>/` (mode 0700).
    pub fn create(root: &Path, service: &str) -> Result<Staging, DataError> {
        static N: AtomicU64 = AtomicU64::new(0);
        if !is_dns_label(service) {
            return Err(DataError::InvalidService {
                service: service.to_owned(),
            });
        }
        std::fs::create_dir_all(root).map_err(|e| {
            DataError::io(service, format!("create files root {}", root.display()), e)
        })?;
        let root = std::fs::canonicalize(root).map_err(|e| {
            DataError::io(service, format!("open files root {}", root.display()), e)
        })?;
        let root_fd = open_root(&root, service)?;
        for _ in 0..16 {
            let name = format!(
                ".mcp-import-{service}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            match rustix::fs::mkdirat(&root_fd, name.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    let fd = open_dir(&root_fd, &name)
                        .map_err(|e| DataError::io(service, format!("open {name}"), e))?;
                    return Ok(Staging {
                        service: service.to_owned(),
                        root,
                        root_fd,
                        name,
                        fd,
                    });
                }
                Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(DataError::io(
                        service,
                        format!("create staging directory {name} in {}", root.display()),
                        e,
                    ))
                }
            }
        }
        Err(DataError::io(
            service,
            "create staging directory",
            Errno::EXIST,
        ))
    }

    /// Where it is, for messages and tests.
    pub fn path(&self) -> PathBuf {
        self.root.join(&self.name)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let path = self.path();
        if let Err(e) = std::fs::remove_dir_all(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove staging directory");
            }
        }
    }
}

fn open_root(root: &Path, service: &str) -> Result<OwnedFd, DataError> {
    rustix::fs::openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| DataError::io(service, format!("open files root {}", root.display()), e))
}

fn open_dir(parent: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The metadata an entry asks for.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: u64,
}

impl Meta {
    fn of(h: &tar::Header) -> Meta {
        Meta {
            mode: h.mode().unwrap_or(0o644) & 0o777,
            uid: h.uid().ok().and_then(|u| u32::try_from(u).ok()),
            gid: h.gid().ok().and_then(|g| u32::try_from(g).ok()),
            mtime: h.mtime().unwrap_or(0),
        }
    }

    fn apply(&self, fd: OwnedFd) -> std::io::Result<()> {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(self.mode))?;
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::fchown(&fd, self.uid, self.gid)?;
        }
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(self.mtime.min(1 << 40));
        File::from(fd).set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
    }
}

/// Counts and caps the uncompressed bytes.
struct Capped<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(l) => {
                self.left = l;
                Ok(n)
            }
            None => {
                self.exceeded = true;
                Err(std::io::Error::other("uncompressed size over the limit"))
            }
        }
    }
}

/// Extracts the tar.zst `input` into `staging`, every entry checked (see
/// the module docs). Reads `input` only as far as the archive goes.
pub fn extract<R: Read>(
    input: R,
    staging: &Staging,
    limits: &ImportLimits,
) -> Result<ImportStats, DataError> {
    let service = staging.service.as_str();
    let decoder = zstd::Decoder::new(input).map_err(|e| DataError::io(service, "start zstd", e))?;
    let cap = limits.max_tar_bytes();
    let mut capped = Capped {
        inner: decoder,
        left: cap,
        exceeded: false,
    };
    let mut x = Extractor {
        service,
        staging,
        limits,
        stats: ImportStats::default(),
        dirs: Vec::new(),
        root_meta: None,
    };
    let res = x.run(&mut capped);
    if capped.exceeded {
        return Err(DataError::TooLarge {
            service: service.to_owned(),
            what: "the uncompressed archive".into(),
            size: cap.saturating_add(1),
            limit: cap,
        });
    }
    res?;
    x.finish()
}

struct Extractor<'a> {
    service: &'a str,
    staging: &'a Staging,
    limits: &'a ImportLimits,
    stats: ImportStats,
    /// Directories to give their metadata at the end (after their content).
    dirs: Vec<(Vec<String>, Meta)>,
    root_meta: Option<Meta>,
}

impl Extractor<'_> {
    fn run<R: Read>(&mut self, input: &mut R) -> Result<(), DataError> {
        let service = self.service;
        let mut archive = tar::Archive::new(input);
        let entries = archive
            .entries()
            .map_err(|e| DataError::corrupt(service, e))?
            .raw(true);
        let mut long_name: Option<Vec<u8>> = None;
        for entry in entries {
            let mut e = entry.map_err(|e| DataError::corrupt(service, e))?;
            let h = e.header().clone();
            let kind = h.entry_type();
            let size = h.entry_size().map_err(|e| DataError::corrupt(service, e))?;
            if kind.is_gnu_longname() {
                if long_name.is_some() {
                    return Err(DataError::refused(
                        service,
                        "<GNU long name>",
                        "two long names for one entry",
                    ));
                }
                if size > MAX_LONG_NAME {
                    return Err(DataError::refused(
                        service,
                        "<GNU long name>",
                        format!("long name of {size} bytes, over {MAX_LONG_NAME}"),
                    ));
                }
                let mut v = Vec::new();
                (&mut e)
                    .take(size)
                    .read_to_end(&mut v)
                    .map_err(|e| DataError::corrupt(service, e))?;
                while v.last() == Some(&0) {
                    v.pop();
                }
                long_name = Some(v);
                continue;
            }
            let raw = long_name
                .take()
                .unwrap_or_else(|| e.path_bytes().into_owned());
            let shown = String::from_utf8_lossy(&raw).into_owned();
            self.stats.entries += 1;
            if self.stats.entries > self.limits.max_entries {
                return Err(DataError::TooManyEntries {
                    service: service.to_owned(),
                    limit: self.limits.max_entries,
                });
            }
            let refuse = |why: String| DataError::refused(service, &shown, why);
            let link =
                || String::from_utf8_lossy(&e.link_name_bytes().unwrap_or_default()).into_owned();
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let path = std::str::from_utf8(&raw)
                        .map_err(|_| refuse("path is not UTF-8".into()))?;
                    let comps = split_relative(path).map_err(refuse)?;
                    self.file(&shown, &comps, &h, size, &mut e)?;
                }
                tar::EntryType::Directory => {
                    let path = std::str::from_utf8(&raw)
                        .map_err(|_| refuse("path is not UTF-8".into()))?;
                    let path = path.strip_suffix('/').unwrap_or(path);
                    if path == "." {
                        self.root_meta = Some(Meta::of(&h));
                        continue;
                    }
                    let comps = split_relative(path).map_err(refuse)?;
                    self.dir(&shown, &comps, &h)?;
                }
                tar::EntryType::Symlink => {
                    return Err(refuse(format!(
                        "symbolic link (to {:?}); links are refused",
                        link()
                    )))
                }
                tar::EntryType::Link => {
                    return Err(refuse(format!(
                        "hard link (to {:?}); links are refused",
                        link()
                    )))
                }
                tar::EntryType::Char => return Err(refuse("character device node".into())),
                tar::EntryType::Block => return Err(refuse("block device node".into())),
                tar::EntryType::Fifo => return Err(refuse("fifo".into())),
                tar::EntryType::GNUSparse => return Err(refuse("sparse file".into())),
                tar::EntryType::GNULongLink => {
                    return Err(refuse("GNU long link name; links are refused".into()))
                }
                tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {
                    return Err(refuse(
                        "pax extended header (archives of ExportServiceData have none)".into(),
                    ))
                }
                other => {
                    return Err(refuse(format!(
                        "entry type {:?}: only files and directories are accepted",
                        char::from(other.as_byte())
                    )))
                }
            }
        }
        if long_name.is_some() {
            return Err(DataError::corrupt(service, "a long name ends the archive"));
        }
        Ok(())
    }

    /// Opens (creating) the directories `comps` below the staging root.
    fn parents(&self, shown: &str, comps: &[&str]) -> Result<OwnedFd, DataError> {
        if comps.len() >= MAX_DEPTH {
            return Err(DataError::refused(
                self.service,
                shown,
                format!("nested deeper than {MAX_DEPTH} directories"),
            ));
        }
        let mut dir = rustix::fs::openat(
            &self.staging.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io(shown, "open staging directory", e))?;
        for (i, c) in comps.iter().enumerate() {
            dir = self.mkdir(&dir, c, shown, &comps[..=i].join("/"))?;
        }
        Ok(dir)
    }

    fn mkdir(
        &self,
        parent: &OwnedFd,
        name: &str,
        shown: &str,
        at: &str,
    ) -> Result<OwnedFd, DataError> {
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.io(shown, &format!("create directory {at}"), e)),
        }
        match open_dir(parent, name) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOTDIR | Errno::LOOP) => Err(DataError::refused(
                self.service,
                shown,
                format!("{at:?} is already a file in the archive"),
            )),
            Err(e) => Err(self.io(shown, &format!("open directory {at}"), e)),
        }
    }

    fn dir(&mut self, shown: &str, comps: &[&str], h: &tar::Header) -> Result<(), DataError> {
        let (last, parents) = comps
            .split_last()
            .ok_or_else(|| DataError::refused(self.service, shown, "empty path"))?;
        let parent = self.parents(shown, parents)?;
        self.mkdir(&parent, last, shown, &comps.join("/"))?;
        self.dirs
            .push((comps.iter().map(|c| (*c).to_owned()).collect(), Meta::of(h)));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        shown: &str,
        comps: &[&str],
        h: &tar::Header,
        size: u64,
        data: &mut R,
    ) -> Result<(), DataError> {
        let service = self.service;
        if size > self.limits.max_file_bytes {
            return Err(DataError::TooLarge {
                service: service.to_owned(),
                what: format!("archive entry {shown:?}"),
                size,
                limit: self.limits.max_file_bytes,
            });
        }
        let total = self.stats.bytes_written.saturating_add(size);
        if total > self.limits.max_bytes {
            return Err(DataError::TooLarge {
                service: service.to_owned(),
                what: "the archive's file content".into(),
                size: total,
                limit: self.limits.max_bytes,
            });
        }
        let (last, parents) = comps
            .split_last()
            .ok_or_else(|| DataError::refused(service, shown, "empty path"))?;
        let dir = self.parents(shown, parents)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&dir, *last, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                return Err(DataError::refused(
                    service,
                    shown,
                    "the path appears twice in the archive",
                ))
            }
            Err(e) => return Err(self.io(shown, "create", e)),
        };
        let mut file = File::from(fd);
        let copied = std::io::copy(&mut data.take(size), &mut file).map_err(|e| {
            // A read error is the archive's; a write error is ours.
            if e.kind() == std::io::ErrorKind::Other
                || e.kind() == std::io::ErrorKind::UnexpectedEof
            {
                DataError::corrupt(service, format!("entry {shown:?}: {e}"))
            } else {
                DataError::io(service, format!("write {shown}"), e)
            }
        })?;
        if copied != size {
            return Err(DataError::corrupt(
                service,
                format!("entry {shown:?}: {copied} of {size} bytes before the archive ended"),
            ));
        }
        Meta::of(h)
            .apply(OwnedFd::from(file))
            .map_err(|e| self.io(shown, "set mode, owner and time of", e))?;
        self.stats.bytes_written = total;
        Ok(())
    }

    /// Gives the directories their metadata, deepest first.
    fn finish(mut self) -> Result<ImportStats, DataError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (comps, meta) in dirs.iter().rev() {
            let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
            let shown = comps.join("/");
            let fd = self.parents(&shown, &refs)?;
            meta.apply(fd)
                .map_err(|e| self.io(&shown, "set mode, owner and time of", e))?;
        }
        let root = self.root_meta.unwrap_or(Meta {
            mode: crate::files::DIR_MODE,
            uid: None,
            gid: None,
            mtime: 0,
        });
        let fd = rustix::fs::openat(
            &self.staging.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io(".", "open staging directory", e))?;
        if self.root_meta.is_some() {
            root.apply(fd)
        } else {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(root.mode)).map_err(Into::into)
        }
        .map_err(|e| self.io(".", "set mode, owner and time of", e))?;
        Ok(self.stats)
    }

    fn io(&self, shown: &str, op: &str, e: impl Into<std::io::Error>) -> DataError {
        DataError::io(self.service, format!("{op} {shown}"), e)
    }
}

/// Puts the extracted tree in place of `<root>/<service>` (see the module
/// docs). An existing directory is replaced only with `force`.
pub fn install(staging: Staging, force: bool) -> Result<(), DataError> {
    let service = staging.service.clone();
    let target = staging.root.join(&service);
    rustix::fs::syncfs(&staging.fd).map_err(|e| DataError::io(&service, "sync", e))?;
    let exists = match statat(&staging.root_fd, &service) {
        Ok(_) => true,
        Err(Errno::NOENT) => false,
        Err(e) => {
            return Err(DataError::io(
                &service,
                format!("stat {}", target.display()),
                e,
            ))
        }
    };
    let exists_err = || DataError::Exists {
        service: service.clone(),
        path: target.clone(),
    };
    if exists && !force {
        return Err(exists_err());
    }
    let rfd = &staging.root_fd;
    let name = staging.name.as_str();
    if !exists {
        match rustix::fs::renameat_with(rfd, name, rfd, service.as_str(), RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(exists_err()),
            Err(e) => {
                return Err(DataError::io(
                    &service,
                    format!("rename into {}", target.display()),
                    e,
                ))
            }
        }
    } else {
        match rustix::fs::renameat_with(rfd, name, rfd, service.as_str(), RenameFlags::EXCHANGE) {
            // The staging name now holds the old tree: dropping deletes it.
            Ok(()) => {}
            Err(Errno::INVAL | Errno::NOSYS) => swap_by_renames(&staging, &target)?,
            Err(e) => {
                return Err(DataError::io(
                    &service,
                    format!("exchange with {}", target.display()),
                    e,
                ))
            }
        }
    }
    rustix::fs::fsync(rfd).map_err(|e| DataError::io(&service, "sync files root", e))?;
    drop(staging);
    Ok(())
}

/// Where `RENAME_EXCHANGE` is not supported: old aside, new in (old back
/// when that fails), old deleted when the staging value drops.
fn swap_by_renames(staging: &Staging, target: &Path) -> Result<(), DataError> {
    let service = staging.service.as_str();
    let rfd = &staging.root_fd;
    let old = format!("{}.old", staging.name);
    rustix::fs::renameat(rfd, service, rfd, old.as_str())
        .map_err(|e| DataError::io(service, format!("move {} aside", target.display()), e))?;
    if let Err(e) = rustix::fs::renameat(rfd, staging.name.as_str(), rfd, service) {
        let _ = rustix::fs::renameat(rfd, old.as_str(), rfd, service);
        return Err(DataError::io(
            service,
            format!("rename into {}", target.display()),
            e,
        ));
    }
    // The staging name is free now: the old tree takes it, so the drop
    // deletes it.
    rustix::fs::renameat(rfd, old.as_str(), rfd, staging.name.as_str())
        .map_err(|e| DataError::io(service, "rename the old tree for deletion", e))
}
