#!/usr/bin/env bash
# The README's "try it" command: builds MCP and starts a demo fleet (a master
# and agents over loopback, real podman) with `mcp dev`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in podman runc busybox-static git; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo build --release --bins
exec target/release/mcp dev --services services.example "$@"
