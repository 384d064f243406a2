"""EWC: the penalty is zero at the anchor, grows quadratically away from it, merges exactly."""

import pytest
import torch
from strategy_checks import context, resume_matches, tiny_net, toy_tasks

from harness import ranges
from harness.api import trainable
from harness.errors import UserError
from strategies.ewc import EWC, EWCConfig


def penalty(ewc, ctx, net) -> float:
    return ewc.penalties(ctx)["ewc"].value(net).item()


def shift(net, scale: float, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
    net, tasks = tiny_net(), toy_tasks(2)
    ewc = EWC(EWCConfig(lam=10.0))
    ewc.after_task(context(net, tasks, 0))
    ctx = context(net, tasks, 1)
    assert penalty(ewc, ctx, net) == 0.0
    shift(net, 0.01)
    small = penalty(ewc, ctx, net)
    shift(net, 0.01)  # now twice as far along the same direction
    large = penalty(ewc, ctx, net)
    assert 0 < small < large
    assert large == pytest.approx(4 * small, rel=1e-4)


def test_penalty_gradient_is_autograds_added_to_the_loss_gradient():
    """The closed-form gradient, added to the loss's, against autograd of loss + penalty."""
    net, tasks = tiny_net(), toy_tasks(2)
    ewc = EWC(EWCConfig(lam=3.0))
    ewc.after_task(context(net, tasks, 0))
    ewc.after_task(context(net, tasks, 1))  # two anchors merged: a non-zero constant
    shift(net, 0.05)
    batch = tasks[1]
    quad = ewc.penalties(context(net, tasks, 2))["ewc"]

    net.zero_grad()
    (net.loss(batch, net(batch.x, batch.t))
     + 3.0 * sum((ewc.importance[n] * (p - ewc.anchor[n]).pow(2)).sum()
                 for n, p in trainable(net))).backward()
    expected = {n: p.grad.clone() for n, p in trainable(net)}
    net.zero_grad()
    net.loss(batch, net(batch.x, batch.t)).backward()
    quad.add_gradient_(net)
    for name, p in trainable(net):
        assert torch.allclose(p.grad, expected[name], rtol=1e-5, atol=1e-7), name
    # no gradient from the loss (e.g. an unused head): the penalty's alone
    net.zero_grad(set_to_none=True)
    quad.add_gradient_(net)
    for name, p in trainable(net):
        want = 6.0 * ewc.importance[name] * (p.detach() - ewc.anchor[name])
        assert torch.allclose(p.grad, want, rtol=1e-5, atol=1e-8), name
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


def test_separate_penalty_equals_the_sum_over_experiences():
    net, tasks = tiny_net(), toy_tasks(3)
    ewc = EWC(EWCConfig(lam=1.0))
    fishers, anchors = [], []
    for k in range(2):
        ctx = context(net, tasks, k)
        fishers.append(ewc.fisher(ctx))
        anchors.append({n: p.detach().clone() for n, p in trainable(net)})
        ewc.after_task(ctx)
        shift(net, 0.05, seed=k)
    expected = sum((f[n] * (p.detach() - a[n]).pow(2)).sum()
                   for f, a in zip(fishers, anchors) for n, p in trainable(net))
    got = ewc.penalties(context(net, tasks, 2))["ewc"].value(net)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert got.dtype == torch.float32


def test_online_mode_decays_one_fisher_and_anchors_at_the_last_experience():
    net, tasks = tiny_net(), toy_tasks(2)
    ewc = EWC(EWCConfig(mode="online", gamma=0.5))
    f0 = ewc.fisher(context(net, tasks, 0))
    ewc.after_task(context(net, tasks, 0))
    shift(net, 0.05)
    f1 = ewc.fisher(context(net, tasks, 1))
    ewc.after_task(context(net, tasks, 1))
    for n, p in trainable(net):
        assert torch.allclose(ewc.importance[n], 0.5 * f0[n] + f1[n])
        assert torch.equal(ewc.anchor[n], p.detach())
    assert penalty(ewc, context(net, tasks, 2), net) == 0.0


def test_fisher_uses_the_configured_number_of_batches():
    net, tasks = tiny_net(), toy_tasks(1, n=64)
    one = EWC(EWCConfig(fisher_batches=1, fisher_batch_size=8)).fisher(context(net, tasks, 0))
    ctx = context(net, [type(tasks[0])(*(v[:8] for v in (tasks[0].x, tasks[0].y, tasks[0].t)))],
                  0)
    first = EWC(EWCConfig(fisher_batches=-1, fisher_batch_size=8)).fisher(ctx)
    for n in one:
        assert torch.allclose(one[n], first[n])
    with pytest.raises(UserError, match="'strategy.ewc.mode'"):  # the config's validator
        ranges.check(EWCConfig(mode="both"), "strategy.ewc.")


def test_resume_between_and_inside_tasks_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    resume_matches(tmp_path, monkeypatch, "strategy.name=[ewc]", "strategy.ewc.lam=100",
                   "strategy.ewc.fisher_batches=4")
