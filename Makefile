# sxtwin: two commands do all the set-up on a fresh machine.
#   make run   - create .venv, install, start the main job
#   make test  - create .venv, install, run lint, type check and the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest clean bench interop chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole stack: simulated plant (OPC UA), twin, API and dashboard on 127.0.0.1:8000.
run: $(STAMP)
	$(BIN)/sxtwin up

lint: $(STAMP)
	$(BIN)/ruff check models opcua twin api sxtwin tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

# node-opcua, an independent OPC UA stack for tests/interop (pinned in its package-lock.json);
# best effort: without npm or the registry the interop test is skipped and says why.
INTEROP := tests/interop
$(INTEROP)/node_modules/.installed: $(INTEROP)/package.json $(INTEROP)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		(cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error) && touch $@ \
		|| echo "node-opcua could not be installed: the interop test will be skipped" >&2; \
	else echo "npm not found: the node-opcua interop test will be skipped" >&2; fi

interop: $(INTEROP)/node_modules/.installed

# Debian's chromium for the dashboard test (tests/api/test_dashboard.py), best effort: without
# it (not root, no apt) that test is skipped and says why. No browser is downloaded otherwise.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium could not be installed: the dashboard test will be skipped" >&2; \
		else echo "chromium not found: the dashboard test will be skipped" >&2; fi; }

test: lint typecheck interop chromium pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
