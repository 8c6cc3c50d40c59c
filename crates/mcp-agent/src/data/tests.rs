//! The archive logic against real directories: selection, SQLite copies
//! under concurrent writes, round trips, and hostile archives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mcp_spec::{SnapshotConfig, SnapshotMethod};

use super::*;

/// Exports `<root>/<service>` with `sel`.
pub(crate) fn export_bytes(root: &Path, service: &str, sel: &Selection) -> (Vec<u8>, ExportStats) {
    let scratch = tempfile::tempdir().unwrap();
    write_archive(root, service, sel, scratch.path(), Vec::new()).unwrap()
}

/// Path → content of an archive's files (`/` appended for directories).
pub(crate) fn entries(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(zstd::Decoder::new(archive).unwrap());
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut p = e.path().unwrap().to_string_lossy().into_owned();
        if e.header().entry_type().is_dir() {
            p.push('/');
        }
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        out.insert(p, v);
    }
    out
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Every entry below `dir`: kind, content and mode, without following links.
pub(crate) fn tree(dir: &Path) -> BTreeMap<String, (String, Vec<u8>, u32)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (String, Vec<u8>, u32)>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(
                    rel,
                    ("link".into(), t.to_string_lossy().as_bytes().to_vec(), 0),
                );
            } else if m.is_dir() {
                out.insert(rel, ("dir".into(), Vec::new(), mode));
                walk(base, &p, out);
            } else {
                out.insert(rel, ("file".into(), std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Extracts and installs `archive` as `service` under `root`.
pub(crate) fn import_bytes(
    root: &Path,
    service: &str,
    archive: &[u8],
    limits: &ImportLimits,
    force: bool,
) -> Result<ImportStats, DataError> {
    let staging = Staging::create(root, service)?;
    let stats = extract(archive, &staging, limits)?;
    install(staging, force)?;
    Ok(stats)
}

// ----- export ---------------------------------------------------------------

#[test]
fn the_default_set_is_toml_db_and_pem_at_any_depth() {
    let d = tempfile::tempdir().unwrap();
    let svc = d.path().join("app");
    write(&svc, "app.toml", b"a = 1\n");
    write(&svc, "data.db", b"not sqlite at all");
    write(&svc, "tls/key.pem", b"KEY");
    write(&svc, "notes.txt", b"no");
    write(&svc, "logs/x.log", b"no");
    write(&svc, "deep/er/cfg.toml", b"b = 2\n");
    std::fs::create_dir_all(svc.join("empty")).unwrap();
    let (archive, stats) = export_bytes(d.path(), "app", &Selection::default_set());
    let e = entries(&archive);
    let names: Vec<&str> = e.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "./",
            "app.toml",
            "data.db",
            "deep/",
            "deep/er/",
            "deep/er/cfg.toml",
            "tls/",
            "tls/key.pem"
        ]
    );
    assert_eq!(e["data.db"], b"not sqlite at all");
    assert!(stats.sqlite.is_empty());
}

#[test]
fn full_archives_everything_but_the_excludes_by_whole_components() {
    let d = tempfile::tempdir().unwrap();
    let svc = d.path().join("app");
    write(&svc, "keep.txt", b"1");
    write(&svc, "cache/big.bin", b"2");
    write(&svc, "cache2/small.bin", b"3");
    write(&svc, "sub/tmp.txt", b"4");
    write(&svc, "sub/keep.txt", b"5");
    std::fs::create_dir_all(svc.join("empty")).unwrap();
    let sel = Selection::of(Some(&SnapshotConfig {
        method: SnapshotMethod::Full,
        exclude: vec!["cache".into(), "./sub//tmp.txt".into()],
    }));
    let e = entries(&export_bytes(d.path(), "app", &sel).0);
    let names: Vec<&str> = e.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "./",
            "cache2/",
            "cache2/small.bin",
            "empty/",
            "keep.txt",
            "sub/",
            "sub/keep.txt"
        ]
    );
    // Excludes apply to the default set too.
    write(&svc, "a.toml", b"");
    write(&svc, "secret.pem", b"");
    let sel = Selection::of(Some(&SnapshotConfig {
        method: SnapshotMethod::Default,
        exclude: vec!["secret.pem".into()],
    }));
    let e = entries(&export_bytes(d.path(), "app", &sel).0);
    assert_eq!(e.keys().collect::<Vec<_>>(), ["./", "a.toml"]);
}

