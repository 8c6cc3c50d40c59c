#!/usr/bin/env python3
"""Migration downtime benchmark on a real `mcp dev` fleet (release build,
real podman): issue 11's "downtime of migrating a service with 100 MiB of
data (stop on source -> running on target)".

Starts `mcp dev --agents 3` (m1 master node, workers w1 and w2), deploys a
service `bulk` pinned to w1 with `[snapshot] method = "full"`, fills its
data directory (<state>/nodes/w1/srv/bulk/, the agent's /srv/bulk/) with
~100 MiB from bench-snapshot.py's generator (same proportions, 2 MiB files),
then runs `mcp --output json migrate bulk --to w2`, then back to w1, and so
on (--runs N moves; the CLI re-pins and commits the service file after each).

Per move:
- wall time of the CLI call (includes the re-pin commit);
- downtime = the source container's exit (podman's State.FinishedAt) to
  the target container's start (State.StartedAt): both from podman's own
  records, read by polling `podman inspect` on each node's storage during
  the move (the source is removed at the cleanup step, so it is read while
  it is stopped); also the first poll that saw each change, as a check;
- the steps: the master log's "migration started" line and one
  "migration step" line per step, at the step's end, with timestamps.

Usage: scripts/bench-migrate.py [--runs N] [--mib SIZE] [--keep] [--no-build]
Needs what bench-snapshot.py needs. Not part of the test suite.
"""

import argparse
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bench_snapshot", Path(__file__).resolve().parent / "bench-snapshot.py")
snap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(snap)
run, fill, ROOT, SVC, MiB = snap.run, snap.fill, snap.ROOT, snap.SVC, snap.MiB

STEPS = ("stop", "export", "import", "deploy", "dns", "edge", "cleanup", "placement")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z")


def log_time(line):
    m = LOG_TS.match(line)
    if not m:
        return None
    s = m.group(1)
    if "." in s:  # microseconds at most for fromisoformat
        head, frac = s.split(".")
        s = f"{head}.{frac[:6]:0<6}"
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.timezone.utc).timestamp()


