"""Passkey retrieval (needle in a haystack) as a stream of tasks, byte-level, in two variants.

``variant=needle`` (default), a probe only memory can solve: a sequence is filler text with one
fact, "The pass key of the red door is 48213. Remember it.", placed at a depth between 0 (start)
and 1 (end of the filler), and closes with "What is the pass key of the red door? It is 48213."
The five digits are drawn afresh for every sequence, so no weight can hold them: the answer
must come from the context, in the attention window or in a memory that reaches beyond it.
Chance is 0.1 per digit (the score is accuracy on the answer's digits).

``variant=facts``, closed-book knowledge retention: each experience has its own fixed facts
(subject -> five-digit key) and the sequences ask without stating them, so the answer can only
come from the weights (or a store) that learned that experience's facts; accuracy on an old
experience shows forgetting directly.

Both variants give each experience its own subjects. The loss is on the answer's digits only
(targets are -100 elsewhere). Test sequences place the fact at evenly spaced depths (a sweep
over depth); sweep ``scenario.seq_len`` for length.

``passkey_sequences`` is the pure generator (also used by model tests)::

    g = torch.Generator().manual_seed(0)
    x, y = passkey_sequences(8, 256, ["the red door"], g)                    # needle
    x, y = passkey_sequences(8, 256, ["the red door"], g, keys=["48213"])    # closed-book
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
KEY_DIGITS = 5
VARIANTS = ("needle", "facts")
THINGS = ("door box key lamp ship tower gate stone book bell coin map cup ring bridge "
          "road horse clock mill well").split()


def _statement(subject: str, value: str) -> str:
    return f"The pass key of {subject} is {value}. Remember it. "


def _question(subject: str, value: str) -> tuple[str, str]:
    return f"What is the pass key of {subject}? It is ", f"{value}."


def passkey_sequences(n: int, seq_len: int, subjects: list[str], generator: torch.Generator,
                      depths: Tensor | None = None,
                      keys: list[str] | None = None) -> tuple[Tensor, Tensor]:
    """``n`` byte-level passkey examples: ``x`` (n, seq_len) and targets ``y`` (n, seq_len).

    Each example picks a subject. Without ``keys`` (needle) its key is five random digits drawn
    for that example and stated at a depth in [0, 1] of the filler (``depths`` per example,
    uniform if None; snapped to a sentence boundary). With ``keys`` (closed-book) the subject's
    key is ``keys[i]`` and is never stated. Every example ends with the question and answer;
    ``y`` is the next byte at the answer's digit positions and -100 elsewhere.
    """
    pick = torch.randint(len(subjects), (n,), generator=generator)
    digits = torch.randint(10, (n, KEY_DIGITS), generator=generator)
    if depths is None:
        depths = torch.rand(n, generator=generator)
    x = torch.full((n, seq_len), PAD, dtype=torch.long)
    y = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    for r in range(n):
        subject = subjects[int(pick[r])]
        value = "".join(map(str, digits[r].tolist())) if keys is None else keys[int(pick[r])]
        row = _layout(seq_len, subject, value, float(depths[r]), stated=keys is None)
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


def experience_subjects(n_experiences: int, n_subjects: int, seed: int) -> list[list[str]]:
    """Distinct subjects for all experiences (none shared)."""
    rng = np.random.default_rng(seed)
    subjects = [f"the {c} {t}" for c in COLOURS for t in THINGS]
    if n_experiences * n_subjects > len(subjects):
        raise UserError(f"passkey supports at most {len(subjects)} facts in all "
                        f"(n_experiences * n_facts)")
    order = rng.permutation(len(subjects))[: n_experiences * n_subjects]
    return [[subjects[s] for s in order[i * n_subjects:(i + 1) * n_subjects]]
            for i in range(n_experiences)]


def experience_keys(subjects: list[list[str]], seed: int) -> list[list[str]]:
    """The fixed five-digit key of every subject (the closed-book facts)."""
    rng = np.random.default_rng([seed, 1])
    return [[f"{k:05d}" for k in rng.integers(0, 10**KEY_DIGITS, size=len(s))]
            for s in subjects]


def min_seq_len(variant: str) -> int:
    """Bytes the longest subject's fact (needle only) and question take."""
    subject = max((f"the {c} {t}" for c in COLOURS for t in THINGS), key=len)
    value = "0" * KEY_DIGITS
    fact = _statement(subject, value) if variant == "needle" else ""
    return len(encode(fact + "".join(_question(subject, value)))) - 1


@dataclass
class PasskeyConfig:
    name: str = "passkey"
    n_experiences: int = field(default=3, metadata={"help": "tasks, each with its own facts",
                                                    "min": 1})
    variant: str = field(default="needle", metadata={
        "help": "needle: a key random in each sequence, stated in it (only context or memory "
                "can answer; chance 0.1 per digit); facts: each task's fixed keys, never stated "
                "(closed-book retention; chance 0.1)", "choices": VARIANTS})
    n_facts: int = field(default=16, metadata={"help": "subjects (facts) per experience",
                                               "min": 1})
    seq_len: int = field(default=256, metadata={"help": "bytes per sequence", "min": 1})
    n_train: int = field(default=1000, metadata={"help": "training sequences per experience",
                                                 "min": 1})
    n_val: int = field(default=64, metadata={"help": "validation sequences (0 = none)", "min": 0})
    n_test: int = field(default=110, metadata={
        "help": "test sequences, at evenly spaced depths from 0 to 1", "min": 1})
    data_seed: int = field(default=0, metadata={
        "help": "generator seed; fixed so every run sees the same subjects and sequences",
        "min": 0, "max": 2**32 - 1})

    def check(self) -> None:
        if self.seq_len < min_seq_len(self.variant):
            raise UserError(f"scenario.seq_len={self.seq_len} is too short for a passkey "
                            f"{self.variant} sequence: at least {min_seq_len(self.variant)}")
        if self.n_experiences * self.n_facts > len(COLOURS) * len(THINGS):
            raise UserError(f"passkey supports at most {len(COLOURS) * len(THINGS)} facts in "
                            f"all; scenario.n_experiences * scenario.n_facts = "
                            f"{self.n_experiences * self.n_facts}")


@register_scenario("passkey", config=PasskeyConfig)
def build(cfg: PasskeyConfig, seed: int) -> Scenario:
    cfg.check()
    g = torch.Generator().manual_seed(cfg.data_seed)
    subjects = experience_subjects(cfg.n_experiences, cfg.n_facts, cfg.data_seed)
    keys = experience_keys(subjects, cfg.data_seed) if cfg.variant == "facts" else None
    splits = {"train": [], "val": [], "test": []}
    for i in range(cfg.n_experiences):
        for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
            depths = torch.linspace(0, 1, n) if split == "test" else None
            x, y = passkey_sequences(n, cfg.seq_len, subjects[i], g, depths,
                                     keys[i] if keys else None)
            splits[split].append(TaskData(x, y, torch.full((n,), i, dtype=torch.long)))
    spec = DataSpec(kind="tokens", task="lm", vocab_size=VOCAB_SIZE, seq_len=cfg.seq_len,
                    pad_id=PAD)
    names = [f"passkey {cfg.variant} {i}" for i in range(cfg.n_experiences)]
    return Scenario.from_splits(cfg.name, spec, names, "domain-il", splits["train"], splits["test"],
                                splits["val"] if cfg.n_val else None)
