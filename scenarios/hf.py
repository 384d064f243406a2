"""HF: domain-incremental language modelling over Hugging Face ``datasets``, one per task.

Optional and online: needs ``pip install datasets`` and access to the Hub (or a local dataset
folder / HF cache). Nothing else in retain depends on it; its tests use an in-memory fake of
``datasets`` and never reach the Hub. Each entry of ``scenario.datasets`` is ``path`` or
``path:config`` and becomes one experience; documents are streamed (only as many as the split
sizes need are fetched), then split by document and packed exactly like ``text-domains``, so
results are comparable across the two.

    pip install datasets
    retain run scenario.name=hf scenario.datasets=[wikitext:wikitext-2-raw-v1,ptb_text_only]

With ``scenario.revision`` set, the prepared arrays are cached by that revision and a second run
needs no network; without it, documents are fetched each run and cached by their content hash.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field

from harness.api import DataSpec, Scenario
from harness.errors import UserError
from harness.registry import register_scenario
from scenarios.cache import cache_dir_option, cache_flag, fingerprint, prepare
from scenarios.lm_split import equalise, split_and_pack
from scenarios.splits import lm_task_data
from scenarios.tokenize import chosen_tokenizer, text_tokenizer_option, vocab_and_pad

FORMAT_VERSION = 2


@dataclass
class HFConfig:
    name: str = "hf"
    datasets: list[str] = field(default_factory=list, metadata={
        "help": "one Hub dataset per task: 'path' or 'path:config', in task order"})
    n_experiences: int = field(default=0, metadata={"help": "first n datasets (0 = all)",
                                                    "min": 0})
    split: str = field(default="train", metadata={"help": "dataset split to read documents from"})
    text_field: str = field(default="text", metadata={"help": "column holding the text"})
    revision: str = field(default="", metadata={
        "help": "dataset revision (commit) to pin; also makes the prep cache work offline"})
    max_documents: int = field(default=200_000, metadata={
        "help": "stop reading a dataset after this many documents", "min": 1})
    seq_len: int = field(default=128, metadata={"help": "tokens (bytes) per training sequence",
                                                "min": 1})
    tokenizer: str = text_tokenizer_option()
    train_tokens: int = field(default=163_840, metadata={
        "help": "training tokens per task (at least seq_len)", "min": 1})
    val_tokens: int = field(default=8_192, metadata={"help": "validation tokens (0 = none)",
                                                     "min": 0})
    test_tokens: int = field(default=20_480, metadata={
        "help": "test tokens per task (at least seq_len)", "min": 1})
    split_seed: int = field(default=0, metadata={"help": "document shuffle for the splits",
                                                 "min": 0, "max": 2**32 - 1})
    cache: bool = cache_flag()
    cache_dir: str = cache_dir_option()

    def check(self) -> None:
        if not self.datasets:
            raise UserError("scenario 'hf' needs scenario.datasets=[path or path:config, ...]")
        if self.n_experiences > len(self.datasets):
            raise UserError(f"scenario.n_experiences={self.n_experiences} must be between 0 and "
                            f"{len(self.datasets)}")
        if self.train_tokens < self.seq_len or self.test_tokens < self.seq_len:
            raise UserError(f"scenario train_tokens and test_tokens must be at least "
                            f"seq_len={self.seq_len}")


def fetch_documents(cfg: HFConfig, spec: str, needed_bytes: int) -> list[str]:
    """Non-empty documents of one dataset, streamed until ``needed_bytes`` are in hand."""
    if importlib.util.find_spec("datasets") is None:
        raise UserError("scenario 'hf' needs the PyPI package 'datasets': pip install datasets")
    import datasets

    path, _, config = spec.partition(":")
    try:
        stream = datasets.load_dataset(path, config or None, split=cfg.split, streaming=True,
                                       revision=cfg.revision or None)
    except Exception as err:  # the Hub, the network, a wrong name: all the user's to fix
        raise UserError(f"could not load dataset '{spec}' split '{cfg.split}': {err}") from None
    docs, have, seen = [], 0, set()  # repeated documents could straddle two splits
    for row in stream:
        if cfg.text_field not in row:
            raise UserError(f"dataset '{spec}' has no column '{cfg.text_field}' "
                            f"(columns: {sorted(row)}); set scenario.text_field")
        text = row[cfg.text_field]
        if isinstance(text, str) and text.strip() and text not in seen:
            seen.add(text)
            docs.append(text)
            have += len(text.encode("utf-8")) + 1
        # twice the need leaves the document shuffle something to choose from
        if have >= 2 * needed_bytes or len(docs) >= cfg.max_documents:
            break
    if not docs:
        raise UserError(f"dataset '{spec}' split '{cfg.split}' has no text")
    return docs


def prepare_dataset(cfg: HFConfig, spec: str, tok=None):
    tokens = {"train": cfg.train_tokens, "val": cfg.val_tokens, "test": cfg.test_tokens}
    key = {"dataset": spec, "split": cfg.split, "field": cfg.text_field, "tokens": tokens,
           "seq_len": cfg.seq_len, "split_seed": cfg.split_seed, "version": FORMAT_VERSION,
           "max_documents": cfg.max_documents}
    if tok is not None:  # byte entries keep the key they always had
        key["tokenizer"] = tok.fingerprint()
    fetched: list[str] = []

    def docs() -> list[str]:
        if not fetched:
            fetched.extend(fetch_documents(cfg, spec, sum(tokens.values())))
        return fetched

    if cfg.revision:
        source = f"revision:{cfg.revision}"  # pinned: a cached entry is valid without network
    else:
        source = fingerprint(*docs())
    return prepare("hf", key, source,
                   lambda: split_and_pack(docs(), cfg.seq_len, tokens, cfg.split_seed,
                                          f"dataset '{spec}'",
                                          tok.join_documents if tok else None),
                   cfg.cache_dir, cfg.cache)


@register_scenario("hf", config=HFConfig)
def build(cfg: HFConfig, seed: int, tokenizer=None) -> Scenario:
    start = time.perf_counter()
    cfg.check()
    tok = chosen_tokenizer(cfg.tokenizer, tokenizer)
    vocab, pad = vocab_and_pad(tok)
    names = list(cfg.datasets)[: cfg.n_experiences or None]
    prepared = [prepare_dataset(cfg, n, tok) for n in names]
    splits = {s: [lm_task_data(w, i, pad) for i, w in enumerate(equalise(prepared, s))]
              for s in ("train", "val", "test")}
    spec = DataSpec(kind="tokens", task="lm", vocab_size=vocab, seq_len=cfg.seq_len,
                    pad_id=pad)
    info = {"prep_s": time.perf_counter() - start, "cache_hits": sum(p.hit for p in prepared),
            "bytes": sum(p.nbytes for p in prepared),
            "cache_entries": [str(p.path) for p in prepared if p.path]}
    if tok is not None:  # bits per byte, comparable across tokenizers
        info["token_bytes"], info["tokenizer"] = tok.token_bytes(), tok.name
    return Scenario.from_splits(cfg.name, spec, names, "domain-il", splits["train"],
                                splits["test"], splits["val"] if cfg.val_tokens else None,
                                info=info)

