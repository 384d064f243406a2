"""Passkey retrieval (needle in a haystack) as a stream of tasks, byte-level.

A sequence is filler text with one fact, "The pass key of the red door is 48213. Remember
it.", placed at a depth between 0 (start) and 1 (end of the filler), and closes with the
question "What is the pass key of the red door? It is 48213." The loss is on the answer's
digits only (targets are -100 elsewhere), so the answer can only come from memory: in-context
memory when the fact is stated, the weights when it is not.

Each experience has its own fixed set of facts (subject -> five-digit key), so a later task
brings new subjects and new keys. With ``p_stated=1`` (the default) every sequence states its
fact: the probe measures in-context retrieval over distance, and retention of that skill
across tasks. With ``p_stated < 1`` some sequences omit it and can only be answered from
facts memorised while training on that experience: forgetting of those facts shows directly.
Test sequences place the fact at evenly spaced depths (a sweep over depth); sweep
``scenario.seq_len`` for length.

``passkey_sequences`` is the pure generator (also used by model tests)::

    g = torch.Generator().manual_seed(0)
    x, y = passkey_sequences(8, 256, [("the red door", "48213")], g)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from harness.api import DataSpec, Scenario, TaskData
from harness.errors import UserError
from harness.registry import register_scenario
from scenarios.tokenize import IGNORE, PAD, VOCAB_SIZE, encode

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
          "There and back again. ")
COLOURS = ("red blue green black white grey brown pink gold silver orange purple amber "
           "ivory olive violet scarlet navy teal crimson").split()
THINGS = ("door box key lamp ship tower gate stone book bell coin map cup ring bridge "
          "road horse clock mill well").split()


def _statement(subject: str, value: str) -> str:
    return f"The pass key of {subject} is {value}. Remember it. "


def _question(subject: str, value: str) -> tuple[str, str]:
    return f"What is the pass key of {subject}? It is ", f"{value}."


def passkey_sequences(n: int, seq_len: int, facts: list[tuple[str, str]],
                      generator: torch.Generator, depths: Tensor | None = None,
                      p_stated: float = 1.0) -> tuple[Tensor, Tensor]:
    """``n`` byte-level passkey examples: ``x`` (n, seq_len) and targets ``y`` (n, seq_len).

    Each example picks a fact (subject, value) from ``facts``, states it at a depth in [0, 1]
    of the filler (``depths`` per example, uniform if None; snapped to a sentence boundary)
    with probability ``p_stated``, and ends with the question and answer. ``y`` is the next
    byte at the answer's digit positions and -100 elsewhere.
    """
    pick = torch.randint(len(facts), (n,), generator=generator)
    if depths is None:
        depths = torch.rand(n, generator=generator)
    stated = torch.rand(n, generator=generator) < p_stated
    x = torch.full((n, seq_len), PAD, dtype=torch.long)
    y = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    for r in range(n):
        subject, value = facts[int(pick[r])]
        row = _layout(seq_len, subject, value, float(depths[r]), bool(stated[r]))
        ids, answer_at = torch.from_numpy(row[0].astype(np.int64)), row[1]
        x[r] = ids[:-1]
        # the byte at position p is predicted from position p - 1: digits only, not the "."
        y[r, answer_at - 1: answer_at - 1 + len(value)] = ids[answer_at: answer_at + len(value)]
    return x, y


def _layout(seq_len: int, subject: str, value: str, depth: float,
            stated: bool) -> tuple[np.ndarray, int]:
    """seq_len + 1 byte ids and the index where the answer starts."""
    fact = encode(_statement(subject, value)) if stated else encode("")
    ask, answer = (encode(s) for s in _question(subject, value))
    room = seq_len + 1 - len(fact) - len(ask) - len(answer)
    if room < 0:
        raise UserError(f"passkey seq_len={seq_len} is too short for a fact and its question "
                        f"(needs at least {seq_len - room})")
    # the haystack is a window that ends at a sentence end, so the question reads cleanly
    filler = encode(FILLER * (room // len(FILLER) + 1))[len(FILLER) * (room // len(FILLER) + 1)
                                                         - room:]
    # the fact goes in at a sentence boundary (just after a ". "), nearest to the depth
    ends = np.flatnonzero((filler[:-1] == ord(".")) & (filler[1:] == ord(" "))) + 2
    cuts = np.concatenate([[0], ends, [room]])
    cut = int(cuts[np.abs(cuts - depth * room).argmin()])
    row = np.concatenate([filler[:cut], fact, filler[cut:], ask, answer])
    return row, len(row) - len(answer)


def experience_facts(n_experiences: int, n_facts: int, seed: int) -> list[list[tuple[str, str]]]:
    """Distinct subjects for all experiences (none shared) and fixed five-digit keys."""
    rng = np.random.default_rng(seed)
    subjects = [f"the {c} {t}" for c in COLOURS for t in THINGS]
    if n_experiences * n_facts > len(subjects):
        raise UserError(f"passkey supports at most {len(subjects)} facts in all "
                        f"(n_experiences * n_facts)")
    order = rng.permutation(len(subjects))[: n_experiences * n_facts]
    keys = rng.integers(10_000, 100_000, size=len(order))
    facts = [(subjects[s], str(k)) for s, k in zip(order, keys)]
    return [facts[i * n_facts:(i + 1) * n_facts] for i in range(n_experiences)]


@dataclass
class PasskeyConfig:
    name: str = "passkey"
    n_experiences: int = field(default=3, metadata={"help": "tasks, each with its own facts",
                                                    "min": 1})
    n_facts: int = field(default=16, metadata={"help": "facts (subject -> key) per experience",
                                               "min": 1})
    seq_len: int = field(default=256, metadata={"help": "bytes per sequence", "min": 1})
    p_stated: float = field(default=1.0, metadata={
        "help": "probability that a sequence states its fact (below 1: partly closed-book)",
        "min": 0, "max": 1})
    n_train: int = field(default=1000, metadata={"help": "training sequences per experience",
                                                 "min": 1})
    n_val: int = field(default=64, metadata={"help": "validation sequences (0 = none)", "min": 0})
    n_test: int = field(default=110, metadata={
        "help": "test sequences, at evenly spaced depths from 0 to 1", "min": 1})
    data_seed: int = field(default=0, metadata={
        "help": "generator seed; fixed so every run sees the same facts and sequences",
        "min": 0, "max": 2**32 - 1})

    def check(self) -> None:
        if self.n_experiences * self.n_facts > len(COLOURS) * len(THINGS):
            raise UserError(f"passkey supports at most {len(COLOURS) * len(THINGS)} facts in "
                            f"all; scenario.n_experiences * scenario.n_facts = "
                            f"{self.n_experiences * self.n_facts}")


@register_scenario("passkey", config=PasskeyConfig)
def build(cfg: PasskeyConfig, seed: int) -> Scenario:
    cfg.check()
    g = torch.Generator().manual_seed(cfg.data_seed)
    splits = {"train": [], "val": [], "test": []}
    for i, facts in enumerate(experience_facts(cfg.n_experiences, cfg.n_facts, cfg.data_seed)):
        for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
            depths = torch.linspace(0, 1, n) if split == "test" else None
            x, y = passkey_sequences(n, cfg.seq_len, facts, g, depths, cfg.p_stated)
            splits[split].append(TaskData(x, y, torch.full((n,), i, dtype=torch.long)))
    spec = DataSpec(kind="tokens", task="lm", vocab_size=VOCAB_SIZE, seq_len=cfg.seq_len,
                    pad_id=PAD)
    return Scenario.from_splits(cfg.name, spec, [f"passkey {i}" for i in range(cfg.n_experiences)],
                                "domain-il", splits["train"], splits["test"],
                                splits["val"] if cfg.n_val else None)
