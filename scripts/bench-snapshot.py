#!/usr/bin/env python3
"""Snapshot benchmark on a real `mcp dev` fleet (release build, real podman).

Deploys a service `bulk` pinned to node w1 with `[snapshot] method = "full"`,
fills its data directory (<state>/nodes/w1/srv/bulk/, the agent's
/srv/bulk/) with ~1 GiB of deterministic data (incompressible "media", text
logs, a real SQLite database), then, alternating, N times each:

- `mcp snapshot bulk` through the master (agent: walk + tar + zstd level 3,
  one thread, SHA-256, gRPC over TLS; master: SHA-256, write, fsync, rename
  into <state>/snapshots/bulk/), wall time of the CLI call, while the
  agent's VmRSS is sampled every 5 ms (VmHWM read before and after);
- `tar -cf - -C DIR . | zstd -3 -T1 -q > FILE` on the same directory (the
  issue's baseline: one worker thread) and the same with `--single-thread`
  (the agent's mode: level 3, no worker), plus the fsync of FILE timed apart.

Usage: scripts/bench-snapshot.py [--runs N] [--mib SIZE] [--keep] [--no-build]
Needs: podman, git, tar, zstd, cargo, and what `mcp dev` needs (caddy,
haproxy, knot). Not part of the test suite.
"""

