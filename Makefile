# Two commands for a newcomer: `make run` and `make test`. Both install what they need first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The Lambda runtime is python3.13; `sam build` also needs it on PATH (the venv provides it).
# A pyenv shim may exist without 3.13 selected, so each candidate must actually run.
PYTHON_313 ?= $(shell for candidate in $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null) \
	$$(command -v python3.13 2>/dev/null); do "$$candidate" -c "" 2>/dev/null && { echo "$$candidate"; break; }; done)
# Where this Makefile is: `sam build` runs the build-* targets below from a copy of each CodeUri.
ROOT := $(patsubst %/,%,$(dir $(abspath $(firstword $(MAKEFILE_LIST)))))
VENV := .venv
# The layer's wheels for Lambda, fetched once (`make install`, or the first build) and kept here: the
# build itself installs offline, so it also works with no network and under a faked date (where TLS
# refuses the registry's certificate as not yet valid or expired).
LAMBDA_WHEELS := $(ROOT)/.wheels/lambda-arm64
# What each layer ships: the shared one, and cryptography for the functions that use the credential vault.
LAYER_REQUIREMENTS := layers/common/requirements.txt layers/crypto/requirements.txt
TOOLS := .venv-tools
# checkov pins boto3, networkx and packaging below what SAM CLI needs: a venv of its own.
CHECKOV := .venv-checkov
PY := $(VENV)/bin/python
PIP_QUIET := --quiet --disable-pip-version-check
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0
# pip's own notices about optional local mirrors are noise here.
# The filter always succeeds, so under pipefail a pip failure still fails the target.
PIP_FILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help install run test lint typecheck template unit integration e2e invoke remind clean openapi bench smoke

help:
	@echo "make run    - start the whole system locally (moto, mock provider, API on 127.0.0.1:3000);"
	@echo "              keeps its state in .localcloud/data across restarts, FRESH=1 starts empty"
	@echo "make test   - lint, type-check, validate and build the template, run every test"
	@echo "make bench  - run the benchmarks (about 25 minutes); writes bench/results.json and bench/RESULTS.md"
	@echo "make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json - run one handler against 'make run'"
	@echo "make remind [EMAIL=<address>] - make a user's daily reminder (the demo's by default) due now in 'make run'"
	@echo "make smoke API=<url> [PROVIDER=<name> CREDENTIALS='{...}' | CREDENTIALS_FILE=<path>] - the acceptance"
	@echo "              flow against a deployed API (default: ClearWater's sandbox demo key) with a throwaway user"

$(VENV)/.installed: requirements/dev.txt $(LAYER_REQUIREMENTS)
	@test -n "$(PYTHON_313)" || { echo "Python 3.13 (the Lambda runtime) is required: install it (e.g. pyenv install 3.13)"; exit 1; }
	$(PYTHON_313) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) -r requirements/dev.txt 2>&1 | $(PIP_FILTER)
	@touch $@

$(TOOLS)/.installed: requirements/tools.txt
	@test -n "$(PYTHON_313)" || { echo "Python 3.13 is required"; exit 1; }
	$(PYTHON_313) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install $(PIP_QUIET) -r requirements/tools.txt 2>&1 | $(PIP_FILTER)
	@touch $@

$(CHECKOV)/.installed: requirements/checkov.txt
	@test -n "$(PYTHON_313)" || { echo "Python 3.13 is required"; exit 1; }
	$(PYTHON_313) -m venv $(CHECKOV)
	$(CHECKOV)/bin/pip install $(PIP_QUIET) -r requirements/checkov.txt 2>&1 | $(PIP_FILTER)
	@touch $@

install: $(VENV)/.installed $(TOOLS)/.installed $(CHECKOV)/.installed $(LAMBDA_WHEELS)/.complete

# Users, accounts, bills, keys and the sandbox's tokens are kept in .localcloud/data across restarts;
# `make run FRESH=1` forgets them and starts empty (as does `make clean`).
run: $(VENV)/.installed
	$(PY) -m localcloud $(if $(filter 1,$(FRESH)),--fresh)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# checkov prints only what fails and fails on any finding not skipped in the template (each skip there
# carries its reason); --skip-download keeps it offline.
template: install
	$(TOOLS)/bin/sam validate --lint
	$(CHECKOV)/bin/checkov --quiet --compact --skip-download --framework cloudformation --file template.yaml
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(TOOLS)/bin/sam build --cached --parallel

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

# Fast tests first, two at a time (each worker has its own in-process moto and sandbox); then the
# end-to-end tests one at a time, since the fault campaign measures requests per second. The slowest
# tests are listed, to keep the whole under its budget (15 minutes on 2 cores).
test: install lint typecheck template
	$(PY) -m pytest -n 2 --durations=20 tests/unit tests/integration
	$(PY) -m pytest --durations=10 tests/e2e

# Timing targets live here, not in tests: cold start, read path, refresh throughput, planner scale.
# `make bench ONLY="read_path"` runs some of them and keeps the others' last results.
# The cold-start benchmark measures what `sam build` ships, so it builds first (the tools venv).
bench: $(VENV)/.installed $(TOOLS)/.installed
	$(PY) -m bench $(ONLY)

# Makes a user's daily reminder (the demo user's by default) due now in the running `make run`.
remind: $(VENV)/.installed
	$(PY) -m localcloud.remind $(EMAIL)

