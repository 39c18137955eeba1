# phonewatch — the two promises: `make demo` and `make test` (both set everything up first).
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

.PHONY: help bootstrap demo test lint typecheck unit bench model-card clean

help:
	@echo "make demo   - set up, then run the unit on the demo clip end to end and print a summary"
	@echo "make test   - set up, then lint, type-check and run every test"
	@echo "make bench  - run the benchmarks in bench/ (prints tables)"
	@echo "make model-card BENCH_MS=x BENCH_MACHINE='...' - re-evaluate the default model on"
	@echo "               the held-out sets and regenerate its MODEL_CARD.md (see docs/model.md)"

bootstrap:
	@APT_PACKAGES="$(APT_PACKAGES)" PYTHON="$(PYTHON)" EXTRAS="$(EXTRAS)" bash deploy/bootstrap.sh

demo: EXTRAS = dev,controlroom
demo: bootstrap
	$(VENV)/bin/phonewatch demo

lint:
	$(VENV)/bin/ruff check edge controlroom tests bench models firmware hardware

typecheck:
	$(VENV)/bin/mypy

unit:
	$(VENV)/bin/pytest -q

test: EXTRAS = dev,train,controlroom
test: APT_PACKAGES += $(TEST_APT_PACKAGES)
test: bootstrap lint typecheck unit

bench: bootstrap
	$(PY) bench/pipeline.py
	$(PY) bench/model.py
	$(PY) bench/reference.py
	$(PY) bench/uplink.py
	$(PY) bench/gps.py
	$(PY) bench/field.py

model-card: bootstrap
	@test -n "$(BENCH_MS)" || { echo "give BENCH_MS=<ms per invoke from bench/model.py>" \
	  "and BENCH_MACHINE='<what measured it>'"; exit 2; }
	$(PY) -m models.heldout --shared $(SHARED) --work var/model-eval \
	  --card models/phone_in_hand/MODEL_CARD.md --bench-ms $(BENCH_MS) \
	  --bench-machine "$(BENCH_MACHINE)"

clean:
	rm -rf $(VENV) var build .mypy_cache .ruff_cache .pytest_cache
