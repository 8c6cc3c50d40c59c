//! Rendering a [`Plan`] for people ([`render_text`], like `terraform plan`)
//! and for programs ([`render_json`]). Pure: strings in, strings out.
//!
//! Text layout:
//!
//! ```text
//! Plan (source 4f2a9c1): 1 to deploy, 1 to update, 1 held
//!
//! Notes:
//!   - orphan: worker-2 runs old, which is not placed there (left alone)
//!
//! + web on worker-1
//!     new service, least containers among healthy workers (worker-1 has 0)
//!     1. deploy web on worker-1 (spec 3fa2b1c04d5e)
//!     2. dns set web.mcp.internal -> 100.64.0.2
//! ```
//!
//! One block per entry: symbol (see [`Kind::symbol`]), service, node; the
//! reason; indented details; numbered steps (a blocked one ends in
//! `[not run: <why>]`, a skipped one in `[skipped: <why>]`); for updates, a
//! unified diff (3 lines of context) of the canonical spec.

use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use crate::plan::{short, Entry, Kind, Note, Plan, SpecChange, StepState};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";
const DIM: &str = "\x1b[2m";
const BOLD_RED: &str = "\x1b[1;31m";

/// Paints text only when colour is on.
struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

fn kind_colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Deploy | Kind::Start => GREEN,
        Kind::Update | Kind::Stop => YELLOW,
        Kind::Undeploy => RED,
        Kind::Migrate | Kind::Repair => CYAN,
        Kind::Heal => MAGENTA,
        Kind::Waiting => DIM,
        Kind::Degraded | Kind::Held | Kind::Blocked | Kind::Refused => BOLD_RED,
    }
}

fn count_phrase(kind: Kind) -> &'static str {
    match kind {
        Kind::Deploy => "to deploy",
        Kind::Update => "to update",
        Kind::Undeploy => "to undeploy",
        Kind::Migrate => "to migrate",
        Kind::Start => "to start",
        Kind::Stop => "to stop",
        Kind::Heal => "to heal",
        Kind::Repair => "to repair",
        Kind::Waiting => "waiting",
        Kind::Degraded => "degraded",
        Kind::Held => "held",
        Kind::Blocked => "blocked",
        Kind::Refused => "refused",
    }
}

/// The plan as text for a terminal; ANSI colour only when `color` is true.
pub fn render_text(plan: &Plan, color: bool) -> String {
    let p = Paint { on: color };
    let mut out = String::new();
    let source = plan
        .source
        .as_deref()
        .map(|s| format!(" (source {s})"))
        .unwrap_or_default();
    if plan.entries.is_empty() {
        let _ = writeln!(
            out,
            "Plan{source}: no changes, the fleet matches the desired state"
        );
    } else {
        let counts: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| plan.counts.get(**k) > 0)
            .map(|k| format!("{} {}", plan.counts.get(*k), count_phrase(*k)))
            .collect();
        let _ = writeln!(
            out,
            "{}",
            p.wrap(BOLD, &format!("Plan{source}: {}", counts.join(", ")))
        );
    }
    if let Some(why) = &plan.refused {
        let _ = writeln!(out, "{}", p.wrap(BOLD_RED, &format!("REFUSED: {why}")));
    }
    // The guard's note is the REFUSED line above.
    let notes: Vec<&Note> = plan
        .notes
        .iter()
        .filter(|n| !matches!(n, Note::MassPruneRefused { .. }))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:");
        for n in notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    for e in &plan.entries {
        out.push('\n');
        entry(&mut out, &p, e);
    }
    out
}

fn entry(out: &mut String, p: &Paint, e: &Entry) {
    let colour = kind_colour(e.kind);
    let node = e
        .node
        .as_deref()
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} {}{}",
        p.wrap(colour, &e.kind.symbol().to_string()),
        p.wrap(BOLD, &e.service),
        node
    );
    let _ = writeln!(out, "    {}", e.reason);
    for d in &e.details {
        let _ = writeln!(out, "      {d}");
    }
    for (i, s) in e.steps.iter().enumerate() {
        match &s.state {
            StepState::Ready => {
                let _ = writeln!(out, "    {}. {}", i + 1, s.action);
            }
            StepState::Blocked(why) => {
                let _ = writeln!(
                    out,
                    "    {}. {} {}",
                    i + 1,
                    s.action,
                    p.wrap(RED, &format!("[not run: {why}]"))
                );
            }
            StepState::Skipped(why) => {
                let _ = writeln!(
                    out,
                    "    {}. {} {}",
                    i + 1,
                    s.action,
                    p.wrap(YELLOW, &format!("[skipped: {why}]"))
                );
            }
        }
    }
    if let Some(change) = &e.change {
        diff(out, p, &e.service, change);
    }
}

fn diff(out: &mut String, p: &Paint, service: &str, c: &SpecChange) {
    let Some(old) = &c.old_canonical else {
        return;
    };
    let text = TextDiff::from_lines(old.as_str(), c.new_canonical.as_str());
    let _ = writeln!(
        out,
        "    {}",
        p.wrap(
            BOLD,
            &format!("--- {service} (deployed {})", short(&c.old_hash))
        )
    );
    let _ = writeln!(
        out,
        "    {}",
        p.wrap(
            BOLD,
            &format!("+++ {service} (desired {})", short(&c.new_hash))
        )
    );
    let udiff = text.unified_diff();
    for hunk in udiff.iter_hunks() {
        let _ = writeln!(out, "    {}", p.wrap(CYAN, &hunk.header().to_string()));
        for change in hunk.iter_changes() {
            let line = change.to_string_lossy();
            let line = line.trim_end_matches('\n');
            let (sign, colour) = match change.tag() {
                ChangeTag::Delete => ('-', Some(RED)),
                ChangeTag::Insert => ('+', Some(GREEN)),
                ChangeTag::Equal => (' ', None),
            };
            let body = format!("{sign}{line}");
            let body = body.trim_end();
            match colour {
                Some(c) => {
                    let _ = writeln!(out, "    {}", p.wrap(c, body));
                }
                None => {
                    let _ = writeln!(out, "{}", format!("    {body}").trim_end());
                }
            }
        }
    }
}

/// The plan as pretty JSON (the same data as [`Plan`]'s serde form; stable
/// field and entry order).
pub fn render_json(plan: &Plan) -> String {
    match serde_json::to_string_pretty(plan) {
        Ok(s) => s,
        // Unreachable: every map key is a string and every float finite.
        Err(e) => format!("{{\"error\": {:?}}}", e.to_string()),
    }
}
