"""What the memory-augmented LMs (gpt, xl, rmt, knn, lstm) do beyond the protocol: a tied LM
head, memory carried across segments and calls, truncated BPTT, their own settings. The
protocol itself (shapes, causality, state_dict, bf16, the data they refuse) is checked for every
registered model by tests/test_conformance.py."""

import pytest
import torch

from harness import ranges
from harness.api import DataSpec
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
def test_shapes_and_tied_head(name):
    model = build(name)
    h = model(tokens())
    assert h.shape == (3, 24, model.hidden_size)
    assert model.lm_logits(h).shape == (3, 24, SPEC.vocab_size)
    model.lm_logits(h).float().logsumexp(-1).mean().backward()
    assert model.embed.weight.grad is not None


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


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError):
        build("xl", n_head=5)
    with pytest.raises(UserError, match="'model.write'"):  # the config's validator
        ranges.check(MODELS.get("knn").config(write="sometimes"), "model.")
    with pytest.raises(UserError):
        build("knn", eviction="lru")


MQAR = ["scenario.name=mqar", "scenario.seq_len=32", "scenario.n_pairs=2", "logger=none"]


@pytest.mark.parametrize("args, named", [
    (["model.name=xl", "model.seg_len=64"], "model.seg_len=64 is longer"),
    (["model.name=rmt", "model.seg_len=33"], "model.seg_len=33 is longer"),
    (["model.name=knn", "model.seg_len=40"], "model.seg_len=40 is longer"),
    (["model.name=knn", "model.capacity=8", "model.top_k=16"], "model.capacity=8 holds"),
    (["model.name=knn", "model.top_k=0"], "'model.top_k'"),
    (["model.name=rmt", "model.n_mem_tokens=0"], "'model.n_mem_tokens'"),
    (["model.name=xl", "model.mem_len=-1"], "'model.mem_len'"),
])
def test_memory_sizes_that_do_not_fit_are_one_line_before_a_run_dir(args, named, tmp_path,
                                                                     capsys):
    from harness.cli import main

    assert main(["run", *MQAR, *args, f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("retain: error: ") and named in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())


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


@pytest.mark.parametrize("name, runs", [("memory_recall", 7 * 3), ("memory_forgetting", 6 * 3),
                                        ("memory_forgetting_sparse", 3)])
def test_shipped_memory_sweeps_expand_to_valid_runs(name, runs, monkeypatch):
    from pathlib import Path

    from harness import config
    from harness.sweeps.grid import load_sweep, plan

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the sweeps name their experiment file from the repository root
    sweep = load_sweep(root / "configs" / "sweeps" / f"{name}.yaml")
    specs = plan(sweep)
    assert len(specs) == runs and len({s.name for s in specs}) == runs
    for spec in specs:
        cfg = config.load(str(sweep.experiment), spec.overrides)
        assert cfg.scenario.name in ("mqar", "text-domains")
