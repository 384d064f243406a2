"""Titans: the memory's update rule against direct computations, and its carried state."""

import pytest
import torch
from conftest import quick

from harness import config
from harness.api import DataSpec
from harness.errors import UserError
from harness.experiment.run import run
from harness.models.titans import Titans, TitansConfig
from harness.models.titans_memory import NeuralMemory, chunk_update

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = DataSpec("tokens", "lm", vocab_size=40, seq_len=24)


def _state(w0: float):
    return [torch.tensor([[[w0]]])], [torch.zeros(1, 1, 1)]


def _gates(theta, eta, alpha):
    t = torch.tensor
    return t(eta).log()[None], t([1 - a for a in alpha]).log()[None], t(theta)[None]


def test_one_dimensional_steps_match_the_hand_computed_rule():
    # M(k) = w k, loss (w k - v)^2, so g = 2 (w k - v) k. With w0 = 0.5, k = 1, v = 2,
    # theta = 0.1, eta = 0.9, alpha = 0.1, token by token (chunks of one):
    #   g1 = -3,   S1 = 0.9 * 0 + 0.3 = 0.3,     w1 = 0.9 * 0.5 + 0.3 = 0.75
    #   g2 = -2.5, S2 = 0.9 * 0.3 + 0.25 = 0.52, w2 = 0.9 * 0.75 + 0.52 = 1.195
    state = _state(0.5)
    k, v = torch.ones(1, 1, 1), torch.full((1, 1, 1), 2.0)
    log_eta, log_keep, theta = _gates([0.1], [0.9], [0.1])
    state = chunk_update(state, k, v, log_eta, log_keep, theta)
    assert state[0][0].item() == pytest.approx(0.75) and state[1][0].item() == pytest.approx(0.3)
    state = chunk_update(state, k, v, log_eta, log_keep, theta)
    assert state[0][0].item() == pytest.approx(1.195)
    assert state[1][0].item() == pytest.approx(0.52)
    # one chunk of both tokens: both gradients at w0 (g = -3 twice):
    #   S1 = 0.3, w1 = 0.75; S2 = 0.9 * 0.3 + 0.3 = 0.57, w2 = 0.9 * 0.75 + 0.57 = 1.245
    log_eta, log_keep, theta = _gates([0.1, 0.1], [0.9, 0.9], [0.1, 0.1])
    both = chunk_update(_state(0.5), k.expand(1, 2, 1), v.expand(1, 2, 1), log_eta, log_keep,
                        theta)
    assert both[0][0].item() == pytest.approx(1.245) and both[1][0].item() == pytest.approx(0.57)


def _direct(weights, moms, k, v, log_eta, log_keep, theta, per_token: bool):
    """The rule written out with autograd: gradients at the chunk start (or at each token)."""
    w0 = [w.detach().clone() for w in weights]
    w, s = [x.clone() for x in w0], [m.clone() for m in moms]
    for t in range(k.shape[1]):
        at = [x.clone().requires_grad_() for x in (w if per_token else w0)]
        h = k[:, t:t + 1]
        for i, x in enumerate(at):
            h = h @ x
            if i < len(at) - 1:
                h = torch.nn.functional.silu(h) / x.shape[-1] ** 0.5
        grads = torch.autograd.grad(((h - v[:, t:t + 1]) ** 2).sum(), at)
        eta, keep, th = (g[:, t, None, None] for g in (log_eta.exp(), log_keep.exp(), theta))
        s = [eta * m - th * g for m, g in zip(s, grads)]
        w = [keep * x + m for x, m in zip(w, s)]
    return w, s


@pytest.mark.parametrize("depth", [1, 2])
def test_chunked_update_equals_the_token_by_token_rule(depth):
    g = torch.Generator().manual_seed(0)
    B, C, d, hidden = 2, 5, 3, 4
    dims = [d] + [hidden] * (depth - 1) + [d]
    weights = [torch.randn(B, a, b, generator=g) for a, b in zip(dims, dims[1:])]
    moms = [torch.randn(B, a, b, generator=g) * 0.1 for a, b in zip(dims, dims[1:])]
    k, v = torch.randn(B, C, d, generator=g), torch.randn(B, C, d, generator=g)
    log_eta = torch.rand(B, C, generator=g).clamp_min(0.1).log()
    log_keep = (1 - 0.2 * torch.rand(B, C, generator=g)).log()
    theta = 0.1 * torch.rand(B, C, generator=g)
    # one chunk: every gradient at the chunk's starting weights
    got = chunk_update((weights, moms), k, v, log_eta, log_keep, theta)
    want = _direct(weights, moms, k, v, log_eta, log_keep, theta, per_token=False)
    for a, b in zip([*got[0], *got[1]], [*want[0], *want[1]]):
        torch.testing.assert_close(a, b)
    # chunks of one token: the exact sequential rule, each gradient at the latest weights
    state = (weights, moms)
    for t in range(C):
        sl = slice(t, t + 1)
        state = chunk_update(state, k[:, sl], v[:, sl], log_eta[:, sl], log_keep[:, sl],
                             theta[:, sl])
    want = _direct(weights, moms, k, v, log_eta, log_keep, theta, per_token=True)
    for a, b in zip([*state[0], *state[1]], [*want[0], *want[1]]):
        torch.testing.assert_close(a, b)


