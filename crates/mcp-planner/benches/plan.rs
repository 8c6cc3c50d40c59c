//! plan + render_text at two sizes, 10% changed: 1,000 services over 50
//! nodes, and 10,000 services over 200 nodes (cost must grow linearly).
//!
//! Fleet of `n` services and `nodes` nodes: 1 master, 7% of the nodes edge
//! (at least 4), the rest workers; 2% of the services core tier, a third
//! with a public route, one or two components each; every integration
//! configured (all DNS and edge work is planned); converged with the
//! simulator. Then 10% change: 4% image bumps (updates with diffs), 2%
//! stops, 2% new services, 1% prunes, 1% exited components (self-heal).
//!
//! Benchmark names start with the size (`1k` or `10k`), so
//! `cargo bench -p mcp-planner --bench plan -- '^10k'` runs one size.

mod fleet;

use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode};
use fleet::{fleet, NOW};
use mcp_planner::{plan, render_text};

fn size(c: &mut Criterion, label: &str, n: usize, nodes: usize, samples: usize) {
    let (d, o, policy) = fleet(n, nodes);
    let p = plan(&d, &o, &policy, NOW);
    assert_eq!(p.entries.len(), n / 10, "{}", render_text(&p, false));
    assert_eq!(p.counts.update, n * 4 / 100);
    assert_eq!(p.counts.heal, n / 100);
    let mut g = c.benchmark_group(label);
    g.sample_size(samples);
    // The same number of iterations in every sample: at 10k an iteration
    // takes tens of ms, and linear sampling would need minutes.
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function(
        format!("plan + render_text, {n} services / {nodes} nodes / 10% changed"),
        |b| {
            b.iter(|| {
                let p = plan(black_box(&d), black_box(&o), &policy, NOW);
                black_box(render_text(&p, false))
            });
        },
    );
    g.bench_function(format!("plan only, {n} services"), |b| {
        b.iter(|| black_box(plan(black_box(&d), black_box(&o), &policy, NOW)));
    });
    g.bench_function(format!("render_text only, {} entries", n / 10), |b| {
        b.iter(|| black_box(render_text(black_box(&p), false)));
    });
    g.bench_function(
        format!("spec_hash x{} (for scale)", d.services.len()),
        |b| {
            b.iter(|| {
                for s in d.services.values() {
                    black_box(mcp_spec::spec_hash(black_box(s)));
                }
            });
        },
    );
    g.finish();
}

fn bench(c: &mut Criterion) {
    size(c, "1k", 1_000, 50, 50);
    size(c, "10k", 10_000, 200, 20);
}

criterion_group!(benches, bench);
criterion_main!(benches);
