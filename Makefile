# Two commands for a fresh machine: `make demo` (the main job) and `make test` (every test).
# Both create .venv and install everything they need, Debian packages included.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
STAMP   := $(VENV)/.lstmkit-installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test lint typecheck pytest bench clean

# Set-up also builds the fused kernels (about a minute, once per sources and torch version), so that
# no later command waits for the compiler; with a build in the cache it only checks (seconds).
setup: $(STAMP)
	$(PY) -m lstmkit.kernels build || echo "(lstmkit runs without its fused kernels here)"

$(STAMP): pyproject.toml Makefile
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (for the explorer's browser tests)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	@command -v g++ >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq g++ >/dev/null; }
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel of torch first, so that the package's torch>=2.4 does not pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[text,export,kernels,dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/lstmkit demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest -q --durations=10

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q --durations=10

bench: setup
	$(VENV)/bin/lstmkit bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
