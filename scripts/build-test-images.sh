#!/usr/bin/env bash
# Builds the local container images the podman tests use, offline, from
# Debian's busybox-static (/bin/busybox): a rootfs with /bin/busybox and a
# symlink per applet, imported with `podman import`.
#
#   localhost/mcp-test/web:v1, :v2   /version and /www/version hold "v1"/"v2";
#                                    default command: busybox httpd serving
#                                    /www on $PORT (default 8080), under a shell
#                                    that exits on SIGTERM (PID 1 would ignore it)
#
# Idempotent: an image that exists with the current recipe is left alone, so
# a second run takes a fraction of a second.
#
# Environment:
#   MCP_PODMAN        podman binary (default: podman)
#   MCP_PODMAN_ROOT   build into the isolated test storage under this dir:
#                     --root $MCP_PODMAN_ROOT/root --runroot $RUNROOT
#                     --tmpdir $RUNROOT/tmp --storage-driver vfs, exactly as
#                     tests/podman.rs does; unset: podman's default storage
#   MCP_PODMAN_RUNROOT  the runroot for MCP_PODMAN_ROOT (podman refuses
#                     runroots longer than 50 characters; default
#                     $MCP_PODMAN_ROOT/runroot)
#   CONTAINERS_CONF   engine config (default: tests/podman/containers.conf)
#   BUSYBOX           static busybox binary (default: /bin/busybox)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
podman=${MCP_PODMAN:-podman}
busybox=${BUSYBOX:-/bin/busybox}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/tests/podman/containers.conf}

# Bump when the image contents change so existing images get rebuilt.
recipe=2

args=()
if [[ -n ${MCP_PODMAN_ROOT:-} ]]; then
    root=$MCP_PODMAN_ROOT
    runroot=${MCP_PODMAN_RUNROOT:-$root/runroot}
    mkdir -p "$root" "$runroot"
    args=(--root "$root/root" --runroot "$runroot" --tmpdir "$runroot/tmp" --storage-driver vfs)
fi

if ! command -v "$podman" >/dev/null; then
    echo "build-test-images: $podman not found (apt-get install podman runc busybox-static)" >&2
    exit 1
fi
if [[ ! -x $busybox ]]; then
    echo "build-test-images: $busybox not found (apt-get install busybox-static)" >&2
    exit 1
fi
if ! "$busybox" --list >/dev/null 2>&1; then
    echo "build-test-images: $busybox is not a working busybox" >&2
    exit 1
fi

build() {
    local image=$1 version=$2
    local have
    have=$("$podman" "${args[@]}" image inspect --format '{{index .Labels "mcp.test.recipe"}}' "$image" 2>/dev/null || true)
    if [[ $have == "$recipe" ]]; then
        echo "build-test-images: $image is up to date"
        return
    fi
    local dir
    dir=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$dir'" RETURN
    mkdir -p "$dir/rootfs/bin" "$dir/rootfs/www" "$dir/rootfs/tmp" "$dir/rootfs/etc"
    cp "$busybox" "$dir/rootfs/bin/busybox"
    local applet
    for applet in $("$busybox" --list); do
        [[ $applet == busybox ]] || ln -s busybox "$dir/rootfs/bin/$applet"
    done
    echo "$version" >"$dir/rootfs/version"
    echo "$version" >"$dir/rootfs/www/version"
    echo "mcp-test web $version" >"$dir/rootfs/www/index.html"
    echo "root:x:0:0:root:/:/bin/sh" >"$dir/rootfs/etc/passwd"
    echo "root:x:0:" >"$dir/rootfs/etc/group"
    chmod 1777 "$dir/rootfs/tmp"
    tar --numeric-owner --owner=0 --group=0 -C "$dir/rootfs" -cf "$dir/rootfs.tar" .
    "$podman" "${args[@]}" import --quiet \
        --change 'ENV PATH=/bin' \
        --change 'ENV PORT=8080' \
        --change "LABEL mcp.test.recipe=$recipe" \
        --change 'WORKDIR /' \
        --change 'CMD ["/bin/sh", "-c", "httpd -f -p \"${PORT}\" -h /www & pid=$!; trap \"kill $pid; exit 0\" TERM INT; wait $pid"]' \
        "$dir/rootfs.tar" "$image" >/dev/null
    echo "build-test-images: built $image"
}

build localhost/mcp-test/web:v1 v1
build localhost/mcp-test/web:v2 v2
