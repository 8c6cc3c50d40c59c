#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace for a bounded time.
#
#   scripts/fuzz.sh              each target for $FUZZ_SECONDS (default 20) seconds
#   scripts/fuzz.sh 10           each target for 10 seconds
#   scripts/fuzz.sh 10 hostname  only the named target(s)
#
# Fuzz crates are the crates/*/fuzz directories (not workspace members);
# there is one, crates/mcp-security/fuzz, so the dependencies are built
# once: token parsing, hostnames and CIDRs (mcp_security::fuzzing), service
# files (mcp_spec::fuzzing), the agent's and the master's request messages
# (mcp_proto::fuzzing), archives to ImportServiceData (mcp_agent::fuzzing).
# crates/mcp-security/tests/fuzz_corpus.rs (crates/mcp-agent/tests/
# fuzz_corpus.rs for import_archive) runs the
# same bodies over the committed corpora (fuzz/corpus/<target>/) on stable.
#
# Inputs the fuzzer finds go to a temporary corpus; the committed corpus is
# only read. A crash (or an input slower than 10 s) fails the script and
# the input is kept under fuzz/artifacts/<target>/ (git-ignored): add it to
# fuzz/corpus/<target>/ once fixed, so the replay test keeps it fixed.
#
# Toolchain: libFuzzer's sanitizer flags need nightly. `cargo +nightly` is
# used when a nightly toolchain is installed; otherwise the stable one with
# RUSTC_BOOTSTRAP=1. cargo-fuzz is installed from crates.io when missing;
# when that fails the script prints "fuzzing skipped: ..." and exits 0
# (1 with FUZZ_REQUIRED=1). Build output goes to $CARGO_TARGET_DIR/fuzz
# (default target/fuzz).
#
# The targets are built with debug assertions (overflow checks: an
# arithmetic overflow is a crash) and, by default, without a sanitizer: the
# workspace forbids unsafe code, and AddressSanitizer would make the build
# slower and the runs about half as fast. FUZZ_SANITIZER=address turns it on.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

secs=${1:-${FUZZ_SECONDS:-20}}
shift || true
case "$secs" in
  ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [seconds] [target...]" >&2; exit 2 ;;
esac
only=("$@")

skip() {
  echo "fuzzing skipped: $*"
  if [ -n "${FUZZ_REQUIRED:-}" ]; then exit 1; fi
  exit 0
}

if cargo +nightly --version >/dev/null 2>&1; then
  tc=(+nightly)
elif cargo --version >/dev/null 2>&1; then
  echo "==> no nightly toolchain: fuzzing with $(cargo --version) and RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
  tc=()
else
  skip "no nightly"
fi
if ! cargo "${tc[@]}" fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz || skip "cargo-fuzz is not installed and cannot be installed"
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}/fuzz"
flags=(--target-dir "$target_dir" --sanitizer "${FUZZ_SANITIZER:-none}" --debug-assertions)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=()
ran=0
start=$SECONDS
for manifest in crates/*/fuzz/Cargo.toml; do
  [ -f "$manifest" ] || continue
  dir=$(dirname "$manifest")
  grep -q 'cargo-fuzz = true' "$manifest" || continue
  # Start from the workspace's versions where they apply.
  [ -f "$dir/Cargo.lock" ] || cp Cargo.lock "$dir/Cargo.lock"
  targets=$(cd "$dir" && cargo "${tc[@]}" fuzz list)
  # Every target of the crate in one build (the dependencies once); not
  # counted in the fuzzing time.
  echo "==> building $dir"
  build_start=$SECONDS
  if ! (cd "$dir" && cargo "${tc[@]}" fuzz build "${flags[@]}" >"$tmp/build.log" 2>&1); then
    tail -n 40 "$tmp/build.log"
    echo "FAILED: $dir does not build"
    failed+=("$dir")
    continue
  fi
  echo "built in $((SECONDS - build_start))s"
  for t in $targets; do
    if ((${#only[@]})) && ! printf '%s\n' "${only[@]}" | grep -qx "$t"; then
      continue
    fi
    echo "==> fuzz $dir $t (${secs}s)"
    mkdir -p "$tmp/$t/corpus" "$tmp/$t/artifacts" "$dir/corpus/$t"
    # Bounded by libFuzzer, and the whole run again by timeout(1).
    if (cd "$dir" && timeout $((secs + 120)) \
          cargo "${tc[@]}" fuzz run "${flags[@]}" "$t" \
          "$tmp/$t/corpus" "corpus/$t" -- \
          -max_total_time="$secs" -timeout=10 -artifact_prefix="$tmp/$t/artifacts/" \
          -print_final_stats=1 2>"$tmp/$t/log"); then
      grep -E '^stat::number_of_executed_units|^Done ' "$tmp/$t/log" || tail -n 3 "$tmp/$t/log"
    else
      tail -n 40 "$tmp/$t/log"
      mkdir -p "$dir/artifacts/$t"
      cp "$tmp/$t/artifacts/"* "$dir/artifacts/$t/" 2>/dev/null || true
      echo "FAILED: $dir $t (inputs kept in $dir/artifacts/$t/)"
      failed+=("$t")
    fi
    ran=$((ran + 1))
  done
done

if ((${#failed[@]})); then
  echo "fuzzing failed: ${failed[*]}"
  exit 1
fi
echo "fuzzing ok: $ran target(s), ${secs}s each, $((SECONDS - start))s in all"
