#!/usr/bin/env bash
# The README's test command: installs everything the tests need on a fresh
# Debian machine, then runs every check CI relies on and the whole test suite.
#
#   scripts/test.sh            everything
#   scripts/test.sh --no-lint  skip fmt/clippy (quicker local runs)
#   scripts/test.sh --no-fuzz  skip the bounded fuzzing run
#
# FUZZ_SECONDS (default 20) is the time each cargo-fuzz target runs for.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

lint=1
fuzz=1
for arg in "$@"; do
  case "$arg" in
    --no-lint) lint=0 ;;
    --no-fuzz) fuzz=0 ;;
    *) echo "usage: scripts/test.sh [--no-lint] [--no-fuzz]" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }

# --- system packages -------------------------------------------------------
# podman + runc (crun fails on some cgroup layouts; tests select runc through
# tests/podman/containers.conf) and busybox-static for the locally built test
# images (no registry is reachable); git for the GitOps tests; procps for
# kill(1), which the daemon tests use to send SIGTERM. The routing tests run
# real servers, each started by the test on loopback with its own
# configuration: caddy (L7 proxy, admin API), haproxy (L4 passthrough),
# knot + knot-dnsutils (RFC 2136 updates; kdig, knsupdate), pebble (an ACME
# CA validating for real), curl and openssl (the clients' view of a route,
# and the TLS server of the L4 test's container), zstd (`zstd -d | tar t`
# reads a stored snapshot).
need=()
for pkg in podman runc busybox-static git procps caddy haproxy knot knot-dnsutils pebble curl openssl zstd; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  step "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# --- podman for the tests --------------------------------------------------
export CONTAINERS_CONF="$root/tests/podman/containers.conf"
# A missing podman fails the podman tests instead of skipping them. The tests
# build their images (scripts/build-test-images.sh) into their own isolated
# storage under target/, so they never touch the operator's containers.
export MCP_REQUIRE_PODMAN=1
# The tests start their own instances of those servers on free loopback
# ports, so a packaged instance that may be running does not disturb them.
# A missing server fails its tests (MCP_SKIP_MISSING_SERVERS=1 skips them
# loudly instead; never set here).
unset MCP_SKIP_MISSING_SERVERS

# --- static checks ---------------------------------------------------------
if ((lint)); then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
fi

step "the planner crate does no I/O: no tokio, tonic or rusqlite among its dependencies"
forbidden=$(cargo tree -p mcp-planner -e normal,build --prefix none --format '{p}' \
  | awk '{print $1}' | grep -xE 'tokio|tonic|rusqlite|mio|hyper' | sort -u || true)
if [ -n "$forbidden" ]; then
  echo "mcp-planner depends on: $forbidden" >&2
  exit 1
fi
echo "ok"

# --- tests -------------------------------------------------------------------
step "cargo test --workspace"
cargo test --workspace --all-targets
# Doc tests too (--all-targets skips them).
cargo test --workspace --doc

# --- fuzzing -------------------------------------------------------------------
# Every cargo-fuzz target for a short, bounded time (at most 30 s each); the
# corpora were already replayed on stable by the tests above.
if ((fuzz)); then
  fuzz_secs=${FUZZ_SECONDS:-20}
  if ((fuzz_secs > 30)); then fuzz_secs=30; fi
  step "fuzzing: every cargo-fuzz target for ${fuzz_secs}s"
  scripts/fuzz.sh "$fuzz_secs"
fi
