# The two commands: `make run` starts the service, `make test` runs lint and the tests.
# Both prepare the machine first: the venv, PostgreSQL and RabbitMQ, a Docker engine,
# the sandbox image, and the database schema.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export SANDBOX_IMAGE ?= taskservice/sandbox-python:3
export SANDBOX_DATA_IMAGE ?= taskservice/sandbox-python-data:3

.PHONY: run test chaos bench bench-events fuzz lint format prepare venv services docker image browser promtool nginx migrate compose-test compose clean

run: prepare
	@scripts/run.sh

# Tests marked runsc change the host's Docker engine (daemon.json, a reload): `make test-runsc`.
# Two test processes (pytest-xdist), each with a database and queues of its own: most of the
# suite's time is waiting on containers, servers restarting and deadlines, not the CPU. A file's
# tests stay in one process (--dist loadfile), so a module's service starts once.
TEST_PROCESSES ?= 2
test: venv services docker image browser promtool nginx compose lint
	$(BIN)/pytest -q -m "not runsc" -n $(TEST_PROCESSES) --dist loadfile

# gVisor: installs runsc and registers it with the local dockerd (scripts/enable-runsc.sh), then
# runs a task under it. Needs root; the engine's configuration stays changed afterwards.
.PHONY: test-runsc
test-runsc: venv services docker image
	$(BIN)/pytest -q -m runsc

# The contract test with many more generated cases per operation than `make test` runs.
fuzz: venv services docker image
	CONTRACT_EXAMPLES=$${CONTRACT_EXAMPLES:-2000} $(BIN)/pytest -q tests/test_contract.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

prepare: venv services docker image migrate

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

services:
	@scripts/ensure-services.sh

docker:
	@scripts/ensure-docker.sh

image: docker
	@scripts/build-sandbox-image.sh

browser:
	@scripts/ensure-browser.sh

promtool:
	@scripts/ensure-promtool.sh

# For tests/test_nginx.py, which runs deploy/nginx.conf in a real nginx.
nginx:
	@scripts/ensure-nginx.sh

# For tests/test_deploy_files.py, which validates the deployment files with `compose config`.
compose:
	@scripts/ensure-compose.sh

migrate: venv services
	$(BIN)/taskservice migrate

# A few hundred tasks through worker kills and a broker restart; prints the tally.
chaos: venv services docker image
	CHAOS_TASKS=$${CHAOS_TASKS:-300} $(BIN)/pytest -q -s tests/test_chaos.py

# Many hosts on one machine (network namespaces, a 3-node RabbitMQ cluster, 2 API replicas
# behind nginx) through a broker node stop, a worker host cut off, an API replica killed and a
# PostgreSQL restart; prints the tally. Root; about 5 minutes. `make test` runs a small version.
.PHONY: scale-test
scale-test: venv services docker image nginx
	SCALE_TASKS=$${SCALE_TASKS:-500} SCALE_WORKERS=$${SCALE_WORKERS:-3} SCALE_RATE=$${SCALE_RATE:-2.5} \
	  SCALE_FAULTS=$${SCALE_FAULTS:-node,cut,api,postgres} $(BIN)/pytest -q -s tests/test_scale.py

# The service against the sandbox's own cost, side by side (bench/*.py); a few minutes.
# Figures go to bench/results/*.json; BENCH_* variables size the runs (see each script).
bench: venv services docker image
	@command -v wrk >/dev/null || { test "$$(id -u)" = 0 && apt-get update -qq \
	  && apt-get install -y -qq wrk >/dev/null; } || { echo "bench: needs wrk (apt-get install wrk)" >&2; exit 1; }
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.wait_latency
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.waiters
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.footprint
	$(BIN)/python -m bench.files
	@$(BIN)/python -m bench.report

# 200 clients following tasks' live output (GET /task/{id}/events) while wrk reads statuses.
bench-events: venv services docker image
	@command -v wrk >/dev/null || { echo "bench-events: needs wrk (apt-get install wrk)" >&2; exit 1; }
	$(BIN)/python -m bench.events

# The Docker Compose deployment end to end: README's quick start, its curl walk-through through
# nginx, then teardown (scripts/compose-smoke.sh). About a minute warm; a few more the first time.
compose-test: docker
	@scripts/compose-smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
