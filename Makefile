# The commands the README shows. Everything runs from the project's own virtualenv (.venv),
# which `make` creates and keeps in step with pyproject.toml: `make run` installs uwsgi_es alone,
# `make test` adds the test tools and every server's driver.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
# The other supported Pythons, on which `make test` runs the fork, mule and lifecycle tests again
# (pyenv's, else python3.X on PATH; see tests/support/interpreters.py).
OTHER_PYTHONS := 3.12 3.13

.PHONY: run test check lint format pytest interpreters side-by-side dist migrate clean postgres-binaries java-and-maven pgbouncer redis nginx wrk cassandra-up cassandra-down cassandra-cluster-up cassandra-cluster-down reliability bench bench-scale bench-rebuild bench-servers

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing uwsgi_es into $(VENV) (uWSGI compiles from source the first time: about a minute)"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off --disable-pip-version-check -e .
	@touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,cassandra]'
	@touch $(DEV_STAMP)

## run: serve the example API under `uwsgi --ini uwsgi.ini` at 127.0.0.1:8080 on SQLite
run: $(STAMP) migrate
	$(BIN)/uwsgi --ini uwsgi.ini

migrate: $(STAMP)
	$(BIN)/uwsgi-es migrate --ini uwsgi.ini

## dist: the wheel and the sdist, in dist/ (install the wheel anywhere: pip install dist/uwsgi_es-*.whl)
dist: $(DEV_STAMP)
	rm -rf dist && $(BIN)/python -m build --outdir dist .

## test: static checks, then the whole suite (real uWSGI processes included)
# In three steps, to keep a 2-core machine busy without disturbing what is timed: the other
# Pythons' virtualenvs are built while lint runs (nothing is measured then); the integration tests
# run alone (their load, latency and fault scenarios need the machine); then the store and unit
# tests run side by side with the `interpreters` runs (in-process tests on one core while those
# mostly wait on uWSGI). The two pytest runs on Python 3.11 split the suite by --ignore, so a new
# test directory is run by the second.
test:
	@$(MAKE) --no-print-directory -j3 lint $(OTHER_VENVS)
	@$(MAKE) --no-print-directory pytest PYTEST_ARGS="tests/integration $(PYTEST_ARGS)"
	@$(MAKE) --no-print-directory side-by-side SIDE_BY_SIDE_MAIN="--ignore=tests/integration"

check: test

lint: $(DEV_STAMP)
	$(BIN)/ruff format --check uwsgi_es tests bench examples
	$(BIN)/ruff check uwsgi_es tests bench examples
	$(BIN)/mypy --strict uwsgi_es

pytest: $(DEV_STAMP) postgres-binaries pgbouncer java-and-maven redis nginx wrk
	$(BIN)/pytest $(PYTEST_ARGS)

# The same uWSGI fork, mule and lifecycle tests (marker `interpreters`) on the other supported
# Pythons, each in a virtualenv of its own with uWSGI compiled for it. A missing Python fails.
# The runs go side by side (they mostly wait on uWSGI; each has its own temporary directory and
# servers), with SIDE_BY_SIDE_MAIN's tests on Python 3.11 when set (`make test` sets it), and each
# one's output is printed whole when all are done; any failure fails.
OTHER_VENVS := $(foreach v,$(OTHER_PYTHONS),$(VENV)-$(v)/.installed)
interpreters: side-by-side

side-by-side: $(OTHER_VENVS) $(DEV_STAMP) postgres-binaries pgbouncer java-and-maven redis nginx wrk
	@logs=$$(mktemp -d); \
	if [ -n "$(SIDE_BY_SIDE_MAIN)" ]; then \
	  ( $(BIN)/pytest -q -p no:cacheprovider --basetemp=$$logs/tmp-main $(SIDE_BY_SIDE_MAIN) \
	      > $$logs/main.log 2>&1; echo $$? > $$logs/main.rc ) & \
	fi; \
	for v in $(OTHER_PYTHONS); do \
	  ( $(VENV)-$$v/bin/pytest -m interpreters -q -p no:cacheprovider --basetemp=$$logs/tmp-$$v \
	      $(INTERPRETERS_ARGS) > $$logs/$$v.log 2>&1; echo $$? > $$logs/$$v.rc ) & \
	done; \
	wait; status=0; \
	if [ -n "$(SIDE_BY_SIDE_MAIN)" ]; then \
	  echo "== on Python 3.11: pytest $(SIDE_BY_SIDE_MAIN)"; cat $$logs/main.log; \
	  test "$$(cat $$logs/main.rc)" = 0 || status=1; \
	fi; \
	for v in $(OTHER_PYTHONS); do \
	  echo "== the fork, mule and lifecycle tests on Python $$v"; cat $$logs/$$v.log; \
	  test "$$(cat $$logs/$$v.rc)" = 0 || status=1; \
	done; \
	rm -rf $$logs; exit $$status

