"""docs/errors.md lists every error code the service can answer with, at the status it answers it with,
and nothing the code no longer produces; errors that say when to try again all say it one way."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from http import HTTPStatus
from pathlib import Path

import billhub
from billhub.errors import ServiceError
from billhub.idempotency import IdempotencyInProgress

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_CODE = [*sorted((ROOT / "layers" / "common" / "billhub").rglob("*.py")), *sorted(ROOT.glob("functions/*/*.py"))]
ERRORS_DOC = ROOT / "docs" / "errors.md"
_ROW = re.compile(r"^\| `([a-z_]+)` \| (\d{3}) \|", re.MULTILINE)


def documented() -> dict[str, int]:
    rows = _ROW.findall(ERRORS_DOC.read_text())
    codes = [code for code, _ in rows]
    assert len(codes) == len(set(codes)), "a code is listed twice in docs/errors.md"
    return {code: int(status) for code, status in rows}


def _subclasses(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    found = []
    for path in PRODUCT_CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name:
                found.append((path, node))
    return found


def _status(node: ast.expr) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "HTTPStatus":
        return int(HTTPStatus[node.attr])
    raise AssertionError(f"a status the test cannot read: {ast.unparse(node)}")


def produced() -> dict[str, set[int]]:
    """Every code the service can answer with, and its statuses: each ServiceError subclass of the layer
    (every module imported, so none is missed), the base class if anything raises it itself, and every
    ``error_response(status, "code", …)`` the resolver writes without an exception class."""
    for module in pkgutil.walk_packages(billhub.__path__, "billhub."):
        importlib.import_module(module.name)
    codes: dict[str, set[int]] = {}
    classes = _subclasses(ServiceError)
    if _calls("ServiceError"):
        classes.append(ServiceError)
    for cls in classes:
        codes.setdefault(cls.code, set()).add(cls.status)
    for path, call in _calls("error_response"):
        status, code = call.args[0], call.args[1]
        if ast.unparse(code) == "error.code":  # the resolver answering a ServiceError: its classes are above
            continue
        assert isinstance(code, ast.Constant), f"{path}: error_response with a computed code: {ast.unparse(call)}"
        codes.setdefault(str(code.value), set()).add(_status(status))
    return codes


def test_every_error_code_is_documented_once_with_its_status_and_nothing_else() -> None:
    listed, answered = documented(), produced()
    assert len(answered) > 20  # the scan found the codes, not nothing
    assert sorted(set(answered) - set(listed)) == [], "codes the service answers with, missing in docs/errors.md"
    assert sorted(set(listed) - set(answered)) == [], "codes docs/errors.md lists that nothing produces"
    wrong = {code: (listed[code], statuses) for code, statuses in answered.items() if statuses != {listed[code]}}
    assert wrong == {}, "codes whose status in docs/errors.md is not (only) the one the code answers with"


def test_no_error_in_the_functions_escapes_the_scan() -> None:
    # Exception classes with a code of their own live in the layer, where the scan imports them.
    for path in ROOT.glob("functions/*/*.py"):
        classes = [node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)]
        assert classes == [], f"{path} defines {classes}: move error classes to the layer"


def test_retry_after_is_sent_one_way_the_header_and_details_alike() -> None:
    error = IdempotencyInProgress("Still running.", retry_after=2)
    assert (error.headers, error.details) == ({"Retry-After": "2"}, {"retry_after": 2})
    # and no product code writes the header by hand, where it could drift from details
    by_hand = [
        str(path.relative_to(ROOT))
        for path in PRODUCT_CODE
        if path.name != "errors.py" and re.search(r"""["']Retry-After["']\s*:""", path.read_text())
    ]
    assert by_hand == []
