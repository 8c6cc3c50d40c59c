//! Tests of `files`.

#![allow(clippy::unwrap_used)]

use super::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use proptest::prelude::*;
use tempfile::TempDir;

/// `<base>/root` is the files root, `<base>/outside` a directory that
/// must never change; `root/svc` holds the links used to try escaping.
struct Fixture {
    _tmp: TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("passwd"), "root:x:0:0\n").unwrap();
        fs::create_dir(outside.join("etc")).unwrap();
        Self {
            _tmp: tmp,
            base,
            root,
            outside,
        }
    }

    /// `svc` with a real subdirectory and links of every kind.
    fn with_links() -> Self {
        let f = Self::new();
        let svc = f.svc();
        fs::create_dir_all(svc.join("real")).unwrap();
        fs::write(svc.join("real/f"), "inside").unwrap();
        symlink(&f.outside, svc.join("out")).unwrap();
        symlink("../../outside", svc.join("out-rel")).unwrap();
        symlink(svc.join("real"), svc.join("in")).unwrap();
        symlink(f.outside.join("passwd"), svc.join("link")).unwrap();
        symlink(f.outside.join("new"), svc.join("dangling")).unwrap();
        symlink("real/f", svc.join("inlink")).unwrap();
        // A link at the root level pointing outside, under another name.
        symlink(&f.outside, f.root.join("evil")).unwrap();
        f
    }

    fn svc(&self) -> PathBuf {
        self.root.join("svc")
    }

    /// Everything under the temp dir except the inside of a real
    /// `root/svc` directory: what no request may change.
    fn outside_state(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let svc = self.svc();
        walk(&self.base, &mut |p, meta| {
            let skip = p == svc && meta.is_dir();
            let desc = if meta.is_symlink() {
                format!("link {}", fs::read_link(p).unwrap().display())
            } else if meta.is_dir() {
                format!("dir {:o}", meta.mode())
            } else if meta.is_file() {
                format!("file {:o} {:?}", meta.mode(), fs::read(p).unwrap())
            } else {
                format!("other {:o}", meta.mode())
            };
            out.insert(p.to_path_buf(), desc);
            !skip
        });
        out
    }
}

/// Visits every entry under `dir` without following links; `f`
/// returns whether to descend into a directory.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> bool) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let meta = fs::symlink_metadata(&p).unwrap();
        if f(&p, &meta) && meta.is_dir() {
            walk(&p, f);
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn push_then_pull_roundtrips_content_and_mode() {
    let f = Fixture::new();
    push_file(&f.root, "svc", "app.conf", b"listen = 8080\n", 0o600).unwrap();
    assert_eq!(
        pull_file(&f.root, "svc", "app.conf").unwrap(),
        (b"listen = 8080\n".to_vec(), 0o600)
    );
    assert_eq!(mode_of(&f.svc().join("app.conf")), 0o600);

    // Mode 0 means 0644; the umask does not apply to explicit modes.
    push_file(&f.root, "svc", "default", b"", 0).unwrap();
    assert_eq!(
        pull_file(&f.root, "svc", "default").unwrap(),
        (vec![], 0o644)
    );
    push_file(&f.root, "svc", "wide", b"x", 0o666).unwrap();
    assert_eq!(mode_of(&f.svc().join("wide")), 0o666);
}

#[test]
fn push_creates_service_dir_and_nested_dirs() {
    let f = Fixture::new();
    push_file(&f.root, "svc", "conf/d/10-site.conf", b"a", 0o640).unwrap();
    assert_eq!(fs::read(f.svc().join("conf/d/10-site.conf")).unwrap(), b"a");
    for d in ["", "conf", "conf/d"] {
        let p = f.svc().join(d);
        assert!(
            fs::symlink_metadata(&p).unwrap().is_dir(),
            "{}",
            p.display()
        );
        assert_eq!(mode_of(&p), DIR_MODE, "{}", p.display());
    }
    // Existing directories are reused as they are.
    push_file(&f.root, "svc", "conf/other", b"b", 0).unwrap();
    assert_eq!(names(&f.svc().join("conf")), ["d", "other"]);
}

#[test]
fn push_replaces_atomically_and_leaves_no_temp_files() {
    let f = Fixture::new();
    push_file(&f.root, "svc", "d/file", b"old content", 0o600).unwrap();
    let old_ino = fs::metadata(f.svc().join("d/file")).unwrap().ino();
    push_file(&f.root, "svc", "d/file", b"new", 0o644).unwrap();
    let meta = fs::metadata(f.svc().join("d/file")).unwrap();
    assert_ne!(meta.ino(), old_ino, "replaced by rename, not rewritten");
    assert_eq!(
        pull_file(&f.root, "svc", "d/file").unwrap(),
        (b"new".to_vec(), 0o644)
    );
    assert_eq!(names(&f.svc().join("d")), ["file"]);
    assert_eq!(names(&f.svc()), ["d"]);
}

#[test]
fn push_over_a_directory_is_refused_and_leaves_no_temp_file() {
    let f = Fixture::with_links();
    let before = names(&f.svc().join("real"));
    // Destination is a directory: refused before or at the rename.
    assert!(matches!(
        push_file(&f.root, "svc", "real", b"x", 0),
        Err(FileError::NotAFile {
            kind: "directory",
            ..
        })
    ));
    assert_eq!(names(&f.svc().join("real")), before);
    assert!(!names(&f.svc()).iter().any(|n| n.contains("mcp-push")));
}

/// What a refusal must be, for the table below.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Refused {
    Service,
    Path,
    Escape,
    NotAFile,
}

