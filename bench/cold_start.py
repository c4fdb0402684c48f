"""Cold start: what a fresh Lambda execution environment spends importing each function's handler.

For every function in ``template.yaml`` a fresh interpreter (this venv's Python 3.13, the Lambda
runtime) puts the function's code directory and the layer on ``sys.path`` as ``localcloud.worker``
does, with the environment the function gets locally, and imports its handler module (module-level
set-up included). The child times the import itself with ``time.perf_counter()``; the parent times
the whole process, interpreter start-up and exit included. The baseline, measured in the same run, is
a fresh interpreter doing ``import boto3`` and creating one DynamoDB client. Runs are interleaved
round-robin over the functions and the baseline, so machine noise hits all of them alike, and one
extra ``python -X importtime`` run per subject shows which imports dominate.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcloud.provision import ACCOUNT_ID, Stack
from localcloud.template import ROOT, FunctionSpec, function_specs, load_template

TITLE = "Cold start: importing each function's handler"
RUNS = 15
TARGET_RATIO = 1.5
REGION = "us-east-1"
BASELINE = "baseline"
LAYER_DIR = ROOT / "layers" / "common"
TOP_IMPORTS = 6
TRACED_RUNS = 3

# The child: wall and CPU time from before the import to the handler in hand, imported as
# localcloud.worker imports it.
FUNCTION_CHILD = """\
import time
began, began_cpu = time.perf_counter(), time.process_time()
import importlib, sys
code_dir, layer_dir, module, handler = sys.argv[1:5]
sys.path[:0] = [code_dir, layer_dir]
{import_handler}
print(time.perf_counter() - began, time.process_time() - began_cpu)
"""
WORKER_IMPORT = "getattr(importlib.import_module(module), handler)"
# -X importtime sees only import statements' machinery, not importlib.import_module: the traced child
# uses __import__, so the handler module heads its own tree.
TRACED_IMPORT = "__import__(module)\ngetattr(sys.modules[module], handler)"
BASELINE_CHILD = """\
import time
began, began_cpu = time.perf_counter(), time.process_time()
import sys
import boto3
boto3.client("dynamodb", region_name=sys.argv[1])
print(time.perf_counter() - began, time.process_time() - began_cpu)
"""
_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")
_MEASURES = ("import_ms", "import_cpu_ms", "process_ms")


@dataclass(frozen=True)
class Subject:
    """One thing to cold-start: a function, or the baseline."""

    name: str
    command: list[str]
    # The same with the import made visible to ``-X importtime``.
    traced_command: list[str]
    environment: dict[str, str]
    # Whose imports the heaviest-imports list attributes: the function's own code; boto3's for the baseline.
    owners: tuple[str, ...]


def run(workdir: Path) -> dict[str, Any]:
    return {
        "runs": RUNS,
        "target_ratio": TARGET_RATIO,
        "python": sys.version.split()[0],
        "subjects": measure(subjects(workdir), workdir),
    }


def subjects(workdir: Path) -> list[Subject]:
    """Every function of the template, then the baseline."""
    template = load_template()
    stack = _placeholder_stack(template)
    found = [
        Subject(
            name=spec.logical_id,
            command=_function_command(spec, WORKER_IMPORT),
            traced_command=_function_command(spec, TRACED_IMPORT),
            environment=_environment(stack, spec, workdir),
            owners=(spec.module.split(".")[0], "billhub"),
        )
        for spec in function_specs(template)
    ]
    baseline = [sys.executable, "-c", BASELINE_CHILD, REGION]
    return [*found, Subject(BASELINE, baseline, baseline, _environment(stack, None, workdir), ("boto3",))]


def measure(subjects: list[Subject], workdir: Path, runs: int = RUNS) -> dict[str, Any]:
    """Medians over ``runs`` cold starts of each subject, round-robin; ratios to the one named baseline."""
    # One untimed round first: byte-code caches written, files in the page cache.
    for subject in subjects:
        _run_child(subject, workdir)
    samples: dict[str, dict[str, list[float]]] = {s.name: {m: [] for m in _MEASURES} for s in subjects}
    for _ in range(runs):
        for subject in subjects:
            for measure_name, value in zip(_MEASURES, _run_child(subject, workdir), strict=True):
                samples[subject.name][measure_name].append(round(value, 1))
    medians = {
        name: {m: statistics.median(values) for m, values in figures.items()} for name, figures in samples.items()
    }
    base = medians[BASELINE]
    results: dict[str, Any] = {}
    for subject in subjects:
        median = medians[subject.name]
        results[subject.name] = {
            **{m: round(median[m], 1) for m in _MEASURES},
            **{m.replace("_ms", "_ratio"): round(median[m] / base[m], 2) for m in _MEASURES},
            "import_iqr_ms": _iqr(samples[subject.name]["import_ms"]),
            "top_imports": _top_imports(subject, workdir),
            "samples": samples[subject.name],
        }
    return results


def _function_command(spec: FunctionSpec, import_handler: str) -> list[str]:
    script = FUNCTION_CHILD.format(import_handler=import_handler)
    return [sys.executable, "-c", script, str(spec.code_dir), str(LAYER_DIR), spec.module, spec.handler]


def _placeholder_stack(template: dict[str, Any]) -> Stack:
    """The template's references resolved to plausible values, as provisioning would: the parameters'
    defaults and made-up names and ARNs (nothing is called at import, so nothing needs to exist)."""
    parameters = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    stack = Stack(name="bench", region=REGION, parameters=parameters)
    for logical_id, resource in template["Resources"].items():
        service = resource["Type"].split("::")[1].lower()
        arn = f"arn:aws:{service}:{REGION}:{ACCOUNT_ID}:{logical_id}"
        if resource["Type"] == "AWS::SQS::Queue":
            stack.refs[logical_id] = f"https://sqs.{REGION}.amazonaws.invalid/{ACCOUNT_ID}/{logical_id}"
        elif resource["Type"] in ("AWS::SNS::Topic", "AWS::SecretsManager::Secret"):
            stack.refs[logical_id] = arn
        else:
            stack.refs[logical_id] = f"bench-{logical_id}"
        stack.attributes[logical_id] = {"Arn": arn, "QueueName": logical_id}
    return stack


def _environment(stack: Stack, spec: FunctionSpec | None, workdir: Path) -> dict[str, str]:
    """A Lambda-like environment: nothing inherited but ``PATH``, the function's variables resolved, and
    dummy credentials and endpoint; ``HOME`` is empty, so no ``~/.aws`` file is read."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # dummies: nothing is called
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # never reached: no call may happen at import
    }
    if spec is not None:
        environment.update({str(name): str(value) for name, value in stack.resolve(spec.environment).items()})
        environment["AWS_LAMBDA_FUNCTION_NAME"] = spec.logical_id
    return environment


