"""Tokenized training and evaluation data: cached shards, a held-out split, batches, statistics.

Documents come from bench/data/corpus.py. A document is held out for evaluation when a hash of its id
falls in the eval fraction, so the split is stable, whole-document, and never trained on. Tokens are
cached as .npy shards keyed by the source, the tokenizer's content hash and the split rule.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data.corpus import Source, load_documents, parse_sources
from bench.data.tokenizer import eos_id, load_tokenizer, tokenizer_identity
from bench.errors import UserError
from bench.paths import cache_dir

EVAL_PERCENT = 5  # share of documents held out, by hash of the document id
SPLIT_VERSION = 1  # bump when the split or shard format changes


@dataclass
class SourceTokens:
    source: Source
    train: np.ndarray  # one long stream, documents separated by EOS
    eval: np.ndarray
    train_bytes: int
    eval_bytes: int


@dataclass
class TokenData:
    vocab_size: int
    train: list[SourceTokens]  # the training mixture
    eval: np.ndarray  # evaluation stream (held-out split, or another dataset)
    eval_bytes: int
    tokenizer_id: str

    @property
    def train_tokens(self) -> int:
        return sum(len(s.train) for s in self.train)


def load_data(data: str, eval_data: str, tokenizer: str, need_tokens: int | None = None) -> TokenData:
    """Tokenize (once, cached) the training mixture and the evaluation set."""
    default = Source("default")
    tok = load_tokenizer(tokenizer, lambda: iter(_split(load_documents(default))[0]))
    limit = None if need_tokens is None else need_tokens * 8  # hub streams: enough characters
    train = [_source_tokens(s, tok, limit) for s in parse_sources(data)]
    if eval_data:
        evals = [_source_tokens(s, tok, limit) for s in parse_sources(eval_data)]
        eval_stream = np.concatenate([np.concatenate([e.train, e.eval]) for e in evals])
        eval_bytes = sum(e.train_bytes + e.eval_bytes for e in evals)
    else:
        eval_stream = np.concatenate([s.eval for s in train])
        eval_bytes = sum(s.eval_bytes for s in train)
    if len(eval_stream) == 0:
        raise UserError("the evaluation set is empty (too few documents to hold any out)")
    return TokenData(tok.get_vocab_size(), train, eval_stream, eval_bytes, tokenizer_identity(tok))


def _held_out(doc_id: str) -> bool:
    return int(hashlib.sha256(doc_id.encode()).hexdigest(), 16) % 100 < EVAL_PERCENT


def _split(docs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    train = [t for d, t in docs if not _held_out(d)]
    held = [t for d, t in docs if _held_out(d)]
    return train, held


def _source_tokens(source: Source, tok, limit_chars: int | None) -> SourceTokens:
    key = json.dumps([source.kind, source.target, source.config, source.field, tokenizer_identity(tok),
                      EVAL_PERCENT, SPLIT_VERSION])
    folder = cache_dir() / "tokens" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (folder / "meta.json").exists():
        meta = json.loads((folder / "meta.json").read_text())
        return SourceTokens(source, np.load(folder / "train.npy", mmap_mode="r"),
                            np.load(folder / "eval.npy", mmap_mode="r"), meta["train_bytes"], meta["eval_bytes"])
    train_docs, eval_docs = _split(load_documents(source, limit_chars))
    train, eval_ = _encode(train_docs, tok), _encode(eval_docs, tok)
    meta = {"source": key, "train_bytes": _nbytes(train_docs), "eval_bytes": _nbytes(eval_docs),
            "train_docs": len(train_docs), "eval_docs": len(eval_docs)}
    _write_shards(folder, train, eval_, meta)
    return SourceTokens(source, train, eval_, meta["train_bytes"], meta["eval_bytes"])


def _nbytes(docs: list[str]) -> int:
    return sum(len(d.encode()) for d in docs)


def _encode(docs: list[str], tok) -> np.ndarray:
    eos = eos_id(tok)
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.uint32
    ids = [np.asarray(e.ids + [eos], dtype=dtype) for e in tok.encode_batch(docs)]
    return np.concatenate(ids) if ids else np.zeros(0, dtype=dtype)


def _write_shards(folder: Path, train: np.ndarray, eval_: np.ndarray, meta: dict) -> None:
    """Write to a temporary folder and rename, so a concurrent reader sees all shards or none."""
    tmp = folder.with_name(folder.name + f".tmp{np.random.randint(1 << 30)}")
    tmp.mkdir(parents=True)
    np.save(tmp / "train.npy", train)
    np.save(tmp / "eval.npy", eval_)
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race; its shards are identical
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


class Batches:
    """Deterministic training batches: each source's stream is cut into windows of seq_len + 1
    (stride seq_len); every epoch visits each window once in a seeded random order. Rows of a batch
    pick a source by the mixture weights. The position is plain data, so checkpoints can save it."""

    def __init__(self, data: TokenData, seq_len: int, batch_size: int, seed: int):
        self.streams = [s.train for s in data.train]
        self.windows = [max(0, (len(s) - 1) // seq_len) for s in self.streams]
        empty = [s.source for s, n in zip(data.train, self.windows) if n == 0]
        if empty:
            raise UserError(f"data source {empty[0].kind}:{empty[0].target} has too few tokens for one sequence")
        self.weights = torch.tensor([s.source.weight for s in data.train], dtype=torch.float64)
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.position = {"step": 0, "consumed": [0] * len(self.streams)}
        self._orders: dict[tuple[int, int], torch.Tensor] = {}

    def _order(self, src: int, epoch: int) -> torch.Tensor:
        if (src, epoch) not in self._orders:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + src * 7919 + epoch)
            self._orders = {k: v for k, v in self._orders.items() if k[0] != src}
            self._orders[(src, epoch)] = torch.randperm(self.windows[src], generator=g)
        return self._orders[(src, epoch)]

    def _row_sources(self, step: int) -> list[int]:
        if len(self.streams) == 1:
            return [0] * self.batch_size
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 104_729 * (step + 1))
        return torch.multinomial(self.weights, self.batch_size, replacement=True, generator=g).tolist()

    def next(self) -> torch.Tensor:
        """The next batch as a LongTensor [batch, seq_len + 1] (inputs and shifted targets)."""
        rows = []
        for src in self._row_sources(self.position["step"]):
            k = self.position["consumed"][src]
            epoch, idx = divmod(k, self.windows[src])
            start = int(self._order(src, epoch)[idx]) * self.seq_len
            rows.append(np.asarray(self.streams[src][start:start + self.seq_len + 1], dtype=np.int64))
            self.position["consumed"][src] = k + 1
        self.position["step"] += 1
        return torch.from_numpy(np.stack(rows))

    def epochs(self, steps: int) -> float:
        """Epochs over the training data (of the most-repeated source) that `steps` batches imply."""
        per_source = self.weights * steps * self.batch_size
        return max(float(n / w) for n, w in zip(per_source, self.windows))


def eval_batches(data: TokenData, seq_len: int, eval_tokens: int, batch_size: int) -> list[torch.Tensor]:
    """The fixed evaluation set: the first `eval_tokens` of the eval stream in windows of seq_len + 1."""
    n = min(len(data.eval) - 1, eval_tokens) // seq_len
    if n == 0:
        raise UserError(f"evaluation set has fewer than {seq_len + 1} tokens")
    rows = np.stack([np.asarray(data.eval[i * seq_len:(i + 1) * seq_len + 1], dtype=np.int64) for i in range(n)])
    return [torch.from_numpy(rows[i:i + batch_size]) for i in range(0, n, batch_size)]


def token_buckets(data: TokenData) -> torch.Tensor:
    """Bucket of every vocabulary id by training frequency: 0 frequent (the most frequent ids making
    up half of the training tokens), 1 middle (the next ids up to 90%), 2 rare (the rest)."""
    counts = _train_counts(data)
    order = np.argsort(-counts, kind="stable")
    cum = np.cumsum(counts[order]) / max(1, counts.sum())
    buckets = np.full(data.vocab_size, 2, dtype=np.int64)
    buckets[order[cum <= 0.5]] = 0
    buckets[order[(cum > 0.5) & (cum <= 0.9)]] = 1
    buckets[order[0]] = 0  # the most frequent id is frequent even if it alone passes 50%
    return torch.from_numpy(buckets)


def unigram_loss(data: TokenData) -> float:
    """Cross-entropy (nats/token) of the eval targets under the training unigram distribution,
    add-one smoothed: the loss of the best model that ignores context."""
    counts = _train_counts(data) + 1.0
    logp = np.log(counts / counts.sum())
    eval_ids = np.asarray(data.eval[1:], dtype=np.int64)
    return float(-logp[eval_ids].mean())


def _train_counts(data: TokenData) -> np.ndarray:
    counts = np.zeros(data.vocab_size, dtype=np.float64)
    for s in data.train:
        counts += s.source.weight * np.bincount(np.asarray(s.train), minlength=data.vocab_size)[:data.vocab_size] / max(1, len(s.train))
    return counts * data.train_tokens


def bytes_per_token(data: TokenData) -> float:
    return data.eval_bytes / max(1, len(data.eval))


def warn_epochs(epochs: float) -> str | None:
    if epochs > 4:
        return f"warning: this budget repeats the training data {epochs:.1f} times (more than 4 epochs)"
    return None



