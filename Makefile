# The commands the README shows. Everything runs from the project's own virtualenv (.venv),
# which `make` creates and keeps in step with pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: run test check lint format pytest migrate clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format uwsgi_es tests
	$(BIN)/ruff check --fix uwsgi_es tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
