//! The confinement rule, case by case.

use super::*;

#[test]
fn normalize_drops_empty_and_dot_components_and_refuses_dotdot() {
    assert_eq!(normalize("/srv//mcq/./data/"), Ok("/srv/mcq/data".into()));
    assert_eq!(normalize("/srv/mcq/."), Ok("/srv/mcq".into()));
    assert_eq!(normalize("//"), Ok("/".into()));
    assert!(normalize("/srv/mcq/../etc").is_err());
    assert!(normalize("srv/mcq").is_err());
}

#[test]
fn is_under_matches_whole_components() {
    assert!(is_under("/var/cache/builder", "/var/cache/builder"));
    assert!(is_under("/var/cache/builder/x", "/var/cache/builder"));
    assert!(!is_under("/var/cache/builderx", "/var/cache/builder"));
    assert!(is_under("/etc", "/"));
}

#[test]
fn own_data_directory_and_allowed_paths_only() {
    let none: &[String] = &[];
    assert_eq!(
        check_host_path("mcq", "/srv/mcq:/srv/mcq", none),
        Ok("/srv/mcq".into())
    );
    assert_eq!(
        check_host_path("mcq", "/srv/mcq//db/:/db:ro", none),
        Ok("/srv/mcq/db".into())
    );
    for bad in [
        "/:/host",
        "/etc:/etc",
        "/srv:/srv",
        "/srv/mcqx:/x",
        "/srv/other:/x",
        "/srv/mcq/../other:/x",
        "data:/data",
    ] {
        assert!(check_host_path("mcq", bad, none).is_err(), "{bad}");
    }
    let allowed = vec!["/var/cache/builder".to_string()];
    assert!(check_host_path("mcq", "/var/cache/builder/x:/c", &allowed).is_ok());
    assert!(check_host_path("mcq", "/var/cache/builderx:/c", &allowed).is_err());
    let root = vec!["/".to_string()];
    assert!(check_host_path("mcq", "/:/host", &root).is_ok());
}
