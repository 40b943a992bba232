# heartjobs: `make demo` runs the main job on the embedded phantom, `make test` runs lint and tests.
# Both set everything up first (venv, pip installs, the OpenJPEG system library).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA := data
JOBS ?= jobs
QUEUE ?= queue/$(notdir $(JOBS))
HIPCT_SRC ?= data/hipct
ARTIFACTS ?= artifacts
IMAGE ?= heartjobs:latest
# compose (compose.yaml) runs containers as you, records the commit the image is built from, and takes
# BASE_IMAGE, FID_WEIGHTS, PIP_CONF and PIP_CA (pip's configuration and CA bundle, as build secrets) from here
HOST_UID ?= $(shell id -u)
HOST_GID ?= $(shell id -g)
GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
HEARTJOBS_LOCKS ?= /tmp/heartjobs-locks
export IMAGE HOST_UID HOST_GID GIT_COMMIT HEARTJOBS_LOCKS BASE_IMAGE FID_WEIGHTS PIP_CONF PIP_CA
SIF ?= heartjobs.sif
# pytest-xdist workers for make test / test-fast: two fill a 2-core CI machine (each computes on one thread)
PYTEST_WORKERS ?= 2
SUBMIT_ARGS ?=
# The validity ladder before the smoke jobs, in their feature space (untrained Inception, 192-d), so that
# their reports say which metrics this data can trust: the prepared set and the ladder's options.
SMOKE_LADDER := data/prepared/phantom64 --weights untrained --dims 192 --n 100
# the same before the study smoke (make study-smoke), in its jobs' feature space (64-d)
STUDY_LADDER := data/prepared/phantom32 --weights untrained --dims 64 --n 50
LADDER ?=
# queue workers: measurements in flight while the next job trains (heartjobs worker --overlap; docs/queue.md):
# run-all 0 unless set, docker-run-all (the GPU worker) 1 unless set
OVERLAP ?=
# make wheelhouse: where, for which Python, and what goes in (scripts/wheelhouse.py); make install OFFLINE=DIR
WHEELHOUSE ?= dist/wheelhouse
PYTHON_VERSION ?=
WITH_TORCH ?= 0
LEAN ?= 0
LEAVE_OUT ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint pytest ci demo demo-figure demo-curves run-all hipct submit-all smoke study-smoke slurm-test faults report bench fid-weights docker-folders docker-build docker-run-all docker-test \
	wheelhouse wheelhouse-test \
	sif gpu-check gpu-bench gpu-study clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

ifdef OFFLINE
install:
	bash scripts/install.sh --offline $(OFFLINE) --venv $(VENV) --python $(PYTHON)
