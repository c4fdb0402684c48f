"""Cold start: what a fresh Lambda execution environment spends importing each function's handler.

What is measured is what ships: the bench runs ``sam build --cached --parallel`` and copies each
function's build output and its layers' out of ``.aws-sam/build``, read-only (Lambda's ``/var/task``
and ``/opt`` are), and checks afterwards that no file was added. For every function of
``template.yaml`` a fresh Python 3.13 interpreter (the Lambda runtime; ``-S``, so no site-packages of
this machine's) with ``PYTHONDONTWRITEBYTECODE=1`` gets ``sys.path`` = [the function's build output,
each of its layers' ``python/`` (the Globals' first), a runtime-only environment holding just boto3 and
botocore at this project's pinned versions, as Lambda provides them (with their byte-code, as Lambda's
runtime has it), the standard library] and the function's environment, and imports its handler module
(module-level set-up included). The child times the import itself with ``time.perf_counter()``; the
parent times the whole process, interpreter start-up and exit included. The baseline, measured in the
same run, is the same fresh interpreter with the runtime environment alone doing ``import boto3`` and
creating one DynamoDB client.

A second column keeps the figure this bench gave before it measured the build: the handler imported
from the source tree with this development venv (``localcloud.worker``'s ``sys.path``, byte-code caches
written by an untimed first round), beside the same baseline in that venv.

Runs are interleaved round-robin over all subjects, so machine noise hits them alike, and one extra
``python -X importtime`` run per shipped subject shows which imports dominate.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from localcloud.provision import ACCOUNT_ID, Stack, parameter_values
from localcloud.template import ROOT, FunctionSpec, function_specs, load_template
from mock_provider.registry import service_parameters

TITLE = "Cold start: importing each function's handler as shipped"
RUNS = 15
TARGET_RATIO = 1.5
REGION = "us-east-1"
BASELINE = "baseline"
SHIPPED, DEV = "shipped", "dev"
LAYER_DIR = ROOT / "layers" / "common"
BUILD_DIR = ROOT / ".aws-sam" / "build"
SAM = ROOT / ".venv-tools" / "bin" / "sam"
# Kept between runs (the benchmark's own work folder is emptied each time), one per set of versions.
RUNTIME_ROOT = ROOT / ".localcloud" / "bench" / "runtime"
# boto3 and what it needs: what the Lambda runtime provides beside the standard library.
RUNTIME_DISTRIBUTIONS = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
    "snapshot-restore-py",
)
TOP_IMPORTS = 6
TRACED_RUNS = 3

# The child: wall and CPU time from before the import to the handler in hand, imported as Lambda's
# runtime (and localcloud.worker) imports it.
FUNCTION_CHILD = """\
import time
began, began_cpu = time.perf_counter(), time.process_time()
import importlib, sys
*paths, module, handler = sys.argv[1:]
sys.path[{replaced}] = paths
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
sys.path[{replaced}] = sys.argv[2:]
import boto3
boto3.client("dynamodb", region_name=sys.argv[1])
print(time.perf_counter() - began, time.process_time() - began_cpu)
"""
# The shipped children replace sys.path[0] (the current directory, for -c) with the given paths, as
# Lambda's sys.path starts with /var/task; the development children put theirs in front, as
# localcloud.worker does.
_SHIPPED_PATHS, _DEV_PATHS = "0:1", ":0"
_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")
_MEASURES = ("import_ms", "import_cpu_ms", "process_ms")
# The header of a .pyc: magic number, then flags (bit 0: hash-based, bit 1: check the source).
_PYC_HASH_BASED, _PYC_CHECK_SOURCE = 0b01, 0b10


@dataclass(frozen=True)
class Subject:
    """One thing to cold-start: a function, or the baseline, as shipped or from the development venv."""

    name: str
    kind: str
    command: list[str]
    # The same with the import made visible to ``-X importtime``.
    traced_command: list[str]
    environment: dict[str, str]
    # Whose imports the heaviest-imports list attributes: the function's own code; boto3's for the baseline.
    owners: tuple[str, ...]


@dataclass(frozen=True)
class Shipped:
    """The build output, copied read-only: each function's code directory and each layer's ``python/``."""

    functions: dict[str, Path]
    layers: dict[str, Path]
    # Host builds of native extensions the build ships for another architecture (see _native_for_host).
    native: list[str]


def run(workdir: Path) -> dict[str, Any]:
    template = load_template()
    specs = function_specs(template)
    _sam_build()
    runtime = runtime_environment()
    shipped = copy_build_output(template, specs, workdir / "shipped")
    before = _files(workdir / "shipped")
    try:
        found = subjects(template, specs, shipped, runtime, workdir)
        results = measure(found, workdir)
    finally:
        _writable(workdir / "shipped")
    written = sorted(str(path.relative_to(workdir)) for path in _files(workdir / "shipped") - before)
    if written:
        raise RuntimeError(f"the cold starts wrote into the build output: {', '.join(written[:10])}")
    return {
        "runs": RUNS,
        "target_ratio": TARGET_RATIO,
        "python": _interpreter_version(),
        "runtime": {"distributions": _runtime_versions(), "path": str(runtime.relative_to(ROOT))},
        "bytecode": {name: bytecode_census(path) for name, path in {**shipped.layers, **shipped.functions}.items()},
        "native_for_host": shipped.native,
        "files_written": written,
        **results,
    }


# ---------------------------------------------------------------- what ships


def _sam_build() -> None:
    """``sam build --cached --parallel``, as ``make template`` runs it, so the bench measures this tree."""
    environment = {
        **os.environ,
        # The build needs python3.13 on PATH: this venv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AWS_DEFAULT_REGION": REGION,
        "SAM_CLI_TELEMETRY": "0",
    }
    done = subprocess.run(
        [str(SAM), "build", "--cached", "--parallel"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sam build failed: {(done.stdout + done.stderr).strip()[-3000:]}")


def _layers_of(template: dict[str, Any], logical_id: str) -> list[str]:
    """The logical ids of the layers a function gets, in order: the Globals', then its own ``Layers``
    (SAM concatenates a function's lists with the Globals')."""
    properties = template["Resources"][logical_id]["Properties"]
    layers = [*template.get("Globals", {}).get("Function", {}).get("Layers", []), *properties.get("Layers", [])]
    return [layer["Ref"] for layer in layers]


def copy_build_output(template: dict[str, Any], specs: list[FunctionSpec], destination: Path) -> Shipped:
    """Each function's and layer's build output, copied and made read-only (for root, who may write
    anyway, ``PYTHONDONTWRITEBYTECODE`` and the check that no file was added keep it so)."""
    if destination.exists():
        _writable(destination)
        shutil.rmtree(destination)
    functions: dict[str, Path] = {}
    layers: dict[str, Path] = {}
    for spec in specs:
        functions[spec.logical_id] = _copy(BUILD_DIR / spec.logical_id, destination / spec.logical_id)
        for layer in _layers_of(template, spec.logical_id):
            if layer not in layers:
                layers[layer] = _copy(BUILD_DIR / layer, destination / layer) / "python"
    native = [entry for layer in layers.values() for entry in _native_for_host(layer)]
    for path in destination.rglob("*"):
        path.chmod(path.stat().st_mode & ~0o222)
    destination.chmod(destination.stat().st_mode & ~0o222)
    return Shipped(functions, layers, native)


def _copy(source: Path, destination: Path) -> Path:
    if not source.is_dir():
        raise RuntimeError(f"{source} is missing: sam build wrote no such artifact")
    shutil.copytree(source, destination, symlinks=True)
    return destination


def _native_for_host(layer: Path) -> list[str]:
    """The layer is built for Lambda's arm64; where this machine is not, each native extension built for
    another machine (its ELF header says so, whatever its name: ``_rust.abi3.so`` names none) gets its
    host build beside it, from the same distribution at the same version in this venv (pinned alike),
    named with this interpreter's own suffix, which the import system tries before ``.abi3.so``, so the
    layer imports here; the shipped file, the byte-code and every pure-Python module stay as shipped."""
    host_suffix = str(sysconfig.get_config_var("EXT_SUFFIX"))
    owners = _record_owners(layer)
    added = []
    for extension in sorted(layer.rglob("*.so")):
        if _elf_machine(extension) in (None, _elf_machine(Path(sys.executable).resolve())):
            continue
        relative = extension.relative_to(layer)
        distribution, version = owners.get(relative.as_posix(), ("?", "?"))
        if importlib.metadata.version(distribution) != version:
            raise RuntimeError(f"{relative}: the layer ships {distribution} {version}, this venv has another")
        host_name = extension.name.split(".")[0] + host_suffix
        shutil.copy2(_host_build(relative, distribution), extension.with_name(host_name))
        added.append(f"{relative.parent / host_name} ({distribution} {version})")
    return added


@cache
def _elf_machine(path: Path) -> int | None:
    """The ``e_machine`` of an ELF file's header (62 x86-64, 183 AArch64), or None if it is not one."""
    with path.open("rb") as file:
        header = file.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def _host_build(relative: Path, distribution: str) -> Path:
    """This venv's build of the extension module the layer ships at ``relative`` (a module of a package,
    or one at the top level, as cffi's ``_cffi_backend``), found without importing anything."""
    stem = relative.name.split(".")[0]
    spec = importlib.util.find_spec(relative.parts[0] if len(relative.parts) > 1 else stem)
    directories: list[Path] = []
    if spec is not None and len(relative.parts) > 1 and spec.submodule_search_locations is not None:
        directories = [Path(location).joinpath(*relative.parts[1:-1]) for location in spec.submodule_search_locations]
    elif spec is not None and len(relative.parts) == 1 and spec.origin is not None:
        directories = [Path(spec.origin).parent]
    host = _elf_machine(Path(sys.executable).resolve())
    for directory in directories:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = directory / f"{stem}{suffix}"
            if candidate.is_file() and _elf_machine(candidate) == host:
                return candidate
    raise RuntimeError(f"{relative}: no host build of {distribution} in this venv")


