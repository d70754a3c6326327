"""Where optbench writes: the results folder (store, cache, tables), overridable by environment."""
from __future__ import annotations

import os
from pathlib import Path


def results_dir() -> Path:
    """OPTBENCH_RESULTS, else ./results (relative to where the user runs optbench)."""
    return Path(os.environ.get("OPTBENCH_RESULTS", "results"))


def cache_dir() -> Path:
    """Tokenizers and tokenized shards; OPTBENCH_CACHE, else results/cache."""
    return Path(os.environ.get("OPTBENCH_CACHE", results_dir() / "cache"))


def default_store_url() -> str:
    return os.environ.get("OPTBENCH_STORE", f"sqlite:///{results_dir() / 'optbench.db'}")