else
install: $(STAMP) ## create .venv with torch, the project and its dev tools; install libopenjp2 (OFFLINE=DIR: from a wheelhouse, no index, no dev tools)
endif
$(STAMP): pyproject.toml Makefile scripts/ensure-system-packages.sh scripts/install.sh
	bash scripts/ensure-system-packages.sh
	$(BIN)/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); } \
		|| { echo "error: '$(PYTHON) -m venv' failed; install your Python's venv module (Debian: apt-get install python3-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	bash scripts/install.sh $(BIN)/python --editable dev
	$(BIN)/python -c "import glymur, sys; v = glymur.version.openjpeg_version_tuple; sys.exit(0 if v >= (2, 4, 0) else 'glymur finds no OpenJPEG >= 2.4 (found %s)' % glymur.version.openjpeg_version)"
	touch $@

lint: install ## ruff (lint, format), hadolint (Dockerfile), shellcheck (shell scripts)
	$(BIN)/ruff check heartjobs tests bench scripts
	$(BIN)/ruff format --check heartjobs tests bench scripts
	$(BIN)/hadolint --no-color Dockerfile
	$(BIN)/shellcheck scripts/*.sh .ci/run

pytest: install ## the test suite alone, on 2 pytest-xdist workers (PYTEST_WORKERS=N; installs headless Chromium for the report's browser test)
	bash scripts/ensure-system-packages.sh browser
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

test: lint pytest ## lint, then the test suite

ci: ## what CI runs (.ci/run), each phase timed, the table at the end: install, test, study-smoke + its checks, faults, slurm-test, wheelhouse-test, docker-test (root; budget 30 min, docs/development.md)
	.ci/run

test-fast: install ## the inner loop: the suite without the tests marked slow (make test runs them all), 2 workers
	bash scripts/ensure-system-packages.sh browser
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow and not slurm"

demo: ## the main job on the heart phantom, step by step with expected times (scripts/demo.sh): install, make and prepare it (64 px), the validity ladder, the demo jobs (jobs/demo: the thesis' GAN, WGAN and DCGAN trained long enough to draw hearts, FID/KID/FRD, fidelity/diversity), report; about 8 min on 2 cores with the install
	INSTALL="$(MAKE) --no-print-directory install" BIN=$(BIN) bash scripts/demo.sh

demo-figure: ## after make demo: copy its one-row figure (real slices, each model's best grid) to the README's docs/img/demo.png
	cp artifacts/demo/report_overview.png docs/img/demo.png

demo-curves: install ## the learning curves the demo's epochs were chosen from (jobs/demo-curves, docs/demo.md; about 28 min on 2 cores)
	$(MAKE) --no-print-directory run-all JOBS=jobs/demo-curves ARTIFACTS=artifacts/demo-curves

run-all: install ## prepare data if needed (data/prepared/hipct: from the slices in HIPCT_SRC, else fetched as make hipct does), queue $(JOBS)/*.toml, run them one by one, write the report
	BIN=$(BIN) HIPCT_SRC=$(HIPCT_SRC) bash scripts/prepare-data.sh $(JOBS)
	$(if $(LADDER),$(BIN)/heartjobs ladder $(LADDER) --out $(ARTIFACTS)/ladder)
	$(BIN)/heartjobs enqueue $(filter-out %.sweep.toml,$(wildcard $(JOBS)/*.toml)) --queue $(QUEUE)
	$(BIN)/heartjobs worker --queue $(QUEUE) --until-empty --overlap $(or $(OVERLAP),0)
	$(BIN)/heartjobs report $(ARTIFACTS) --jobs $(JOBS)

hipct: install ## fetch the thesis' heart (LADAF-2020-27, level 1: 3307 slices) from the Human Organ Atlas into data/prepared/hipct at 256 px (internet; resumable)
	BIN=$(BIN) bash scripts/prepare-data.sh --fetch-hipct

submit-all: install ## on a Slurm login node: prepare data if needed, submit $(JOBS)/*.toml as one job array
	BIN=$(BIN) HIPCT_SRC=$(HIPCT_SRC) bash scripts/prepare-data.sh $(JOBS)
	$(BIN)/heartjobs submit $(filter-out %.sweep.toml,$(wildcard $(JOBS)/*.toml)) $(SUBMIT_ARGS)

smoke: ## the smoke jobs end to end on the CPU (phantom, prepare, ladder, the 3 thesis models and SNGAN with augmentation, FID/KID/FRD with untrained weights, report)
	$(MAKE) --no-print-directory run-all JOBS=jobs/smoke LADDER="$(SMOKE_LADDER)"

study-smoke: install ## CI's end-to-end queue run on the CPU: the ladder, then a 2-seed sweep (the 4 smoke models x default and a variant, 32 px phantom, FID/KID/FRD), queue, report with intervals over seeds and report.html
	$(BIN)/heartjobs sweep jobs/smoke-study.sweep.toml --out jobs/smoke-study
	$(MAKE) --no-print-directory run-all JOBS=jobs/smoke-study ARTIFACTS=artifacts/smoke-study LADDER="$(STUDY_LADDER)"

slurm-test: install ## real Slurm (root): a single-node cluster started here (scripts/slurm-ci.sh), the Slurm tests, the smoke jobs submitted with --wait, each done once; stopped again
	BIN=$(BIN) HIPCT_SRC=$(HIPCT_SRC) bash scripts/prepare-data.sh jobs/smoke
	BIN=$(abspath $(BIN)) bash scripts/slurm-ci.sh run bash scripts/slurm-test.sh

report: install ## summary tables and figures of everything in $(ARTIFACTS)
	$(BIN)/heartjobs report $(ARTIFACTS)

faults: install ## the fault campaign: workers and jobs killed at random moments, queue drained, invariants checked (N=5, P=1 at once)
	$(BIN)/python scripts/faults.py --n $(or $(N),5) --parallel $(or $(P),1)

bench: install ## benchmarks: each prints the ratio of two ways of doing the same work
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_fid.py
	$(BIN)/python bench/bench_frd.py
	$(BIN)/python bench/bench_pool.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_flops.py
	$(BIN)/python bench/bench_metrics.py
	$(BIN)/python bench/bench_phase_conv.py

fid-weights: install ## download pytorch-fid's standard Inception weights (needs internet) and check their sha256
	$(BIN)/python -c "from heartjobs.evaluation.weights import resolve_weights; w = resolve_weights('standard'); print(f'{w.path}  sha256 {w.sha256}')"

gpu-check: install ## GPU smoke: each model a few hundred steps at 256 px, FID with real-sized batches; images/s, FID s
	$(BIN)/python bench/gpu_check.py

gpu-bench: install ## GPU: heartjobs against the thesis' own pipeline, side by side (images/s per model and batch size at 256 px, FID time, speed switches, the 21-job projection); bench/results/gpu_bench.json
	$(BIN)/python bench/gpu_bench.py

gpu-study: install ## GPU: the 21 thesis jobs shortened through the real queue and worker with full evaluation, timed per job, and the 200-epoch matrix projected with and without each speed switch; bench/recorded/gpu_study_<date>_<card>.json
	$(BIN)/python bench/gpu_study.py

wheelhouse: install ## dist/wheelhouse/ (WHEELHOUSE=DIR): heartjobs and its runtime dependencies for an offline install (PYTHON_VERSION=3.12 WITH_TORCH=1 LEAN=1 LEAVE_OUT=numpy,... FID_WEIGHTS=FILE)
	$(BIN)/python scripts/wheelhouse.py --out $(WHEELHOUSE) $(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION)) \
		$(if $(filter 1,$(WITH_TORCH)),--with-torch) $(if $(filter 1,$(LEAN)),--lean) $(if $(LEAVE_OUT),--leave-out $(LEAVE_OUT)) \
		$(if $(filter-out download skip,$(FID_WEIGHTS)),--fid-weights $(FID_WEIGHTS))

wheelhouse-test: install ## the offline install for real: a wheelhouse, a fresh venv from it with every index closed on a box with its own torch, the smoke job
	rm -rf dist/wheelhouse-test
	BIN=$(BIN) bash scripts/wheelhouse-test.sh dist/wheelhouse-test

docker-folders: ## the host folders compose mounts, created by you (Docker would make missing ones as root)
	mkdir -p data artifacts queue weights
	mkdir -p $(HEARTJOBS_LOCKS) && chmod 1777 $(HEARTJOBS_LOCKS) 2>/dev/null || true

docker-build: docker-folders ## build the CUDA image (FID_WEIGHTS=download|skip|weights/FILE; BASE_IMAGE=...; PIP_CONF/PIP_CA)
	docker compose build cli

docker-run-all: docker-folders ## the whole matrix in containers: prepare data, queue $(JOBS)/*.toml, GPU worker until empty, report
	HEARTJOBS="docker compose run --rm -T cli" HIPCT_SRC=$(HIPCT_SRC) bash scripts/prepare-data.sh $(JOBS)
	docker compose run --rm -T cli enqueue $(filter-out %.sweep.toml,$(wildcard $(JOBS)/*.toml)) --queue /app/queue
	docker compose run --rm --entrypoint heartjobs worker worker --queue /app/queue --until-empty --overlap $(or $(OVERLAP),1)
	docker compose run --rm -T cli report /app/artifacts --jobs /app/$(JOBS)

docker-test: ## the image built and run for real: engine, stand-in base, compose services (root; several GB)
	bash scripts/docker-test.sh

sif: ## the Apptainer image $(SIF) from the Docker image $(IMAGE) (after make docker-build; not run in CI)
	apptainer build $(SIF) docker-daemon://$(IMAGE)

clean: ## remove the venv and generated data (artifacts are kept)
	rm -rf $(VENV) $(DATA) bench/results
