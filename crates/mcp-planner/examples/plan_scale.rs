//! How the planner's cost grows with the fleet: `plan` + `render_text` on
//! the benchmark fleet (`benches/fleet.rs`) at 1,000 services / 50 nodes and
//! 10,000 services / 200 nodes, each 10% changed. Prints the minimum and the
//! median of `RUNS` timed runs per size and the 10k/1k ratio of the minima:
//! on a shared machine the minimum is the run least disturbed by other
//! load, so the ratio says whether the cost grows linearly (≈ 10) even when
//! criterion's medians are inflated.
//!
//! `cargo run --release -p mcp-planner --example plan_scale [RUNS] [1k|10k]`
//!
//! With a size, only that size runs (for instruction counts under
//! `valgrind --tool=callgrind --toggle-collect='mcp_planner::plan::plan*'`,
//! which no other load on the machine disturbs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/fleet.rs"]
mod fleet;

use std::hint::black_box;
use std::time::{Duration, Instant};

use mcp_planner::{plan, render_text};

fn measure(n: usize, nodes: usize, runs: usize) -> (Duration, Duration) {
    let (d, o, policy) = fleet::fleet(n, nodes);
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let p = plan(black_box(&d), black_box(&o), &policy, fleet::NOW);
            black_box(render_text(&p, false));
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[runs / 2])
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("RUNS must be a number"))
        .unwrap_or(30)
        .max(1);
    match std::env::args().nth(2).as_deref() {
        Some("1k") => return report("1k", measure(1_000, 50, runs)),
        Some("10k") => return report("10k", measure(10_000, 200, runs)),
        Some(other) => panic!("size must be 1k or 10k, found {other:?}"),
        None => {}
    }
    let (min1, med1) = measure(1_000, 50, runs);
    let (min10, med10) = measure(10_000, 200, runs);
    println!("runs per size: {runs}");
    println!("1k  (1,000 services / 50 nodes):   min {min1:?}  median {med1:?}");
    println!("10k (10,000 services / 200 nodes): min {min10:?}  median {med10:?}");
    println!(
        "10k/1k ratio of minima: {:.1} (linear = 10)",
        min10.as_secs_f64() / min1.as_secs_f64()
    );
}

fn report(size: &str, (min, median): (Duration, Duration)) {
    println!("{size}: min {min:?}  median {median:?}");
}
