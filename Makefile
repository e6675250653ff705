# Two commands do all the set-up: `make run` (the whole system) and `make test` (the test suite).
# Both create the virtual environment and install the project on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The tests use their own Redis database, so they never take a running system's jobs.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test install

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) manage.py run_system

test: install
	REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest $(PYTEST_ARGS)