def test_writing_pairs_makes_the_memory_recall_them():
    torch.manual_seed(0)
    memory = NeuralMemory(8, 8, 2, chunk_size=4, lr=0.05, momentum=0.9, decay=0.01)
    memory.q.weight.data.copy_(memory.k.weight.data)  # read with the written keys
    x = torch.randn(1, 4, 8)
    with torch.no_grad():
        target = memory.v(memory.norm(x))
        before = (memory.read(memory.initial(1), x) - target).norm()
        state = memory.write(memory.initial(1), x.repeat(1, 16, 1))  # 16 chunks of the pairs
        after = (memory.read(state, x) - target).norm()
    assert after < 0.5 * before


def _model(**kw):
    torch.manual_seed(0)
    return Titans(TitansConfig(d_model=32, n_head=4, seg_len=8, chunk_size=4, **kw), SPEC)


@pytest.mark.parametrize("variant", ["mac", "mag"])
def test_memory_reaches_past_the_attention_window(variant):
    model, x = _model(variant=variant).eval(), torch.randint(1, 40, (2, 24))
    changed = x.clone()
    changed[:, 0] = changed[:, 0] % 39 + 1
    with torch.no_grad():
        a, b = model(x), model(changed)
    # the last segment (or window) cannot attend to token 0: only the memory carries it
    assert not torch.allclose(a[:, 16:], b[:, 16:])


@pytest.mark.parametrize("variant", ["mac", "mag"])
def test_carried_memory_travels_in_the_state_dict(variant):
    model = _model(variant=variant, carry_memory=True).eval()
    with torch.no_grad():
        model(torch.randint(1, 40, (2, 24)))
    assert model.carried is not None
    fresh = _model(variant=variant, carry_memory=True).eval()
    fresh.load_state_dict(model.state_dict())
    x = torch.randint(1, 40, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(x), fresh(x))
        model.reset_memory()
        fresh.reset_memory()
        torch.testing.assert_close(model(x), fresh(x))


def test_carried_memory_resumes_bit_identically(monkeypatch):
    from test_conformance import SMALL, resumes_bit_identically

    resumes_bit_identically(["model.name=titans", *SMALL["titans"], "model.carry_memory=true",
                             "model.variant=mag", "scenario.name=mqar", *SMALL["mqar"]],
                            monkeypatch)


@pytest.mark.parametrize("bad, message", [
    ("model.chunk_size=0", "model.chunk_size"),
    ("model.chunk_size=16", "model.chunk_size=16 must be at most model.seg_len=8"),
    ("model.momentum=1", "model.momentum"),
    ("model.decay=0", "model.decay"),
    ("model.variant=mal", "model.variant"),
])
def test_bad_options_are_refused_in_one_line(bad, message):
    with pytest.raises(UserError, match=message):
        config.load(None, ["model.name=titans", "model.seg_len=8", bad])


def test_a_cli_sized_run_learns():
    results = run(config.load(None, quick(
        "model.name=titans", "model.d_model=32", "model.seg_len=8", "model.chunk_size=4",
        "scenario.name=mqar", "scenario.n_experiences=1", "scenario.seq_len=16",
        "scenario.n_pairs=2", "scenario.n_keys=8", "scenario.n_values=8", "scenario.n_filler=4",
        "scenario.n_train=64", "scenario.n_val=0", "scenario.n_test=16", "trainer.max_steps=20",
        "trainer.accelerator=cpu", "name=titans")))
    assert results["matrices"]["loss"][0][0] < results["baseline"]["loss"][0]


@pytest.mark.parametrize("variant", ["mac", "mag"])
def test_every_parameter_trains_in_every_call_with_carried_memory(variant):
    """DDP refuses a step that leaves a parameter unused; M_0 is under the carried part."""
    model = _model(variant=variant, carry_memory=True)
    for _ in range(2):
        model.zero_grad()
        model.lm_logits(model(torch.randint(1, 40, (2, 24)))).sum().backward()
        assert model.carried is not None
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused
