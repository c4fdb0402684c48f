"""A sandbox of utility provider APIs for development and tests (never deployed).

Four simulated providers (``sparkgrid``, ``northgas``, ``clearwater``, ``fibrelink``), one module
each, with their own auth, payload dialect and pagination; bills are generated deterministically from
the account (``sandbox``), so tests can assert exact amounts. Shared pieces: fault injection and
counters (``control``), OAuth tokens (``tokens``, ``oauth``), bill revisions (``revisions``) and the
per-app state tying them together (``state``). Admin endpoints are under ``/_admin`` (``admin``).
See README.md here.
"""
