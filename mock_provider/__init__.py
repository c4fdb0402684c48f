"""A sandbox of utility provider APIs for development and tests (never deployed).

Each simulated provider has its own auth, payload shape and pagination; bills are generated
deterministically from the account, so tests can assert exact amounts. Fault controls (latency,
errors, outage, rate limits) and request counters are under ``/_admin``. See README.md here.
"""
