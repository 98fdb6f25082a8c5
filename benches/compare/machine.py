"""What every side-by-side script records about the machine it ran on (shared by
models_side_by_side.py and train_side_by_side.py), and the portable paths all four write."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def machine_facts(REPO: Path) -> dict:
    """CPU, cores, memory, platform, Python and the repository's commit (+dirty)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"cpu": cpu, "nproc": os.cpu_count(), "memory": mem, "platform": platform.platform(),
            "python": platform.python_version(), "commit": commit,
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}


def cpu_snapshot():
    """(wall, busy CPU seconds of the whole machine, CPU seconds of this process)."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in f]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = None
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system


def other_cores(a, b):
    """Average number of cores that other processes kept busy between two snapshots."""
    if a[1] is None or b[1] is None or b[0] <= a[0]:
        return None
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / (b[0] - a[0]))


def portable_paths(obj, repo: Path):
    """`obj` (JSON-like) with this machine's paths made portable: the repository as `.`, a cargo
    target directory outside it as `$CARGO_TARGET_DIR`, the temporary folder as `$TMPDIR`, the
    home folder as `~` — committed figures name no machine."""
    import tempfile

    roots = [(str(repo.resolve()), ".")]
    target = cargo_target_dir(repo)
    if target_label(target, repo) == "$CARGO_TARGET_DIR":
        roots.append((str(target.resolve()), "$CARGO_TARGET_DIR"))
    roots += [(tempfile.gettempdir(), "$TMPDIR"), (str(Path.home()), "~")]

    def fix(v):
        if isinstance(v, str):
            for root, name in roots:
                if v == root or v.startswith(root + "/"):
                    return name + v[len(root):]
                v = v.replace(" " + root + "/", " " + name + "/").replace("`" + root + "/", "`" + name + "/")
            return v
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return fix(obj)


def cargo_target_dir(repo: Path) -> Path:
    """Cargo's target directory as the benches see it: `$CARGO_TARGET_DIR`, else the build cache
    `~/.cache/silencio-target` when it exists, else the repository's `target`."""
    import os

    env = os.environ.get("CARGO_TARGET_DIR")
    if env:
        return Path(env).expanduser()
    cache = Path.home() / ".cache" / "silencio-target"
    return cache if cache.is_dir() else repo / "target"


def target_label(target: Path, repo: Path) -> str:
    """How committed figures name the cargo target directory: repository-relative when it is
    inside the repository, else `$CARGO_TARGET_DIR` (a build cache elsewhere on the machine)."""
    try:
        return str(target.resolve().relative_to(repo.resolve()))
    except ValueError:
        return "$CARGO_TARGET_DIR"


def write_json(path: Path, doc: dict, repo: Path) -> None:
    """Writes a run's results to `path` (parents created), this machine's paths made portable."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable_paths(doc, repo), indent=2) + "\n")