#[test]
fn links_fifos_and_sockets_are_skipped_never_followed() {
    let d = tempfile::tempdir().unwrap();
    let svc = d.path().join("app");
    write(&svc, "real.toml", b"x");
    write(d.path(), "outside/secret.toml", b"SECRET");
    std::os::unix::fs::symlink(d.path().join("outside/secret.toml"), svc.join("link.toml"))
        .unwrap();
    std::os::unix::fs::symlink(d.path().join("outside"), svc.join("dirlink")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        svc.join("pipe.toml"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let (archive, stats) = export_bytes(d.path(), "app", &Selection::all());
    let e = entries(&archive);
    assert_eq!(e.keys().collect::<Vec<_>>(), ["./", "real.toml"]);
    assert!(!archive.windows(6).any(|w| w == b"SECRET"));
    let skipped: Vec<&str> = stats.skipped.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(skipped, ["dirlink", "link.toml", "pipe.toml"]);
    // The service directory itself as a link is refused.
    std::os::unix::fs::symlink(d.path().join("outside"), d.path().join("evil")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let err = write_archive(
        d.path(),
        "evil",
        &Selection::all(),
        scratch.path(),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Link { .. }), "{err}");
    let err = write_archive(
        d.path(),
        "nope",
        &Selection::all(),
        scratch.path(),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::NoData { .. }), "{err}");
}

#[test]
fn a_sqlite_database_written_during_the_export_is_copied_consistently() {
    let d = tempfile::tempdir().unwrap();
    let svc = d.path().join("app");
    std::fs::create_dir_all(&svc).unwrap();
    // Named neither *.db nor anything known: recognised by its header.
    let db = svc.join("state.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")
        .unwrap();
    drop(conn);
    write(&svc, "state.sqlite-journal", b"stale");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                conn.execute("INSERT INTO t(v) VALUES (randomblob(2000))", [])
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    // Let the WAL grow, then export several times while it is written.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(svc.join("state.sqlite-wal").exists());
    let mut archives = Vec::new();
    for _ in 0..3 {
        archives.push(export_bytes(d.path(), "app", &Selection::all()));
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 0);
    for (archive, stats) in archives {
        assert_eq!(stats.sqlite, ["state.sqlite"]);
        let e = entries(&archive);
        assert_eq!(
            e.keys().collect::<Vec<_>>(),
            ["./", "state.sqlite"],
            "no -wal, -shm or -journal in the archive"
        );
        let out = tempfile::tempdir().unwrap();
        let copy = out.path().join("copy.db");
        std::fs::write(&copy, &e["state.sqlite"]).unwrap();
        let c = rusqlite::Connection::open(&copy).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let rows: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert!(rows > 0, "the copy holds the committed rows");
        // VACUUM INTO writes a self-contained rollback-journal file; the
        // service switches it back to WAL when it opens it.
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
    }
}

#[test]
fn export_then_import_gives_the_same_tree_with_modes() {
    let d = tempfile::tempdir().unwrap();
    let svc = d.path().join("app");
    write(&svc, "a.toml", b"a = 1\n");
    write(&svc, "bin/run", b"#!/bin/sh\n");
    std::fs::set_permissions(svc.join("bin/run"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(svc.join("a.toml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let long = format!("{}/{}.txt", "d".repeat(120), "f".repeat(150));
    write(&svc, &long, b"long name");
    std::fs::create_dir_all(svc.join("empty")).unwrap();
    let (archive, _) = export_bytes(d.path(), "app", &Selection::all());
    let stats = import_bytes(d.path(), "copy", &archive, &ImportLimits::default(), false).unwrap();
    assert_eq!(tree(&svc), tree(&d.path().join("copy")));
    assert_eq!(stats.entries, 7);
    assert_eq!(stats.bytes_written, 6 + 10 + 9);
    // Nothing else is left in the root.
    let mut names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["app", "copy"]);
    // Again without force: refused; with force: replaced.
    write(&d.path().join("copy"), "extra", b"x");
    let err =
        import_bytes(d.path(), "copy", &archive, &ImportLimits::default(), false).unwrap_err();
    assert!(matches!(err, DataError::Exists { .. }), "{err}");
    assert!(d.path().join("copy/extra").exists());
    import_bytes(d.path(), "copy", &archive, &ImportLimits::default(), true).unwrap();
    assert_eq!(tree(&svc), tree(&d.path().join("copy")));
}

// ----- hostile archives -----------------------------------------------------

/// One raw tar entry: a GNU header with `name` written byte for byte
/// (the tar crate's builder refuses absolute paths and `..`).
pub(crate) fn raw_entry(name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A tar.zst of raw entries.
pub(crate) fn archive_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        tar.extend_from_slice(e);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
    enc.write_all(&tar).unwrap();
    enc.finish().unwrap()
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    raw_entry(name.as_bytes(), tar::EntryType::Regular, b"", data)
}

#[test]
fn hostile_archives_are_refused_and_change_nothing() {
    use tar::EntryType as T;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("srv");
    write(&root, "app/state.toml", b"original = true\n");
    write(&root, "app/sub/keep.pem", b"PEM");
    let before = tree(&root);
    let outside_before = tree(d.path());
    let small = ImportLimits {
        max_bytes: 10_000,
        max_file_bytes: 1_000,
        max_entries: 50,
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute path",
            archive_of(&[file("/tmp/evil", b"x")]),
            "absolute paths are not allowed",
        ),
        (
            "dot-dot",
            archive_of(&[file("../evil", b"x")]),
            "'..' components are not allowed",
        ),
        (
            "dot-dot inside",
            archive_of(&[file("a/../../evil", b"x")]),
            "'..' components are not allowed",
        ),
        (
            "symlink to /etc then a file through it",
            archive_of(&[
                raw_entry(b"etc", T::Symlink, b"/etc", b""),
                file("etc/passwd", b"root::0:0::/:/bin/sh\n"),
            ]),
            "symbolic link (to \"/etc\")",
        ),
        (
            "hard link outside",
            archive_of(&[raw_entry(b"passwd", T::Link, b"/etc/passwd", b"")]),
            "hard link (to \"/etc/passwd\")",
        ),
        (
            "character device",
            archive_of(&[raw_entry(b"null", T::Char, b"", b"")]),
            "character device node",
        ),
        (
            "block device",
            archive_of(&[raw_entry(b"sda", T::Block, b"", b"")]),
            "block device node",
        ),
        (
            "fifo",
            archive_of(&[raw_entry(b"p", T::Fifo, b"", b"")]),
            "fifo",
        ),
        (
            "pax header",
            archive_of(&[raw_entry(b"pax", T::XHeader, b"", b"20 path=../../evil\n")]),
            "pax extended header",
        ),
        (
            "oversized entry",
            archive_of(&[file("big.bin", &[7u8; 1_001])]),
            "over the limit of 1000 bytes",
        ),
        (
            "over the total",
            archive_of(
                &(0..11)
                    .map(|i| file(&format!("f{i}"), &[1u8; 1_000]))
                    .collect::<Vec<_>>(),
            ),
            "file content is 11000 bytes, over the limit of 10000",
        ),
        (
            "too many entries",
            archive_of(
                &(0..51)
                    .map(|i| file(&format!("f{i}"), b""))
                    .collect::<Vec<_>>(),
            ),
            "more than 50 entries",
        ),
        (
            "a file twice",
            archive_of(&[file("a", b"1"), file("a", b"2")]),
            "appears twice",
        ),
        (
            "a file under a file",
            archive_of(&[file("a", b"1"), file("a/b", b"2")]),
            "already a file",
        ),
        ("not zstd", b"plain bytes".to_vec(), "not a valid tar.zst"),
        (
            "truncated",
            {
                let mut t = file("a", &[1u8; 600]);
                t.truncate(700);
                let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
                enc.write_all(&t).unwrap();
                enc.finish().unwrap()
            },
            "not a valid tar.zst",
        ),
    ];
    for (what, archive, expect) in cases {
        for force in [false, true] {
            let err = match import_bytes(&root, "app", &archive, &small, force) {
                Ok(s) => panic!("{what}: accepted ({s:?})"),
                Err(e) => e,
            };
            // Entries are checked before the existing directory is.
            let msg = err.to_string();
            assert!(msg.contains(expect), "{what}: {msg}");
            assert!(msg.contains("service app"), "{what}: {msg}");
            assert_eq!(tree(&root), before, "{what}: the data changed");
            assert_eq!(
                tree(d.path()),
                outside_before,
                "{what}: something was written"
            );
        }
    }
    assert!(!Path::new("/tmp/evil").exists());
}