def _record_owners(layer: Path) -> dict[str, tuple[str, str]]:
    """Which installed distribution (name, version) each file of the layer belongs to, from the RECORDs."""
    owners = {}
    for record in layer.glob("*.dist-info/RECORD"):
        metadata = importlib.metadata.Distribution.at(record.parent).metadata
        for line in record.read_text().splitlines():
            owners[line.split(",", 1)[0]] = (metadata["Name"], metadata["Version"])
    return owners


def bytecode_census(directory: Path) -> dict[str, int]:
    """Modules shipped, and .pyc shipped for them that this interpreter's import uses without compiling:
    for its cache tag (cpython-313), its magic number, and hash-based without a source check
    (``unchecked-hash``), since a timestamp-based one is only as good as the mtimes the zip keeps."""
    tag = sys.implementation.cache_tag
    modules = list(directory.rglob("*.py"))
    usable = 0
    for module in modules:
        cached = module.parent / "__pycache__" / f"{module.stem}.{tag}.pyc"
        if cached.is_file():
            header = cached.read_bytes()[:8]
            flags = int.from_bytes(header[4:8], "little")
            if header[:4] == importlib.util.MAGIC_NUMBER and flags & _PYC_HASH_BASED and not flags & _PYC_CHECK_SOURCE:
                usable += 1
    return {"modules": len(modules), "bytecode": usable, "pyc_files": sum(1 for _ in directory.rglob("*.pyc"))}


