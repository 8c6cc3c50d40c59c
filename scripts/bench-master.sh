#!/usr/bin/env bash
# Heartbeat and Status latency at a real mcp-master, two binaries in one run
# (docs/BENCHMARKS.md, "Master"): 16 agent identities heartbeating every
# second and one operator calling Status in a loop, for SECONDS per binary.
#
# Usage: scripts/bench-master.sh [BEFORE_REV] [SECONDS]
#   BEFORE_REV  the commit to compare with (default HEAD~1); it is built once
#               in a git worktree under $BENCH_BEFORE (default /tmp/mcp-bench-before)
#   SECONDS     load duration per binary (default 30)
# The "after" binary is the current tree's release build.
set -euo pipefail
rev=${1:-HEAD~1}
secs=${2:-30}
root=$(git rev-parse --show-toplevel)
before=${BENCH_BEFORE:-/tmp/mcp-bench-before}
cd "$root"
if [ ! -x "$before-target/release/mcp-master" ]; then
    [ -d "$before" ] || git worktree add --detach "$before" "$rev"
    (cd "$before" && CARGO_TARGET_DIR="$before-target" cargo build --release -p mcp-master --bin mcp-master)
fi
cargo build --release -p mcp-master --bin mcp-master --example bench_master
target_dir=${CARGO_TARGET_DIR:-target}
"$target_dir/release/examples/bench_master" \
    --bin "before=$before-target/release/mcp-master" \
    --bin "after=$target_dir/release/mcp-master" \
    --seconds "$secs"
