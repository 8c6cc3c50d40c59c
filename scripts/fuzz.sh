#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace for a bounded time.
#
#   scripts/fuzz.sh              each target for $FUZZ_SECONDS (default 30) seconds
#   scripts/fuzz.sh 10           each target for 10 seconds
#   scripts/fuzz.sh 10 hostname  only the named target(s)
#
# Fuzz crates are the crates/*/fuzz directories (not workspace members).
# Inputs the fuzzer finds go to a temporary corpus; the committed corpus
# (fuzz/corpus/<target>/, replayed on stable by the crates' tests) is only
# read. A crash fails the script and its input is kept under
# fuzz/artifacts/<target>/ (git-ignored) for inspection.
#
# Needs a nightly toolchain (libFuzzer's sanitizer flags). Without one it
# prints "fuzzing skipped: no nightly" and exits 0. cargo-fuzz is installed
# from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

secs=${1:-${FUZZ_SECONDS:-30}}
shift || true
case "$secs" in
  ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [seconds] [target...]" >&2; exit 2 ;;
esac
only=("$@")

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzzing skipped: no nightly"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=()
ran=0
for manifest in crates/*/fuzz/Cargo.toml; do
  [ -f "$manifest" ] || continue
  dir=$(dirname "$manifest")
  grep -q 'cargo-fuzz = true' "$manifest" || continue
  # Start from the workspace's versions where they apply.
  [ -f "$dir/Cargo.lock" ] || cp Cargo.lock "$dir/Cargo.lock"
  targets=$(cd "$dir" && cargo +nightly fuzz list)
  for t in $targets; do
    if ((${#only[@]})) && ! printf '%s\n' "${only[@]}" | grep -qx "$t"; then
      continue
    fi
    echo "==> fuzz $dir $t (${secs}s)"
    mkdir -p "$tmp/$t/corpus" "$tmp/$t/artifacts" "$dir/corpus/$t"
    if (cd "$dir" && cargo +nightly fuzz run --target-dir "$root/target/fuzz" "$t" \
          "$tmp/$t/corpus" "corpus/$t" -- \
          -max_total_time="$secs" -artifact_prefix="$tmp/$t/artifacts/" \
          -print_final_stats=1 2>"$tmp/$t/log"); then
      tail -n 3 "$tmp/$t/log"
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
echo "fuzzing ok: $ran target(s), ${secs}s each"
