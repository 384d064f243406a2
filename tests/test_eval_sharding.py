"""Evaluation under DDP counts every test example exactly once.

``BatchLoader`` shards are checked directly for world size 2 (and 3) with odd sizes; then
``harness.core.evaluate.evaluate`` runs on two simulated ranks (threads with real all-reduce and
all-gather semantics, ``test_ddp_threads``) and must give exactly the single-process scores. The
real two-process check is in ``test_ddp.py``.
"""

from __future__ import annotations

import pytest
import torch
from test_ddp_threads import run_ranks, thread_dist

from harness.api import IGNORE, BatchLoader, DataSpec, TaskData
from harness.core import evaluate as evaluate_mod
from harness.core.network import Network
from harness.models.mlp import MLP, MLPConfig


def _ids(n: int) -> TaskData:
    """Examples whose input is their own index, so a batch says which examples it holds."""
    x = torch.arange(n, dtype=torch.float32)[:, None]
    return TaskData(x, torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long))


def _seen(loader) -> list[int]:
    return [int(v) for batch in loader for v in batch.x[:, 0]]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 101, 128])
@pytest.mark.parametrize("batch_size", [1, 5, 16])
def test_evaluation_shards_cover_every_example_exactly_once(world, n, batch_size):
    data = _ids(n)
    seen = [_seen(BatchLoader(data, batch_size, shuffle=False, rank=r, world_size=world))
            for r in range(world)]
    union = sorted(i for part in seen for i in part)
    assert union == list(range(n))  # no example missing, none twice (no padding)
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


@pytest.mark.parametrize("n", [7, 101])
def test_training_shards_are_equal_and_disjoint(n):
    """Training shards are trimmed to equal length: every rank takes as many steps."""
    data = _ids(n)
    for epoch_seed in (0, 1):
        parts = [_seen(BatchLoader(data, 4, shuffle=True, seed=epoch_seed, rank=r,
                                   world_size=2)) for r in range(2)]
        assert len(parts[0]) == len(parts[1]) == n // 2
        assert not set(parts[0]) & set(parts[1])


def _network(task: str) -> tuple[Network, list[TaskData]]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if task == "classification":
        spec = DataSpec(kind="vectors", task="classification", input_dim=6, n_classes=5)
        net = Network(MLP(MLPConfig(hidden=[8]), spec), spec)
        sets = []
        for n in (101, 1, 38):  # odd sizes, and one rank with nothing to score
            x = torch.randn(n, 6, generator=g)
            sets.append(TaskData(x, torch.randint(5, (n,), generator=g),
                                 torch.zeros(n, dtype=torch.long)))
        return net, sets
    from harness.models.lstm import LSTM, LSTMConfig

    spec = DataSpec(kind="tokens", task="lm", vocab_size=11, seq_len=9)
    net = Network(LSTM(LSTMConfig(d_model=8, n_layer=1), spec), spec)
    sets = []
    for n in (23, 3):
        x = torch.randint(11, (n, 9), generator=g)
        y = torch.roll(x, -1, 1)
        y[:, -1] = IGNORE
        y[::2, :3] = IGNORE  # ragged: rows carry different numbers of tokens
        sets.append(TaskData(x, y, torch.zeros(n, dtype=torch.long)))
    return net, sets


@pytest.mark.parametrize("task", ["classification", "lm"])
def test_sharded_evaluation_equals_single_process(task, monkeypatch):
    net, sets = _network(task)
    single = evaluate_mod.evaluate(net, sets, batch_size=8)
    proxy, bind = thread_dist()
    monkeypatch.setattr(evaluate_mod, "DIST", proxy)

    def rank(dist):
        bind(dist)
        return evaluate_mod.evaluate(net, sets, batch_size=8)

    for scores in run_ranks(2, rank):
        assert scores.keys() == single.keys()
        for metric, values in single.items():
            # counts and predictions exactly; fp32 loss sums grouped by other batches: ~1e-8
            assert scores[metric] == pytest.approx(values, rel=1e-6, abs=1e-9), metric
        if task == "classification":
            assert scores["accuracy"] == single["accuracy"]


def test_one_pass_over_every_test_set_equals_scoring_them_one_by_one(monkeypatch):
    """A memory-less classifier is scored on all sets at once; a model with memory set by set."""
    net, sets = _network("classification")
    sets.insert(1, TaskData(torch.empty(0, 6), torch.empty(0, dtype=torch.long),
                            torch.empty(0, dtype=torch.long)))  # an empty set keeps its place
    calls = []
    original = net.forward
    monkeypatch.setattr(net, "forward", lambda x, t=None: calls.append(len(x)) or original(x, t))
    together = evaluate_mod.evaluate(net, sets, batch_size=8)
    assert calls == [8] * 17 + [4]  # 140 examples, batches running across the sets
    monkeypatch.setattr(evaluate_mod, "carries_memory", lambda model: True)
    one_by_one = evaluate_mod.evaluate(net, sets, batch_size=8)
    assert calls[18:] == [8] * 12 + [5, 1] + [8] * 4 + [6]  # sets of 101, 0, 1, 38 one by one
    assert together.keys() == one_by_one.keys()
    for metric, values in one_by_one.items():
        assert together[metric] == pytest.approx(values, rel=1e-6, abs=1e-9, nan_ok=True), metric
    assert together["accuracy"][1] != together["accuracy"][1]  # NaN for the empty set


def test_every_lm_score_but_accuracy_counts_as_lower_is_better():
    """Forgetting and BWT take their sign from LOWER_IS_BETTER: a metric evaluation reports
    under another name would be summarised as if higher were better."""
    from harness.core.metrics import LOWER_IS_BETTER

    net, sets = _network("lm")
    reported = set(evaluate_mod.evaluate(net, sets, batch_size=8, token_bytes=[1] * 11))
    assert reported - {"accuracy"} == LOWER_IS_BETTER