def _files(directory: Path) -> set[Path]:
    return set(directory.rglob("*")) if directory.exists() else set()


def _writable(directory: Path) -> None:
    """Write permission back, so the next run can empty the work folder."""
    if not directory.exists():
        return
    for path in [directory, *directory.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)


# ---------------------------------------------------------------- the runtime's boto3


def _runtime_versions() -> dict[str, str]:
    """The runtime's distributions at the versions this project pins and installs (boto3 in
    requirements/dev.txt, what it depends on as this venv resolved them)."""
    versions = {name: importlib.metadata.version(name) for name in RUNTIME_DISTRIBUTIONS}
    pinned = re.search(r"^boto3==(\S+)$", (ROOT / "requirements" / "dev.txt").read_text(), re.MULTILINE)
    if pinned is None or pinned.group(1) != versions["boto3"]:
        raise RuntimeError("this venv's boto3 is not the one requirements/dev.txt pins: make install")
    return versions


def runtime_environment() -> Path:
    """A directory holding only boto3 and its dependencies, with their byte-code, read-only; made once
    per set of versions with pip, kept under ``.localcloud/bench/runtime/``."""
    versions = _runtime_versions()
    target = RUNTIME_ROOT / f"boto3-{versions['boto3']}-botocore-{versions['botocore']}"
    if (target / ".complete").exists():
        return target
    if target.exists():
        _writable(target)
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version}" for name, version in versions.items()]
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    done = subprocess.run(
        [*pip, "--target", str(target), *pins],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip could not make the runtime environment: {done.stderr.strip()[-2000:]}")
    shutil.rmtree(target / "bin", ignore_errors=True)
    (target / ".complete").touch()
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    return target


# ---------------------------------------------------------------- subjects


def _lambda_python() -> str:
    """The base interpreter (Python 3.13, the Lambda runtime) behind this venv, outside the venv."""
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not python.exists():
        raise RuntimeError(f"no {python}")
    return str(python)


def _interpreter_version() -> str:
    return sys.version.split()[0]


def subjects(
    template: dict[str, Any], specs: list[FunctionSpec], shipped: Shipped, runtime: Path, workdir: Path
) -> list[Subject]:
    """Every function of the template as shipped, the baseline as shipped, then the same from this venv."""
    stack = _placeholder_stack(template)
    python = _lambda_python()
    found: list[Subject] = []
    for spec in specs:
        paths = [
            str(shipped.functions[spec.logical_id]),
            *(str(shipped.layers[layer]) for layer in _layers_of(template, spec.logical_id)),
            str(runtime),
        ]
        found.append(
            Subject(
                name=spec.logical_id,
                kind=SHIPPED,
                command=_child(python, FUNCTION_CHILD, _SHIPPED_PATHS, WORKER_IMPORT, [*paths, *_handler(spec)]),
                traced_command=_child(python, FUNCTION_CHILD, _SHIPPED_PATHS, TRACED_IMPORT, [*paths, *_handler(spec)]),
                environment=_environment(stack, spec, workdir, shipped=True),
                owners=(spec.module.split(".")[0], "billhub"),
            )
        )
    baseline = _child(python, BASELINE_CHILD, _SHIPPED_PATHS, "", [REGION, str(runtime)])
    found.append(Subject(BASELINE, SHIPPED, baseline, baseline, _environment(stack, None, workdir, True), ("boto3",)))
    for spec in specs:
        arguments = [str(spec.code_dir), str(LAYER_DIR), *_handler(spec)]
        command = _child(sys.executable, FUNCTION_CHILD, _DEV_PATHS, WORKER_IMPORT, arguments)
        found.append(Subject(spec.logical_id, DEV, command, command, _environment(stack, spec, workdir), ()))
    dev_baseline = _child(sys.executable, BASELINE_CHILD, _DEV_PATHS, "", [REGION])
    found.append(Subject(BASELINE, DEV, dev_baseline, dev_baseline, _environment(stack, None, workdir), ()))
    return found


def _handler(spec: FunctionSpec) -> list[str]:
    return [spec.module, spec.handler]


def _child(python: str, script: str, replaced: str, import_handler: str, arguments: Iterable[str]) -> list[str]:
    # -S: no site-packages of this machine's for the shipped children (what they import must ship);
    # the development children keep their venv's.
    flags = ["-S"] if replaced == _SHIPPED_PATHS else []
    return [python, *flags, "-c", script.format(replaced=replaced, import_handler=import_handler), *arguments]


def _placeholder_stack(template: dict[str, Any]) -> Stack:
    """The template's references resolved to plausible values, as provisioning would: the parameters'
    defaults, the sandbox's endpoints and clients, and made-up names and ARNs (nothing is called at
    import, so nothing needs to exist)."""
    parameters = parameter_values(
        template.get("Parameters", {}), service_parameters("http://127.0.0.1:9", public_base_url="http://127.0.0.1:9")
    )
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


def _environment(stack: Stack, spec: FunctionSpec | None, workdir: Path, shipped: bool = False) -> dict[str, str]:
    """A Lambda-like environment: nothing inherited but ``PATH``, the function's variables resolved, and
    dummy credentials and endpoint; ``HOME`` is empty, so no ``~/.aws`` file is read. As shipped, no
    byte-code is written, as Lambda's read-only code directories cannot take it."""
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
    if shipped:
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
    if spec is not None:
        environment.update({str(name): str(value) for name, value in stack.resolve(spec.environment).items()})
        environment["AWS_LAMBDA_FUNCTION_NAME"] = spec.logical_id
    return environment


# ---------------------------------------------------------------- measuring


def measure(subjects: list[Subject], workdir: Path, runs: int = RUNS) -> dict[str, Any]:
    """Medians over ``runs`` cold starts of each subject, round-robin; ratios to the baseline of its kind."""
    # One untimed round first: files in the page cache (and the development venv's byte-code written).
    for subject in subjects:
        _run_child(subject, workdir)
    samples: dict[tuple[str, str], dict[str, list[float]]] = {
        (s.kind, s.name): {m: [] for m in _MEASURES} for s in subjects
    }
    for _ in range(runs):
        for subject in subjects:
            for measure_name, value in zip(_MEASURES, _run_child(subject, workdir), strict=True):
                samples[(subject.kind, subject.name)][measure_name].append(round(value, 1))
    medians = {key: {m: statistics.median(values) for m, values in figures.items()} for key, figures in samples.items()}
    results: dict[str, Any] = {SHIPPED: {}, DEV: {}}
    for subject in subjects:
        key = (subject.kind, subject.name)
        median, base = medians[key], medians[(subject.kind, BASELINE)]
        entry: dict[str, Any] = {
            **{m: round(median[m], 1) for m in _MEASURES},
            **{m.replace("_ms", "_ratio"): round(median[m] / base[m], 2) for m in _MEASURES},
            "import_iqr_ms": _iqr(samples[key]["import_ms"]),
        }
        if subject.kind == SHIPPED:
            entry["top_imports"] = _top_imports(subject, workdir)
        entry["samples"] = samples[key]
        results[subject.kind][subject.name] = entry
    return results


def _run_child(subject: Subject, workdir: Path) -> tuple[float, float, float]:
    """Import wall ms and CPU ms (timed in the child), and the whole process's wall ms."""
    began = time.perf_counter()
    done = subprocess.run(
        subject.command, env=subject.environment, cwd=workdir, capture_output=True, text=True, check=False
    )
    process_ms = (time.perf_counter() - began) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{subject.name} ({subject.kind}): cold start child failed: {done.stderr.strip()[-2000:]}")
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


# ---------------------------------------------------------------- the report


def report(result: dict[str, Any]) -> str:
    shipped, dev = result[SHIPPED], result[DEV]
    target = result["target_ratio"]
    rows = [
        "| function | import ms | x baseline | import CPU ms | x baseline | whole process ms | x baseline "
        "| import IQR ms | within target (wall / CPU) | dev venv import ms | x dev baseline |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    met: list[str] = []
    partly: list[str] = []
    missed: list[str] = []
    for name, s in shipped.items():
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
        d = dev.get(name, {})
        rows.append(
            f"| {label} | {s['import_ms']} | {s['import_ratio']} | {s['import_cpu_ms']} | {s['import_cpu_ratio']} "
            f"| {s['process_ms']} | {s['process_ratio']} | {s['import_iqr_ms']} | {verdict} "
            f"| {d.get('import_ms', '')} | {d.get('import_ratio', '')} |"
        )
    heaviest = [
        f"- {name}: "
        + "; ".join(f"`{entry['module']}` {entry['ms']} ms ({entry['kind']})" for entry in s["top_imports"])
        for name, s in shipped.items()
    ]
    census = ", ".join(
        f"{name} {figures['bytecode']} of {figures['modules']}" for name, figures in result["bytecode"].items()
    )
    versions = ", ".join(f"{name} {version}" for name, version in result["runtime"]["distributions"].items())
    native = "; ".join(result["native_for_host"]) or "none"
    return "\n".join(
        [
            f"Median of {result['runs']} cold starts per function, Python {result['python']}, of the "
            "`sam build` output, read-only, beside a bare boto3 in the same run.",
            "",
            *rows,
            "",
            f"Target (import at most {target}x the baseline's, as shipped):",
            f"- met, wall and CPU time: {', '.join(met) or 'none'}",
            f"- met on one of the two only: {', '.join(partly) or 'none'}",
            f"- missed: {', '.join(missed) or 'none'}",
            "",
            f"Byte-code shipped (modules with a usable cpython-313, unchecked-hash `.pyc`, of modules): {census}. "
            f"Files the cold starts wrote into the build output: {len(result['files_written'])}. "
            f"Runtime environment: {versions}.",
            "",
            "What a function imports beyond boto3 is what it spends over the baseline (which also pays for a "
            "client the functions create only at first use). CPU time is the steadier figure when other work "
            "shares the machine: wall time then also counts waiting for a core.",
            "",
            f"Heaviest imports as shipped (medians of {TRACED_RUNS} `python -X importtime` runs each, in wall "
            "time, so noisier than the table): where the function's own code (its handler module, `billhub`) "
            "imports another package, that import's cumulative time, counting only modules not loaded before "
            "it; each own module's self time, its module-level code, which also holds what pydantic imports "
            "lazily the first time a module uses it (`-X importtime` does not see `importlib.import_module`). "
            "For the baseline, the same for `boto3`'s own modules (client creation is not an import, so not "
            "listed).",
            "",
            *heaviest,
            "",
            "Method: `sam build --cached --parallel` first; each function's and each layer's output copied out "
            "of `.aws-sam/build` and made read-only, as Lambda's `/var/task` and `/opt` are (and checked "
            "afterwards: no file was added). For each function of `template.yaml`, a fresh interpreter (this "
            "venv's base Python 3.13, the Lambda runtime, with `-S`: none of this machine's site-packages) "
            "with `PYTHONDONTWRITEBYTECODE=1`, `sys.path` = [the function's build output, each of its layers' "
            "`python/` (the Globals' `CommonLayer`, then its own: `CryptoLayer` for the vault's users), "
            "a runtime-only environment with just boto3 and what it needs at the pinned versions, installed by "
            "pip with its byte-code as Lambda's runtime has it, the standard library], and the function's "
            "environment (template variables resolved with the parameters' defaults and placeholder resource "
            "names, dummy credentials and endpoint, nothing else inherited but `PATH`) imports its handler "
            "module and looks the handler up. *Import ms* is timed inside the child with "
            "`time.perf_counter()` from before the import to the handler in hand (module-level set-up "
            "included), *import CPU ms* likewise with `time.process_time()`; *whole process ms* is timed by the "
            "parent from spawn to exit, interpreter start-up included (the same fixed cost on both sides, so "
            "its ratios are milder). The baseline is the same interpreter with the runtime environment alone "
            "doing `import boto3; boto3.client('dynamodb')`, timed the same way. The layers are built for "
            "arm64; on another machine each native extension also gets its host build beside it, from the same "
            "distribution at the same version in this venv, named with this interpreter's own suffix, which "
            f"the import system tries first (here: {native}), so only those files are added to what ships. "
            "One untimed round puts the files in the page cache; then runs go round-robin over every subject, "
            "one process at a time, so machine noise falls on all alike. *Dev venv* is the figure this bench "
            "gave before it measured the build: the handler imported from the source tree with the "
            "development venv on `sys.path` (byte-code caches written by the untimed round, and development "
            "packages a function's layers lack, such as `click`, `rich`, and `cryptography` where it has no "
            "`CryptoLayer`), against `import boto3` in that venv.",
        ]
    )


def _yes_no(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _heaviest_beyond_boto3(subject: dict[str, Any]) -> str:
    entries = [entry for entry in subject["top_imports"] if entry["module"] != "boto3"][:3]
    return ", ".join(f"`{entry['module']}` {entry['ms']} ms" for entry in entries) or "nothing heavy"
