"""Text-Topics: class-incremental text classification, here language identification.

Classes are languages of the multilingual ``chatterbot-corpus`` (BSD, on PyPI); an example is
one utterance as UTF-8 bytes, truncated or padded (PAD) to ``seq_len``. Consecutive pairs of
``classes`` form the experiences, so the model must keep telling English from Spanish after it
has moved on to Japanese and Korean, without being told which task an input belongs to.

Utterances are deduplicated before splitting (the corpora repeat prompts), so no text is in
two splits; every class contributes the same number of examples to each split.

    retain run scenario.name=text-topics scenario.classes=[english,persian,spanish,korean]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from harness.api import DataSpec, Scenario
from harness.errors import UserError
from harness.registry import register_scenario
from scenarios.cache import cache_dir_option, cache_flag, file_fingerprint, prepare
from scenarios.splits import class_task_data
from scenarios.text_sources import conversations, dialogue_files
from scenarios.tokenize import (
    chosen_tokenizer,
    encode_with,
    pad_to,
    text_tokenizer_option,
    vocab_and_pad,
)

FORMAT_VERSION = 1
LANGUAGES = ["english", "spanish", "italian", "portuguese", "dutch", "persian", "ukrainian",
             "japanese", "korean", "chinese"]


@dataclass
class TextTopicsConfig:
    name: str = "text-topics"
    n_experiences: int = field(default=5, metadata={"help": "tasks; must divide len(classes)",
                                                    "min": 1})
    classes: list[str] = field(default_factory=lambda: list(LANGUAGES), metadata={
        "help": "chatterbot-corpus languages in arrival order (class id = position)"})
    seq_len: int = field(default=64, metadata={"help": "tokens (bytes) per example (truncate / "
                                                       "pad)", "min": 1})
    tokenizer: str = text_tokenizer_option()
    n_train: int = field(default=400, metadata={"help": "training examples per class", "min": 1})
    n_val: int = field(default=32, metadata={"help": "validation examples per class (0 = none)",
                                             "min": 0})
    n_test: int = field(default=100, metadata={"help": "test examples per class", "min": 1})
    split_seed: int = field(default=0, metadata={"help": "shuffle of utterances for the splits",
                                                 "min": 0, "max": 2**32 - 1})
    cache: bool = cache_flag()
    cache_dir: str = cache_dir_option()

    def check(self) -> None:
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise UserError(f"scenario.classes must be distinct languages, got {self.classes}")
        if len(self.classes) % self.n_experiences:
            raise UserError(f"scenario.n_experiences={self.n_experiences} must divide the "
                            f"{len(self.classes)} classes")


def utterances(language: str) -> list[str]:
    """Distinct utterances of one corpus language, in a stable order."""
    files = dialogue_files(language)
    if not files:
        raise UserError(f"chatterbot-corpus has no language '{language}'")
    return sorted({t.strip() for f in files for c in conversations(f) for t in c if t.strip()})


def prepare_arrays(cfg: TextTopicsConfig, tok=None) -> dict[str, np.ndarray]:
    """``<split>_x`` (N, seq_len) ids and ``<split>_y`` int64 over all classes."""
    _, pad = vocab_and_pad(tok)
    sizes = {"test": cfg.n_test, "val": cfg.n_val, "train": cfg.n_train}
    out = {f"{s}_{k}": [] for s in sizes for k in "xy"}
    rng = np.random.default_rng(cfg.split_seed)
    for label, lang in enumerate(cfg.classes):
        texts = utterances(lang)
        if len(texts) < sum(sizes.values()):
            raise UserError(f"language '{lang}' has {len(texts)} distinct utterances, fewer "
                            f"than n_train + n_val + n_test = {sum(sizes.values())}")
        order, start = rng.permutation(len(texts)), 0
        for split, n in sizes.items():
            picked = order[start:start + n]
            start += n
            out[f"{split}_x"] += [pad_to(encode_with(tok, texts[i]), cfg.seq_len, pad)
                                  for i in picked]
            out[f"{split}_y"] += [label] * n
    return {k: (np.stack(v) if k.endswith("_x") and v else np.asarray(v, dtype=np.int64))
            for k, v in out.items()}


@register_scenario("text-topics", config=TextTopicsConfig)
def build(cfg: TextTopicsConfig, seed: int, tokenizer=None) -> Scenario:
    start = time.perf_counter()
    cfg.check()
    tok = chosen_tokenizer(cfg.tokenizer, tokenizer)
    vocab, pad = vocab_and_pad(tok)
    files = [f for lang in cfg.classes for f in dialogue_files(lang)]
    key = {"classes": list(cfg.classes), "seq_len": cfg.seq_len, "sizes": [
        cfg.n_train, cfg.n_val, cfg.n_test], "split_seed": cfg.split_seed, "v": FORMAT_VERSION}
    if tok is not None:  # byte entries keep the key they always had
        key["tokenizer"] = tok.fingerprint()
    prep = prepare("text-topics", key, file_fingerprint(files),
                   lambda: prepare_arrays(cfg, tok), cfg.cache_dir, cfg.cache)
    k = len(cfg.classes) // cfg.n_experiences
    groups = [list(range(i * k, (i + 1) * k)) for i in range(cfg.n_experiences)]
    splits = {}
    for split in ("train", "val", "test"):
        x, y = prep.arrays[f"{split}_x"], prep.arrays[f"{split}_y"]
        splits[split] = [class_task_data(x[np.isin(y, g)].astype(np.int64), y[np.isin(y, g)], i)
                         for i, g in enumerate(groups)]
    spec = DataSpec(kind="tokens", task="classification", vocab_size=vocab,
                    seq_len=cfg.seq_len, n_classes=len(cfg.classes), pad_id=pad)
    names = ["+".join(cfg.classes[c] for c in g) for g in groups]
    info = {"prep_s": time.perf_counter() - start, "cache_hits": int(prep.hit),
            "bytes": prep.nbytes, "cache_entries": [str(prep.path)] if prep.path else []}
    return Scenario.from_splits(cfg.name, spec, names, "class-il", splits["train"],
                                splits["test"], splits["val"] if cfg.n_val else None,
                                classes_per_task=groups, info=info)
