# Two commands on a fresh Debian machine: `make demo` and `make test`.
# Every install path installs exactly what requirements-lock.txt says (versions and hashes, every platform); uv
# itself comes from the package index pinned by hash (tools/uv-requirements.txt). `make test-latest` and
# `make test-lowest` try both ends of the declared ranges in a throwaway environment; `make lock` re-locks once the
# newest releases passed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-lock.txt
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
EXTRAS := --all-extras
TRY_VENV ?= /tmp/cachewarm-try

export UV_PYTHON := $(PYTHON)

# The suite in two processes (pytest-xdist), a test file to each at a time (module fixtures stay one per file): most
# of its time waits on servers and workers it started, so two files at once nearly halve the wall time.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

.PHONY: demo test test-unit test-latest test-lowest try-resolution lock relock faults lint bench system-deps clean

system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v redis-sentinel >/dev/null 2>&1 || missing="$$missing redis-sentinel"; \
	command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(UV): tools/uv-requirements.txt
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install -q --disable-pip-version-check --require-hashes -r tools/uv-requirements.txt
	touch $(UV)

# The environment becomes exactly the lock (what it does not list is removed), then cachewarm itself (editable, built
# with the locked setuptools). `pip check` fails when pyproject.toml asks for what the lock does not hold: re-lock.
$(STAMP): pyproject.toml $(LOCK) $(UV)
	[ -x $(BIN)/python ] || $(UV) venv --quiet $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --quiet --require-hashes $(LOCK)
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps --require-build-hashes --build-constraints $(LOCK) -e .
	VIRTUAL_ENV=$(VENV) $(UV) pip check --quiet || { echo "$(LOCK) does not satisfy pyproject.toml: run make lock"; exit 1; }
	touch $(STAMP)

demo: system-deps $(STAMP)
	$(BIN)/cachewarm demo

test: system-deps $(STAMP)
	$(BIN)/ruff check cachewarm tests bench examples tools
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_PARALLEL)

# The tests that need no server nor process of their own (tests/unit/, about 20 s): for a quick loop while editing.
test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# The suite, ruff and mypy against the newest releases the ranges allow, resolved now (the lock untouched).
test-latest: system-deps $(UV)
	RESOLUTION=highest TYPECHECK=1 $(MAKE) --no-print-directory try-resolution

# The suite with every direct dependency at its declared floor (their own dependencies as new as those allow).
# No ruff or mypy: older releases ship older type hints; the code is type-checked against the lock and the newest.
test-lowest: system-deps $(UV)
	RESOLUTION=lowest-direct TYPECHECK= $(MAKE) --no-print-directory try-resolution

try-resolution:
	rm -rf $(TRY_VENV)
	$(UV) venv --quiet $(TRY_VENV)
	VIRTUAL_ENV=$(TRY_VENV) $(UV) pip install --quiet --refresh --resolution $(RESOLUTION) \
		-e '.[sqlalchemy,django,postgresql]' --group dev
	VIRTUAL_ENV=$(TRY_VENV) $(UV) pip list --format freeze > $(TRY_VENV)/resolved.txt
	@echo "resolved ($(RESOLUTION)): $$(grep -E '^(celery|redis|httpx|aiohttp|prometheus.client|pydantic.settings|click|django|sqlalchemy|psycopg)==' $(TRY_VENV)/resolved.txt | tr '\n' ' ')"
	if [ -n "$(TYPECHECK)" ]; then $(TRY_VENV)/bin/ruff check cachewarm tests bench examples tools \
		&& $(TRY_VENV)/bin/mypy; fi
	CACHEWARM_TRY_RESOLUTION=$(RESOLUTION) PATH=$(TRY_VENV)/bin:$$PATH $(TRY_VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_PARALLEL)
	rm -rf $(TRY_VENV)

# Re-lock to the newest allowed releases, once the suite has passed on them (one universal file: every platform and
# Python the package supports; the extras, the dev group and the build backend). Commit it.
lock: test-latest relock

relock: $(UV)
	$(UV) pip compile --quiet --universal --generate-hashes --upgrade --all-extras --group dev --group build \
		pyproject.toml -o $(LOCK)
	$(MAKE) --no-print-directory $(STAMP)

faults: system-deps $(STAMP)
	$(BIN)/pytest -q -m faults tests/faults

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(UV_HOME) .pytest_cache .mypy_cache