$(VENV)-%/.installed: pyproject.toml
	@python=$$($(PYTHON) tests/support/interpreters.py $*) || exit 1; \
	  test -x $(VENV)-$*/bin/python || $$python -m venv $(VENV)-$*
	$(VENV)-$*/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-$*/bin/python -m pip install --quiet -e '.[dev,postgres,cassandra]'
	@touch $@

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

## reliability: the fault-injection scenarios alone, writing their figures to docs/RELIABILITY.md
reliability: $(DEV_STAMP) postgres-binaries pgbouncer java-and-maven wrk
	@mkdir -p .cache && rm -f .cache/reliability.jsonl
	RELIABILITY_REPORT=$(CURDIR)/.cache/reliability.jsonl $(BIN)/pytest -m reliability -q -p no:cacheprovider
	$(BIN)/python -m tests.support.reliability_report .cache/reliability.jsonl > docs/RELIABILITY.md

## bench: uwsgi_es against its anchors (wrk, side by side); writes BENCHMARKS.md and BENCHMARKS.png
bench: $(DEV_STAMP) postgres-binaries java-and-maven wrk
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run

## bench-scale: costs as the events table grows (10^4, 10^6, 10^7 events; BENCH_SCALE_SIZES), into BENCHMARKS.md
bench-scale: $(DEV_STAMP) postgres-binaries wrk
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.scale

## bench-servers: the deposit and read rows under granian, gunicorn's ASGI worker and uvicorn against uWSGI, into BENCHMARKS.md
bench-servers: $(DEV_STAMP) postgres-binaries wrk
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.servers

## bench-rebuild: what `uwsgi-es rebuild` costs at 10^6 events (BENCH_REBUILD_EVENTS), with writes going on
bench-rebuild: $(DEV_STAMP) postgres-binaries
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.rebuild

# A real Cassandra 5.0 node from Maven Central (cached in .cache/cassandra), for development;
# `make test` starts and stops its own. The last line printed is host:port.
cassandra-up: $(DEV_STAMP) java-and-maven
	@$(BIN)/python -m uwsgi_es.testing.cassandra up

cassandra-down: $(DEV_STAMP)
	@$(BIN)/python -m uwsgi_es.testing.cassandra down

## cassandra-cluster-up: three Cassandra nodes on 127.0.0.1-3, one data centre (prints the settings)
cassandra-cluster-up: $(DEV_STAMP) java-and-maven
	@$(BIN)/python -m uwsgi_es.testing.cassandra_cluster up

cassandra-cluster-down: $(DEV_STAMP)
	@$(BIN)/python -m uwsgi_es.testing.cassandra_cluster down

# $(call apt-install,COMMAND,PACKAGE,WHO NEEDS IT): install PACKAGE when COMMAND is missing (as
# root, from Debian's packages), else say what to install. Never skipped: no server, no green run.
apt-install = if command -v $(1) >/dev/null || [ -x /usr/sbin/$(1) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(2) (apt-get install $(2))"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	else \
	  echo "$(3) need $(1): sudo apt-get install $(2)"; \
	  exit 1; \
	fi

# The deploy tests run a real nginx in front of uWSGI (deploy/nginx-uwsgi-es.conf); only the binary
# is used: the tests start their own, on a free port.
nginx:
	@$(call apt-install,nginx,nginx-light,the deploy tests)

# The PostgreSQL tests also run through a throwaway PgBouncer (deploy/pgbouncer.ini).
pgbouncer:
	@$(call apt-install,pgbouncer,pgbouncer,the PgBouncer tests)

# wrk drives the benchmarks and the read side's sustained-load test at the server's full rate.
wrk:
	@$(call apt-install,wrk,wrk,the benchmarks and the sustained-load test)

# The RQ and Celery tests run a throwaway redis-server.
redis:
	@$(call apt-install,redis-server,redis-server,the worker tests)

# Cassandra runs on JDK 17 and is fetched with Maven; install them when missing (as root).
java-and-maven:
	@if command -v java >/dev/null && command -v mvn >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing JDK 17 and Maven (apt-get install openjdk-17-jdk-headless maven)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null; \
	else \
	  echo "Cassandra needs java (17) and mvn: sudo apt-get install openjdk-17-jdk-headless maven"; \
	  exit 1; \
	fi

format: $(DEV_STAMP)
	$(BIN)/ruff format uwsgi_es tests bench examples
	$(BIN)/ruff check --fix uwsgi_es tests bench examples

clean:
	rm -rf $(VENV) $(foreach v,$(OTHER_PYTHONS),$(VENV)-$(v)) dist build .pytest_cache .mypy_cache .ruff_cache
