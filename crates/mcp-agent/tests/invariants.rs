//! Architecture invariants that are cheap to check by reading the source.

/// The monitor decides; it never touches the clock, disk, network,
/// processes or the database (those belong to the daemon loop around it).
#[test]
fn monitor_logic_does_no_io() {
    let src = include_str!("../src/monitor.rs");
    for forbidden in [
        "std::fs",
        "std::net",
        "std::process",
        "std::thread",
        "tokio",
        "rusqlite",
        "Timestamp::now",
        "SystemTime",
        "Instant",
        "Registry",
    ] {
        assert!(
            !src.contains(forbidden),
            "src/monitor.rs mentions {forbidden}: the monitor must stay pure"
        );
    }
}

/// The alert command is an argv array, executed directly.
#[test]
fn alerts_never_go_through_a_shell() {
    let src = include_str!("../src/alert.rs");
    for forbidden in ["\"sh\"", "\"/bin/sh\"", "\"-c\"", "bash"] {
        assert!(
            !src.contains(forbidden),
            "src/alert.rs mentions {forbidden}: alert commands run as argv, no shell"
        );
    }
}
