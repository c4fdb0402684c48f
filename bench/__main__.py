"""``python -m bench [name ...]``: runs the benchmarks (all, or the named ones) and writes
``bench/results.json`` and ``bench/RESULTS.md``. Results of benchmarks not run this time are kept
from the previous file, marked with the run they came from."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from bench import cost, scale_model
from localcloud.template import ROOT

BENCH_DIR = ROOT / "bench"
RESULTS_JSON = BENCH_DIR / "results.json"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
WORK_DIR = ROOT / ".localcloud" / "bench"
# In the order they run and appear; the cheap ones first.
BENCHMARKS = ("cold_start", "planner_scale", "read_path", "refresh_throughput", "webhook_delivery", "restart")


class Benchmark(Protocol):
    TITLE: str

    def run(self, workdir: Path) -> dict[str, Any]: ...

    def report(self, result: dict[str, Any]) -> str: ...


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory_kib = next(
        (int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), 0
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="name", help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)"
    )
    names = parser.parse_args().names or list(BENCHMARKS)
    if unknown := set(names) - set(BENCHMARKS):
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    previous = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {"benchmarks": {}}
    run = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit(), "machine": machine()}
    results: dict[str, Any] = dict(previous.get("benchmarks", {}))
    for name in names:
        benchmark = cast(Benchmark, importlib.import_module(f"bench.{name}"))
        print(f"bench: {name} ...", flush=True)
        began = time.monotonic()
        # Kept after the run (logs of the local cloud above all), emptied before the next one.
        workdir = WORK_DIR / name
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        result = benchmark.run(workdir)
        result["seconds"] = round(time.monotonic() - began, 1)
        result["run"] = run["started_at"]
        results[name] = result
        print(f"bench: {name} done in {result['seconds']} s", flush=True)
    document: dict[str, Any] = {
        "run": run,
        "benchmarks": {name: results[name] for name in BENCHMARKS if name in results},
    }
    # Both models rest on the scheduled refresh (results from before it was measured have none).
    if "scheduled" in results.get("refresh_throughput", {}):
        document["cost"] = cost.estimate(document["benchmarks"])
        if "planner_scale" in results:
            document["scale_10m"] = scale_model.estimate(document["benchmarks"])
    RESULTS_JSON.write_text(json.dumps(document, indent=2, default=str) + "\n")
    RESULTS_MD.write_text(render(document))
    print(f"bench: wrote {RESULTS_JSON.relative_to(ROOT)} and {RESULTS_MD.relative_to(ROOT)}")


def render(document: dict[str, Any]) -> str:
    run = document["run"]
    spec = run["machine"]
    sections = [
        "# Benchmark results\n",
        "Written by `make bench` (`python -m bench`); do not edit by hand. Every figure was measured on the "
        "machine below, over loopback, against the local cloud (moto in server mode, the mock provider); "
        "ratios compare figures from the same run. The method of each benchmark is in its module under "
        "`bench/` and summarised in its section.\n",
        f"- Run: {run['started_at']}, commit `{run['commit']}`",
        f"- Machine: {spec['cpu']}, {spec['cores']} cores, {spec['memory_gib']} GiB, {spec['os']}, "
        f"Python {spec['python']}\n",
    ]
    for name, result in document["benchmarks"].items():
        benchmark = cast(Benchmark, importlib.import_module(f"bench.{name}"))
        sections.append(f"## {benchmark.TITLE}\n")
        if result["run"] != run["started_at"]:
            sections.append(f"_From the run of {result['run']}._\n")
        sections.append(benchmark.report(result).rstrip() + "\n")
        sections.append(f"_Took {result['seconds']} s._\n")
    if "cost" in document:
        sections.append("## Cost per 1 million linked accounts per month\n")
        sections.append(cost.report(document["cost"]) + "\n")
    if "scale_10m" in document:
        sections.append("## The whole service at 10 million accounts\n")
        sections.append(scale_model.report(document["scale_10m"]) + "\n")
    return "\n".join(sections)


if __name__ == "__main__":
    main()
