"""What `sam build` ships carries its byte-code: Lambda's /opt and /var/task are read-only, so a module
shipped without it is compiled again at every cold start."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localcloud.template import ROOT, function_specs

HASH_BASED, CHECK_SOURCE = 0b01, 0b10


def test_every_function_and_the_layer_build_with_the_makefile(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    built = {
        logical_id: resource.get("Metadata", {})
        for logical_id, resource in resources.items()
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
    }
    assert "CommonLayer" in built and len(built) == len(function_specs(template)) + 1
    for logical_id, metadata in built.items():
        assert metadata.get("BuildMethod") == "makefile", logical_id
        assert (ROOT / metadata["ContextPath"] / "Makefile").resolve() == ROOT / "Makefile", logical_id
    # The layer's wheels are for the architecture the functions run on.
    assert resources["CommonLayer"]["Metadata"]["BuildArchitecture"] == "arm64"
    assert template["Globals"]["Function"]["Architectures"] == ["arm64"]
    assert "_aarch64" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("logical_id", ["AuthorizerFunction", "FetchProviderFunction"])
def test_a_function_ships_its_modules_with_unchecked_hash_byte_code_for_cpython_313(
    template: dict[str, Any], tmp_path: Path, logical_id: str
) -> None:
    spec = next(spec for spec in function_specs(template) if spec.logical_id == logical_id)
    # As sam build runs it: in a copy of the CodeUri (a developer's __pycache__ included), ARTIFACTS_DIR set.
    source = tmp_path / "source"
    shutil.copytree(spec.code_dir, source)
    (source / "__pycache__").mkdir(exist_ok=True)
    (source / "__pycache__" / "stale.cpython-313.pyc").write_bytes(b"not byte-code")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ARTIFACTS_DIR": str(artifacts),
    }
    make = shutil.which("make")
    assert make is not None
    subprocess.run(  # noqa: S603 - our own Makefile, fixed arguments
        [make, "--makefile", str(ROOT / "Makefile"), f"build-{logical_id}"],
        cwd=source,
        env=environment,
        check=True,
        capture_output=True,
    )
    modules = sorted(path.name for path in artifacts.glob("*.py"))
    assert modules == sorted(path.name for path in spec.code_dir.glob("*.py"))
    assert sorted(path.name for path in (artifacts / "__pycache__").iterdir()) == [
        f"{Path(module).stem}.cpython-313.pyc" for module in modules
    ]
    for module in modules:
        header = (artifacts / "__pycache__" / f"{Path(module).stem}.cpython-313.pyc").read_bytes()[:8]
        assert header[:4] == importlib.util.MAGIC_NUMBER
        flags = int.from_bytes(header[4:8], "little")
        assert flags & HASH_BASED and not flags & CHECK_SOURCE
