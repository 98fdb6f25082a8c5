#!/usr/bin/env python3
"""Serving a full-size model, side by side: `silencio serve` configurations under `silencio loadgen`.

What a new user runs, on this machine, one configuration after another in one run:

* a full-size bundle, ``silencio bundle create --arch efficientnet_b0`` (default) over a
  206-species taxonomy (BirdCLEF 2025's size: the demo's 9 real species plus 197 placeholder
  rows, Aves/Amphibia/Insecta/Mammalia in the competition's proportions; names do not change
  the cost);
* ``silencio serve --model <bundle>`` with each configuration of replicas, replica threads and
  batching below (release binary, flex backend);
* ``silencio loadgen --mode tour`` (5 s real clips, closed loop: each user posts its next clip
  when the answer arrives) at 1, 8 and 16 users.

Configurations (``--configs`` picks a subset):

* ``one-replica-bs1``         1 replica, batching off (max batch 1): the baseline;
* ``replicas-bs1``            one replica per core (the default), ``--replica-threads own`` (the
                              default), batching off: the CPU default since this comparison;
* ``replicas-batch8``         the same with ``--max-batch 8`` (10 ms wait): the default before;
* ``shared-threads-batch8``   ``--replica-threads shared --max-batch 8``: replica threads plus
                              the process-wide rayon pool, the behaviour before replica pools.

Then ``silencio identify --model <bundle>`` on the real 1-minute soundscape fixture and on its first
5 s (cut with ffmpeg), ``--identify-runs`` times each: the end-to-end cost per window is
(median 1-minute run − median 5 s run) / 11, which leaves out process start and model loading.

Issue 15's goals: at 8 users p50 < 200 ms and p95 < 300 ms with the full-size EfficientNet-B0;
end to end ≤ 30 ms per 5 s window.

Run from the repository root (builds the release binary first unless ``--no-build``):

    python3 benches/compare/serving_side_by_side.py [--arch efficientnet_b0] [--duration 20s]
        [--concurrency 1,8,16] [--configs default,one-replica-bs1,...] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cargo_target_dir, machine_facts, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = Path(__file__).resolve().parent / "serving_last_run.json"
GOAL_USERS, GOAL_P50_MS, GOAL_P95_MS = 8, 200.0, 300.0
# BirdCLEF 2025's taxonomy: 206 species by class.
CLASSES = (("Aves", 146), ("Amphibia", 34), ("Insecta", 17), ("Mammalia", 9))

CONFIGS = {
    "one-replica-bs1": ["--replicas", "1", "--max-batch", "1"],
    "replicas-bs1": ["--max-batch", "1"],
    "replicas-batch8": ["--max-batch", "8"],
    "shared-threads-batch8": ["--replica-threads", "shared", "--max-batch", "8"],
}


def taxonomy_206(path: Path) -> None:
    """The demo's real species first, then placeholders up to BirdCLEF's 206, by class."""
    demo = (REPO / "datasets/demo/birdclef/taxonomy.csv").read_text().splitlines()
    header, rows = demo[0], demo[1:]
    have = {c: sum(1 for r in rows if r.rsplit(",", 1)[-1] == c) for c, _ in CLASSES}
    for cls, want in CLASSES:
        for i in range(max(0, want - have[cls])):
            rows.append(f"placeholder_{cls.lower()}_{i:03d},,Placeholder {cls} {i},"
                        f"Placeholder {cls} {i},{cls}")
    assert len(rows) == 206, len(rows)
    path.write_text("\n".join([header, *rows]) + "\n")


def user_env() -> dict:
    """This environment without `SILENCIO_*`: the binaries run on their defaults and flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SILENCIO_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


def run_config(name: str, flags: list[str], binary: Path, bundle: Path, work: Path, args) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(binary), "serve", "--addr", f"127.0.0.1:{port}", "--model", str(bundle),
           "--data-dir", str(work / f"data-{name}"), "--api-key", "bench", "--sample-share", "0",
           *flags]
    log = open(work / f"serve-{name}.log", "w")
    env = user_env()
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(url, server)
        out = work / f"loadgen-{name}"
        lg = [str(binary), "loadgen", "--url", url, "--mode", "tour", "--concurrency",
              args.concurrency, "--duration", args.duration, "--warmup", args.warmup,
              "--out", str(out)]
        print(f"[{name}] serve {' '.join(flags) or '(defaults)'}; loadgen at {args.concurrency} "
              f"users", flush=True)
        subprocess.run(lg, check=True, env=env, stdout=subprocess.DEVNULL)
        report = json.loads((out / "report.json").read_text())
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    levels = []
    for lv in report["levels"]:
        lat = lv.get("latency_ms") or {}
        levels.append({
            "users": lv["concurrency"], "requests": lv["requests"], "ok": lv["ok"],
            "errors": lv["requests"] - lv["ok"], "clips_per_s": lv["throughput_rps"],
            "p50_ms": lat.get("p50_ms"), "p95_ms": lat.get("p95_ms"), "p99_ms": lat.get("p99_ms"),
            "server_timing_ms": lv.get("server_timing_ms"), "batch_size": lv.get("batch_size"),
        })
        print(f"  {lv['concurrency']:>2} users: {lv['throughput_rps']:.2f} clips/s, "
              f"p50 {lat.get('p50_ms', float('nan')):.0f} ms, p95 {lat.get('p95_ms', float('nan')):.0f} ms, "
              f"{lv['requests'] - lv['ok']} errors", flush=True)
    return {"flags": flags, "levels": levels}


