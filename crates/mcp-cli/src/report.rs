//! Turning daemon answers into output and an exit status. Pure: values in,
//! text and a code out, so the rules (what counts as a failure, which exit
//! status a sync has) are unit-tested without a daemon.

use std::fmt::Write as _;

use mcp_planner::Plan;
use mcp_proto::pb;
use serde::Serialize;

/// How one step of an operation ended, as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
    /// The step's adapter is not configured: nothing was done. Not a
    /// failure, and never shown as "ok".
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One step result (from `pb::StepResult`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepLine {
    pub step: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl From<&pb::StepResult> for StepLine {
    fn from(r: &pb::StepResult) -> Self {
        let outcome = match pb::StepStatus::try_from(r.status) {
            Ok(pb::StepStatus::Succeeded) => Outcome::Ok,
            Ok(pb::StepStatus::Failed) => Outcome::Failed,
            Ok(pb::StepStatus::Skipped) => Outcome::Skipped,
            // Unspecified (an older peer): fall back on `success`.
            Ok(pb::StepStatus::Unspecified) | Err(_) => {
                if r.success {
                    Outcome::Ok
                } else {
                    Outcome::Failed
                }
            }
        };
        StepLine {
            step: r.step.clone(),
            outcome,
            error: r.error.clone(),
            detail: r.detail.clone(),
        }
    }
}

/// Converts a list of protocol results.
pub fn steps(results: &[pb::StepResult]) -> Vec<StepLine> {
    results.iter().map(StepLine::from).collect()
}

/// `  ok       deploy mcq on orion (detail)` / `  failed   dns: error` /
/// `  skipped  edge route (not configured)`.
pub fn render_steps(steps: &[StepLine]) -> String {
    let mut out = String::new();
    for s in steps {
        let _ = write!(out, "  {:<8} {}", s.outcome.as_str(), s.step);
        if !s.error.is_empty() {
            let _ = write!(out, ": {}", s.error);
        }
        if !s.detail.is_empty() {
            let _ = write!(out, " ({})", s.detail);
        } else if s.outcome == Outcome::Skipped && s.error.is_empty() {
            out.push_str(" (not configured)");
        }
        out.push('\n');
    }
    out
}

/// Counts of (ok, failed, skipped).
pub fn tally(steps: &[StepLine]) -> (usize, usize, usize) {
    steps
        .iter()
        .fold((0, 0, 0), |(o, f, s), l| match l.outcome {
            Outcome::Ok => (o + 1, f, s),
            Outcome::Failed => (o, f + 1, s),
            Outcome::Skipped => (o, f, s + 1),
        })
}

/// What to print for a sync, and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// For standard output.
    pub stdout: String,
    /// 0 nothing to do / applied cleanly; 2 changes pending (dry run);
    /// 1 failed step or refused apply.
    pub code: u8,
}

/// `mcp sync`'s answer → output and exit status.
///
/// - Dry run: the plan; 0 when it has no changes, 2 when it has.
/// - Apply: the plan, then each step's result; 1 when a step failed or the
///   plan was refused (mass-deletion guard: nothing was applied), else 0.
/// - JSON: a dry run prints [`mcp_planner::render_json`] unchanged; an apply
///   prints `{"plan": <that>, "results": [...]}`.
pub fn sync_report(
    plan: &Plan,
    results: &[StepLine],
    dry_run: bool,
    json: bool,
    color: bool,
) -> Report {
    let (_, failed, _) = tally(results);
    let code = if dry_run {
        if plan.has_changes() {
            2
        } else {
            0
        }
    } else if failed > 0 || (plan.refused.is_some() && plan.has_changes()) {
        1
    } else {
        0
    };
    let stdout = if json {
        let plan_json = mcp_planner::render_json(plan);
        if dry_run {
            ensure_newline(plan_json)
        } else {
            let plan_value: serde_json::Value =
                serde_json::from_str(&plan_json).unwrap_or(serde_json::Value::Null);
            let v = serde_json::json!({"plan": plan_value, "results": results});
            ensure_newline(serde_json::to_string_pretty(&v).unwrap_or_default())
        }
    } else {
        let mut out = ensure_newline(mcp_planner::render_text(plan, color));
        if !dry_run {
            if let Some(why) = &plan.refused {
                let _ = writeln!(
                    out,
                    "\nnothing applied: {why} (rerun with --allow-mass-prune if this is intended)"
                );
            } else if results.is_empty() {
                if plan.has_changes() {
                    out.push_str("\nno step was executed\n");
                }
            } else {
                let (ok, failed, skipped) = tally(results);
                out.push_str("\nResults:\n");
                out.push_str(&render_steps(results));
                let _ = writeln!(out, "{ok} ok, {failed} failed, {skipped} skipped");
            }
        }
        out
    };
    Report { stdout, code }
}

fn ensure_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// A plain text table: a header row and left-aligned columns, two spaces
/// apart; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                l.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// `-` for an empty cell.
pub fn cell(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// What an event says happened: the agent's detail, with the state change
/// when the state changed; the bare state change; else its kind.
pub fn event_what(e: &pb::EventInfo) -> String {
    let change = (e.prev_state != e.new_state)
        .then(|| format!("{} -> {}", cell(&e.prev_state), cell(&e.new_state)));
    match (e.detail.is_empty(), change) {
        (false, Some(c)) => format!("{} ({c})", e.detail),
        (false, None) => e.detail.clone(),
        (true, Some(c)) => c,
        (true, None) if !e.new_state.is_empty() => e.new_state.clone(),
        (true, None) => cell(&e.kind),
    }
}

/// `mcp events`: TIME NODE SERVICE COMPONENT KIND WHAT.
pub fn events_table(events: &[pb::EventInfo]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                cell(&e.timestamp),
                cell(&e.node),
                cell(&e.service),
                cell(&e.component),
                cell(&e.kind),
                event_what(e),
            ]
        })
        .collect();
    table(
        &["TIME", "NODE", "SERVICE", "COMPONENT", "KIND", "WHAT"],
        &rows,
    )
}

/// `mcp audit`: TIME CALLER CLASS METHOD TARGET OUTCOME DURATION. The
/// method without its `/mcp.v1.` prefix.
pub fn audit_table(rows: &[pb::AuditRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                cell(&a.time),
                cell(&a.caller),
                cell(&a.class),
                cell(a.method.strip_prefix("/mcp.v1.").unwrap_or(&a.method)),
                cell(&a.target),
                cell(&a.outcome),
                format!("{}ms", a.duration_ms),
            ]
        })
        .collect();
    table(
        &[
            "TIME", "CALLER", "CLASS", "METHOD", "TARGET", "OUTCOME", "DURATION",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests;
