"""Progress of long evaluations: quiet when short, a line every few seconds when long."""

from __future__ import annotations

import pytest
import torch

from harness.api import DataSpec, TaskData
from harness.core.evaluate import eval_batches, evaluate
from harness.core.network import Network
from harness.models.lstm import LSTM, LSTMConfig
from harness.runtime.progress import Ticker


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_short_loop_says_nothing_and_a_long_one_reports_every_few_seconds():
    clock, lines = Clock(), []
    quiet = Ticker("eval", 10, quiet_s=5, every_s=15, clock=clock, out=lines.append)
    for _ in range(10):
        clock.now += 0.4
        quiet.step()
    quiet.close()
    assert lines == []
    long = Ticker("untrained evaluation", 100, quiet_s=5, every_s=15, clock=clock,
                  out=lines.append)
    for _ in range(100):
        clock.now += 1.0
        long.step()
    long.close()
    assert lines[0] == "untrained evaluation: 5/100 batches (5%), 5 s, about 95 s left"
    assert len(lines) == 7 + 1 and lines[1].startswith("untrained evaluation: 20/100")
    assert lines[-1] == "untrained evaluation: done in 100 s"


def test_evaluate_counts_every_batch_it_reads():
    spec = DataSpec(kind="tokens", task="lm", vocab_size=7, seq_len=6)
    net = Network(LSTM(LSTMConfig(d_model=8, n_layer=1), spec), spec)
    sets = [TaskData(torch.randint(7, (n, 6)), torch.randint(7, (n, 6)),
                     torch.zeros(n, dtype=torch.long)) for n in (5, 9)]
    ticker = Ticker("eval", eval_batches(net, sets, 4), out=lambda line: None)
    evaluate(net, sets, batch_size=4, ticker=ticker)
    assert ticker.total == 2 + 3 and ticker.done == ticker.total


def test_a_large_vocabulary_is_scored_in_smaller_batches_with_the_same_sums(monkeypatch):
    from harness.core import evaluate as ev
    from harness.models.gpt import GPT, GPTConfig

    spec = DataSpec(kind="tokens", task="lm", vocab_size=50, seq_len=6)
    net = Network(GPT(GPTConfig(d_model=8, n_head=2, n_layer=1), spec), spec)  # no memory
    data = TaskData(torch.randint(50, (9, 6)), torch.randint(50, (9, 6)),
                    torch.zeros(9, dtype=torch.long))
    whole = evaluate(net, [data], batch_size=9)
    monkeypatch.setattr(ev, "LOGIT_BUDGET", 2 * 6 * 50)  # two rows of logits
    assert ev.lm_batch_size(net, 9) == 2 and eval_batches(net, [data], 9) == 5
    split = evaluate(net, [data], batch_size=9)
    assert split["loss"][0] == pytest.approx(whole["loss"][0], rel=1e-6)
