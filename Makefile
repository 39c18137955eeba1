# phonewatch — the two promises: `make demo` and `make test` (both set everything up first);
# `make check` is the fast tier of `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian / Raspberry Pi OS packages the demo needs; installed by `bootstrap` via apt only when
# missing (see deploy/bootstrap.sh). The tests need a few more (TEST_APT_PACKAGES).
APT_PACKAGES := mosquitto mosquitto-clients
# Real parts the tests run: gpsd on a pty, PostgreSQL in a temp dir, chromium for Playwright.
TEST_APT_PACKAGES := gpsd postgresql chromium
# Extras installed into the venv: `dev` always; `train` (TensorFlow) for the tests.
EXTRAS ?= dev

# The shared third-party data (models, kmitl photos) the model card is evaluated on.
SHARED ?= ../shared/data

.PHONY: help bootstrap install-unit install-controlroom demo test check lint typecheck unit bench \
	model-card clean

help:
	@echo "make demo      - set up, then run the unit on the demo clip end to end and print a summary"
	@echo "make test      - set up, then lint, type-check and run every test (several minutes)"
	@echo "make check     - the fast tier: set up, lint, type-check and the tests not marked slow"
	@echo "                 (under a minute on 2 cores; run it before each commit)"
	@echo "make bootstrap - apt packages when missing, .venv, phonewatch[EXTRAS] pinned to"
	@echo "                 deploy/constraints.txt (done first by demo, test, check, bench)"
	@echo "make install-unit        - a camera unit: runtime only (phonewatch, no extras, no dev"
	@echo "                 tools, no broker); apt python3-venv, and python3-picamera2 on a Pi"
	@echo "make install-controlroom - the control room: phonewatch[controlroom]; apt mosquitto"
	@echo "                 (DRY_RUN=1 on either prints what it would install; deploy/bootstrap.sh)"
	@echo "make lint      - ruff check and ruff format --check over every Python file"
	@echo "make typecheck - mypy (strict over models/ and bench/; see pyproject.toml)"
	@echo "make unit      - every test, no setup, lint or type-check (pytest -q)"
	@echo "make bench     - run the benchmarks in bench/ (prints tables)"
	@echo "make model-card BENCH_MS=x BENCH_MACHINE='...' - re-evaluate the default model on"
	@echo "                 the held-out sets and regenerate its MODEL_CARD.md (see docs/model.md)"
	@echo "make clean     - remove .venv, var/, build/ and the tool caches"

bootstrap:
	@APT_PACKAGES="$(APT_PACKAGES)" PYTHON="$(PYTHON)" EXTRAS="$(EXTRAS)" bash deploy/bootstrap.sh dev

# The lean profiles: their packages are listed in deploy/bootstrap.sh (one place per profile).
install-unit:
	@PYTHON="$(PYTHON)" bash deploy/bootstrap.sh unit

install-controlroom:
	@PYTHON="$(PYTHON)" bash deploy/bootstrap.sh controlroom

demo: EXTRAS = dev,controlroom
demo: bootstrap
	$(VENV)/bin/phonewatch demo

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

# Tests keep their compiled (and assertion-rewritten) bytecode in __pycache__ even where the
# environment says PYTHONDONTWRITEBYTECODE: without it every run recompiles every module, and
# collecting the fast tier alone took 20 s of `make check` here.
PYTEST = PYTHONDONTWRITEBYTECODE= $(VENV)/bin/pytest

# The slowest tests are listed at the end, so a run that creeps towards the 15-minute budget
# says where the time went.
unit:
	$(PYTEST) -q --durations=20

test: EXTRAS = dev,train,controlroom
test: APT_PACKAGES += $(TEST_APT_PACKAGES)
test: bootstrap lint typecheck unit

# The same setup as `test` (one venv stamp), then only the tests not marked slow.
check: EXTRAS = dev,train,controlroom
check: APT_PACKAGES += $(TEST_APT_PACKAGES)
check: bootstrap lint typecheck
	$(PYTEST) -q -m "not slow"

bench: bootstrap
	$(PY) bench/pipeline.py
	$(PY) bench/model.py
	$(PY) bench/reference.py
	$(PY) bench/uplink.py
	$(PY) bench/gps.py
	$(PY) bench/field.py
	$(PY) bench/reliability.py

model-card: bootstrap
	@test -n "$(BENCH_MS)" || { echo "give BENCH_MS=<ms per invoke from bench/model.py>" \
	  "and BENCH_MACHINE='<what measured it>'"; exit 2; }
	$(PY) -m models.heldout --shared $(SHARED) --work var/model-eval \
	  --card models/phone_in_hand/MODEL_CARD.md --bench-ms $(BENCH_MS) \
	  --bench-machine "$(BENCH_MACHINE)"

clean:
	rm -rf $(VENV) var build .mypy_cache .ruff_cache .pytest_cache
