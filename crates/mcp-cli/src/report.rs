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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mcp_planner::{
        plan, AgentStatus, Desired, Node, NodeHealth, NodeRole, Observed, Placement, Policy,
        Timestamp,
    };
    use mcp_spec::{LoadOptions, ServiceSpec, Tier};

    use super::*;

    fn spec(name: &str) -> ServiceSpec {
        let text = format!(
            "name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"r/{name}:v1\"\n"
        );
        mcp_spec::parse_service(
            &format!("{name}.toml"),
            name,
            &text,
            &LoadOptions::default(),
        )
        .unwrap()
    }

    fn fleet() -> Observed {
        let mut o = Observed::default();
        o.nodes.insert(
            "w1".to_string(),
            Node {
                role: NodeRole::Worker,
                address: "100.64.0.2".to_string(),
                health: NodeHealth::Healthy,
                containers: 0,
            },
        );
        o.agents.insert("w1".to_string(), AgentStatus::empty());
        o
    }

    fn desired(names: &[&str]) -> Desired {
        Desired::new(
            Some("services @ abc1234".to_string()),
            names.iter().map(|n| spec(n)),
            &[],
        )
    }

    fn ok(step: &str) -> StepLine {
        StepLine {
            step: step.to_string(),
            outcome: Outcome::Ok,
            error: String::new(),
            detail: String::new(),
        }
    }

    #[test]
    fn dry_run_exit_status_is_0_without_changes_and_2_with() {
        let empty = plan(&desired(&[]), &fleet(), &Policy::default(), Timestamp(0));
        let r = sync_report(&empty, &[], true, false, false);
        assert_eq!(r.code, 0, "{}", r.stdout);

        let p = plan(
            &desired(&["web"]),
            &fleet(),
            &Policy::default(),
            Timestamp(0),
        );
        assert!(p.has_changes());
        let r = sync_report(&p, &[], true, false, false);
        assert_eq!(r.code, 2);
        assert!(r.stdout.contains("+ web on w1"), "{}", r.stdout);
        assert!(r.stdout.contains("abc1234"), "{}", r.stdout);
        assert!(!r.stdout.contains('\x1b'), "no colour unless asked");
        assert!(!r.stdout.contains("Results:"), "a dry run has no results");

        let coloured = sync_report(&p, &[], true, false, true);
        assert!(coloured.stdout.contains('\x1b'));
    }

    #[test]
    fn apply_is_0_when_every_step_worked_and_1_when_one_failed() {
        let p = plan(
            &desired(&["web"]),
            &fleet(),
            &Policy::default(),
            Timestamp(0),
        );
        let skipped = StepLine {
            step: "edge route web".to_string(),
            outcome: Outcome::Skipped,
            error: String::new(),
            detail: String::new(),
        };
        let r = sync_report(
            &p,
            &[ok("deploy web on w1"), skipped.clone()],
            false,
            false,
            false,
        );
        assert_eq!(r.code, 0, "{}", r.stdout);
        assert!(
            r.stdout.contains("  ok       deploy web on w1\n"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains("  skipped  edge route web (not configured)\n"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains("1 ok, 0 failed, 1 skipped"),
            "{}",
            r.stdout
        );

        let failed = StepLine {
            step: "dns set web.mcp.internal".to_string(),
            outcome: Outcome::Failed,
            error: "server refused update".to_string(),
            detail: String::new(),
        };
        let r = sync_report(&p, &[ok("deploy web on w1"), failed], false, false, false);
        assert_eq!(r.code, 1);
        assert!(
            r.stdout
                .contains("  failed   dns set web.mcp.internal: server refused update\n"),
            "{}",
            r.stdout
        );
    }

    #[test]
    fn refused_plan_applies_nothing_and_fails() {
        let mut o = fleet();
        for n in ["a", "b", "c"] {
            o.placements.insert(
                n.to_string(),
                Placement {
                    node: "w1".to_string(),
                    tier: Tier::Worker,
                    deployed_at: Timestamp(0),
                    spec: None,
                    spec_hash: None,
                },
            );
        }
        let p = plan(&desired(&[]), &o, &Policy::default(), Timestamp(0));
        assert!(p.refused.is_some());
        assert_eq!(sync_report(&p, &[], true, false, false).code, 2);
        let r = sync_report(&p, &[], false, false, false);
        assert_eq!(r.code, 1);
        assert!(r.stdout.contains("nothing applied"), "{}", r.stdout);
    }

    #[test]
    fn json_is_the_planner_json_for_a_dry_run_and_wraps_it_with_results() {
        let p = plan(
            &desired(&["web"]),
            &fleet(),
            &Policy::default(),
            Timestamp(0),
        );
        let r = sync_report(&p, &[], true, true, true);
        let back: Plan = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(back, p);
        assert!(!r.stdout.contains('\x1b'));

        let r = sync_report(&p, &[ok("deploy web on w1")], false, true, false);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let back: Plan = serde_json::from_value(v["plan"].clone()).unwrap();
        assert_eq!(back, p);
        assert_eq!(v["results"][0]["outcome"], "ok");
        assert_eq!(r.code, 0);
    }

    #[test]
    fn step_status_wins_over_success_and_unspecified_falls_back() {
        let r = |success, status: pb::StepStatus| pb::StepResult {
            step: "s".to_string(),
            success,
            error: String::new(),
            status: status as i32,
            detail: String::new(),
        };
        assert_eq!(
            StepLine::from(&r(true, pb::StepStatus::Skipped)).outcome,
            Outcome::Skipped
        );
        assert_eq!(
            StepLine::from(&r(true, pb::StepStatus::Unspecified)).outcome,
            Outcome::Ok
        );
        assert_eq!(
            StepLine::from(&r(false, pb::StepStatus::Unspecified)).outcome,
            Outcome::Failed
        );
        assert_eq!(
            StepLine::from(&r(true, pb::StepStatus::Failed)).outcome,
            Outcome::Failed
        );
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "NODE", "STATUS"],
            &[
                vec!["mcq".into(), "orion".into(), "running".into()],
                vec!["longer-name".into(), "-".into(), "stopped".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME         NODE   STATUS\nmcq          orion  running\nlonger-name  -      stopped\n"
        );
    }
}