import argparse
import datetime as dt
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SVC = "bulk"
SERVICE_FILE = f'''name = "{SVC}"
node = "w1"

[snapshot]
method = "full"

[[components]]
name = "{SVC}"
image = "localhost/mcp-test/web:v1"
volumes = ["/srv/{SVC}:/srv/{SVC}"]
'''
MiB = 1 << 20
# -T1: the target's baseline (one compression worker beside the I/O thread);
# --single-thread: compression on the one thread, as the agent does it.
BASELINES = ("-T1", "--single-thread")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def proc_status(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB
    raise SystemExit(f"no {key} in /proc/{pid}/status")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_pid(state, exe, needle):
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            args = [a.decode() for a in (p / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if args and os.path.basename(args[0]) == exe and any(needle in a for a in args):
            return int(p.name)
    raise SystemExit(f"no {exe} process for {needle} (state {state})")


def fill(d, mib, seed, chunk=32):
    """~mib MiB: 3/8 random bytes, 1/2 log text (in files of `chunk` MiB),
    1/8 SQLite; deterministic."""
    rng = random.Random(seed)
    (d / "media").mkdir(parents=True)
    (d / "logs").mkdir()
    (d / "conf.toml").write_text('listen = "0.0.0.0:8080"\n[db]\npath = "app.db"\n')
    for i in range(mib * 3 // 8 // chunk):
        (d / "media" / f"upload-{i:03}.bin").write_bytes(rng.randbytes(chunk * MiB))
    paths = [f"/api/v1/{w}/{{}}" for w in ("users", "orders", "items", "search", "login")]
    levels = ["INFO"] * 8 + ["WARN", "ERROR"]
    t = 1_780_000_000.0
    for i in range(mib // 2 // chunk):
        lines, size = [], 0
        while size < chunk * MiB:
            t += rng.random() / 50
            s = (f"{dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()} "
                 f"{rng.choice(levels)} req={rng.getrandbits(32):08x} "
                 f"GET {rng.choice(paths).format(rng.randrange(100000))} "
                 f"status={rng.choice((200, 200, 200, 304, 404, 500))} "
                 f"ms={rng.randrange(1, 900)} user=u{rng.randrange(5000)}\n")
            lines.append(s)
            size += len(s)
        (d / "logs" / f"app-{i:03}.log").write_text("".join(lines))
    db = sqlite3.connect(d / "app.db")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, user TEXT, kind TEXT, body TEXT)")
    rows = ((i, f"u{rng.randrange(5000)}", rng.choice(("view", "buy", "cart")),
             '{"item": %d, "qty": %d, "note": "%s"}' % (rng.randrange(10**6), rng.randrange(9),
                                                        rng.randbytes(12).hex()))
            for i in range(mib // 8 * 12500))
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def baseline(data, file, flag):
    """`tar -cf - -C data . | zstd -3 FLAG > file`: (seconds, fsync seconds, bytes)."""
    t0 = time.perf_counter()
    with open(file, "wb") as f:
        tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(data), "."], stdout=subprocess.PIPE)
        zst = subprocess.run(["zstd", "-3", flag, "-q", "-c"], stdin=tar.stdout, stdout=f)
        tar.stdout.close()
        if tar.wait() != 0 or zst.returncode != 0:
            raise SystemExit(f"tar | zstd {flag} failed")
        secs = time.perf_counter() - t0
        t1 = time.perf_counter()
        os.fsync(f.fileno())
        sync = time.perf_counter() - t1
    size = file.stat().st_size
    file.unlink()
    return secs, sync, size


def sample_rss(pid, stop, peak):
    while not stop.is_set():
        peak[0] = max(peak[0], proc_status(pid, "VmRSS"))
        time.sleep(0.005)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=1024, help="size of the data (MiB)")
    ap.add_argument("--keep", action="store_true", help="keep the state directory")
    ap.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    a = ap.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "tests/podman/containers.conf"))
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not a.no_build:
        print("building release binaries...", file=sys.stderr)
        run(["cargo", "build", "--release", "-q", "-p", "mcp-cli", "-p", "mcp-agent",
             "-p", "mcp-master"], cwd=ROOT)
    run([str(ROOT / "scripts/build-test-images.sh")])
    mcp = str(target / "release/mcp")

    state = Path(tempfile.mkdtemp(prefix="mcp-bench-snap-"))
    env = dict(os.environ, MCP_CONFIG=str(state / "mcp.toml"))
    dev = subprocess.Popen([mcp, "dev", "--state-dir", str(state), "--agents", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in dev.stdout:
            if "dev fleet is up" in line:
                break
        else:
            raise SystemExit(f"mcp dev did not start; see {state}/logs/")
        threading.Thread(target=dev.stdout.read, daemon=True).start()  # keep the pipe drained
        pargs = tomllib.loads((state / "nodes/w1/agent.toml").read_text())["podman"]["global_args"]
        services = state / "services"
        (services / f"{SVC}.toml").write_text(SERVICE_FILE)
        run(["git", "-C", str(services), "add", f"{SVC}.toml"])
        run(["git", "-C", str(services), "-c", "user.name=bench", "-c",
             "user.email=bench@localhost", "commit", "-q", "-m", f"bench {SVC}"])
        deadline = time.time() + 60
        while not any(subprocess.run(["podman", *pargs, "inspect", "--format",
                                      "{{.State.Running}}", n], capture_output=True,
                                     text=True).stdout.strip() == "true"
                      for n in (SVC, f"{SVC}-{SVC}")):
            if time.time() > deadline:
                raise SystemExit(f"{SVC} not running on w1 after 60 s")
            time.sleep(0.2)
        data = state / "nodes/w1/srv" / SVC
        data.mkdir(parents=True, exist_ok=True)
        # A first snapshot while the directory is empty, so the master's
        # schedule (every minute, due when none is younger than 10 min)
        # leaves the service alone during the measurement.
        while subprocess.run([mcp, "snapshot", SVC], env=env, capture_output=True).returncode:
            if time.time() > deadline + 30:  # the master records the placement after the deploy
                run([mcp, "snapshot", SVC], env=env)
            time.sleep(0.5)
        t0 = time.time()
        total = fill(data, a.mib, seed=11)
        print(f"filled {data}: {total} bytes in {time.time() - t0:.0f} s", file=sys.stderr)
        agent = daemon_pid(state, "mcp-agent", "nodes/w1/agent.toml")
        master = daemon_pid(state, "mcp-master", "master.toml")
        hwm_before = proc_status(agent, "VmHWM")
        rss_before = proc_status(agent, "VmRSS")
        mcp_s, mcp_size, peaks, cpu_a, cpu_m = ([] for _ in range(5))
        tar_s, tar_size, sync_s = ({f: [] for f in BASELINES} for _ in range(3))
        for i in range(a.runs):
            stop, peak = threading.Event(), [0]
            sampler = threading.Thread(target=sample_rss, args=(agent, stop, peak))
            ca, cm = cpu_seconds(agent), cpu_seconds(master)
            sampler.start()
            t0 = time.perf_counter()
            out = run([mcp, "snapshot", SVC], env=env).stdout
            mcp_s.append(time.perf_counter() - t0)
            stop.set()
            sampler.join()
            peaks.append(max(peak[0], proc_status(agent, "VmRSS")))
            cpu_a.append(cpu_seconds(agent) - ca)
            cpu_m.append(cpu_seconds(master) - cm)
            mcp_size.append(int(out.split("size:")[1].split()[0]))

            for flag in BASELINES:
                secs, sync, size = baseline(data, state / "baseline.tar.zst", flag)
                tar_s[flag].append(secs)
                sync_s[flag].append(sync)
                tar_size[flag].append(size)
            print(f"run {i + 1}: mcp {mcp_s[-1]:.2f} s, tar|zstd "
                  + ", ".join(f"{f} {tar_s[f][-1]:.2f} s" for f in BASELINES), file=sys.stderr)
        hwm_after = proc_status(agent, "VmHWM")
    finally:
        dev.terminate()
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
        for cfg in sorted(state.glob("nodes/*/agent.toml")):
            args = tomllib.loads(cfg.read_text())["podman"]["global_args"]
            subprocess.run(["podman", *args, "rm", "-af", "-t", "0"], capture_output=True)
        if not a.keep:
            shutil.rmtree(state, ignore_errors=True)

    med = statistics.median
    mb = total / 1e6
    ratio = med(tar_s["-T1"]) / med(mcp_s)
    peak_mb = max(peaks) * 1024 / 1e6
    load = os.getloadavg()
    print(f"\nMachine: {os.cpu_count()} cores; load average {load[0]:.1f} {load[1]:.1f}; "
          f"runs: {a.runs}; date: {dt.date.today().isoformat()}")
    print(f"data: {total} bytes ({total / MiB:.0f} MiB) in {data.relative_to(state)}\n")
    print("| measurement | median s | min s | max s | MB/s (median) | archive bytes |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [("`mcp snapshot` (through the master)", mcp_s, mcp_size)]
    rows += [(f"`tar -cf - DIR \\| zstd -3 {f} > FILE`", tar_s[f], tar_size[f]) for f in BASELINES]
    for label, xs, size in rows:
        print(f"| {label} | {med(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} | "
              f"{mb / med(xs):.0f} | {med(size)} |")
    print("\nfsync of the baseline's file (not in its time; the master fsyncs): median "
          + ", ".join(f"{f} {med(sync_s[f]):.2f} s" for f in BASELINES))
    print(f"ratio against zstd --single-thread (the agent's mode): "
          f"{med(tar_s['--single-thread']) / med(mcp_s):.2f}")
    print(f"CPU per snapshot (median): agent {med(cpu_a):.2f} s, master {med(cpu_m):.2f} s")
    print(f"agent RSS: before {rss_before / 1024:.1f} MiB, VmHWM before {hwm_before / 1024:.1f} "
          f"MiB, after {hwm_after / 1024:.1f} MiB; max sampled VmRSS during exports "
          f"{max(peaks) / 1024:.1f} MiB")
    print(f"throughput ratio mcp / tar|zstd -T1: {ratio:.2f} (target >= 0.8): "
          f"{'PASS' if ratio >= 0.8 else 'MISS'}")
    peak = max(peak_mb, hwm_after * 1024 / 1e6)
    print(f"agent peak RSS {peak:.1f} MB (target < 40 MB): {'PASS' if peak < 40 else 'MISS'}")


if __name__ == "__main__":
    main()
