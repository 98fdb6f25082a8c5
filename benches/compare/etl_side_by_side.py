#!/usr/bin/env python3
"""Side-by-side ETL benchmark: `silencio etl` vs the librosa baseline etl_reference.py.

    .venv-bench/bin/python benches/compare/etl_side_by_side.py [--data datasets/demo/birdclef]
        [--silencio target/release/silencio] [--scales 1,8] [--repeat 3] [--json out.json]

Both implementations turn a BirdCLEF-layout tree (train.csv, taxonomy.csv, train_audio/) into
`birdclef` log-mel windows (f32) plus labels. For each scale k the tree is replicated k times
into a temporary dir (rows duplicated in train.csv with filenames `{label}/{id}_r{i}{ext}`, the
audio hard-linked or copied), so that time and peak memory can be compared on two dataset
sizes. Each run is a child process reaped with os.wait4, which gives its wall time and its own
ru_maxrss (for the Python Pool, its largest single process); a thread also samples the summed
PSS of the child's process tree. The median wall time over --repeat runs is reported, with the
largest peaks. Output dirs are deleted after every run. Not a test: it asserts nothing.
"""
import argparse
import csv
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from machine import portable_paths  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = pathlib.Path(__file__).resolve().with_name("etl_reference.py")
MIB = 1024 * 1024
BYTES_PER_WINDOW = 128 * 313 * 4  # birdclef, f32


def default_silencio():
    target = os.environ.get("CARGO_TARGET_DIR")
    return str((REPO / target if target else REPO / "target") / "release" / "silencio")


SHARD_MB = 256  # silencio's default; --shard-mb sets it (memory is bounded by one shard)


def silencio_cmd(binary, data, out):
    return [binary, "etl", "--data", str(data), "--out", str(out), "--recipe", "birdclef",
            "--dtype", "f32", "--max-windows-per-clip", "0", "--progress", "json",
            "--shard-mb", str(SHARD_MB)]


def python_cmd(python, workers, data, out, summary):
    return [python, str(REFERENCE), "--data", str(data), "--out", str(out),
            "--workers", str(workers), "--summary-json", str(summary)]


# ------------------------------------------------------------------------------ data tree
def replicate(src, dst, k):
    """The tree at src, k times over, at dst. Returns 'hard links' or 'copies'."""
    (dst / "train_audio").mkdir(parents=True)
    shutil.copyfile(src / "taxonomy.csv", dst / "taxonomy.csv")
    with open(src / "train.csv", newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    how = "hard links"
    with open(dst / "train.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for i in range(1, k + 1):
            for row in rows:
                rel = pathlib.PurePosixPath(row["filename"].strip())
                new = rel.with_name(f"{rel.stem}_r{i}{rel.suffix}")
                w.writerow({**row, "filename": str(new)})
                a, b = src / "train_audio" / rel, dst / "train_audio" / new
                if not a.is_file() or b.exists():
                    continue  # a missing file stays missing: both sides must report it
                b.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(a, b)
                except OSError:  # other filesystem, or links not allowed
                    shutil.copyfile(a, b)
                    how = "copies"
    return how, len(rows) * k


def warm_page_cache(root):
    # Both sides then decode from memory; otherwise whichever runs first pays the disk reads.
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass


def dir_bytes(root):
    return sum(p.stat().st_size for p in pathlib.Path(root).rglob("*") if p.is_file())


def audio_seconds_estimate(python, root):
    """Header durations, only to size the temp space before anything runs. Read in a child:
    importing soundfile here would raise this process's RSS, which every child's ru_maxrss
    inherits (see spawn_floor_kib)."""
    probe = ("import pathlib, sys, soundfile as sf\n"
             "t = 0.0\n"
             "for p in pathlib.Path(sys.argv[1]).rglob('*'):\n"
             "    try: t += sf.info(str(p)).duration\n"
             "    except Exception: pass\n"
             "print(t)")
    try:
        return float(subprocess.run([python, "-c", probe, str(root / "train_audio")],
                                    capture_output=True, text=True, check=True).stdout)
    except Exception:
        return None


# ------------------------------------------------------------------------------ one run
def _tree(pid):
    """pid and its live descendants (scans /proc: /proc/*/task/*/children is not always built)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _pss_kib(pid):
    # PSS, not RSS: the Pool workers share the parent's pages after fork, and summing their RSS
    # would count those pages three times.
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_child(cmd, log, sample_s):
    """Runs cmd; returns (exit code, wall s, ru_maxrss KiB, sampled peak PSS of the tree KiB)."""
    peak = [0]
    done = threading.Event()
    with open(log, "wb") as f:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)

        def sample():
            # Scanning /proc for the tree costs ~6 ms, so it is redone only about once a second
            # (the Pool's workers live for the whole run); the PSS reads are cheap.
            pids, n = [p.pid], 0
            while not done.wait(sample_s):
                if n % max(1, round(1 / sample_s)) == 0:
                    pids = _tree(p.pid)
                n += 1
                peak[0] = max(peak[0], sum(_pss_kib(q) for q in pids))

        sampler = threading.Thread(target=sample, daemon=True)
        if sample_s > 0:
            sampler.start()
        # wait4 rather than p.wait(): it returns this child's rusage (ru_maxrss in KiB on Linux).
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        if sample_s > 0:
            sampler.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, wall, ru.ru_maxrss, peak[0]


def spawn_floor_kib():
    """ru_maxrss of a child that does nothing. Linux carries the spawning process's peak RSS
    across fork/vfork + exec into the child's maxrss, so no child reports less than this."""
    return run_child(["true"], os.devnull, 0)[2]


def last_json_with(log, key):
    """The last JSON object line in the log that has `key` (silencio's --progress json)."""
    found = None
    for line in pathlib.Path(log).read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and key in obj:
                found = obj
    return found


def tail(path, n=15):
    return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-n:])


