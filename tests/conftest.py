"""Test settings: offline Hugging Face, and a results folder per test session (the tokenizer and
token shards are built once per session in it, then shared by every test)."""
import os

import pytest
import torch

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def results_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("results")
    os.environ["OPTBENCH_RESULTS"] = str(path)
    os.environ.pop("OPTBENCH_CACHE", None)
    os.environ.pop("OPTBENCH_STORE", None)
    return path


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    yield from _threads(1)


@pytest.fixture
def two_threads():
    yield from _threads(2)
