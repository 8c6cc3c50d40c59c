#!/usr/bin/env bash
# The README's "try it" command: installs what MCP needs, builds it and the
# demo images, and starts a demo fleet (a master and three agents over
# loopback, real podman, each node with its own Caddy and HAProxy, one Knot
# for the fleet's DNS) with `mcp dev`. State lives in .mcp-dev/ (kept
# between runs); Ctrl-C stops the daemons.
#   target/release/mcp dev --down --state-dir .mcp-dev    stops the fleet and
#                                                        removes its containers
#   target/release/mcp dev --purge --state-dir .mcp-dev   ... and deletes .mcp-dev
#
#   scripts/dev.sh [mcp dev options...]     e.g. --agents 4 --edge
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# caddy, haproxy, knot: each node's L7 and L4 proxies and the fleet's DNS
# (`mcp dev` starts its own, on loopback); knot-dnsutils: kdig, curl: the
# banner's lines.
for pkg in podman runc busybox-static git caddy haproxy knot knot-dnsutils curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# podman settings that work on small VMs and CI hosts (runc, container
# ulimits within the host's); your own CONTAINERS_CONF wins.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/tests/podman/containers.conf}

cargo build --release --bins
scripts/build-test-images.sh
exec target/release/mcp dev --state-dir .mcp-dev "$@"