# ------------------------------------------------------------------------------ machine
def machine_info(python, silencio):
    def proc_field(path, key):
        try:
            with open(path) as f:
                return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(key)), None)
        except OSError:
            return None

    cpu = proc_field("/proc/cpuinfo", "model name")
    mem = proc_field("/proc/meminfo", "MemTotal:")  # "24683532 kB"
    mem = round(int(mem.split()[0]) / MIB, 1) if mem else None
    probe = ("import json, librosa, numpy, soundfile, soxr, sys; print(json.dumps({"
             "'python': sys.version.split()[0], 'librosa': librosa.__version__, "
             "'numpy': numpy.__version__, 'soundfile': soundfile.__version__, "
             "'soxr': soxr.__version__}))")
    try:
        versions = json.loads(subprocess.run([python, "-c", probe], capture_output=True,
                                             text=True, check=True).stdout)
    except Exception as e:
        versions = {"error": f"{type(e).__name__}: {e}"}
    if silencio:
        try:
            versions["silencio"] = subprocess.run([silencio, "--version"], capture_output=True,
                                                  text=True, timeout=30).stdout.strip()
        except Exception as e:
            versions["silencio"] = f"{type(e).__name__}: {e}"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or None
    except OSError:
        commit = None
    return {"cpu_model": cpu, "nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "mem_total_gib": mem, "platform": platform.platform(), "git_commit": commit,
            "versions": versions,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS")}


# ------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO / "datasets/demo/birdclef"),
                    help="BirdCLEF-layout dir (train.csv, taxonomy.csv, train_audio/)")
    ap.add_argument("--silencio", default=default_silencio(),
                    help="silencio binary (default target/release/silencio, or "
                         "$CARGO_TARGET_DIR/release/silencio)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for etl_reference.py (needs librosa)")
    ap.add_argument("--workers", type=int, default=2, help="etl_reference.py --workers")
    ap.add_argument("--scales", default="1,8", help="comma-separated replication factors")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shard-mb", type=float, default=256,
                    help="silencio etl --shard-mb (its memory is bounded by one shard)")
    ap.add_argument("--tmp", help="where the outputs go (default /dev/shm when it has room, "
                                  "else the system temp dir)")
    ap.add_argument("--sample-s", type=float, default=0.2,
                    help="interval of the process-tree PSS sampling, s (0: off)")
    ap.add_argument("--json", help="also write the results here as JSON")
    args = ap.parse_args()
    global SHARD_MB
    SHARD_MB = args.shard_mb

    data = pathlib.Path(args.data).resolve()
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    if not (data / "train.csv").is_file() or not (data / "taxonomy.csv").is_file():
        sys.exit(f"{data}: no train.csv / taxonomy.csv (not a BirdCLEF-layout dir)")
    if min(scales) < 1 or args.repeat < 1:
        sys.exit("--scales must be >= 1 and --repeat >= 1")

    silencio = pathlib.Path(args.silencio)
    silencio = silencio if silencio.is_absolute() else REPO / silencio
    impls = [("silencio", None), ("python", None)]
    if not (silencio.is_file() and os.access(silencio, os.X_OK)):
        msg = f"binary {silencio} not found (cargo build --release first)"
        print(f"skip silencio: {msg}", file=sys.stderr)
        impls[0] = ("silencio", msg)
        silencio = None

    # Outputs on a RAM disk: silencio may fsync its shards and np.save does not, so a disk would
    # time the fsyncs. Fall back when /dev/shm is too small for the largest scale's output.
    est_s = audio_seconds_estimate(args.python, data)
    need = (est_s or 0) / 5 * BYTES_PER_WINDOW * max(scales) * 1.2
    tmp = args.tmp
    if tmp is None:
        shm = pathlib.Path("/dev/shm")
        tmp = str(shm) if shm.is_dir() and shutil.disk_usage(shm).free > 2 * need else None
    out_root = pathlib.Path(tempfile.mkdtemp(prefix="etl_bench_out_", dir=tmp))
    # Replicas go to the system temp dir, never into the repo: hard links when it shares a
    # filesystem with --data, copies otherwise.
    data_root = pathlib.Path(tempfile.mkdtemp(prefix="etl_bench_data_"))
    print(f"outputs under {out_root}, replicas under {data_root}", file=sys.stderr)

    rows, ratios = [], []
    try:
        for k in scales:
            tree = data_root / f"x{k}"
            how, n_rows = replicate(data, tree, k)
            warm_page_cache(tree)
            print(f"scale {k}: {n_rows} rows ({how})", file=sys.stderr)
            runs = {name: [] for name, skip in impls if skip is None}
            # Interleaved (s, p, s, p, ...) so that drift on the machine hits both sides alike.
            for rep in range(args.repeat):
                for name in runs:
                    out = out_root / f"{name}_x{k}_{rep}"
                    log = out_root / f"{name}_x{k}_{rep}.log"
                    summary = out_root / f"{name}_x{k}_{rep}.summary.json"
                    cmd = (silencio_cmd(str(silencio), tree, out) if name == "silencio"
                           else python_cmd(args.python, args.workers, tree, out, summary))
                    rc, wall, maxrss, pss = run_child(cmd, log, args.sample_s)
                    r = {"rc": rc, "wall_s": wall, "maxrss_kib": maxrss, "tree_pss_kib": pss,
                         "output_bytes": dir_bytes(out) if out.exists() else 0}
                    if name == "python" and summary.is_file():
                        r["report"] = json.loads(summary.read_text())
                    elif name == "silencio":
                        r["report"] = last_json_with(log, "windows")
                    if rc != 0:
                        r["log_tail"] = tail(log)
                        print(f"{name} x{k} run {rep + 1}: exit {rc}\n{r['log_tail']}",
                              file=sys.stderr)
                    print(f"  {name} x{k} run {rep + 1}/{args.repeat}: {wall:.2f} s, "
                          f"maxrss {maxrss / 1024:.0f} MiB", file=sys.stderr)
                    runs[name].append(r)
                    shutil.rmtree(out, ignore_errors=True)
                    for p in (log, summary):
                        p.unlink(missing_ok=True)
            shutil.rmtree(tree, ignore_errors=True)

            # The reference's own count of the decoded audio is the work done, for both sides:
            # the rates then compare like for like (their ratio is the ratio of times).
            ref = next((r["report"] for r in runs.get("python", []) if r.get("report")), None)
            audio_s = ref["audio_seconds"] if ref else None
            windows = ref["windows"] if ref else None
            clips = ref["clips"] if ref else None
            med = {}
            for name, skip in impls:
                row = {"scale": k, "implementation": name, "rows": n_rows, "clips": clips,
                       "audio_seconds": audio_s, "windows": windows}
                if skip:
                    rows.append({**row, "skipped": skip})
                    continue
                ok = [r for r in runs[name] if r["rc"] == 0]
                if not ok:
                    rows.append({**row, "failed": runs[name][0].get("log_tail", ""),
                                 "runs": runs[name]})
                    continue
                m = statistics.median(r["wall_s"] for r in ok)
                med[name] = m
                own = ok[0].get("report") or {}
                rows.append({
                    **row, "median_wall_s": m, "runs_wall_s": [r["wall_s"] for r in ok],
                    "failed_runs": len(runs[name]) - len(ok),
                    "audio_s_per_s": audio_s / m if audio_s else None,
                    "windows_per_s": windows / m if windows else None,
                    "peak_rss_mib": max(r["maxrss_kib"] for r in ok) / 1024,
                    "peak_tree_pss_mib": max(r["tree_pss_kib"] for r in ok) / 1024,
                    "output_mib": ok[0]["output_bytes"] / MIB,
                    "windows_reported": own.get("windows"), "report": own or None})
            if "python" in med and "silencio" in med:
                rss = {r["implementation"]: r["peak_rss_mib"] for r in rows
                       if r["scale"] == k and "peak_rss_mib" in r}
                ratios.append({"scale": k, "python_over_silencio_time":
                               med["python"] / med["silencio"],
                               "python_over_silencio_peak_rss": rss["python"] / rss["silencio"]})
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
        shutil.rmtree(data_root, ignore_errors=True)

    floor = spawn_floor_kib() / 1024  # after all runs: the driver's peak only grows
    info = machine_info(args.python, str(silencio) if silencio else None)
    v = info["versions"]
    lines = [f"ETL of `{data}` (birdclef log-mel, f32), median of {args.repeat} runs; "
             f"{info['cpu_model']}, {info['nproc']} CPUs; librosa {v.get('librosa')}, "
             f"numpy {v.get('numpy')}, python workers {args.workers}. "
             f"ru_maxrss of any child here is >= {floor:.0f} MiB (this driver's RSS, inherited "
             "at spawn); python's is its largest single process, the tree PSS sums them.",
             "",
             "| scale | clips | audio (s) | windows | implementation | wall (s) | audio s / s "
             "| windows / s | peak RSS MiB (wait4) | peak tree PSS MiB (sampled) | output MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x, fmt):
        return format(x, fmt) if isinstance(x, (int, float)) else "–"

    for r in rows:
        head = (f"| {r['scale']} | {f(r['clips'], 'd')} | {f(r['audio_seconds'], '.0f')} "
                f"| {f(r['windows'], 'd')} | {r['implementation']} ")
        if "skipped" in r:
            lines.append(head + f"| skipped: {r['skipped']} | | | | | |")
        elif "failed" in r:
            lines.append(head + "| failed (see JSON) | | | | | |")
        else:
            note = ""
            if r["windows_reported"] is not None and r["windows_reported"] != r["windows"]:
                note = f" (reports {r['windows_reported']} windows)"
            rss = (f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] > floor + 1
                   else f"≤ {floor:.0f} (floor)")
            pss = f"{r['peak_tree_pss_mib']:.0f}" if args.sample_s > 0 else "–"
            lines.append(head + f"| {r['median_wall_s']:.2f}{note} | "
                         f"{f(r['audio_s_per_s'], '.1f')} | {f(r['windows_per_s'], '.1f')} | "
                         f"{rss} | {pss} | "
                         f"{r['output_mib']:.1f} |")
    lines.append("")
    if ratios:
        lines += ["| scale | python / silencio time | python / silencio peak RSS |",
                  "|---|---|---|"]
        lines += [f"| {r['scale']} | {r['python_over_silencio_time']:.2f} | "
                  f"{r['python_over_silencio_peak_rss']:.2f} |" for r in ratios]
    else:
        lines.append("(no ratios: silencio was not timed)")
    table = "\n".join(lines)
    print(table)

    if args.json:
        doc = {"data": str(data), "scales": scales, "repeat": args.repeat,
               "workers": args.workers, "tmp": tmp or tempfile.gettempdir(),
               "maxrss_floor_mib": floor, "pss_sample_s": args.sample_s,
               "commands": {"silencio": silencio_cmd(str(silencio) if silencio else "silencio",
                                                     "<data>", "<out>"),
                            "python": python_cmd(args.python, args.workers, "<data>", "<out>",
                                                 "<summary.json>")},
               "machine": info, "results": rows, "ratios": ratios, "markdown": table}
        pathlib.Path(args.json).write_text(json.dumps(portable_paths(doc, REPO), indent=2) + "\n")


if __name__ == "__main__":
    main()
