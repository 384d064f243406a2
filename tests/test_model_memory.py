"""The SequenceModel protocol for gpt, xl, rmt, knn and lstm: shapes, causality, memory,
checkpoints."""

import pytest
import torch

from harness.api import DataSpec
from harness.core.network import build_model
from harness.errors import UserError
from harness.registry import MODELS

SPEC = DataSpec("tokens", "lm", vocab_size=40, seq_len=24)
SMALL = {
    "gpt": dict(d_model=32, n_head=4, n_layer=2),
    "xl": dict(d_model=32, n_head=4, n_layer=2, seg_len=8, mem_len=8),
    "rmt": dict(d_model=32, n_head=4, n_layer=2, seg_len=8, n_mem_tokens=2),
    "knn": dict(d_model=32, n_head=4, n_layer=2, seg_len=8, capacity=64, top_k=4,
                lambda_knn=0.3),
    "lstm": dict(d_model=32, n_layer=2),
}
NAMES = list(SMALL)


def build(name, spec=SPEC, **overrides):
    entry = MODELS.get(name)
    torch.manual_seed(0)
    return entry.cls(entry.config(**{**SMALL[name], **overrides}), spec)


def tokens(n=3, T=24, seed=0):
    return torch.randint(SPEC.vocab_size, (n, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_config_first_field_is_the_name(name):
    entry = MODELS.get(name)
    assert entry.config().name == name
    assert entry.cls.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_tied_head(name):
    model = build(name)
    h = model(tokens())
    assert h.shape == (3, 24, model.hidden_size)
    assert model.lm_logits(h).shape == (3, 24, SPEC.vocab_size)
    model.lm_logits(h).float().logsumexp(-1).mean().backward()
    assert model.embed.weight.grad is not None


@pytest.mark.parametrize("name", NAMES)
def test_no_position_sees_the_future(name):
    model = build(name).eval()
    x = tokens(T=24)
    for t in (0, 7, 8, 15, 22):  # inside a segment and at its boundaries
        x2 = x.clone()
        x2[:, t + 1:] = (x2[:, t + 1:] + 1) % SPEC.vocab_size
        with torch.no_grad():
            a = model(x)
            la = model.lm_logits(a)
            b = model(x2)
            lb = model.lm_logits(b)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])
        torch.testing.assert_close(la[:, : t + 1], lb[:, : t + 1])
        assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("name", ["xl", "rmt", "knn"])
def test_memory_carries_information_across_segments(name):
    """Segment 2's outputs depend on segment 1: the only path is the memory."""
    model = build(name, capacity=0) if name == "knn" else build(name)
    model.eval()
    x = tokens(T=16)
    x2 = x.clone()
    x2[:, :8] = (x2[:, :8] + 1) % SPEC.vocab_size
    with torch.no_grad():
        assert not torch.allclose(model(x)[:, 8:], model(x2)[:, 8:])
    windowed = {"xl": dict(mem_len=0), "knn": dict(capacity=0, top_k=1)}.get(name)
    if name == "xl":  # and without memory, segment 2 cannot see segment 1
        model = build(name, **windowed).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x)[:, 8:], model(x2)[:, 8:])


@pytest.mark.parametrize("name, flag", [("xl", "carry_memory"), ("rmt", "carry_memory"),
                                        ("lstm", "carry_state")])
def test_memory_carried_across_calls_and_cleared(name, flag):
    model = build(name, **{flag: True}).eval()
    x = tokens(T=8)
    with torch.no_grad():
        first = model(x)
        second = model(x)  # same input, but now reading the previous call's memory
        model.reset_memory()
        third = model(x)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(first, third)
    stateless = build(name).eval()  # carrying is off by default
    with torch.no_grad():
        torch.testing.assert_close(stateless(x), stateless(x))


def test_rmt_truncated_bptt_cuts_gradients():
    x = tokens(T=24) % 20 + 20  # three segments; segment 1 alone uses ids below 20
    x[:, :8] -= 20
    grads = {}
    for bptt in (0, 1):
        model = build("rmt", bptt_segments=bptt)
        model(x)[:, 16:].sum().backward()  # loss on the third segment only
        grads[bptt] = model.embed.weight.grad[:20].abs().sum()
    assert grads[0] > 0 and grads[1] == 0  # with bptt=1, segment 1 gets no gradient


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    model = build(name).train()
    for seed in range(3):  # knn: writes land in the store
        model(tokens(seed=seed))
    state = model.state_dict()
    fresh = build(name)
    fresh.load_state_dict(state)
    model.eval(), fresh.eval()
    x = tokens(seed=9)
    with torch.no_grad():
        a, b = model(x), fresh(x)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(model.lm_logits(a), fresh.lm_logits(b))


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_on_cpu(name):
    model = build(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = model(tokens())
        logits = model.lm_logits(h)
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("name", NAMES)
def test_vector_data_is_a_user_error(name):
    entry = MODELS.get(name)
    spec = DataSpec("vectors", "classification", input_dim=8, n_classes=2)
    with pytest.raises(UserError, match=f"model {name} reads token sequences, but scenario "
                                        "digits gives feature vectors for classification; "
                                        "models that fit: mlp$"):
        build_model(entry.config(**SMALL[name]), spec, "digits")


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError):
        build("xl", n_head=5)
    with pytest.raises(UserError):
        build("knn", write="sometimes")
    with pytest.raises(UserError):
        build("knn", eviction="lru")


def test_gpt_with_learned_positions_is_causal_and_position_aware():
    model = build("gpt", positions="learned", max_len=24).eval()
    x = tokens(T=24)
    x2 = x.clone()
    x2[:, 12:] = (x2[:, 12:] + 1) % SPEC.vocab_size
    with torch.no_grad():
        a, b = model(x), model(x2)
        torch.testing.assert_close(a[:, :12], b[:, :12])
        same = torch.full((1, 6), 5)
        h = model(same)
    assert not torch.allclose(h[0, 0], h[0, 5])  # equal tokens, different positions
    with pytest.raises(ValueError, match="max_len"):
        model(tokens(T=30))
