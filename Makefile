# sonopi — two commands for a newcomer: `make run` and `make test`.
# Each target sets itself up (creates .venv, installs what it needs) and is
# fast when already done: installs are keyed on pyproject.toml via stamp files.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(VENV)/bin/pip
DATASETS    ?= ../shared/datasets
MODEL       ?= models/sonopi-lite0
DEMO        ?= $(firstword $(wildcard $(DATASETS)/busi/malignant) build/demo-frames)
CONFIG      ?= deploy/dev-device.toml
PYTEST_ARGS ?=

export QT_QPA_PLATFORM ?= offscreen

.PHONY: run run-ui test venv-device venv-test bench model screenshots clean help

help:
	@echo "make run    - set up, then run the appliance on demo frames with the shipped model"
	@echo "make test   - set up, then run every test"
	@echo "make model  - train + export the model bundle from $(DATASETS) into build/"
	@echo "make bench  - run the benchmarks in bench/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

# Stamp per extras set: re-installs only when pyproject.toml changes.
$(VENV)/.stamp-device: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[ui,workstation,dev]"
	touch $@

venv-device: $(VENV)/.stamp-device
venv-test: $(VENV)/.stamp-test

build/demo-frames: | $(VENV)/.stamp-device
	$(PY) -m device demo-frames $@

run: $(VENV)/.stamp-device $(DEMO)
	$(PY) -m device --config $(CONFIG) run --model $(MODEL) --source folder:$(DEMO) --headless --once

test: $(VENV)/.stamp-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.stamp-test
	$(PY) -m bench

model: $(VENV)/.stamp-test
	$(PY) -m model_build build --data $(DATASETS)/busi --data $(DATASETS)/bus-bra --out build/model

clean:
	rm -rf build .pytest_cache
