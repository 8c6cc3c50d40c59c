//! `PushFile` / `PullFile` (docs/ARCHITECTURE.md): single-file transfer confined to
//! `<root>/<service>/`, where `root` is the agent config's `[files] root`.
//!
//! ## Confinement
//!
//! The request names a service (a DNS label) and a path relative to that
//! service's directory. The path is checked lexically first: relative,
//! non-empty, at most [`MAX_PATH_LEN`] bytes, no NUL, and every
//! `/`-separated component non-empty, not `.`, not `..` and at most
//! [`MAX_COMPONENT_LEN`] bytes. There is no normalisation: `a//b`, `./a`
//! and `a/` are refused rather than rewritten.
//!
//! The filesystem is then walked one component at a time, each directory
//! opened with `openat(parent_fd, name, O_DIRECTORY | O_NOFOLLOW)` relative
//! to the descriptor of its parent, starting from the service directory
//! (itself opened with `O_NOFOLLOW` relative to the root). Nothing is ever
//! resolved by path string after the root, so a directory swapped for a
//! symlink between a check and a use cannot redirect us: the kernel refuses
//! to follow it at the moment of the open. This is the point of the walk;
//! canonicalise-and-compare would be open to exactly that race, and the
//! race is real: a service's containers can usually write to their own
//! `/srv/<service>/`, so they can plant and swap links there while an RPC
//! runs.
//!
//! **No symbolic link is followed anywhere below the root**, whether it
//! points outside the service directory or inside it: the service
//! directory itself, every intermediate directory and the final component
//! must be real directories / files. Telling a harmless inside link from an
//! escaping one would need path resolution we would have to get right
//! against races; refusing all of them is simpler and safer, and services
//! have no need to push through links. (The root itself, e.g. `/srv`, is
//! operator configuration and may be a symlink.)
//!
//! ## Writes
//!
//! [`push_file`] creates missing directories (the service directory
//! included) with mode 0755, writes the content to a fresh temp file in the
//! destination directory (`O_CREAT | O_EXCL`, so it never opens an existing
//! file or link), sets its mode with `fchmod` (so the umask does not
//! apply), `fsync`s it, `renameat`s it over the destination and `fsync`s the
//! directory. A reader sees the old file or the new one, never a partial
//! one. `rename` replaces a link at the destination rather than following
//! it, and cannot replace a directory with a file, so a race there cannot
//! escape either; the destination is nevertheless checked first so that a
//! directory or link is refused with a clear error instead of being
//! replaced.
//!
//! ## Reads
//!
//! [`pull_file`] reads regular files only, up to [`MAX_FILE_SIZE`]. The
//! final component is classified with `fstatat(AT_SYMLINK_NOFOLLOW)` before
//! it is opened (so fifos and devices are not opened), then opened with
//! `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY` and checked again with `fstat` on
//! the descriptor actually read.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use mcp_spec::names::is_dns_label;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

/// `n` bytes in MiB for messages: `64 MiB` when whole, else `70.5 MiB`.
fn mib(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    let whole = n / MIB;
    if whole * MIB == n {
        format!("{whole} MiB")
    } else {
        // Display only: the byte count is printed beside it.
        #[allow(clippy::cast_precision_loss)]
        let v = n as f64 / MIB as f64;
        format!("{v:.1} MiB")
    }
}

/// Largest file [`push_file`] writes and [`pull_file`] returns: the
/// protocol's [`mcp_proto::MAX_FILE_BYTES`] (64 MiB), which every gRPC hop
/// is sized to carry.
pub const MAX_FILE_SIZE: u64 = mcp_proto::MAX_FILE_BYTES as u64;
/// Longest accepted relative path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest accepted path component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Mode of a pushed file when the request says 0.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of directories [`push_file`] creates.
pub const DIR_MODE: u32 = 0o755;