invoke: $(VENV)/.installed
	@test -n "$(FUNCTION)" -a -n "$(EVENT)" || { echo "usage: make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json"; exit 2; }
	$(PY) -m localcloud.invoke $(FUNCTION) $(EVENT)

# The acceptance flow against a deployed API (smoke/flow.py): a throwaway user from register to DELETE /me.
# The credentials reach it through the environment, never its command line (where ps would show them),
# and the recipe is not echoed.
smoke: export SMOKE_PROVIDER = $(PROVIDER)
smoke: export SMOKE_CREDENTIALS = $(CREDENTIALS)
smoke: export SMOKE_CREDENTIALS_FILE = $(CREDENTIALS_FILE)
smoke: $(VENV)/.installed
	@test -n "$(API)" || { echo "usage: make smoke API=https://<api id>.execute-api.<region>.amazonaws.com [PROVIDER=<name> CREDENTIALS='{...}' | CREDENTIALS_FILE=<path>] [TIMEOUT=<s>]"; exit 2; }
	@$(PY) -m smoke --api "$(API)" $(if $(TIMEOUT),--timeout "$(TIMEOUT)")

# The HTTP API's OpenAPI document, generated from the handlers and template.yaml (tests/unit/test_openapi.py
# fails while the committed file differs from what the code generates).
openapi: $(VENV)/.installed
	$(PY) -m localcloud.openapi > docs/openapi.json.tmp
	mv docs/openapi.json.tmp docs/openapi.json

clean:
	rm -rf .aws-sam .localcloud .wheels .pytest_cache .mypy_cache .ruff_cache

# ---------------------------------------------------------------- what `sam build` runs
# Every function and layer builds with `BuildMethod: makefile` (template.yaml): `sam build` runs
# `build-<LogicalId>` in a copy of the resource's CodeUri, with ARTIFACTS_DIR set. The targets ship
# byte-code, as Lambda's /opt and /var/task are read-only: without it every cold start compiles every
# module it imports. Hash-based and unchecked, since the zip keeps no trustworthy timestamps and the
# code never changes where it runs; for cpython-313, the runtime's, so the build runs python3.13.
# The layers' wheels are those of the functions' Architectures (arm64) for the runtime's glibc (2.34);
# pip matches each tag as given, so every manylinux one up to 2.34 is named.
LAMBDA_PYTHON ?= python3.13
LAMBDA_PLATFORMS := $(foreach tag,manylinux2014 manylinux_2_17 manylinux_2_28 manylinux_2_34,--platform $(tag)_aarch64)
LAMBDA_COMPILE = $(LAMBDA_PYTHON) -m compileall -q --invalidation-mode unchecked-hash

.PHONY: lambda-python build-CommonLayer build-CryptoLayer

lambda-python:
	@$(LAMBDA_PYTHON) -c 'import sys; sys.exit(sys.implementation.cache_tag != "cpython-313" and "the Lambda build needs CPython 3.13 as $(LAMBDA_PYTHON): put it on PATH")'

# Run from the project's root (the build's sub-make is too). Every layer's wheels, in one folder.
$(LAMBDA_WHEELS)/.complete: $(LAYER_REQUIREMENTS) $(VENV)/.installed
	rm -rf "$(LAMBDA_WHEELS)"
	$(PY) -m pip download $(PIP_QUIET) --only-binary=:all: --implementation cp --python-version 3.13 \
		$(LAMBDA_PLATFORMS) --dest "$(LAMBDA_WHEELS)" $(foreach file,$(LAYER_REQUIREMENTS),-r $(file)) \
		2>&1 | $(PIP_FILTER)
	touch "$@"

# A layer's requirements.txt (in the copy of its ContentUri sam build runs in), installed offline.
define install-layer-requirements
	$(MAKE) --no-print-directory -C "$(ROOT)" -f "$(ROOT)/Makefile" "$(LAMBDA_WHEELS)/.complete"
	$(LAMBDA_PYTHON) -m pip install $(PIP_QUIET) --no-compile --no-index --find-links "$(LAMBDA_WHEELS)" \
		--only-binary=:all: --implementation cp --python-version 3.13 $(LAMBDA_PLATFORMS) \
		--target "$(ARTIFACTS_DIR)/python" -r requirements.txt 2>&1 | $(PIP_FILTER)
	rm -rf "$(ARTIFACTS_DIR)/python/bin"
endef

build-CommonLayer: lambda-python
	$(install-layer-requirements)
	cp -R billhub "$(ARTIFACTS_DIR)/python/"
	find "$(ARTIFACTS_DIR)/python" -name __pycache__ -prune -exec rm -rf {} +
	$(LAMBDA_COMPILE) "$(ARTIFACTS_DIR)/python"

# cryptography and what it needs, only: the functions that use the credential vault get it beside the
# shared layer (template.yaml), so pyjwt in the others finds no cryptography to load at `import jwt`.
build-CryptoLayer: lambda-python
	$(install-layer-requirements)
	find "$(ARTIFACTS_DIR)/python" -name __pycache__ -prune -exec rm -rf {} +
	$(LAMBDA_COMPILE) "$(ARTIFACTS_DIR)/python"

# A function is its own modules only (functions/<name>/*.py); what they share is in the layer.
build-%Function: lambda-python
	cp *.py "$(ARTIFACTS_DIR)/"
	$(LAMBDA_COMPILE) "$(ARTIFACTS_DIR)"