fn kind(e: &FileError) -> Option<Refused> {
    match e {
        FileError::InvalidService { .. } => Some(Refused::Service),
        FileError::InvalidPath { .. } => Some(Refused::Path),
        FileError::Escape { .. } => Some(Refused::Escape),
        FileError::NotAFile { .. } => Some(Refused::NotAFile),
        _ => None,
    }
}

#[test]
fn refused_requests_write_nothing_outside_the_service_dir() {
    use Refused::*;
    let cases: &[(&str, &str, Refused)] = &[
        ("svc", "../etc/passwd", Path),
        ("svc", "../outside/passwd", Path),
        ("svc", "/etc/passwd", Path),
        ("svc", "a/../../x", Path),
        ("svc", "..", Path),
        ("svc", "", Path),
        ("svc", ".", Path),
        ("svc", "./a", Path),
        ("svc", "a/./b", Path),
        ("svc", "a//b", Path),
        ("svc", "a/", Path),
        ("svc", "a\0b", Path),
        ("svc", "real/f/x", Path),
        // A link at the final component, outside, dangling or inside.
        ("svc", "link", Escape),
        ("svc", "dangling", Escape),
        ("svc", "inlink", Escape),
        // A path through a linked directory, outside or inside.
        ("svc", "out/passwd", Escape),
        ("svc", "out/new", Escape),
        ("svc", "out/etc/new", Escape),
        ("svc", "out-rel/passwd", Escape),
        ("svc", "in/f", Escape),
        ("svc", "in/new/deeper", Escape),
        // The service directory itself is a link.
        ("evil", "passwd", Escape),
        ("evil", "new", Escape),
        ("svc", "real", NotAFile),
        ("../x", "f", Service),
        ("Bad_Name", "f", Service),
        ("", "f", Service),
        ("a/b", "f", Service),
    ];
    let f = Fixture::with_links();
    let before = f.outside_state();
    let inside_before = names(&f.svc());
    for &(service, rel, want) in cases {
        let err = push_file(&f.root, service, rel, b"pwned", 0o644).unwrap_err();
        assert_eq!(kind(&err), Some(want), "push {service:?} {rel:?}: {err}");
        assert_eq!(
            f.outside_state(),
            before,
            "push {service:?} {rel:?} wrote outside"
        );
        assert_eq!(names(&f.svc()), inside_before, "push {service:?} {rel:?}");
        if want != NotAFile {
            let err = pull_file(&f.root, service, rel).unwrap_err();
            assert_eq!(kind(&err), Some(want), "pull {service:?} {rel:?}: {err}");
        }
    }
    assert_eq!(fs::read(f.outside.join("passwd")).unwrap(), b"root:x:0:0\n");
    assert_eq!(fs::read(f.svc().join("real/f")).unwrap(), b"inside");
}

