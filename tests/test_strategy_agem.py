"""A-GEM: projected gradients never point against the memory's reference gradient."""

import dataclasses

import pytest
import torch
from strategy_checks import context, resume_matches, tiny_net, toy_tasks
from test_ddp_threads import run_ranks

from harness.api import trainable
from harness.runtime.distributed import DIST
from strategies.agem import AGEM, AGEMConfig, project_


def flat_projection(grad: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's formula on whole vectors, in float64."""
    grad, ref = grad.double(), ref.double()
    return grad - min(0.0, float(grad @ ref)) / float(ref @ ref) * ref


def test_projection_removes_only_the_conflicting_component():
    g = torch.Generator().manual_seed(0)
    sizes = [20, 25, 5]  # the gradient of three parameters
    for _ in range(200):
        grad, ref = torch.randn(50, generator=g), torch.randn(50, generator=g)
        parts = list(grad.clone().split(sizes))  # views: projected in place
        changed = project_(parts, list(ref.split(sizes)))
        new = torch.cat(parts)
        assert changed == bool(grad @ ref < 0)
        assert torch.allclose(new.double(), flat_projection(grad, ref), atol=1e-5)
        assert new @ ref >= -1e-5 * ref.norm() * grad.norm()  # first order: no increase
        if not changed:
            assert torch.equal(new, grad)


def test_a_missing_gradient_counts_as_zero_and_stays_missing():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(30, generator=g)
    grad = torch.cat([torch.zeros(10), -ref[10:]])  # points against ref: projected
    tail = grad[10:].clone()
    parts = [None, tail]
    assert project_(parts, list(ref.split([10, 20])))
    assert parts[0] is None
    assert torch.allclose(tail.double(), flat_projection(grad, ref)[10:], atol=1e-6)


def test_hook_projects_the_step_gradient_against_the_memory_gradient():
    net, tasks = tiny_net(), toy_tasks(2)
    agem = AGEM(AGEMConfig(patterns_per_experience=16, sample_size=16))
    agem.after_task(context(net, tasks, 0))
    assert len(agem.buffer) == 16
    ctx = context(net, tasks, 1)
    agem.before_task(ctx)
    params = [p for _, p in trainable(net)]
    agem.reference_gradient(ctx, params)  # creates the sampling generator, as the hook would
    for step in range(20):
        agem.gen.manual_seed(step)
        ref = torch.cat([r.reshape(-1) for r in agem.reference_gradient(ctx, params)])
        for p in params:
            p.grad = torch.randn_like(p)
        agem.gen.manual_seed(step)
        agem.before_optimizer_step(ctx)
        grad = torch.cat([p.grad.reshape(-1) for p in params])
        assert grad @ ref >= -1e-4 * grad.norm() * ref.norm()
    assert agem.projected > 0


def test_memory_grows_by_patterns_per_experience():
    net, tasks = tiny_net(), toy_tasks(3)
    agem = AGEM(AGEMConfig(patterns_per_experience=10))
    for k in range(3):
        agem.after_task(context(net, tasks, k))
    assert agem.buffer.fields["task"].bincount().tolist() == [10, 10, 10]


def test_resume_between_and_inside_tasks_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    resume_matches(tmp_path, monkeypatch, "strategy.name=[agem]",
                   "strategy.agem.patterns_per_experience=30")


@pytest.mark.parametrize("sample", [[0, 1, 2, 5], [0, 1, 2], [5]])
def test_ranks_reference_gradient_is_the_single_process_one(sample):
    """Two simulated ranks (threads, real all-reduce semantics) draw the same sample and each
    computes its rows' part: together the reference gradient of one process, also when the
    sample splits unequally (2 + 1) or leaves a rank without rows."""
    net, tasks = tiny_net(), toy_tasks(2)
    params = [p for _, p in trainable(net)]
    whole = torch.tensor(sample)

    def reference(dist):
        agem = AGEM(AGEMConfig(patterns_per_experience=16, sample_size=16))
        agem.after_task(context(net, tasks, 0))
        agem.buffer.sample_balanced = lambda n, gen: whole
        ctx = dataclasses.replace(context(net, tasks, 1), dist=dist)
        agem.before_task(ctx)
        return torch.cat([r.reshape(-1) for r in agem.reference_gradient(ctx, params)])

    one = reference(DIST)
    for averaged in run_ranks(2, reference):
        assert torch.allclose(averaged, one, atol=1e-6)


def test_a_low_precision_gradient_is_projected_in_float32_and_rounded_once():
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(64, generator=g)
    grad = (-ref + 0.1 * torch.randn(64, generator=g)).bfloat16()
    projected = grad.clone()
    assert project_([projected], [ref])
    assert torch.equal(projected, flat_projection(grad.float(), ref).bfloat16())
