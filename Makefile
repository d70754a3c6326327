# optbench entry points. Every target creates and fills .venv on first use; `make setup` does only that.
VENV     := .venv
PY       := $(VENV)/bin/python
OPTBENCH := $(VENV)/bin/optbench
STAMP    := $(VENV)/.installed
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE ?= 1

# The default sweep is the README's main job: three optimizers at three budgets of the smallest CPU
# scale (three AdamW budgets make its scaling fit, and so the speedup table, possible).
SCALE      ?= cpu-xs
RATIOS     ?= 0.25,0.5,1
OPTIMIZERS ?= adamw,muon,lion
WORKERS    ?= 2
MAX_TRIALS ?= 5
SEEDS      ?= 3  # the winner of each cell re-run at 3 seeds: every speedup gets an interval from seeds
SWEEP_ARGS ?=
JOURNAL    ?= results/optuna.journal  # make dashboard: the Optuna record to serve
PORT       ?= 8080

.PHONY: setup lint run test test-fast sweep dashboard reproduce regress bench bench-gpu clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,track]'
	# kron-torch declares triton (a GPU compiler, >1 GB) but its kron module never imports it
	$(PY) -m pip install -q --no-deps kron-torch==0.3.3
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)  ## one run on the smallest CPU scale, stored under results/
	$(OPTBENCH) run --optimizer adamw --scale cpu-xs --ratio 1

lint: $(STAMP)  ## pyflakes' checks, sorted imports, and the import layers (pyproject.toml)
	$(VENV)/bin/ruff check
	$(VENV)/bin/lint-imports

test: $(STAMP)  ## every tier: unit, integration and system (pyproject.toml's markers)
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## the unit and integration tiers, for the edit-test loop: about 2 minutes on 2 cores
	$(PY) -m pytest -q -m "unit or integration"

sweep: $(STAMP)
	$(OPTBENCH) sweep --scale $(SCALE) --ratios $(RATIOS) --optimizers $(OPTIMIZERS) --workers $(WORKERS) \
		--max-trials $(MAX_TRIALS) --seeds $(SEEDS) --yes $(SWEEP_ARGS)

dashboard: $(STAMP)  ## optuna-dashboard over the sweeps' Optuna journal, at http://127.0.0.1:$(PORT)
	$(VENV)/bin/optuna-dashboard $(JOURNAL) --host 127.0.0.1 --port $(PORT)

reproduce: $(STAMP)
	$(OPTBENCH) reproduce

regress: $(STAMP)
	$(OPTBENCH) regress

bench: $(STAMP)
	$(OPTBENCH) bench

bench-gpu: $(STAMP)  ## the paper scales on a GPU: tokens/s, MFU, optimizer steps
	$(OPTBENCH) bench --device cuda

clean:
	rm -rf $(VENV) results/cache