#[test]
fn service_dir_that_is_a_link_is_refused_even_if_it_points_inside() {
    let f = Fixture::new();
    push_file(&f.root, "real", "f", b"x", 0).unwrap();
    symlink(f.root.join("real"), f.svc()).unwrap();
    let err = push_file(&f.root, "svc", "f", b"y", 0).unwrap_err();
    let FileError::Escape { at, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(at, "svc");
    assert!(matches!(
        pull_file(&f.root, "svc", "f"),
        Err(FileError::Escape { .. })
    ));
    assert_eq!(fs::read(f.root.join("real/f")).unwrap(), b"x");
}

#[test]
fn escape_names_the_link() {
    let f = Fixture::with_links();
    let err = push_file(&f.root, "svc", "out/etc/new", b"", 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service svc: path \"out/etc/new\": \"svc/out\" is a symbolic link; \
         links are never followed under the service directory"
    );
    let err = pull_file(&f.root, "svc", "link").unwrap_err();
    assert!(
        matches!(&err, FileError::Escape { at, .. } if at == "svc/link"),
        "{err}"
    );
}

#[test]
fn modes_with_special_or_type_bits_are_refused() {
    let f = Fixture::new();
    for mode in [0o4755, 0o2755, 0o1777, 0o6644, 0o100_644, 0o170_000] {
        let err = push_file(&f.root, "svc", "f", b"x", mode).unwrap_err();
        assert!(
            matches!(err, FileError::InvalidMode { .. }),
            "{mode:o}: {err}"
        );
    }
    assert!(!f.svc().exists(), "nothing created for a refused mode");
    let err = push_file(&f.root, "svc", "f", b"x", 0o4755).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service svc: path \"f\": invalid mode 0o4755: setuid, setgid and sticky bits are refused"
    );
}

#[test]
fn pull_reports_directories_missing_files_and_fifos() {
    let f = Fixture::new();
    push_file(&f.root, "svc", "dir/f", b"x", 0).unwrap();
    let svc = rustix::fs::openat(
        CWD,
        f.svc(),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(&svc, "fifo", FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();

    let msg = |r: Result<(Vec<u8>, u32), FileError>| r.unwrap_err().to_string();
    assert_eq!(
        msg(pull_file(&f.root, "svc", "dir")),
        "service svc: path \"dir\": is a directory, not a regular file"
    );
    assert_eq!(
        msg(pull_file(&f.root, "svc", "fifo")),
        "service svc: path \"fifo\": is a fifo, not a regular file"
    );
    assert_eq!(
        msg(pull_file(&f.root, "svc", "missing")),
        "service svc: path \"missing\": no such file"
    );
    assert_eq!(
        msg(pull_file(&f.root, "svc", "nodir/f")),
        "service svc: path \"nodir/f\": no such file"
    );
    assert_eq!(
        msg(pull_file(&f.root, "other", "f")),
        "service other: path \"f\": no such file"
    );
    assert!(!f.root.join("other").exists(), "pull creates nothing");
    assert_eq!(
        msg(pull_file(&f.root, "svc", "dir/f/x")),
        "service svc: invalid path \"dir/f/x\": \"svc/dir/f\" is not a directory"
    );
    // Pushing over a fifo is refused too (and does not block on it).
    assert!(matches!(
        push_file(&f.root, "svc", "fifo", b"x", 0),
        Err(FileError::NotAFile { kind: "fifo", .. })
    ));
}

#[test]
fn size_limit_is_enforced_both_ways() {
    let f = Fixture::new();
    fs::create_dir(f.svc()).unwrap();
    let big = f.svc().join("big");
    fs::File::create(&big)
        .unwrap()
        .set_len(MAX_FILE_SIZE + 1)
        .unwrap();
    let err = pull_file(&f.root, "svc", "big").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "service svc: path \"big\": file is {} bytes (64.0 MiB), over the 64 MiB limit",
            MAX_FILE_SIZE + 1
        )
    );
    fs::File::create(&big)
        .unwrap()
        .set_len(70 * 1024 * 1024 + 512 * 1024)
        .unwrap();
    let err = pull_file(&f.root, "svc", "big").unwrap_err();
    assert_eq!(
        err.to_string(),
        "service svc: path \"big\": file is 73924608 bytes (70.5 MiB), over the 64 MiB limit"
    );
    let content = vec![0u8; usize::try_from(MAX_FILE_SIZE).unwrap() + 1];
    assert!(matches!(
        push_file(&f.root, "svc", "big2", &content, 0),
        Err(FileError::TooLarge { .. })
    ));
    assert!(!f.svc().join("big2").exists());
}

