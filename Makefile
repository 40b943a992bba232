# heartjobs: `make demo` runs the main job on the embedded phantom, `make test` runs lint and tests.
# Both set everything up first (venv, pip installs, the OpenJPEG system library).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here, installed before the project so pip never pulls another build.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
DATA := data
JOBS ?= jobs
QUEUE ?= queue/$(notdir $(JOBS))
HIPCT_SRC ?= data/hipct
ARTIFACTS ?= artifacts

.DEFAULT_GOAL := help
.PHONY: help install test lint pytest demo run-all smoke report bench fid-weights clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with torch, the project and its dev tools; install libopenjp2
$(STAMP): pyproject.toml Makefile scripts/ensure-openjpeg.sh
	bash scripts/ensure-openjpeg.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -c "import glymur, sys; v = glymur.version.openjpeg_version_tuple; sys.exit(0 if v >= (2, 4, 0) else 'glymur finds no OpenJPEG >= 2.4 (found %s)' % glymur.version.openjpeg_version)"
	touch $@

lint: install ## ruff (lint and format check)
	$(BIN)/ruff check heartjobs tests bench
	$(BIN)/ruff format --check heartjobs tests bench

pytest: install ## the test suite alone
	$(BIN)/python -m pytest -q

test: lint pytest ## lint, then the test suite

demo: install ## the main job on the embedded phantom: prepare it, run the smoke queue (3 models + FID), report
	$(BIN)/heartjobs data phantom --out $(DATA)/phantom
	$(BIN)/heartjobs data prepare $(DATA)/phantom --out $(DATA)/prepared/phantom --size 256
	$(MAKE) --no-print-directory run-all JOBS=jobs/smoke

run-all: install ## prepare data if needed, queue $(JOBS)/*.toml, run them one by one, write the report
	BIN=$(BIN) HIPCT_SRC=$(HIPCT_SRC) bash scripts/prepare-data.sh $(JOBS)
	$(BIN)/heartjobs enqueue $(filter-out %.sweep.toml,$(wildcard $(JOBS)/*.toml)) --queue $(QUEUE)
	$(BIN)/heartjobs worker --queue $(QUEUE) --until-empty
	$(BIN)/heartjobs report $(ARTIFACTS) --jobs $(JOBS)

smoke: ## the smoke jobs end to end on the CPU (phantom, prepare, 3 models, FID with untrained weights, report)
	$(MAKE) --no-print-directory run-all JOBS=jobs/smoke

report: install ## summary tables and figures of everything in $(ARTIFACTS)
	$(BIN)/heartjobs report $(ARTIFACTS)

bench: install ## benchmarks: each prints the ratio of two ways of doing the same work
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_fid.py

fid-weights: install ## download pytorch-fid's standard Inception weights (needs internet) and check their sha256
	$(BIN)/python -c "from heartjobs.evaluation.weights import resolve_weights; w = resolve_weights('standard'); print(f'{w.path}  sha256 {w.sha256}')"

clean: ## remove the venv and generated data (artifacts are kept)
	rm -rf $(VENV) $(DATA) bench/results
