"""Tokenizers: a byte-level BPE trained once on the default corpus (cached), or any HF tokenizer.

Spec strings: "bpe-N" trains (once) a byte-level BPE with N entries on the default corpus's training
documents only, never its held-out evaluation documents; anything else is a path to a tokenizer.json
(or a folder holding one) or a hub name loaded with HF `tokenizers`.
"""
from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from bench.errors import UserError
from bench.paths import cache_dir

EOS = "<|endoftext|>"
_BPE = re.compile(r"^bpe-(\d+)$")


def load_tokenizer(spec: str, training_texts=None) -> Tokenizer:
    """The tokenizer for `spec`; `training_texts()` yields the texts a bpe-N tokenizer is trained on."""
    m = _BPE.match(spec)
    if m:
        return _cached_bpe(int(m[1]), training_texts)
    path = Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.suffix == ".json":
        if not path.exists():
            raise UserError(f"tokenizer file not found: {path}")
        return Tokenizer.from_file(str(path))
    try:
        return Tokenizer.from_pretrained(spec)
    except Exception as e:
        raise UserError(f"cannot load tokenizer {spec!r} (offline, or not a hub name): {type(e).__name__}") from None


def eos_id(tok: Tokenizer) -> int:
    for name in (EOS, "</s>", "<|end_of_text|>", "<eos>"):
        idx = tok.token_to_id(name)
        if idx is not None:
            return idx
    raise UserError("tokenizer has no end-of-text token")


def tokenizer_identity(tok: Tokenizer) -> str:
    """A content hash: two tokenizers with the same hash tokenize identically."""
    return hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]


def _cached_bpe(vocab_size: int, training_texts) -> Tokenizer:
    if vocab_size < 257 or vocab_size > 65536:
        raise UserError(f"bpe vocabulary must be in 257..65536, got {vocab_size}")
    path = cache_dir() / "tokenizers" / f"bpe-{vocab_size}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    if training_texts is None:
        raise UserError(f"tokenizer bpe-{vocab_size} is not trained yet and no corpus was given")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_texts(), trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: trials on this node, or on others sharing the cache, may train it at once
    tmp = path.with_suffix(f".tmp{uuid.uuid4().hex}")
    tok.save(str(tmp))
    tmp.replace(path)  # atomic: concurrent trials never read a half-written file
    return tok
