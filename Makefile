# MeanFlowSE: every target sets up .venv itself when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
# pytest-xdist workers for the test targets (one thread each: tests/conftest.py); TEST_WORKERS=0 runs serially
TEST_WORKERS ?= 2

.PHONY: help install demo test test-slow bench sweep-cpu slurm-check lint clean clean-outputs

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	# speaker similarity: resemblyzer ships its GE2E weights; its own deps (librosa, webrtcvad) are not needed
	$(PY) -m pip install -q --no-deps resemblyzer==0.1.4
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install pinned dependencies (idempotent)

demo: $(STAMP)  ## train the CPU demo model on the built-in dataset, enhance its test split in one step, print metrics
	$(PY) train.py experiment=demo
	$(PY) eval.py ckpt_path=outputs/demo/checkpoints/last.ckpt split=test output=outputs/demo/enhanced overwrite=true

test: $(STAMP)  ## run the fast test suite (about 6 minutes on 2 CPU cores, two workers)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-slow: $(STAMP)  ## run the slow tests as well
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "slow or not slow"

bench: $(STAMP)  ## run the benchmarks reported in BENCHMARKS.md
	$(PY) -m benchmarks.run

sweep-cpu: $(STAMP)  ## the default sweep sized for a 2-core CPU (experiments/cpu_sweep, about 17 minutes)
	$(PY) sweep.py -m experiment=sweep_cpu

slurm-check: $(STAMP)  ## as root: install Slurm, run it on loopback, sweep + srun DDP + scancel/resume through it (docs/cluster.md)
	bash scripts/slurm_local.sh

lint: $(STAMP)  ## ruff: lint rules and formatting (pyproject.toml [tool.ruff]); `ruff format .` fixes the latter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:  ## remove caches only (keeps outputs/ and .venv)
	rm -rf .pytest_cache
	find . -name __pycache__ -type d -prune -not -path "./.venv/*" -exec rm -rf {} +

clean-outputs:  ## delete every run, checkpoint and generated dataset under outputs/ (says what)
	@for p in outputs/*; do [ -e "$$p" ] && echo "deleting $$p" && rm -rf "$$p"; done; true
