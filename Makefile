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
# make test: the test files on this many workers (pytest-xdist; a file stays on one worker, so its module fixtures are
# built once). Most of the suite waits on real brokers, hubs, databases and browsers. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

export QT_QPA_PLATFORM ?= offscreen

.PHONY: run run-ui test lint venv-device venv-test bench model model-study ship-model ship-segmentation screenshots screenshots-web screenshots-ui clean help

help:
	@echo "make run    - set up, then run the appliance on demo frames with the shipped model"
	@echo "make test   - set up, then run every test"
	@echo "make model  - train + export the model bundle from $(DATASETS) into build/ (modes from make model-study)"
	@echo "make model-study - the leave-one-source-out folds that choose and validate the modes (~3 x a build)"
	@echo "make ship-model - replace models/sonopi-lite0 by BUILT (default build/model), with its head_data and a selftest"
	@echo "make ship-segmentation - pack SEGMENTATION (a retrained outline model) into models/sonopi-lite0, classifier kept"
	@echo "make lint   - ruff check + format check on the tree, mypy on device (strict), ui, hub, model_build"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make keys / flash / deploy / rollback - devices: see docs/deploy.md"
	@echo "make check-aarch64 - release gate: the release on aarch64 under qemu-user (docs/deploy.md)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

# Stamp per extras set: re-installs only when pyproject.toml changes.
$(VENV)/.stamp-device: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[ui,workstation,web,dev,reference]"
	touch $@

venv-device: $(VENV)/.stamp-device
venv-test: $(VENV)/.stamp-test

build/demo-frames: | $(VENV)/.stamp-device
	$(PY) -m device demo-frames $@

run: $(VENV)/.stamp-device $(DEMO)
	$(PY) -m device --config $(CONFIG) run --model $(MODEL) --source folder:$(DEMO) --headless --once

test: $(VENV)/.stamp-test
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# Lint: ruff (style and likely bugs, config in pyproject.toml) on everything, mypy on the four packages
# (pyproject.toml [tool.mypy]: device/ strict).
lint: $(VENV)/.stamp-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: $(VENV)/.stamp-test
	$(PY) -m bench

# Model v2 (docs/model.md): three sources, lesion-free / lesion-centred views from the masks. The same recipe
# trains the leave-one-source-out folds (make model-study) whose held-out predictions choose the modes.
MODEL_SOURCES ?= busi bus-bra breast-lesions-usg
MODEL_DATA    := $(foreach s,$(MODEL_SOURCES),--data $(DATASETS)/$(s))
MODEL_RECIPE  ?= --arch lite0 --resolution 224 --lesion-views --epochs 8 --epochs-frozen 1 --grid-epochs 1 --time-budget-min 50
STUDY         ?= build/study
STUDY_FOLDS   := $(foreach s,$(MODEL_SOURCES),$(STUDY)/out-$(s))

model-study: $(VENV)/.stamp-test
	@for s in $(MODEL_SOURCES); do \
	  $(PY) -m model_build build $(MODEL_DATA) $(MODEL_RECIPE) --external-test source=$$s --no-shortcut-check \
	    --min-agreement 0 --out $(STUDY)/out-$$s || exit 1; done

model: $(VENV)/.stamp-test
	$(PY) -m model_build build $(MODEL_DATA) $(MODEL_RECIPE) --min-agreement 0.96 --out build/model
	@if [ -n "$(wildcard $(STUDY)/out-*/report/external_predictions.csv)" ]; then \
	  $(PY) -m model_build modes $(foreach f,$(STUDY_FOLDS),--fold $(f)) --bundle build/model --write; \
	else echo "model: no leave-one-source-out study in $(STUDY): build/model has no validated modes (make model-study first)"; fi
	@if [ -f "$(SIGNING_KEY)" ]; then $(PY) -m device.model.signing sign build/model --key "$(SIGNING_KEY)"; \
	else echo "model: build/model NOT signed ($(SIGNING_KEY) missing: make keys, or SIGNING_KEY=...)"; fi

