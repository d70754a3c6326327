"""Test settings: offline Hugging Face, a results folder per test session (the tokenizer and token
shards are built once per session in it, then shared by every test), and the test tiers.

Every test carries exactly one tier marker (registered in pyproject.toml): `unit`, `integration` or
`system`; `make test-fast` runs unit and integration, `make test` all three. A test without a tier, or
with two, fails the collection, so the tiers stay complete as tests are added."""
import os

import pytest
import torch

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

TIERS = ("unit", "integration", "system")


def _tiers(item: pytest.Item) -> list[str]:
    return sorted({m.name for m in item.iter_markers() if m.name in TIERS})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: every collected test is checked
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    wrong = [f"{item.nodeid}: {', '.join(_tiers(item)) or 'none'}" for item in items if len(_tiers(item)) != 1]
    if wrong:
        raise pytest.UsageError(f"every test needs exactly one tier marker ({', '.join(TIERS)}), "
                                "e.g. a module's `pytestmark = pytest.mark.unit`; these have:\n  "
                                + "\n  ".join(wrong))


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
