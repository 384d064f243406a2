"""Bits per byte where the tokenizer is not byte-level: each BPE id's byte count is right, and
evaluation divides the same summed loss by bytes instead of tokens."""

from __future__ import annotations

import math

import pytest
import torch

from harness.api import IGNORE, DataSpec, TaskData
from harness.core.evaluate import evaluate
from harness.core.network import Network
from harness.models.lstm import LSTM, LSTMConfig


def test_bpe_ids_know_their_bytes():
    pytest.importorskip("tokenizers")
    from scenarios.bpe import BPE, EOS_ID, PAD_ID, train_bpe

    texts = ["naïve café — déjà vu " * 20, "the quick brown fox " * 30, "日本語のテキスト " * 10]
    bpe = BPE(train_bpe(texts, 300))
    sizes = bpe.token_bytes()
    assert len(sizes) == bpe.vocab_size and (sizes[PAD_ID], sizes[EOS_ID]) == (0, 1)
    for text in ("a naïve café, déjà vu", "日本語 and fox"):
        ids = bpe.join_documents([text])  # the text's ids, then its EOS
        assert sum(sizes[i] for i in ids) == len(text.encode()) + 1


def test_bits_per_byte_is_the_loss_over_the_predicted_bytes():
    torch.manual_seed(0)
    spec = DataSpec(kind="tokens", task="lm", vocab_size=7, seq_len=6)
    net = Network(LSTM(LSTMConfig(d_model=8, n_layer=1), spec), spec)
    x = torch.randint(7, (5, 6), generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, -1, 1)
    y[:, -1] = IGNORE
    data = TaskData(x, y, torch.zeros(5, dtype=torch.long))
    sizes = [0, 1, 2, 3, 1, 4, 2]
    scores = evaluate(net, [data], batch_size=2, token_bytes=sizes)
    plain = evaluate(net, [data], batch_size=2)
    assert "bits_per_byte" not in plain  # byte-level: bits per token is bits per byte
    n_tokens, n_bytes = (y != IGNORE).sum().item(), sum(sizes[t] for t in y[y != IGNORE])
    total_bits = scores["loss"][0] * n_tokens / math.log(2)
    assert scores["bits_per_byte"][0] == pytest.approx(total_bits / n_bytes)
    assert scores["bits_per_token"] == plain["bits_per_token"]