def step_times(log, offset):
    """From the master log after byte `offset`: (started, {step: end time})."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = ANSI.sub("", f.read().decode(errors="replace"))
    started, ends = None, {}
    for line in text.splitlines():
        if f"service={SVC}" not in line and f'service="{SVC}"' not in line:
            continue
        t = log_time(line)
        if "migration started" in line:
            started = t
        elif "migration step" in line:
            m = re.search(r'step="?(\w+)', line)
            if m:
                ends[m.group(1)] = t
    return started, ends


def inspect(pargs, name):
    """(running, StartedAt, FinishedAt) in Unix seconds, or None if absent."""
    r = subprocess.run(["podman", *pargs, "inspect", "--format",
                        "{{.State.Running}} {{.State.StartedAt.UnixNano}} "
                        "{{.State.FinishedAt.UnixNano}}", name],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    running, started, finished = r.stdout.split()
    return running == "true", int(started) / 1e9, int(finished) / 1e9


class Watch(threading.Thread):
    """Polls one node's container until told to stop; keeps what it saw."""

    def __init__(self, pargs, name, want_running):
        super().__init__(daemon=True)
        self.pargs, self.name, self.want = pargs, name, want_running
        self.stop = threading.Event()
        self.seen = None  # first poll time that saw the wanted state
        self.last = None  # last inspect result with the wanted state
        self.polls = 0

    def run(self):
        while not self.stop.is_set():
            r = inspect(self.pargs, self.name)
            now = time.time()
            self.polls += 1
            if r is not None and r[0] == self.want:
                if self.seen is None:
                    self.seen = now
                self.last = r
            time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="moves (w1->w2, w2->w1, ...)")
    ap.add_argument("--mib", type=int, default=100, help="size of the data (MiB)")
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

    state = Path(tempfile.mkdtemp(prefix="mcp-bench-migrate-"))
    env = dict(os.environ, MCP_CONFIG=str(state / "mcp.toml"))
    dev = subprocess.Popen([mcp, "dev", "--state-dir", str(state), "--agents", "3"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    moves = []
    try:
        for line in dev.stdout:
            if "dev fleet is up" in line:
                break
        else:
            raise SystemExit(f"mcp dev did not start; see {state}/logs/")
        threading.Thread(target=dev.stdout.read, daemon=True).start()  # keep the pipe drained
        fleet = json.loads((state / "fleet.json").read_text())
        pargs = {n["name"]: n["podman_args"] for n in fleet["nodes"]}
        if not {"w1", "w2"} <= pargs.keys():
            raise SystemExit(f"the fleet has nodes {sorted(pargs)}, not w1 and w2")
        services = state / "services"
        (services / f"{SVC}.toml").write_text(snap.SERVICE_FILE)
        run(["git", "-C", str(services), "add", f"{SVC}.toml"])
        run(["git", "-C", str(services), "-c", "user.name=bench", "-c",
             "user.email=bench@localhost", "commit", "-q", "-m", f"bench {SVC}"])
        deadline = time.time() + 60
        name = None
        while name is None:
            for n in (SVC, f"{SVC}-{SVC}"):
                r = inspect(pargs["w1"], n)
                if r and r[0]:
                    name = n
            if time.time() > deadline:
                raise SystemExit(f"{SVC} not running on w1 after 60 s")
            time.sleep(0.2)
        # A first snapshot (empty data) so the master's schedule leaves the
        # service alone during the moves; it also waits for the placement.
        while subprocess.run([mcp, "snapshot", SVC], env=env, capture_output=True).returncode:
            if time.time() > deadline + 30:
                run([mcp, "snapshot", SVC], env=env)
            time.sleep(0.5)
        data = state / "nodes/w1/srv" / SVC
        data.mkdir(parents=True, exist_ok=True)
        total = fill(data, a.mib, seed=11, chunk=2)
        print(f"filled {data}: {total} bytes", file=sys.stderr)
        log = state / "logs/master.log"
        src, dst = "w1", "w2"
        for i in range(a.runs):
            offset = log.stat().st_size
            ws = Watch(pargs[src], name, want_running=False)
            wd = Watch(pargs[dst], name, want_running=True)
            ws.start()
            wd.start()
            t0 = time.time()
            out = run([mcp, "--output", "json", "migrate", SVC, "--to", dst], env=env).stdout
            t1 = time.time()
            deadline = t1 + 30
            while wd.last is None and time.time() < deadline:
                time.sleep(0.05)
            for w in (ws, wd):
                w.stop.set()
                w.join()
            v = json.loads(out)
            if not v.get("success"):
                raise SystemExit(f"migrate {SVC} --to {dst} failed:\n{out}")
            if ws.last is None or wd.last is None:
                raise SystemExit(f"move {i + 1}: source stop or target start not seen "
                                 f"(polls {ws.polls}/{wd.polls})")
            time.sleep(0.3)  # the log line of the last step
            started, ends = step_times(log, offset)
            got = sum(f.stat().st_size for f in (state / "nodes" / dst / "srv" / SVC).rglob("*")
                      if f.is_file())
            if got != total:
                raise SystemExit(f"move {i + 1}: {got} bytes on {dst}, expected {total}")
            m = dict(src=src, dst=dst, wall=t1 - t0, finished=ws.last[2], started=wd.last[1],
                     seen_stop=ws.seen, seen_run=wd.seen, polls=(ws.polls, wd.polls),
                     log_start=started, ends=ends, t0=t0)
            m["downtime"] = m["started"] - m["finished"]
            moves.append(m)
            print(f"move {i + 1} {src}->{dst}: wall {m['wall']:.2f} s, downtime "
                  f"{m['downtime']:.2f} s (polls saw {wd.seen - ws.seen:.2f} s)", file=sys.stderr)
            src, dst = dst, src
    finally:
        dev.terminate()
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
        for n in sorted(state.glob("nodes/*")):
            try:
                args = next(x["podman_args"] for x in json.loads(
                    (state / "fleet.json").read_text())["nodes"] if x["name"] == n.name)
            except (OSError, StopIteration, ValueError):
                continue
            subprocess.run(["podman", *args, "rm", "-af", "-t", "0"], capture_output=True)
        if not a.keep:
            shutil.rmtree(state, ignore_errors=True)

    med = statistics.median
    load = os.getloadavg()
    print(f"\nMachine: {os.cpu_count()} cores; load average {load[0]:.1f} {load[1]:.1f} "
          f"{load[2]:.1f}; moves: {a.runs}; date: {dt.date.today().isoformat()}")
    print(f"data: {total} bytes ({total / MiB:.1f} MiB)\n")
    cols = ["move", "wall s", "downtime s", "polled s"] + [f"{s} s" for s in STEPS]
    print("| " + " | ".join(cols) + " |")
    print("|---" + "|---:" * (len(cols) - 1) + "|")
    step_d = {s: [] for s in STEPS}
    for m in moves:
        prev, cells = m["log_start"], []
        for s in STEPS:
            t = m["ends"].get(s)
            if t is None or prev is None:
                cells.append("")
                continue
            step_d[s].append(t - prev)
            cells.append(f"{t - prev:.2f}")
            prev = t
        print(f"| {m['src']}→{m['dst']} | {m['wall']:.2f} | {m['downtime']:.2f} | "
              f"{m['seen_run'] - m['seen_stop']:.2f} | " + " | ".join(cells) + " |")
    row = [f"{med([m['wall'] for m in moves]):.2f}", f"{med([m['downtime'] for m in moves]):.2f}",
           f"{med([m['seen_run'] - m['seen_stop'] for m in moves]):.2f}"]
    row += [f"{med(step_d[s]):.2f}" if step_d[s] else "" for s in STEPS]
    print("| **median** | " + " | ".join(row) + " |")
    print("\nsteps: each from the previous step's end (stop: from \"migration started\"); "
          "the master logs a step at its end")
    for m in moves:
        d = m["ends"].get("deploy")
        extra = ""
        if m["log_start"] and d:
            extra = (f", started->deploy end {d - m['log_start']:.2f} s, source exit -> "
                     f"deploy end {d - m['finished']:.2f} s")
        print(f"{m['src']}→{m['dst']}: source exit {m['finished'] - m['t0']:.2f} s after the CLI "
              f"started, target start {m['started'] - m['t0']:.2f} s{extra}; "
              f"polls {m['polls'][0]}/{m['polls'][1]}")


if __name__ == "__main__":
    main()
