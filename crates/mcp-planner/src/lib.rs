//! MCP's reconciler core.
//!
//! [`plan`](fn@plan)`(&`[`Desired`]`, &`[`Observed`]`, &`[`Policy`]`, now) -> `[`Plan`]
//! compares what the service files declare with what the master knows about
//! the fleet and returns the operations that close the gap, per service and
//! in order (docs/ARCHITECTURE.md).
//!
//! # Model
//!
//! - [`Desired`]: the valid specs by name, plus *held* services whose file
//!   could not be read, plus the source (commit) they came from.
//! - [`Observed`]: the node registry (role, address, health, containers),
//!   placements (with the last deployed spec, for diffs), each agent's bulk
//!   report or the fact it is unreachable, the DNS records and edge routes
//!   the master created, and the master's self-heal history.
//! - [`Policy`]: internal zone, migration and mass-prune switches, heal
//!   back-off, and the [`Integrations`] the master has (DNS, edge routes,
//!   proxy, certificates; by default none).
//! - `now`: a [`Timestamp`] (Unix seconds) passed in; it only matters for
//!   the heal back-off.
//! - Specs are compared by [`mcp_spec::spec_hash`]: the agent reports the
//!   hash of what it deployed. A difference only in `active` is a stop or
//!   start (the action carries the new hash for the agent to record), any
//!   other difference a redeploy with a diff. Actions name services; the
//!   master takes the spec itself from [`Desired`].
//! - [`Plan`]: [`Entry`]s (one per service that differs: a [`Kind`] with its
//!   symbol, node, reason, ordered [`Step`]s each holding an [`Action`] and
//!   its [`StepState`], maybe a spec diff), fleet-level [`Note`]s and
//!   [`Counts`].
//!
//! Symbols: `+` deploy, `~` update, `-` undeploy (prune), `>` migrate,
//! `^` start, `v` stop, `*` self-heal, `#` DNS/edge repair only,
//! `=` heal waiting for its back-off, `!` held / blocked / refused / degraded.
//!
//! # Invariants
//!
//! - **The planner does no I/O and cannot fail.** No file system, network,
//!   clock or randomness; it returns a `Plan`, never an error, and never
//!   panics. Anything that prevents an action is in the plan as a blocked
//!   step or entry with its reason.
//! - **Skipped, up front.** A DNS or edge-route step whose integration is
//!   not configured is [`StepState::Skipped`] with the integration's reason
//!   (never ready, so never reported as done); an entry that would only
//!   hold such steps is left out, so a converged fleet without adapters
//!   plans nothing.
//! - **Deterministic.** Equal inputs give equal plans (all maps are
//!   `BTreeMap`s; ties are broken by name).
//! - **Idempotent.** A fleet that matches its desired state gives a plan with
//!   no entries; applying a plan (see the [`sim`] fake) and planning again
//!   gives no ready action.
//! - **Held services are untouched**: no step ever names a held service, its
//!   DNS record or its edge routes.
//! - **Mass-deletion guard**: unless [`Policy::allow_mass_prune`], a plan
//!   that would prune all placements or more than
//!   [`Policy::mass_prune_fraction`] of them is refused as a whole:
//!   [`Plan::refused`] says why, prunes are [`Kind::Refused`], everything
//!   else is still reported, and [`Plan::actions`] is empty (applying "the
//!   rest" would add placements and let the next plan slip under the
//!   fraction).
//! - **No application on an edge or unavailable node**: every ready deploy or
//!   migration targets a registered, healthy, reporting, non-edge node.
//! - **Exit status**: [`Plan::has_changes`] (any entry) is `mcp sync
//!   --dry-run`'s 2; notes alone (orphans, unavailable nodes) are not
//!   changes.
//! - **No failover.** Services on an unavailable node are reported, not
//!   moved; only an explicit pin change moves a service, and only when
//!   [`Policy::allow_auto_migrate`] is set.
//!
//! # Ordering
//!
//! Entries: core tier first, then workers; by name within a tier (placement
//! decisions, which count what the plan already placed, follow this order).
//! Steps within an entry: deploy → DNS → edge route; undeploy → edge route
//! removal → DNS removal (a 502 beats stale content).
//!
//! # Modules
//!
//! - [`model`]: the inputs. [`plan`](mod@plan): the output types and the
//!   planner. [`render`]: text and JSON. [`sim`]: a fake fleet that applies
//!   plans, for tests.

pub mod model;
pub mod plan;
pub mod render;
pub mod sim;

pub use model::{
    AgentStatus, ComponentHealth, ComponentReport, ContainerState, Desired, EdgeRoute, HealRecord,
    Held, Integration, Integrations, Node, NodeHealth, NodeRole, Observed, Placement, Policy,
    RouteReport, ServiceReport, Timestamp,
};
pub use plan::{
    plan, Action, Counts, Entry, HealMethod, Kind, Note, Plan, SpecChange, Step, StepState,
};
pub use render::{render_json, render_text};
