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

# Installing (README, "Installing"): constraints.txt pins the whole tree, torch as the CPU wheel.
# TORCH=auto keeps a CUDA/ROCm torch that is already there and satisfies pyproject.toml's bound (put
# in .venv first, or the system's with VENV_ARGS=--system-site-packages) by installing with the
# constraints minus their torch line; TORCH=keep does so for any such torch (CPU builds too);
# TORCH=pin always takes the pinned one.
TORCH      ?= auto
VENV_ARGS  ?=
PYTHON     ?= python3.13  # make test-python: the interpreter to check
PYTEST_ARGS ?=
PYVENV      = .venv-$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# $(call install,VENV): fill VENV with the project, its test and track extras, as pinned
define install
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -c "$$CONSTRAINTS_FOR_TORCH" $(TORCH) constraints.txt $(1)/constraints.txt
	$(1)/bin/python -m pip install -q -c $(1)/constraints.txt -e '.[test,track]'
	# kron-torch declares triton (a GPU compiler, >1 GB) but its kron module never imports it
	$(1)/bin/python -m pip install -q --no-deps kron-torch==0.3.3
endef

# Writes the constraints to install with: constraints.txt, less its torch line where TORCH=auto finds
# a CUDA/ROCm torch (TORCH=keep: any torch) that satisfies pyproject.toml's bound.
define CONSTRAINTS_FOR_TORCH
import importlib.metadata as md, sys, tomllib
from pip._vendor.packaging.requirements import Requirement
mode, source, target = sys.argv[1:]
if mode not in ("auto", "keep", "pin"):
    sys.exit(f"TORCH={mode}: expected auto, keep or pin")
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
bound = next(r for r in map(Requirement, deps) if r.name == "torch").specifier
try:
    version = md.version("torch")
except md.PackageNotFoundError:
    version = None
build = None
if version and mode == "auto":
    try:
        import warnings
        warnings.simplefilter("ignore")  # e.g. torch's own about numpy, not installed yet
        import torch
        build = torch.version.cuda and f"CUDA {torch.version.cuda}" or torch.version.hip and f"ROCm {torch.version.hip}"
    except Exception as e:  # a torch that does not import is not kept
        print(f"the installed torch {version} does not import ({type(e).__name__}: {e}): installing the pinned one")
keep = mode != "pin" and version is not None and bound.contains(version, prereleases=True) and (mode == "keep" or bool(build))
if mode == "keep" and not keep:
    sys.exit(f"TORCH=keep: no installed torch satisfies torch{bound} (found: {version}); install one into "
             "the venv first, or use the system's with VENV_ARGS=--system-site-packages")
lines = open(source).read().splitlines(keepends=True)
if keep:
    named = [(l, l.split("#")[0].strip()) for l in lines]
    lines = [l for l, r in named if not r or Requirement(r).name.lower() != "torch"]
    print(f"keeping the installed torch {version}{f' ({build})' if build else ''}: installing without constraints.txt's torch pin")
open(target, "w").writelines(lines)
endef
export CONSTRAINTS_FOR_TORCH

.PHONY: setup lint run test test-fast test-python sweep dashboard reproduce regress bench bench-gpu clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV_ARGS) $(VENV)
	$(call install,$(VENV))
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)  ## one run on the smallest CPU scale, stored under results/
	$(OPTBENCH) run --optimizer adamw --scale cpu-xs --ratio 1

lint: $(STAMP)  ## pyflakes' checks, sorted imports, and the import layers (pyproject.toml)
	$(VENV)/bin/ruff check
	$(VENV)/bin/lint-imports

# Two pytest workers, a test file each: one pytest process keeps about one of 2 cores busy. Passive
# OpenMP waits: two tests' torch threads at once on 2 cores otherwise spin against each other (3x slower).
PYTEST     = OMP_WAIT_POLICY=passive $(1) -m pytest -q -n 2 --dist loadfile

test: $(STAMP)  ## every tier: unit, integration and system (pyproject.toml's markers)
	$(call PYTEST,$(PY))

test-fast: $(STAMP)  ## the unit and integration tiers, for the edit-test loop: about 2 minutes on 2 cores
	$(call PYTEST,$(PY)) -m "unit or integration"

test-python:  ## the unit and integration tiers under another Python (PYTHON=python3.12), in its own .venv-3.x
	$(PYTHON) -m venv $(VENV_ARGS) $(PYVENV)
	$(call install,$(PYVENV))
	$(call PYTEST,$(PYVENV)/bin/python) -m "unit or integration" $(PYTEST_ARGS)

# --yes skips the question only: a sweep that cannot finish on this machine (memory, or over
# --max-hours) still refuses with what it would need (docs/DESIGN.md, "The plan at scale").
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
	rm -rf $(VENV) .venv-3.* results/cache
