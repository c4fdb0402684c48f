"""Benchmarks (`make bench`): development-only, never deployed. Each module measures one thing on this
machine, over loopback only, in bounded time, and returns its figures for ``bench/results.json`` and
a section of ``bench/RESULTS.md``."""
