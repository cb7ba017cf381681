# Runyard: `make run` and `make test` are the whole setup on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT
VAR_DIR := $(or $(RUNYARD_VAR_DIR),var)

.PHONY: run serve static test lint bench chaos migrate seed clean browser-deps

# A random SECRET_KEY of this machine's own, kept in var/ (config/settings.py reads it when
# SECRET_KEY is not in the environment): `make run` never serves on the public development key.
$(VAR_DIR)/secret_key:
	@mkdir -p $(VAR_DIR)
	@umask 077 && head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > $@

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@touch $@

migrate: $(VENV)/.installed $(VAR_DIR)/secret_key
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_demo

# The web process serves these itself (ServeStatic): the admin's CSS/JS and the API docs.
static: $(VENV)/.installed
	$(PY) manage.py collectstatic --noinput --verbosity 0

# `set -m` runs honcho in a process group of its own and hands it the terminal, so Ctrl-C
# reaches honcho (which stops web, worker and scheduler) and not make; honcho then exits 130
# (143 on SIGTERM): a requested stop, so the target succeeds. tests/e2e/test_make_run.py.
START := set -m; $(VENV)/bin/honcho -f platform/Procfile start; rc=$$?; \
	if [ $$rc -eq 130 ] || [ $$rc -eq 143 ]; then echo "Runyard stopped."; exit 0; fi; exit $$rc

run: seed static
	@$(START)

# The processes alone, without the setup steps (what `make run` ends with).
serve:
	@$(START)

# Debian's chromium for the browser tests; skipped quietly where apt is not ours to use.
browser-deps:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: browser tests will be skipped"; }

test: $(VENV)/.installed browser-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

bench: $(VENV)/.bench-installed
	$(PY) bench/run.py

# The API fuzzed at length too: every operation, every check, and long stateful sequences.
chaos: $(VENV)/.installed
	CHAOS_TRIALS=$${CHAOS_TRIALS:-200} $(PY) -m pytest -q tests/e2e/test_chaos.py
	RUNYARD_FUZZ_EXAMPLES=$${RUNYARD_FUZZ_EXAMPLES:-100} \
	RUNYARD_FUZZ_SCENARIOS=$${RUNYARD_FUZZ_SCENARIOS:-300} \
	RUNYARD_FUZZ_STEPS=$${RUNYARD_FUZZ_STEPS:-15} \
	$(PY) -m pytest -q -p no:randomly tests/test_openapi__schemathesis.py

clean:
	rm -rf $(VENV) var