/// Why a push or pull was refused or failed. Every variant names the
/// service and the path as the caller gave them.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("invalid service name {service:?}: not a DNS label")]
    InvalidService { service: String },

    #[error("service {service}: invalid path {path:?}: {reason}")]
    InvalidPath {
        service: String,
        path: String,
        reason: String,
    },

    #[error("service {service}: path {path:?}: invalid mode {mode:#o}: {reason}")]
    InvalidMode {
        service: String,
        path: String,
        mode: u32,
        reason: &'static str,
    },

    /// A symbolic link was found on the path; `at` is where, relative to
    /// the files root (`<service>` when the service directory itself is a
    /// link).
    #[error(
        "service {service}: path {path:?}: {at:?} is a symbolic link; \
         links are never followed under the service directory"
    )]
    Escape {
        service: String,
        path: String,
        at: String,
    },

    #[error("service {service}: path {path:?}: no such file")]
    NotFound { service: String, path: String },

    #[error("service {service}: path {path:?}: is a {kind}, not a regular file")]
    NotAFile {
        service: String,
        path: String,
        kind: &'static str,
    },

    #[error(
        "service {service}: path {path:?}: file is {size} bytes ({}), over the {} limit",
        mib(*size),
        mib(*limit)
    )]
    TooLarge {
        service: String,
        path: String,
        size: u64,
        limit: u64,
    },

    #[error("service {service}: path {path:?}: {op}: {source}")]
    Io {
        service: String,
        path: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `content` to `<root>/<service>/<rel>` atomically with permission
/// bits `mode` (0 means [`DEFAULT_FILE_MODE`]), creating missing
/// directories. See the module docs for what is refused.
pub fn push_file(
    root: &Path,
    service: &str,
    rel: &str,
    content: &[u8],
    mode: u32,
) -> Result<(), FileError> {
    let req = Request::new(service, rel)?;
    let mode = req.file_mode(mode)?;
    let size = u64::try_from(content.len()).unwrap_or(u64::MAX);
    if size > MAX_FILE_SIZE {
        return Err(req.too_large(size));
    }
    let (dir, name) = req.open_parent(root, true)?;

    match statat(&dir, name) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Symlink => return Err(req.escape_final()),
            other => return Err(req.not_a_file(other)),
        },
        Err(Errno::NOENT) => {}
        Err(e) => return Err(req.io(format!("stat {name}"), e)),
    }

    let (tmp_name, tmp_fd) = create_temp(&dir, mode).map_err(|e| req.io("create temp file", e))?;
    let written = write_and_sync(tmp_fd, content, mode)
        .map_err(|e| req.io_std(format!("write temp file {tmp_name}"), e))
        .and_then(|()| {
            rustix::fs::renameat(&dir, &tmp_name, &dir, name).map_err(|e| match e {
                Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => {
                    req.not_a_file(FileType::Directory)
                }
                e => req.io(format!("rename {tmp_name} to {name}"), e),
            })
        });
    if let Err(e) = written {
        // Best effort: the temp file is ours and must not be left behind.
        let _ = rustix::fs::unlinkat(&dir, &tmp_name, AtFlags::empty());
        return Err(e);
    }
    rustix::fs::fsync(&dir).map_err(|e| req.io("sync directory", e))
}

/// Reads `<root>/<service>/<rel>`: its content and permission bits
/// (`mode & 0o7777`). Regular files only, at most [`MAX_FILE_SIZE`] bytes.
pub fn pull_file(root: &Path, service: &str, rel: &str) -> Result<(Vec<u8>, u32), FileError> {
    let req = Request::new(service, rel)?;
    let (dir, name) = req.open_parent(root, false)?;

    // Classify before opening, so that a fifo or a device is never opened.
    match statat(&dir, name) {
        Ok(st) => req.check_readable(&st)?,
        Err(Errno::NOENT) => return Err(req.not_found()),
        Err(e) => return Err(req.io(format!("stat {name}"), e)),
    }
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(req.escape_final()),
        Err(Errno::NOENT) => return Err(req.not_found()),
        Err(e) => return Err(req.io(format!("open {name}"), e)),
    };
    // The name may have been replaced since the stat: check what we opened.
    let st = rustix::fs::fstat(&fd).map_err(|e| req.io(format!("stat {name}"), e))?;
    req.check_readable(&st)?;

    let mut content = Vec::new();
    File::from(fd)
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut content)
        .map_err(|e| req.io_std(format!("read {name}"), e))?;
    let size = u64::try_from(content.len()).unwrap_or(u64::MAX);
    if size > MAX_FILE_SIZE {
        return Err(req.too_large(size));
    }
    Ok((content, st.st_mode & 0o7777))
}

