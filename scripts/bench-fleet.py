#!/usr/bin/env python3
"""Fleet benchmarks on a real `mcp dev` fleet (release build, real podman).

Measures, in one run on this machine:

1. Idle RSS of each daemon (VmRSS from /proc) after the fleet settles.
2. Deploy of a one-component service through the agent
   (`mcp deploy --direct --node w1`, wall time of the whole CLI call: process
   start, TLS 1.3, token check, registry, port allocation, podman create and
   start) against a raw `podman run -d` of the same container, in the same
   podman storage.
3. Commit to running: from just before `git commit` of a new service file to
   the container's own `State.StartedAt`, against the same interval for a raw
   `podman run -d` (from just before the command to `StartedAt`).

Usage: scripts/bench-fleet.py [--runs N] [--keep]
Needs: podman, git, cargo; builds the release binaries and the test images.
Prints a Markdown table for docs/BENCHMARKS.md.
"""

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/mcp-test/web:v1"


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def started_at(podman_args, name):
    """The container's State.StartedAt as a UNIX time, or None."""
    r = subprocess.run(
        ["podman", *podman_args, "inspect", "--format",
         "{{.State.Running}}|{{.State.StartedAt}}", name],
        capture_output=True, text=True)
    if r.returncode != 0:
        return None
    running, stamp = r.stdout.strip().split("|", 1)
    if running != "true":
        return None
    # "2026-11-22 03:10:04.123456789 +0000 UTC": keep microseconds.
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(\.\d+)? ([+-]\d{4})", stamp)
    if not m:
        raise SystemExit(f"cannot parse StartedAt {stamp!r}")
    frac = (m.group(2) or ".0")[:7]
    t = dt.datetime.strptime(m.group(1) + frac + " " + m.group(3), "%Y-%m-%d %H:%M:%S.%f %z")
    return t.timestamp()


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def daemon_pids(state):
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [c.decode(errors="replace") for c in cmd if c]
        if not args or not str(state) in " ".join(args):
            continue
        exe = os.path.basename(args[0])
        if exe in ("mcp-agent", "mcp-master"):
            cfg = args[args.index("--config") + 1]
            name = "master" if exe == "mcp-master" else Path(cfg).parent.name
            out[f"{exe} ({name})"] = int(p.name)
    return out


def service_file(name, port):
    return (f'name = "{name}"\n\n[[components]]\nname = "{name}"\nimage = "{IMAGE}"\n\n'
            f'[[components.routes]]\nport = {port}\nmode = "l7"\n')


def git(repo, *args):
    run(["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
         *args])


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the state directory")
    a = ap.parse_args()

    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests/podman/containers.conf"))
    os.environ.update(env)
    print("building release binaries and test images...", file=sys.stderr)
    run(["cargo", "build", "--release", "--bins", "-q"], cwd=ROOT)
    run([str(ROOT / "scripts/build-test-images.sh")])
    mcp = str(ROOT / "target/release/mcp")

    state = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    dev = subprocess.Popen([mcp, "dev", "--state-dir", str(state), "--agents", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    podman_args = None
    try:
        for line in dev.stdout:
            if "dev fleet is up" in line:
                break
        else:
            raise SystemExit("mcp dev did not start")
        env["MCP_CONFIG"] = str(state / "mcp.toml")
        agent_cfg = tomllib.loads((state / "nodes/w1/agent.toml").read_text())
        podman_args = agent_cfg["podman"]["global_args"]
        services = state / "services"
        node_args = {
            d.name: tomllib.loads((d / "agent.toml").read_text())["podman"]["global_args"]
            for d in sorted((state / "nodes").iterdir())
        }
        # Let the fleet settle: registration, first plan, the demo service.
        time.sleep(10)

        rss = {k: rss_kib(p) for k, p in sorted(daemon_pids(state).items())}

        # 2. Deploy through the agent vs raw podman run.
        mcp_deploy, raw_run = [], []
        for i in range(a.runs):
            name = f"bd{i}"
            (services / f"{name}.toml").write_text(service_file(name, 9000 + i))
            t0 = time.perf_counter()
            run([mcp, "deploy", name, "--direct", "--node", "w1"], env=env)
            mcp_deploy.append(time.perf_counter() - t0)
            run([mcp, "undeploy", name, "--direct", "--node", "w1"], env=env)
            (services / f"{name}.toml").unlink()

            port = str(24500 + i)
            t0 = time.perf_counter()
            run(["podman", *podman_args, "run", "-d", "--name", f"raw{i}", "-e", f"PORT={port}",
                 "-p", f"127.0.0.1:{port}:{port}", IMAGE])
            raw_run.append(time.perf_counter() - t0)
            run(["podman", *podman_args, "rm", "-f", "-t", "0", f"raw{i}"])

        # 3. Commit to running vs raw podman run to running.
        commit_lat, raw_lat = [], []
        for i in range(a.runs):
            name = f"bc{i}"
            (services / f"{name}.toml").write_text(service_file(name, 9100 + i))
            git(services, "add", f"{name}.toml")
            t0 = time.time()
            git(services, "commit", "-q", "-m", f"bench {name}")
            start = wait_for(lambda: next((s for args in node_args.values()
                                           for s in [started_at(args, name)] if s), None),
                             60, f"{name} running")
            commit_lat.append(start - t0)
            git(services, "rm", "-q", f"{name}.toml")
            git(services, "commit", "-q", "-m", f"bench {name} done")

            port = str(24600 + i)
            t0 = time.time()
            run(["podman", *podman_args, "run", "-d", "--name", f"rawc{i}", "-e", f"PORT={port}",
                 "-p", f"127.0.0.1:{port}:{port}", IMAGE])
            raw_lat.append(started_at(podman_args, f"rawc{i}") - t0)
            run(["podman", *podman_args, "rm", "-f", "-t", "0", f"rawc{i}"])
            time.sleep(1)  # let the undeploy of the previous service finish
    finally:
        dev.terminate()
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
        for cfg in sorted(state.glob("nodes/*/agent.toml")):
            if cfg.exists():
                args = tomllib.loads(cfg.read_text())["podman"]["global_args"]
                subprocess.run(["podman", *args, "rm", "-af", "-t", "0"], capture_output=True)
        if not a.keep:
            shutil.rmtree(state, ignore_errors=True)

    med = statistics.median
    print(f"\nMachine: {os.cpu_count()} cores; runs: {a.runs}; "
          f"date: {dt.date.today().isoformat()}\n")
    print("| daemon (idle) | RSS |\n|---|---|")
    for k, v in rss.items():
        print(f"| {k} | {v / 1024:.1f} MiB |")
    print("\n| measurement | median | min | max |\n|---|---|---|---|")
    for label, xs in [
        ("`mcp deploy --direct` (one component)", mcp_deploy),
        ("raw `podman run -d` (same container)", raw_run),
        ("commit → container started (GitOps)", commit_lat),
        ("raw `podman run -d` → container started", raw_lat),
    ]:
        print(f"| {label} | {med(xs) * 1000:.0f} ms | {min(xs) * 1000:.0f} ms | "
              f"{max(xs) * 1000:.0f} ms |")
    print(f"\ndeploy / raw podman run: {med(mcp_deploy) / med(raw_run):.2f}x")
    print(f"MCP adds to commit → running: {(med(commit_lat) - med(raw_lat)) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
