"""Query-string parsing the providers share."""

from __future__ import annotations

from flask import request


def int_arg(name: str, default: int, minimum: int, maximum: int | None = None) -> int | None:
    """The query parameter as an int within [minimum, maximum], the default if absent, None if invalid."""
    text = request.args.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        return None
    return value