def identify_timing(binary: Path, bundle: Path, work: Path, runs: int) -> dict:
    """Median wall time of `silencio identify` on 60 s and on 5 s of the same real recording."""
    full = REPO / "datasets/fixtures/audio/soundscape_1min.ogg"
    short = work / "soundscape_5s.ogg"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(full), "-t", "5", "-c:a",
                    "libvorbis", str(short)], check=True)
    env = user_env()

    def median_s(path: Path) -> float:
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run([str(binary), "identify", str(path), "--model", str(bundle)], check=True,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]

    t60, t5 = median_s(full), median_s(short)
    per_window_ms = 1e3 * (t60 - t5) / 11
    print(f"[identify] 60 s: {t60:.3f} s, 5 s: {t5:.3f} s (medians of {runs}): "
          f"{per_window_ms:.1f} ms per window end to end", flush=True)
    return {"runs": runs, "t_60s_s": t60, "t_5s_s": t5, "ms_per_window": per_window_ms,
            "goal_ms_per_window": 30.0, "met": per_window_ms <= 30.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="efficientnet_b0")
    ap.add_argument("--concurrency", default="1,8,16")
    ap.add_argument("--duration", default="20s")
    ap.add_argument("--warmup", default="3s")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--no-build", action="store_true", help="use the release binary already built")
    ap.add_argument("--identify-runs", type=int, default=5, help="0 skips the identify timing")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configuration(s) {bad}; choose from {list(CONFIGS)}")

    target = cargo_target_dir(REPO)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "silencio", "--bin", "silencio"],
                       cwd=REPO, check=True, env={**os.environ, "CARGO_TARGET_DIR": str(target)})
    binary = target / "release" / "silencio"
    meta = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_facts(REPO), "arch": args.arch, "classes": 206,
            "mode": "tour (5 s clips, closed loop)", "duration": args.duration,
            "warmup": args.warmup, "binary": str(binary)}
    results = {}
    with tempfile.TemporaryDirectory(prefix="silencio-serving-") as tmp:
        work = Path(tmp)
        taxonomy_206(work / "taxonomy.csv")
        bundle = work / "bundle"
        subprocess.run([str(binary), "bundle", "create", "--arch", args.arch, "--taxonomy",
                        str(work / "taxonomy.csv"), "--name", f"{args.arch}-206", "--version", "1",
                        "--out", str(bundle)], check=True, stdout=subprocess.DEVNULL)
        identify = None
        if args.identify_runs > 0:
            identify = identify_timing(binary, bundle, work, args.identify_runs)
        for name in configs:
            results[name] = run_config(name, CONFIGS[name], binary, bundle, work, args)

    lines = ["| configuration | users | clips/s | vs one replica at bs 1 | p50 ms | p95 ms | p99 ms "
             "| errors |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = {lv["users"]: lv["clips_per_s"] for lv in results.get("one-replica-bs1", {}).get("levels", [])}
    for name, r in results.items():
        for lv in r["levels"]:
            b = base.get(lv["users"])
            ratio = "—" if not b else f"{lv['clips_per_s'] / b:.2f}×"
            f = lambda v: "—" if v is None else f"{v:.0f}"  # noqa: E731
            lines.append(f"| {name} | {lv['users']} | {lv['clips_per_s']:.2f} | {ratio} | "
                         f"{f(lv['p50_ms'])} | {f(lv['p95_ms'])} | {f(lv['p99_ms'])} | {lv['errors']} |")
    print()
    print(f"{args.arch}, 206 classes, `silencio serve` under `silencio loadgen --mode tour`")
    print("\n".join(lines))
    goal = {}
    for name, r in results.items():
        lv = next((lv for lv in r["levels"] if lv["users"] == GOAL_USERS), None)
        if lv and lv["p50_ms"] is not None:
            goal[name] = {"p50_ms": lv["p50_ms"], "p95_ms": lv["p95_ms"],
                          "met": lv["p50_ms"] < GOAL_P50_MS and lv["p95_ms"] < GOAL_P95_MS}
            print(f"goal at {GOAL_USERS} users (p50 < {GOAL_P50_MS:.0f} ms, p95 < {GOAL_P95_MS:.0f} ms), "
                  f"{name}: {'MET' if goal[name]['met'] else 'NOT MET'}")
    write_json(args.json, {"meta": meta, "identify": identify, "configs": results, "goal": goal,
                           "table_md": "\n".join(lines)}, REPO)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
