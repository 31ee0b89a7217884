# The README's two commands: `make demo` and `make test`. Both work on a fresh
# machine with only Python 3.11+ and the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_AUTH_MODE ?= disabled

# Root installs system packages itself; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast lint sysdeps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

# Reinstalled whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,gloo,mlflow]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/syncsgd demo

# What the tests need from the system: Debian's Chromium for the browser test,
# iproute2 (`ip netns`) for the multi-node test.
SYSTEM_PACKAGES := $(shell command -v chromium >/dev/null || echo chromium) \
                   $(shell command -v ip >/dev/null || echo iproute2)
sysdeps:
	@[ -z "$(strip $(SYSTEM_PACKAGES))" ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES); }

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy common worker service
	$(BIN)/lint-imports

# Everything: the real processes too (Ray, MPI, gloo, servers, the browser, namespaces).
test: lint sysdeps
	$(BIN)/python -m pytest

# Under a minute: lint, and the tests that start no process (the API in process, the engine).
test-fast: lint
	$(BIN)/python -m pytest -m "not slow" -q

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,gloo,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
