# Two commands do all the set-up: `make run` (the whole system) and `make test` (the test suite).
# Both create the virtual environment and install the project on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The tests use their own Redis database, so they never take a running system's jobs.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test install lint lock wheel-check docker-check docker-rehearse

# Exact versions from the dev lock (the product's plus the dev extra's), then the project itself
# without resolving again; a changed lock file reinstalls.
$(VENV)/.installed: requirements/dev-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev-lock.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The same checks as .pre-commit-config.yaml, over the whole tree.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

# Regenerates both lock files from pyproject.toml (after changing a dependency there).
# The dev lock is constrained by the product lock, so the two agree on every shared package.
PIP_COMPILE := $(VENV)/bin/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links
lock: install
	$(PIP_COMPILE) --output-file requirements/lock.txt pyproject.toml
	$(PIP_COMPILE) --extra dev --constraint requirements/lock.txt --output-file requirements/dev-lock.txt pyproject.toml

# The product wheel: templates and static files in, devtools/ and tests/ out. Built from the sdist,
# as a release would be, so no stale build/ directory can leak files into it.
wheel-check: install
	rm -rf var/wheel-check && mkdir -p var
	$(PY) -m build --outdir var/wheel-check . >var/wheel-check.log 2>&1 || (cat var/wheel-check.log; exit 1)
	$(PY) devtools/wheel_contents.py var/wheel-check/*.whl

# The Docker deployment, checked where no container can run (no Docker daemon here or in CI): hadolint
# on the Dockerfile, docker/compose.gpu.yaml current with docker/env.example, and both compose files
# against the vendored Compose Specification schema and the project's rules (a unit test). Where a
# `docker compose` plugin exists, its own `config` check runs too.
docker-check: install
	$(VENV)/bin/hadolint docker/Dockerfile
	$(PY) docker/gpu_workers.py --env-file docker/env.example --check
	$(PY) -m pytest -q tests/unit/test_docker_deployment.py
	@if docker compose version >/dev/null 2>&1; then \
	  made=; [ -e docker/.env ] || { cp docker/env.example docker/.env; made=1; }; \
	  docker compose -f docker/compose.yaml -f docker/compose.gpu.yaml config -q; status=$$?; \
	  [ -z "$$made" ] || rm -f docker/.env; exit $$status; \
	fi

# The same deployment rehearsed where no container runs (devtools/compose_rehearsal.py): every service
# of the project's image started as a process with Compose's command, environment and health check,
# against this machine's PostgreSQL and Redis, moto's S3 server and simulators; then a job per GPU
# worker, its output in the object store and downloaded through the web service.
docker-rehearse: install
	$(PY) -m devtools.compose_rehearsal

# `make run PORT=8001 SIM_PORT=8189`; HOST=0.0.0.0 only with DEBUG=0 and a SECRET_KEY.
HOST ?= 127.0.0.1
PORT ?= 8000
SIM_PORT ?= 8188
run: install
	$(PY) manage.py run_system --host $(HOST) --port $(PORT) --sim-port $(SIM_PORT)

# The tests, in three tiers (tests/conftest.py): `make test-unit` (in this process: no Redis, no
# processes; seconds), `make test-integration` (real Redis, database, Celery workers, daphne, the
# simulator), `make test-browser` (the admin in Debian's chromium). `make test` runs all three, the
# unit tier first. PYTEST_ARGS is passed on: `make test-unit PYTEST_ARGS="-k websocket -x"`.
#
# The fault-injection scenarios spend minutes waiting (for sweeps, stale heartbeats, restarts), so
# they run in a pytest process of their own beside the rest of the integration tier and the browser
# tier; every pytest run has its own test database and its own Redis keys. Each run's output is
# shown when it ends. pytest's exit code 5 ("no tests selected") is no failure for one part of a
# split tier: a PYTEST_ARGS -k may pick tests from one part only.
TEST_ENV := REDIS_URL=$(TEST_REDIS_URL)
FAULT_TESTS := tests/integration/test_fault_injection.py tests/integration/test_database_faults.py \
	tests/integration/test_object_store_faults.py
IN_PARALLEL := $(MAKE) --no-print-directory --output-sync=target -j3
.PHONY: test test-unit test-integration test-browser test-integration-faults test-integration-rest

test: test-unit
	@echo "integration (two pytest runs) and browser tiers in parallel; each one's output when it ends"
	@$(IN_PARALLEL) test-integration-faults test-integration-rest test-browser

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	@$(IN_PARALLEL) test-integration-faults test-integration-rest

test-integration-faults: install
	$(TEST_ENV) $(PY) -m pytest $(FAULT_TESTS) $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-integration-rest: install
	$(TEST_ENV) $(PY) -m pytest tests/integration $(addprefix --ignore=,$(FAULT_TESTS)) $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-browser: install
	$(TEST_ENV) $(PY) -m pytest tests/browser $(PYTEST_ARGS)
