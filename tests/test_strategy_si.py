"""SI: the path-integral importance is non-negative and largest where the loss was reduced."""

import torch
from strategy_checks import context, resume_matches, sgd_steps, tiny_net, toy_tasks

from strategies.si import SI, SIConfig


def test_importance_is_non_negative_and_follows_the_parameters_that_learnt():
    net, tasks = tiny_net(), toy_tasks(2)
    si = SI(SIConfig(c=1.0, xi=0.1))
    ctx = context(net, tasks, 0)
    si.before_task(ctx)
    sgd_steps(net, si, ctx, steps=40)
    si.after_task(ctx)
    for name, omega in si.importance.items():
        assert (omega >= 0).all() and omega.sum() > 0
        assert torch.equal(si.anchor[name], dict(net.named_parameters())[name].detach())


def test_path_integral_on_a_quadratic_credits_only_the_coordinate_that_reduced_the_loss():
    """Loss 3 (w0 - 1)^2 ignores w1: w1 gets no importance, w0 about the loss it removed."""
    net = torch.nn.Module()
    net.w = torch.nn.Parameter(torch.zeros(2))
    si = SI(SIConfig(xi=0.1))
    ctx = context(net, [], 0)
    si.before_task(ctx)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        (3 * (net.w[0] - 1) ** 2).backward()
        si.before_optimizer_step(ctx)
        opt.step()
    si.after_task(ctx)
    omega = si.importance["w"]
    assert omega[1] == 0 and omega[0] > 0
    drop, moved = 3.0 - 3 * (net.w[0].item() - 1) ** 2, net.w[0].item()
    assert abs(omega[0].item() * (moved**2 + 0.1) / drop - 1) < 0.1  # path integral ~ drop


def test_penalty_is_zero_at_the_anchor_and_restrains_moves():
    net, tasks = tiny_net(), toy_tasks(2)
    si = SI(SIConfig(c=1.0))
    ctx0 = context(net, tasks, 0)
    si.before_task(ctx0)
    sgd_steps(net, si, ctx0, steps=20)
    si.after_task(ctx0)
    ctx1 = context(net, tasks, 1)
    si.before_task(ctx1)
    assert si.penalties(ctx1)["si"].value(net).item() == 0.0
    sgd_steps(net, si, ctx1, steps=20)
    assert si.penalties(ctx1)["si"].value(net).item() > 0


def test_cap_bounds_the_importance():
    net, tasks = tiny_net(), toy_tasks(1)
    si = SI(SIConfig(max_importance=1e-4))
    ctx = context(net, tasks, 0)
    si.before_task(ctx)
    sgd_steps(net, si, ctx, steps=20)
    si.after_task(ctx)
    assert max(v.max().item() for v in si.importance.values()) <= 1e-4


def test_resume_between_and_inside_tasks_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    resume_matches(tmp_path, monkeypatch, "strategy.name=[si]", "strategy.si.c=0.5")