# Ship a built bundle as the reference one: models/sonopi-lite0 is replaced by BUILT (default build/model, which
# `make model` writes with its modes), its site-refit training features (head_data/) computed from MODEL_DATA, and
# the lesion-outline model SEGMENTATION (default models/segmentation-lite0: a `model_build segment` output measured by
# `model_build descriptors --segmentation DIR --write`) packed in with its leave-one-source-out folds' figures.
# SEGMENTATION= (empty) ships the classifier alone (no outline). The previous release stays in git history (and v1
# in models/sonopi-lite0-v1).
BUILT ?= build/model
SEGMENTATION ?= models/segmentation-lite0
SEGMENTATION_FOLDS ?= $(wildcard $(SEGMENTATION)/folds/*)
SHIP_WORK := build/ship-classifier
ship-model: $(VENV)/.stamp-test
	@test -f "$(BUILT)/manifest.json" || { echo "ship-model: $(BUILT) is not a bundle (make model first)"; exit 2; }
	@! grep -q '"segmentation"' "$(BUILT)/manifest.json" || { echo "ship-model: $(BUILT) has a segmentation model already (BUILT is a classifier bundle)"; exit 2; }
	rm -rf $(SHIP_WORK) && mkdir -p $(SHIP_WORK)
	cp -r $(BUILT)/manifest.json $(BUILT)/model.tflite $(BUILT)/MODEL_CARD.md $(BUILT)/reference $(BUILT)/report $(SHIP_WORK)/
	$(PY) -m model_build.head_data --bundle $(SHIP_WORK) $(MODEL_DATA)
	rm -rf models/sonopi-lite0
	@if [ -n "$(SEGMENTATION)" ]; then \
	  $(PY) -m model_build pack-segmentation --bundle $(SHIP_WORK) --segmentation $(SEGMENTATION) \
	    $(foreach f,$(SEGMENTATION_FOLDS),--fold $(f)) --out models/sonopi-lite0 || exit 1; \
	else cp -r $(SHIP_WORK) models/sonopi-lite0; fi
	$(PY) -m device selftest --model models/sonopi-lite0

# Ship a retrained lesion-outline model SEGMENTATION into the shipped bundle: its classifier, modes and files kept, the
# old outline model and its report replaced, version <classifier version>+seg-<the new model's sha256, 8 hex>; the
# folds' figures as for ship-model; `device selftest` passes before models/sonopi-lite0 is replaced.
SEG_WORK := build/ship-segmentation
ship-segmentation: $(VENV)/.stamp-test
	rm -rf $(SEG_WORK)
	$(PY) -m model_build pack-segmentation --replace --bundle models/sonopi-lite0 --segmentation $(SEGMENTATION) \
	  $(foreach f,$(SEGMENTATION_FOLDS),--fold $(f)) --out $(SEG_WORK)
	$(PY) -m device selftest --model $(SEG_WORK)
	rm -rf models/sonopi-lite0 && mv $(SEG_WORK) models/sonopi-lite0

# Each part adds its own `screenshots: screenshots-<part>` line; `make screenshots` renders them all.
screenshots: screenshots-web
screenshots-web: $(VENV)/.stamp-test
	$(PY) -m hub.web.screenshots docs/screenshots
screenshots: screenshots-ui
screenshots-ui: $(VENV)/.stamp-test
	$(PY) -m ui.screenshots docs/screenshots

# The touchscreen app in a desktop window on the demo frames (UI_QPA=offscreen to run it headless).
run-ui: $(VENV)/.stamp-test $(DEMO)
	QT_QPA_PLATFORM=$${UI_QPA:-xcb} $(PY) -m ui $(if $(wildcard $(CONFIG)),--config $(CONFIG)) --source folder:$(DEMO)

clean:
	rm -rf build .pytest_cache

# --- devices (docs/deploy.md): keys, signing, flash, deploy, rollback ---------------------------
KEYS_DIR     ?= $(HOME)/.config/sonopi/keys
SIGNING_KEY  ?= $(KEYS_DIR)/model-signing.key
MODEL_PUBKEY ?= $(KEYS_DIR)/model-signing.pub
WHEELS       ?= build/wheels-aarch64-cp311
DEPLOY_STAMP ?= $(VENV)/.stamp-deploy
FLASH_VARS    = BASE DEVICE OUT DEVICE_ID SITE SECRETS SSH_PUBKEY ADMIN_USER BROKER PIN MODEL

.PHONY: keys sign-model wheels flash deploy rollback

$(VENV)/.stamp-deploy: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[deploy]"
	touch $@

keys: $(VENV)/.stamp-device
	$(PY) -m device.model.signing keygen --out "$(KEYS_DIR)"

sign-model: $(VENV)/.stamp-device
	$(PY) -m device.model.signing sign "$(MODEL)" --key "$(SIGNING_KEY)"

wheels: $(DEPLOY_STAMP)
	PYTHON=$(abspath $(PY)) deploy/fetch-wheels.sh "$(WHEELS)"

flash: $(DEPLOY_STAMP)
	$(foreach v,$(FLASH_VARS),$(v)="$($(v))") MODEL_PUBKEY="$(MODEL_PUBKEY)" WHEELS="$(WHEELS)" \
	  PYTHON=$(abspath $(PY)) deploy/flash.sh

deploy: $(DEPLOY_STAMP)
	MODEL="$(MODEL)" MODEL_PUBKEY="$(MODEL_PUBKEY)" WHEELS="$(WHEELS)" PYTHON=$(abspath $(PY)) \
	  deploy/deploy.sh "$(PI)" $(ANSIBLE_ARGS)

rollback: $(DEPLOY_STAMP)
	PYTHON=$(abspath $(PY)) deploy/deploy.sh --rollback "$(PI)" $(ANSIBLE_ARGS)

# --- release gate: the release on aarch64 under qemu-user (docs/deploy.md "Release gate: check-aarch64") ---
AARCH64_IMAGES ?= 24
AARCH64_WORK   ?= build/aarch64/work
.PHONY: check-aarch64
check-aarch64: $(VENV)/.stamp-device
	$(PY) deploy/check_aarch64.py --images "$(AARCH64_IMAGES)" --work "$(AARCH64_WORK)" --model "$(MODEL)" \
	  --wheels "$(WHEELS)" $(if $(wildcard $(MODEL_PUBKEY)),--model-pubkey "$(MODEL_PUBKEY)")
