# Two commands on a fresh machine: `make run` and `make test`. Only python3 is assumed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-unit test-integration docs bench clean chaos prometheus chromium lint lock up down

install: $(STAMP)

# Pinned versions from the lock file, then the project itself (no resolver run).
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## The lock files, resolved again from pyproject.toml (newest versions its ranges allow).
lock: install
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --quiet --no-annotate -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --quiet --no-annotate --extra dev -o requirements-dev.lock

## Lint, format check and types (part of make test, so of CI).
lint: install
	$(BIN)/ruff check shared services schoolmig tests
	$(BIN)/ruff format --check shared services schoolmig tests
	$(BIN)/mypy shared services

## The containers (Docker Compose): Kafka, PostgreSQL, the services, collector, Prometheus, Grafana.
up:
	docker compose up -d --build

down:
	docker compose down

## Generate 3 demo schools and migrate them end to end on embedded Kafka + PostgreSQL.
run: install
	$(BIN)/schoolmig demo --out .demo --schools 3
	$(BIN)/schoolmig run .demo/school-1.json .demo/school-2.json .demo/school-3.json --report .demo/report.json \
	  --override-audit "demo data: a localStorage value is cut short on purpose; migrate the rest"

## Unit tests, then integration tests against a real broker and PostgreSQL started by fixtures.
## Two workers (TEST_WORKERS): each has its own broker, PostgreSQL and stack; a file's tests stay together.
TEST_WORKERS ?= 2
test: install prometheus chromium lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

## Debian's prometheus + promtool for the observability test (installed only when missing).
prometheus:
	bash deploy/prometheus/ensure-prometheus.sh

## Debian's chromium for the status page's browser test (installed only when missing; no download by playwright).
chromium:
	bash deploy/ensure-debian-package.sh chromium chromium

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install prometheus chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests/integration

## Benchmarks: figures printed and written under .bench/ (not tests: nothing here can flake).
## SCHOOLS=1000 make bench runs the end-to-end scale case.
SCHOOLS ?= 100
chaos: install
	$(BIN)/python -m tests.chaos --schools $(or $(CHAOS_SCHOOLS),20)

bench: install
	$(BIN)/python -m tests.bench.bench_mapping --schools 10
	$(BIN)/python -m tests.bench.bench_codec --schools 10
	$(BIN)/python -m tests.bench.bench_loader --schools 100
	$(BIN)/python -m tests.bench.bench_validator --schools 100
	$(BIN)/python -m tests.bench.bench_e2e --schools $(SCHOOLS)
	$(BIN)/python -m tests.bench.bench_changes --schools 5

## Regenerate the AsyncAPI document of the public contract (a test checks it is current).
docs: install
	$(BIN)/faststream docs gen schoolmig.contract:app --yaml --out docs/asyncapi.yaml
	$(BIN)/python -m schoolmig.contract docs/schemas/records

clean:
	rm -rf $(VENV) .schoolmig .demo .pytest_cache