def _run_child(subject: Subject, workdir: Path) -> tuple[float, float, float]:
    """Import wall ms and CPU ms (timed in the child), and the whole process's wall ms."""
    began = time.perf_counter()
    done = subprocess.run(
        subject.command, env=subject.environment, cwd=workdir, capture_output=True, text=True, check=False
    )
    process_ms = (time.perf_counter() - began) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{subject.name}: cold start child failed: {done.stderr.strip()[-2000:]}")
    wall, cpu = (float(value) * 1000 for value in done.stdout.split())
    return wall, cpu, process_ms


def _iqr(values: list[float]) -> float:
    quartiles = statistics.quantiles(values, n=4)
    return round(quartiles[2] - quartiles[0], 1)


def _top_imports(subject: Subject, workdir: Path) -> list[dict[str, Any]]:
    """The heaviest imports, medians of ``TRACED_RUNS`` runs under ``-X importtime``: each package the
    subject's own code (modules of the ``owners`` packages) reaches into, per importing module, at its
    cumulative time (only what was not loaded already), and each own module at its self time (its
    module-level code)."""
    runs = [_import_costs(subject, workdir) for _ in range(TRACED_RUNS)]
    costs = {key: statistics.median(run.get(key, 0) for run in runs) for key in runs[0]}
    heaviest = sorted(costs.items(), key=lambda item: item[1], reverse=True)[:TOP_IMPORTS]
    return [{"module": module, "ms": round(us / 1000, 1), "kind": kind} for (module, kind), us in heaviest]


