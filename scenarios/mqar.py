"""MQAR: multi-query associative recall (Arora et al., Zoology), as a stream of tasks.

One sequence lists ``n_pairs`` key-value pairs, then asks for the keys again, each at a
power-law distributed distance from the start of the query region; the model must emit the
value bound to each key. Pairs are random per sequence, so only in-context memory can answer.
The loss is taken at the query positions only (targets are -100 elsewhere). Chance is
1/n_values for a model that cannot see the pairs (a query beyond its window), and 1/n_pairs for
one that sees them but does not bind keys to values (any value of the sequence).

As a continual stream, experience i draws keys and values from its own disjoint slice of the
vocabulary (layout below), so training on a later experience can overwrite what the model
learned about an earlier experience's tokens: accuracy on old slices measures retention of the
recall skill for them. Non-query positions hold random filler tokens shared by all tasks.

Vocabulary: ``[0, n_filler)`` filler, then per experience ``n_keys`` keys and ``n_values``
values. ``mqar_sequences`` is the pure generator (also used by model tests)::

    g = torch.Generator().manual_seed(0)
    x, y = mqar_sequences(4, 64, 8, torch.arange(10, 40), torch.arange(40, 70), g)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.api import DataSpec, Scenario, TaskData
from harness.errors import UserError
from harness.registry import register_scenario
from scenarios.tokenize import IGNORE


def power_law_gaps(n: int, space: int, k: int, alpha: float, generator: torch.Generator) -> Tensor:
    """(n, k) distinct offsets in [0, space), P(offset = j) ∝ (j + 1)^(alpha - 1).

    Sampling without replacement uses the Gumbel-top-k trick, vectorised over rows.
    """
    logp = (alpha - 1) * torch.log(torch.arange(1, space + 1, dtype=torch.float64))
    u = torch.rand(n, space, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    return torch.topk(logp - torch.log(-torch.log(u)), k, dim=1).indices


def _choose(n: int, k: int, ids: Tensor, generator: torch.Generator) -> Tensor:
    """(n, k) distinct draws from ``ids`` per row."""
    return ids[torch.rand(n, len(ids), generator=generator).argsort(dim=1)[:, :k]]


def mqar_sequences(n: int, seq_len: int, n_pairs: int, key_ids: Tensor, value_ids: Tensor,
                   generator: torch.Generator, filler_ids: Tensor | None = None,
                   alpha: float = 0.01) -> tuple[Tensor, Tensor]:
    """``n`` MQAR examples: inputs ``x`` (n, seq_len) and targets ``y`` (n, seq_len) long.

    Positions ``0 .. 2*n_pairs-1`` hold ``k1 v1 k2 v2 ...``; each key is asked once more in the
    rest of the sequence, and ``y`` holds its value at that query position (-100 elsewhere), so
    a causal model predicts the value right after reading the query key. Keys and values are
    drawn without replacement from ``key_ids`` / ``value_ids``; other positions hold random
    ``filler_ids`` (0 when None, like Zoology without random non-queries).
    Requires ``4 * n_pairs <= seq_len`` (as in Zoology) and enough distinct keys and values.
    """
    key_ids, value_ids = torch.as_tensor(key_ids), torch.as_tensor(value_ids)
    context = 2 * n_pairs
    if 4 * n_pairs > seq_len or n_pairs > min(len(key_ids), len(value_ids)):
        raise ValueError(f"MQAR needs 4*n_pairs <= seq_len and n_pairs <= keys, values "
                         f"(n_pairs={n_pairs}, seq_len={seq_len}, keys={len(key_ids)}, "
                         f"values={len(value_ids)})")
    keys = _choose(n, n_pairs, key_ids, generator)
    values = _choose(n, n_pairs, value_ids, generator)
    if filler_ids is None:
        x = torch.zeros((n, seq_len), dtype=torch.long)
    else:
        filler_ids = torch.as_tensor(filler_ids)
        x = filler_ids[torch.randint(len(filler_ids), (n, seq_len), generator=generator)]
    x[:, 0:context:2], x[:, 1:context:2] = keys, values
    query_pos = context + 2 * power_law_gaps(n, (seq_len - context) // 2, n_pairs, alpha,
                                             generator)
    x.scatter_(1, query_pos, keys)
    y = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    y.scatter_(1, query_pos, values)
    return x, y


@dataclass
class MQARConfig:
    name: str = "mqar"
    n_experiences: int = field(default=4, metadata={"help": "tasks, each with its own vocabulary",
                                                    "min": 1})
    seq_len: int = field(default=128, metadata={"help": "tokens per sequence (>= 4 * n_pairs)",
                                                "min": 1})
    n_pairs: int = field(default=8, metadata={
        "help": "key-value pairs per sequence (at most n_keys and n_values)", "min": 1})
    n_keys: int = field(default=64, metadata={"help": "key vocabulary per experience", "min": 1})
    n_values: int = field(default=64, metadata={"help": "value vocabulary per experience",
                                                "min": 1})
    n_filler: int = field(default=16, metadata={"help": "filler vocabulary shared by all tasks",
                                                "min": 1})
    alpha: float = field(default=0.01, metadata={
        "help": "power-law exponent of query distances (larger: longer gaps; 1: uniform)"})
    n_train: int = field(default=2000, metadata={"help": "training sequences per experience",
                                                 "min": 1})
    n_val: int = field(default=128, metadata={"help": "validation sequences (0 = none)",
                                              "min": 0})
    n_test: int = field(default=256, metadata={"help": "test sequences per experience", "min": 1})
    data_seed: int = field(default=0, metadata={
        "help": "generator seed; fixed so every run sees the same sequences",
        "min": 0, "max": 2**32 - 1})

    def check(self) -> None:
        if 4 * self.n_pairs > self.seq_len or self.n_pairs > min(self.n_keys, self.n_values):
            raise UserError(f"mqar needs 4*n_pairs <= seq_len and n_pairs <= n_keys, n_values "
                            f"(got n_pairs={self.n_pairs}, seq_len={self.seq_len}, "
                            f"n_keys={self.n_keys}, n_values={self.n_values})")


def vocab_slices(cfg: MQARConfig) -> list[tuple[Tensor, Tensor]]:
    """(key_ids, value_ids) of each experience."""
    width = cfg.n_keys + cfg.n_values
    out = []
    for i in range(cfg.n_experiences):
        base = cfg.n_filler + i * width
        out.append((torch.arange(base, base + cfg.n_keys),
                    torch.arange(base + cfg.n_keys, base + width)))
    return out


@register_scenario("mqar", config=MQARConfig)
def build(cfg: MQARConfig, seed: int) -> Scenario:
    cfg.check()
    g = torch.Generator().manual_seed(cfg.data_seed)
    filler = torch.arange(cfg.n_filler)
    splits = {"train": [], "val": [], "test": []}
    for i, (keys, values) in enumerate(vocab_slices(cfg)):
        for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
            x, y = mqar_sequences(n, cfg.seq_len, cfg.n_pairs, keys, values, g, filler, cfg.alpha)
            splits[split].append(TaskData(x, y, torch.full((n,), i, dtype=torch.long)))
    vocab = cfg.n_filler + cfg.n_experiences * (cfg.n_keys + cfg.n_values)
    spec = DataSpec(kind="tokens", task="lm", vocab_size=vocab, seq_len=cfg.seq_len)
    names = [f"mqar {i}" for i in range(cfg.n_experiences)]
    return Scenario.from_splits(cfg.name, spec, names, "domain-il", splits["train"],
                                splits["test"], splits["val"] if cfg.n_val else None)