#[test]
fn path_length_limits() {
    let f = Fixture::new();
    let long_component = "a".repeat(MAX_COMPONENT_LEN + 1);
    let long_path = vec!["a"; MAX_PATH_LEN / 2 + 1].join("/");
    for rel in [long_component.as_str(), long_path.as_str()] {
        assert!(matches!(
            push_file(&f.root, "svc", rel, b"", 0),
            Err(FileError::InvalidPath { .. })
        ));
    }
    push_file(&f.root, "svc", &"a".repeat(MAX_COMPONENT_LEN), b"ok", 0).unwrap();
}

#[test]
fn missing_root_is_an_io_error_naming_it() {
    let f = Fixture::new();
    let err = push_file(&f.base.join("nope"), "svc", "f", b"", 0).unwrap_err();
    assert!(matches!(err, FileError::Io { .. }), "{err}");
    assert!(err.to_string().contains("open files root"), "{err}");
    assert!(!f.base.join("nope").exists());
}

fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "..", ".", "", "out", "in", "link"])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random relative paths made of `a`, `b`, `..`, `.`, empty
    /// segments and the fixture's links never write outside the
    /// service directory; a push that succeeds wrote exactly the path
    /// it was given.
    #[test]
    fn random_paths_never_write_outside(
        segments in prop::collection::vec(segment(), 1..7),
        leading_slash in any::<bool>(),
    ) {
        let f = Fixture::with_links();
        let rel = format!("{}{}", if leading_slash { "/" } else { "" }, segments.join("/"));
        let before = f.outside_state();
        match push_file(&f.root, "svc", &rel, b"written", 0o600) {
            Ok(()) => {
                // Only plain names, and not through a link.
                prop_assert!(!leading_slash);
                prop_assert!(
                    segments.iter().all(|s| !matches!(*s, "" | "." | "..")),
                    "{rel:?}"
                );
                prop_assert!(!matches!(segments[0], "out" | "in" | "link"), "{rel:?}");
                let p = f.svc().join(&rel);
                prop_assert!(fs::symlink_metadata(&p).unwrap().is_file());
                prop_assert_eq!(fs::read(&p).unwrap(), b"written");
                prop_assert_eq!(
                    pull_file(&f.root, "svc", &rel).unwrap(),
                    (b"written".to_vec(), 0o600)
                );
            }
            Err(e) => prop_assert!(
                !matches!(e, FileError::Io { .. }),
                "{rel:?}: unexpected {e}"
            ),
        }
        prop_assert_eq!(f.outside_state(), before, "{:?} wrote outside", rel);
    }
}