def _import_costs(subject: Subject, workdir: Path) -> dict[tuple[str, str], int]:
    traced = [subject.traced_command[0], "-X", "importtime", *subject.traced_command[1:]]
    done = subprocess.run(traced, env=subject.environment, cwd=workdir, capture_output=True, text=True, check=True)
    lines = []
    for raw in done.stderr.splitlines():
        if match := _IMPORTTIME.match(raw):
            self_us, cumulative_us, indent, module = match.groups()
            lines.append((len(indent) // 2, module, int(self_us), int(cumulative_us)))
    costs: dict[tuple[str, str], int] = {}
    # Lines come in completion order: a module's importer is the next line one level shallower.
    for index, (depth, module, self_us, cumulative_us) in enumerate(lines):
        importer = next((m for d, m, _, _ in lines[index + 1 :] if d == depth - 1), None)
        package = module.split(".")[0]
        if package in subject.owners:
            costs[(module, "self")] = self_us
        elif importer is not None and importer.split(".")[0] in subject.owners:
            # A package imported in pieces (pydantic loads its parts lazily) counts once per importer.
            key = (package, f"from {importer}")
            costs[key] = costs.get(key, 0) + cumulative_us
    return costs


def report(result: dict[str, Any]) -> str:
    subjects = result["subjects"]
    target = result["target_ratio"]
    rows = [
        "| function | import ms | x baseline | import CPU ms | x baseline | whole process ms | x baseline "
        "| import IQR ms | within target (wall / CPU) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    met: list[str] = []
    partly: list[str] = []
    missed: list[str] = []
    for name, s in subjects.items():
        wall_ok, cpu_ok = s["import_ratio"] <= target, s["import_cpu_ratio"] <= target
        ratios = f"{s['import_ratio']}x wall, {s['import_cpu_ratio']}x CPU"
        if name == BASELINE:
            label, verdict = "baseline: `import boto3` + a DynamoDB client", ""
        else:
            label, verdict = name, f"{_yes_no(wall_ok)} / {_yes_no(cpu_ok)}"
            if wall_ok and cpu_ok:
                met.append(f"{name} ({ratios})")
            elif wall_ok or cpu_ok:
                partly.append(f"{name} ({ratios})")
            else:
                missed.append(f"{name} ({ratios}; beyond boto3 it imports {_heaviest_beyond_boto3(s)})")
        rows.append(
            f"| {label} | {s['import_ms']} | {s['import_ratio']} | {s['import_cpu_ms']} | {s['import_cpu_ratio']} "
            f"| {s['process_ms']} | {s['process_ratio']} | {s['import_iqr_ms']} | {verdict} |"
        )
    heaviest = [
        f"- {name}: "
        + "; ".join(f"`{entry['module']}` {entry['ms']} ms ({entry['kind']})" for entry in s["top_imports"])
        for name, s in subjects.items()
    ]
    return "\n".join(
        [
            f"Median of {result['runs']} cold starts per function, Python {result['python']}.",
            "",
            *rows,
            "",
            f"Target (import at most {target}x the baseline's):",
            f"- met, wall and CPU time: {', '.join(met) or 'none'}",
            f"- met on one of the two only: {', '.join(partly) or 'none'}",
            f"- missed: {', '.join(missed) or 'none'}",
            "",
            "What a function imports beyond boto3 is what it spends over the baseline (which also pays for a "
            "client the functions create only at first use). CPU time is the steadier figure when other work "
            "shares the machine: wall time then also counts waiting for a core.",
            "",
            f"Heaviest imports (medians of {TRACED_RUNS} `python -X importtime` runs each, in wall time, so "
            "noisier than the table): where the function's own code (its handler module, `billhub`) imports "
            "another package, that import's cumulative time, counting only modules not loaded before it; each "
            "own module's self time, its module-level code, which also holds what pydantic imports lazily the "
            "first time a module uses it (`-X importtime` does not see `importlib.import_module`). For the "
            "baseline, the same for `boto3`'s own modules (client creation is not an import, so not listed).",
            "",
            *heaviest,
            "",
            "Method: for each function of `template.yaml`, a fresh interpreter (`sys.executable`, this venv's "
            "Python 3.13, the Lambda runtime) with the function's code directory and `layers/common` put first "
            "on `sys.path` as `localcloud.worker` does, and the function's environment (template variables "
            "resolved with the parameters' defaults and placeholder resource names, dummy credentials and "
            "endpoint, nothing else inherited but `PATH`) imports its handler module and looks the handler up. "
            "*Import ms* is timed inside the child with `time.perf_counter()` from before the import to the "
            "handler in hand (module-level set-up included), *import CPU ms* likewise with "
            "`time.process_time()`; *whole process ms* is timed by the parent from spawn to exit, interpreter "
            "start-up included (the same fixed cost on both sides, so its ratios are milder). The baseline is a "
            "fresh interpreter doing `import boto3; boto3.client('dynamodb')`, timed the same way. One untimed "
            "round writes the byte-code caches first; then runs go round-robin over the functions and the "
            "baseline, one process at a time, so machine noise falls on all alike. This venv holds development "
            "packages a Lambda layer does not (`httpx` finds `click`, `rich` and `pygments` and loads its "
            "command-line module; `jwt` finds `cryptography`), which makes the figures here somewhat higher "
            "than in Lambda; on the other hand `sam build` ships the layer without byte-code and Lambda cannot "
            "write it, so there every cold start also compiles the layer's modules, which this does not count.",
        ]
    )


def _yes_no(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _heaviest_beyond_boto3(subject: dict[str, Any]) -> str:
    entries = [entry for entry in subject["top_imports"] if entry["module"] != "boto3"][:3]
    return ", ".join(f"`{entry['module']}` {entry['ms']} ms" for entry in entries) or "nothing heavy"
