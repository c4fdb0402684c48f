"""The requests the README shows, read from its ```sh blocks, so that a test can run each one and check it
answers as documented (``tests/e2e/test_readme.py``; ``tests/unit/test_readme_requests.py`` checks that
every one can be read).

The README stays written for people; the conventions a test relies on are the ones a reader sees:

- each ``curl`` line ends with a comment that starts with its status, then optionally the shape of the
  answer (``# 201 {"user_id"}``), then, after a ``;``, other outcomes that the run does not produce
  (``; 409 email taken``). A bare name in a shape (``"user_id"``) is a key with any value, a
  ``"key": value`` pair a key with that value, ``"…"`` any value, and a ``"…"`` key other keys besides;
- ``NAME=$(curl … | python3 -c '…["field"]…')`` sets ``$NAME`` to that field of the answer;
- ``<name>`` in a URL or body is the field ``name`` of the latest answer that had one;
- a ```json block right after a ```sh block is a sample of its last request's answer (its keys, not its
  figures), and a ```http block the status line of that answer.

Lines that are not requests (``make``, ``aws``, SAM CLI) are skipped; any other command is an error, so
no new kind of request can slip past the test.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any

ELLIPSIS = "…"
NOT_REQUESTS = ("make", "aws", ".venv-tools/bin/sam")
_FENCE = re.compile(r"^```(\w*)\s*$")
_ASSIGNMENT = re.compile(r"^(?P<name>[A-Z_][A-Z0-9_]*)=\$\((?P<inner>.*)\)$", re.DOTALL)
_FIELD = re.compile(r"""\[["'](\w+)["']\]""")
_STATUS = re.compile(r"^(\d{3})\b\s*(.*)$", re.DOTALL)
# A quoted name right after "{" or "," and before "," or "}" is a key without a value.
_BARE_KEY = re.compile(r'(?<=[{,])(\s*)"([^"]*)"(?=\s*[,}])')


@dataclass(frozen=True)
class ReadmeRequest:
    line: int  # where the command starts in the README, 1-based
    command: str
    method: str
    url: str  # as written: $VARIABLES and <placeholders> still in it
    headers: dict[str, str]
    body: str | None
    status: int
    shape: Any = None  # the comment's shape of the answer, as JSON ("…" for any value)
    assigns: tuple[str, str] | None = None  # (variable, field of the answer)
    sample: Any = None  # a ```json block after the block, for its last request
    sample_status: int | None = None  # the status of a ```http block after the block
    documented_as: str = field(default="", compare=False)  # the comment, for messages


@dataclass(frozen=True)
class _Block:
    language: str
    first_line: int  # of the block's content, 1-based
    lines: list[str]
    end_line: int  # of the closing fence


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        start = index + 1
        end = next(i for i in range(start, len(lines)) if lines[i].strip() == "```")
        blocks.append(_Block(opening.group(1), start + 1, lines[start:end], end + 1))
        index = end + 1
    return blocks


def _unquoted(text: str, wanted: str) -> int:
    """Where ``wanted`` first appears outside shell quotes (a ``#`` only where a comment can start); -1 if not."""
    quote: str | None = None
    escaped = False
    for position, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == wanted and (wanted != "#" or position == 0 or text[position - 1].isspace()):
            return position
    return -1


def _logical_lines(block: _Block) -> list[tuple[int, str]]:
    """Each command with its continuation lines joined, and the line it starts on."""
    commands: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for offset, line in enumerate(block.lines):
        if not pending:
            start = block.first_line + offset
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        commands.append((start, " ".join(part.strip() for part in [*pending, line])))
        pending = []
    return commands


def parse_shape(text: str) -> Any:
    """A README shape (``{"job_id", "accounts"}``, ``{"token_type": "Bearer", "…"}``) as JSON."""
    return json.loads(_BARE_KEY.sub(lambda m: f'{m.group(1)}"{m.group(2)}": "{ELLIPSIS}"', text))


def _shape_in(outcome: str) -> Any:
    """The first ``{…}`` of what the comment says this request answers (before any ``;``)."""
    cut = _unquoted(outcome, ";")
    described = outcome if cut < 0 else outcome[:cut]
    start = described.find("{")
    if start < 0:
        return None
    depth = 0
    for position in range(start, len(described)):
        depth += {"{": 1, "}": -1}.get(described[position], 0)
        if depth == 0:
            return parse_shape(described[start : position + 1])
    raise ValueError(f"unbalanced braces in {outcome!r}")


def _curl(line: int, words: list[str]) -> tuple[str, str, dict[str, str], str | None]:
    method: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    body: str | None = None
    arguments = iter(words[1:])
    for word in arguments:
        if word in ("-s", "--silent"):
            continue
        if word in ("-X", "--request"):
            method = next(arguments)
        elif word in ("-H", "--header"):
            name, _, value = next(arguments).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data", "--data-raw"):
            body = next(arguments)
        elif word.startswith("-"):
            raise ValueError(f"README line {line}: curl option {word} is not one the README test understands")
        elif url is None:
            url = word
        else:
            raise ValueError(f"README line {line}: a second URL {word!r}")
    if url is None:
        raise ValueError(f"README line {line}: curl without a URL")
    return method or ("POST" if body is not None else "GET"), url, headers, body


def _request(line: int, command: str) -> ReadmeRequest | None:
    cut = _unquoted(command, "#")
    code, comment = (command, "") if cut < 0 else (command[:cut].strip(), command[cut + 1 :].strip())
    assigns: tuple[str, str] | None = None
    assignment = _ASSIGNMENT.match(code)
    if assignment:
        inner = assignment.group("inner")
        pipe = _unquoted(inner, "|")
        taken = _FIELD.search(inner[pipe:]) if pipe >= 0 else None
        if taken is None:
            raise ValueError(f"README line {line}: {assignment.group('name')}=$(…) must take a field of the answer")
        assigns = (assignment.group("name"), taken.group(1))
        code = inner[:pipe].strip()
    words = shlex.split(code)
    if words[0] in NOT_REQUESTS:
        return None
    if words[0] != "curl":
        raise ValueError(f"README line {line}: {words[0]!r} is neither a curl request nor a known command")
    documented = _STATUS.match(comment)
    if documented is None:
        raise ValueError(f"README line {line}: a request must end with '# <status> …', not {comment!r}")
    method, url, headers, body = _curl(line, words)
    return ReadmeRequest(
        line=line,
        command=code,
        method=method,
        url=url,
        headers=headers,
        body=body,
        status=int(documented.group(1)),
        shape=_shape_in(documented.group(2)),
        assigns=assigns,
        documented_as=comment,
    )


def readme_requests(text: str) -> list[ReadmeRequest]:
    """Every request of the README's ```sh blocks, in order, with the samples that follow their blocks."""
    requests: list[ReadmeRequest] = []
    blocks = _blocks(text)
    lines = text.splitlines()
    for index, block in enumerate(blocks):
        if block.language != "sh":
            continue
        found = [request for line, command in _logical_lines(block) if (request := _request(line, command))]
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        adjacent = following is not None and not any(
            lines[i].strip() for i in range(block.end_line, following.first_line - 2)
        )
        if found and following is not None and adjacent:
            last = found[-1]
            if following.language == "json":
                found[-1] = replace(last, sample=json.loads("\n".join(following.lines)))
            elif following.language == "http":
                found[-1] = replace(last, sample_status=int(following.lines[0].split()[1]))
        requests += found
    return requests


# ------------------------------------------------------------------ comparing an answer with its documentation
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?$")


def differences(documented: Any, answer: Any, values: bool, where: str = "") -> list[str]:
    """How an answer differs from its documented shape or sample: the keys of every object (``{}`` shows
    none, a ``"…"`` key allows others, an object keyed by currency codes is a per-currency map), each
    element of a list against the list's first documented object, and the format of dates and times.
    With ``values`` (a shape in a comment) every value written out must be the answer's too; a sample's
    figures are an example and only their keys and formats count (a ``null`` fits any of them)."""
    here = where or "the answer"
    if isinstance(documented, dict):
        if not isinstance(answer, dict):
            return [f"{here} is {type(answer).__name__}, documented as an object"]
        if not documented:
            return []
        if all(_CURRENCY.match(key) for key in documented):
            odd = sorted(key for key in answer if not _CURRENCY.match(key))
            return [f"{here} has keys {odd}, documented as a map of currencies"] if odd else []
        keys = set(documented) - {ELLIPSIS}
        problems = []
        missing, extra = sorted(keys - set(answer)), sorted(set(answer) - keys)
        if missing:
            problems.append(f"{here} lacks {missing}")
        if extra and ELLIPSIS not in documented:
            problems.append(f"{here} has undocumented {extra}")
        for key in sorted(keys & set(answer)):
            problems += differences(documented[key], answer[key], values, f"{where}.{key}" if where else key)
        return problems
    if isinstance(documented, list):
        if not isinstance(answer, list):
            return [f"{here} is {type(answer).__name__}, documented as a list"]
        template = next((item for item in documented if isinstance(item, dict)), None)
        if template is None:
            return []
        return [
            problem
            for position, item in enumerate(answer)
            for problem in differences(template, item, values, f"{where}[{position}]")
        ]
    if isinstance(documented, str) and ELLIPSIS in documented:
        return []
    if answer is None and not values:  # a sample's value is an example, and the field may be null today
        return []
    timestamp = isinstance(documented, str) and _TIMESTAMP.match(documented)
    if timestamp and _format_of(documented) != _format_of(answer):
        return [f"{here} is {answer!r}, documented in the format of {documented!r}"]
    if values and documented != answer:
        return [f"{here} is {answer!r}, documented as {documented!r}"]
    return []


def _format_of(value: Any) -> str:
    return re.sub(r"\d", "0", value) if isinstance(value, str) else repr(value)