/// Prepares the host side of a volume under `<root>/<service>/`: creates
/// the service directory (mode 0755) when missing and checks, without
/// following any, that no component of `<service>/<rel>` that exists is a
/// symbolic link (`rel` empty: the service directory itself; normalised:
/// no empty, `.` or `..` component). A missing component below the
/// service directory is left for podman to report. A container can write
/// to its data directory, so a link planted there would otherwise let the
/// next deploy mount whatever it points to.
pub fn prepare_mount(root: &Path, service: &str, rel: &str) -> Result<(), FileError> {
    let req = if rel.is_empty() {
        if !is_dns_label(service) {
            return Err(FileError::InvalidService {
                service: service.to_owned(),
            });
        }
        Request {
            service,
            rel,
            components: Vec::new(),
        }
    } else {
        Request::new(service, rel)?
    };
    std::fs::create_dir_all(root)
        .map_err(|e| req.io_std(format!("create files root {}", root.display()), e))?;
    let root_fd = rustix::fs::openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| req.io(format!("open files root {}", root.display()), e))?;
    let mut dir = req.open_dir(&root_fd, service, 0, true)?;
    let Some((last, parents)) = req.components.split_last() else {
        return Ok(());
    };
    for (i, c) in parents.iter().enumerate() {
        dir = match req.open_dir(&dir, c, i + 1, false) {
            Ok(d) => d,
            Err(FileError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
    }
    match statat(&dir, last) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
            Err(req.escape_final())
        }
        Ok(_) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(req.io(format!("stat {last}"), e)),
    }
}

/// The lexical check of a path relative to a service directory (see the
/// module docs): relative, non-empty, at most [`MAX_PATH_LEN`] bytes, no
/// NUL, every `/`-separated component non-empty, not `.` or `..`, at most
/// [`MAX_COMPONENT_LEN`] bytes. Returns the components, or why the path
/// is refused. Shared with the archive import ([`crate::data`]).
pub(crate) fn split_relative(rel: &str) -> Result<Vec<&str>, String> {
    if rel.is_empty() {
        return Err("path is empty".into());
    }
    if rel.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    if rel.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if rel.starts_with('/') {
        return Err("absolute paths are not allowed".into());
    }
    let components: Vec<&str> = rel.split('/').collect();
    for c in &components {
        match *c {
            "" => return Err("empty component (leading, trailing or repeated '/')".into()),
            "." => return Err("'.' components are not allowed".into()),
            ".." => return Err("'..' components are not allowed".into()),
            c if c.len() > MAX_COMPONENT_LEN => {
                return Err(format!("component longer than {MAX_COMPONENT_LEN} bytes"))
            }
            _ => {}
        }
    }
    Ok(components)
}

/// One validated request: the service and the path as given, and the
/// path's components.
struct Request<'a> {
    service: &'a str,
    rel: &'a str,
    components: Vec<&'a str>,
}

impl<'a> Request<'a> {
    fn new(service: &'a str, rel: &'a str) -> Result<Self, FileError> {
        if !is_dns_label(service) {
            return Err(FileError::InvalidService {
                service: service.to_owned(),
            });
        }
        let components = split_relative(rel).map_err(|reason| FileError::InvalidPath {
            service: service.to_owned(),
            path: rel.to_owned(),
            reason,
        })?;
        Ok(Self {
            service,
            rel,
            components,
        })
    }

    fn file_mode(&self, mode: u32) -> Result<u32, FileError> {
        let invalid = |reason| FileError::InvalidMode {
            service: self.service.to_owned(),
            path: self.rel.to_owned(),
            mode,
            reason,
        };
        if mode & !0o7777 != 0 {
            Err(invalid("only permission bits (0o777) may be set"))
        } else if mode & 0o7000 != 0 {
            Err(invalid("setuid, setgid and sticky bits are refused"))
        } else if mode == 0 {
            Ok(DEFAULT_FILE_MODE)
        } else {
            Ok(mode)
        }
    }

    /// Opens the directory that holds the final component (creating the
    /// way there if `create`), returning it and the final component.
    fn open_parent(&self, root: &Path, create: bool) -> Result<(OwnedFd, &'a str), FileError> {
        let root_fd = rustix::fs::openat(
            CWD,
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io(format!("open files root {}", root.display()), e))?;
        let mut dir = self.open_dir(&root_fd, self.service, 0, create)?;
        let (name, parents) = self
            .components
            .split_last()
            .ok_or_else(|| self.not_found())?;
        for (i, c) in parents.iter().enumerate() {
            dir = self.open_dir(&dir, c, i + 1, create)?;
        }
        Ok((dir, name))
    }

