# The commands the README shows. Everything runs from the project's own virtualenv (.venv),
# which `make` creates and keeps in step with pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: run test check lint format pytest migrate clean postgres-binaries

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	@touch $(STAMP)

## run: serve the example API under `uwsgi --ini uwsgi.ini` at 127.0.0.1:8080 on SQLite
run: $(STAMP) migrate
	$(BIN)/uwsgi --ini uwsgi.ini

migrate: $(STAMP)
	$(BIN)/uwsgi-es migrate

## test: static checks, then the whole suite (real uWSGI processes included)
test: lint pytest

check: test

lint: $(STAMP)
	$(BIN)/ruff format --check uwsgi_es tests
	$(BIN)/ruff check uwsgi_es tests
	$(BIN)/mypy --strict uwsgi_es

pytest: $(STAMP) postgres-binaries
	$(BIN)/pytest $(PYTEST_ARGS)

# The tests start their own throwaway PostgreSQL from Debian's server binaries; install them when
# missing (as root), otherwise say what to install. Never skipped: no server, no green run.
postgres-binaries:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "$$ES_TEST_POSTGRES_BIN" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing PostgreSQL server binaries (apt-get install postgresql)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
	  echo "PostgreSQL server binaries are missing: sudo apt-get install postgresql (or set ES_TEST_POSTGRES_BIN)"; \
	  exit 1; \
	fi

format: $(STAMP)
	$(BIN)/ruff format uwsgi_es tests
	$(BIN)/ruff check --fix uwsgi_es tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
