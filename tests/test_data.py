import json

import numpy as np
import pytest

from bench.data.corpus import Source, load_documents, parse_sources
from bench.data.tokens import Batches, _held_out, load_data, token_buckets, unigram_loss
from bench.errors import UserError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data():
    return load_data("default", "", "bpe-512")


def test_default_corpus_is_real_text_with_whole_documents_held_out(data):
    docs = load_documents(Source("default"))
    held = [d for d, _ in docs if _held_out(d)]
    assert len(docs) > 1000 and 0.02 < len(held) / len(docs) < 0.1
    assert any(d.startswith("shakespeare/") for d, _ in docs) and any(d.startswith("bible/") for d, _ in docs)
    # the eval stream is exactly the held-out documents: no eval window occurs in training
    window = np.asarray(data.eval[1000:1064])
    train = np.asarray(data.train[0].train)
    hits = np.flatnonzero(train[:-64] == window[0])
    assert not any((train[i:i + 64] == window).all() for i in hits)


def test_model_that_ignores_context_scores_the_unigram_loss(data):
    assert 4.0 < unigram_loss(data) < np.log(data.vocab_size)


def test_frequency_buckets_split_training_mass_at_half_and_ninety_percent(data):
    buckets = token_buckets(data).numpy()
    counts = np.bincount(np.asarray(data.train[0].train), minlength=data.vocab_size)
    share = [counts[buckets == b].sum() / counts.sum() for b in range(3)]
    assert share[0] == pytest.approx(0.5, abs=0.05)
    assert share[0] + share[1] == pytest.approx(0.9, abs=0.03)


def test_batches_are_deterministic_and_cover_each_window_once_per_epoch(data):
    a, b = Batches(data, 128, 8, seed=1), Batches(data, 128, 8, seed=1)
    assert all(np.array_equal(a.next(), b.next()) for _ in range(5))
    assert not np.array_equal(Batches(data, 128, 8, seed=2).next(), Batches(data, 128, 8, seed=1).next())
    small = Batches(data, 128, 8, seed=0)
    small.windows = [40]  # pretend a 40-window source: 5 batches make one epoch
    starts = set()
    for _ in range(5):
        starts.update(int(row[0]) for row in small.next())
    epoch0 = {int(data.train[0].train[int(i) * 128]) for i in small._order(0, 0)}
    assert small.position["consumed"] == [40]
    assert starts == epoch0


def test_local_text_json_and_parquet_sources_load_through_datasets(tmp_path):
    (tmp_path / "a.txt").write_text("The first document. " * 200)
    (tmp_path / "b.txt").write_text("A second one. " * 200)
    rows = [{"content": f"record {i} " * 50} for i in range(30)]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    import pandas as pd

    pd.DataFrame(rows).to_parquet(tmp_path / "r.parquet")
    assert len(load_documents(parse_sources(f"text:{tmp_path}/*.txt")[0])) == 2
    assert len(load_documents(parse_sources(f"json:{tmp_path}/r.jsonl#content")[0])) == 30
    assert len(load_documents(parse_sources(f"parquet:{tmp_path}/r.parquet#content")[0])) == 30
    mix = load_data(f"text:{tmp_path}/*.txt@0.75,json:{tmp_path}/r.jsonl#content@0.25", "default", "bpe-512")
    assert [s.source.weight for s in mix.train] == [0.75, 0.25]
    assert len(mix.eval) > 100_000  # evaluated on another dataset: the whole default corpus


def test_mixture_rows_follow_the_weights(tmp_path, data):
    both = load_data("default@0.8,default@0.2", "", "bpe-512")
    batches = Batches(both, 128, 64, seed=0)
    picks = [s for step in range(20) for s in batches._row_sources(step)]
    assert np.mean(np.asarray(picks) == 0) == pytest.approx(0.8, abs=0.05)


@pytest.mark.parametrize("spec", ["", "ftp:x", "text:", "default@-1", "json:/x#f@zero"])
def test_bad_data_specs_are_user_errors(spec):
    with pytest.raises(UserError):
        parse_sources(spec)


def test_missing_files_and_offline_hub_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no files match"):
        load_documents(parse_sources(f"text:{tmp_path}/nothing*.txt")[0])
    with pytest.raises(UserError, match="cannot load hub dataset"):
        load_documents(parse_sources("hf:HuggingFaceFW/fineweb-edu")[0])
