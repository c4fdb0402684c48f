"""What `sam build` ships carries its byte-code: Lambda's /opt and /var/task are read-only, so a module
shipped without it is compiled again at every cold start. And cryptography ships only to the functions
that use the credential vault: with it importable, pyjwt loads its asymmetric algorithms at `import jwt`."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localcloud.template import ROOT, function_specs

HASH_BASED, CHECK_SOURCE = 0b01, 0b10


LAYERS = ("CommonLayer", "CryptoLayer")


def test_every_function_and_layer_builds_with_the_makefile(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    built = {
        logical_id: resource.get("Metadata", {})
        for logical_id, resource in resources.items()
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
    }
    assert set(LAYERS) <= set(built) and len(built) == len(function_specs(template)) + len(LAYERS)
    makefile = (ROOT / "Makefile").read_text()
    for logical_id, metadata in built.items():
        assert metadata.get("BuildMethod") == "makefile", logical_id
        assert (ROOT / metadata["ContextPath"] / "Makefile").resolve() == ROOT / "Makefile", logical_id
    for layer in LAYERS:
        # Each layer's wheels are for the architecture the functions run on, and fetched with the others'.
        assert resources[layer]["Metadata"]["BuildArchitecture"] == "arm64"
        assert f"build-{layer}:" in makefile
        requirements = f"{resources[layer]['Properties']['ContentUri'].rstrip('/')}/requirements.txt"
        assert requirements in _make_variable(makefile, "LAYER_REQUIREMENTS"), layer
    assert template["Globals"]["Function"]["Architectures"] == ["arm64"]
    assert "_aarch64" in makefile


def _make_variable(makefile: str, name: str) -> list[str]:
    found = re.search(rf"^{name} := (.*)$", makefile, re.MULTILINE)
    assert found is not None, name
    return found.group(1).split()


def test_only_the_functions_that_reach_the_credential_vault_get_cryptography(template: dict[str, Any]) -> None:
    globals_ = template["Globals"]["Function"].get("Layers", [])
    layers = {
        # SAM concatenates a function's Layers with the Globals'.
        spec.logical_id: [
            layer["Ref"]
            for layer in [*globals_, *template["Resources"][spec.logical_id]["Properties"].get("Layers", [])]
        ]
        for spec in function_specs(template)
    }
    vault_users = {
        spec.logical_id
        for spec in function_specs(template)
        if any(name.split(".")[0] == "cryptography" for name in _reached(spec.code_dir))
    }
    # Through billhub.credentials, the credential vault (the webhooks' to seal their signing secrets, the
    # delivery to open them).
    assert vault_users == {
        "LinkAccountFunction",
        "FetchProviderFunction",
        "WebhooksFunction",
        "DeliverWebhooksFunction",
    }
    for logical_id, names in layers.items():
        expected = ["CommonLayer", "CryptoLayer"] if logical_id in vault_users else ["CommonLayer"]
        assert names == expected, logical_id


def _reached(code_dir: Path) -> set[str]:
    """Every module a function's code can import, at any depth and wherever the import statement is (in a
    function, under TYPE_CHECKING): what the layer's modules reach counts too."""
    layer = ROOT / "layers" / "common"
    reached: set[str] = set()
    pending = list(code_dir.glob("*.py"))
    seen: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                reached.add(name)
                module = layer / name.replace(".", "/")
                pending += [file for file in (module.with_suffix(".py"), module / "__init__.py") if file.is_file()]
    return reached


def _pins(path: Path) -> dict[str, str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return dict(line.lower().split("==", 1) for line in lines if "==" in line)


def test_cryptography_and_what_it_needs_are_in_the_crypto_layer_only() -> None:
    common = _pins(ROOT / "layers" / "common" / "requirements.txt")
    crypto = _pins(ROOT / "layers" / "crypto" / "requirements.txt")
    assert set(crypto) == {"cryptography", "cffi", "pycparser"}
    assert not set(crypto) & set(common)
    # The development venv installs both, at the pins that ship.
    dev = (ROOT / "requirements" / "dev.txt").read_text().splitlines()
    assert {"-r ../layers/common/requirements.txt", "-r ../layers/crypto/requirements.txt"} <= set(dev)


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