    /// Opens directory `name` in `parent` without following a link;
    /// `depth` is the number of path components `name` ends (0 for the
    /// service directory), for messages.
    fn open_dir(
        &self,
        parent: &OwnedFd,
        name: &str,
        depth: usize,
        create: bool,
    ) -> Result<OwnedFd, FileError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut created = false;
        let mut tried_create = false;
        loop {
            match rustix::fs::openat(parent, name, flags, Mode::empty()) {
                Ok(fd) => {
                    if created {
                        // mkdirat's mode is filtered by the umask.
                        rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE))
                            .map_err(|e| self.io(format!("chmod {}", self.at(depth)), e))?;
                        rustix::fs::fsync(parent).map_err(|e| {
                            self.io(format!("sync parent of {}", self.at(depth)), e)
                        })?;
                    }
                    return Ok(fd);
                }
                Err(Errno::NOENT) if create && !tried_create => {
                    tried_create = true;
                    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(DIR_MODE)) {
                        Ok(()) => created = true,
                        // Created concurrently: open whatever is there now,
                        // with the same checks.
                        Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(self.io(format!("create directory {}", self.at(depth)), e))
                        }
                    }
                }
                Err(Errno::NOENT) => return Err(self.not_found()),
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    // O_NOFOLLOW | O_DIRECTORY on a link gives ELOOP or
                    // ENOTDIR depending on the kernel; look without
                    // following to say which it is.
                    return Err(match statat(parent, name) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                            self.escape(self.at(depth))
                        }
                        Ok(_) => self.invalid(format!("{:?} is not a directory", self.at(depth))),
                        Err(_) => self.io(format!("open directory {}", self.at(depth)), e),
                    });
                }
                Err(e) => return Err(self.io(format!("open directory {}", self.at(depth)), e)),
            }
        }
    }

    /// The first `depth` components, prefixed by the service: a location
    /// relative to the files root.
    fn at(&self, depth: usize) -> String {
        std::iter::once(self.service)
            .chain(self.components[..depth].iter().copied())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn check_readable(&self, st: &Stat) -> Result<(), FileError> {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Symlink => return Err(self.escape_final()),
            other => return Err(self.not_a_file(other)),
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size > MAX_FILE_SIZE {
            return Err(self.too_large(size));
        }
        Ok(())
    }

    fn invalid(&self, reason: String) -> FileError {
        FileError::InvalidPath {
            service: self.service.to_owned(),
            path: self.rel.to_owned(),
            reason,
        }
    }

    /// A link at the final component.
    fn escape_final(&self) -> FileError {
        self.escape(self.at(self.components.len()))
    }

    fn escape(&self, at: String) -> FileError {
        FileError::Escape {
            service: self.service.to_owned(),
            path: self.rel.to_owned(),
            at,
        }
    }

    fn not_found(&self) -> FileError {
        FileError::NotFound {
            service: self.service.to_owned(),
            path: self.rel.to_owned(),
        }
    }

    fn not_a_file(&self, kind: FileType) -> FileError {
        FileError::NotAFile {
            service: self.service.to_owned(),
            path: self.rel.to_owned(),
            kind: kind_name(kind),
        }
    }

    fn too_large(&self, size: u64) -> FileError {
        FileError::TooLarge {
            service: self.service.to_owned(),
            path: self.rel.to_owned(),
            size,
            limit: MAX_FILE_SIZE,
        }
    }

    fn io(&self, op: impl Into<String>, e: Errno) -> FileError {
        self.io_std(op, e.into())
    }

    fn io_std(&self, op: impl Into<String>, source: std::io::Error) -> FileError {
        FileError::Io {
            service: self.service.to_owned(),
            path: self.rel.to_owned(),
            op: op.into(),
            source,
        }
    }
}

pub(crate) fn statat(dir: &OwnedFd, name: &str) -> Result<Stat, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

pub(crate) fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "special file",
    }
}

/// Creates a new temp file in `dir`, never opening an existing entry.
fn create_temp(dir: &OwnedFd, mode: u32) -> Result<(String, OwnedFd), Errno> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut last = Errno::EXIST;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(".mcp-push.{}.{n}.tmp", std::process::id());
        match rustix::fs::openat(dir, &name, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => return Ok((name, fd)),
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn write_and_sync(fd: OwnedFd, content: &[u8], mode: u32) -> std::io::Result<()> {
    // The create mode was filtered by the umask; set the requested one.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    let mut file = File::from(fd);
    file.write_all(content)?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
