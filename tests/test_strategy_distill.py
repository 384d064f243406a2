"""LwF: the teacher is frozen, the KL is zero when student equals teacher, heads are chosen."""

import dataclasses

import pytest
import torch
from strategy_checks import context, resume_matches, sgd_steps, tiny_net, toy_tasks

from harness.api import Batch
from strategies.distill import (
    Distill,
    DistillConfig,
    at_targets,
    columns,
    kl_to,
    log_targets,
    soft_kl,
)


def test_teacher_is_a_frozen_snapshot_and_kl_is_zero_when_student_equals_teacher():
    net, tasks = tiny_net(), toy_tasks(2)
    lwf = Distill(DistillConfig(alpha=1.0, temperature=2.0))
    lwf.before_task(context(net, tasks, 0))
    assert lwf.teacher is None
    lwf.after_task(context(net, tasks, 0))
    ctx = context(net, tasks, 1)
    lwf.before_task(ctx)
    teacher = lwf.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    batch = Batch(tasks[1].x[:16], tasks[1].y[:16], tasks[1].t[:16])
    assert lwf.loss_terms(ctx, batch, net(batch.x, batch.t))["distill"].item() == 0.0
    before = [p.clone() for p in teacher.parameters()]
    sgd_steps(net, lwf, ctx, steps=10)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert lwf.loss_terms(ctx, batch, net(batch.x, batch.t))["distill"].item() > 0
    assert lwf.seen == [0, 1]  # classes of the first experience


def test_class_il_distils_only_the_classes_seen_before():
    net, tasks = tiny_net(), toy_tasks(2)
    lwf = Distill(DistillConfig())
    lwf.after_task(context(net, tasks, 0))
    ctx = context(net, tasks, 1)
    lwf.before_task(ctx)
    batch = Batch(tasks[1].x[:8], tasks[1].y[:8], tasks[1].t[:8])
    with torch.no_grad():  # changing only the new classes' outputs changes nothing
        net.classifier.weight[2:] += 1.0
        net.classifier.bias[2:] += 1.0
    assert lwf.loss_terms(ctx, batch, net(batch.x, batch.t))["distill"].item() == 0.0


def test_task_il_distils_each_earlier_head_from_unmasked_logits():
    net, tasks = tiny_net(task_classes=[[0, 1], [2, 3]]), toy_tasks(2)
    lwf = Distill(DistillConfig())
    lwf.after_task(context(net, tasks, 0))
    ctx = context(net, tasks, 1)
    lwf.before_task(ctx)
    batch = Batch(tasks[1].x[:8], tasks[1].y[:8], tasks[1].t[:8])
    with torch.no_grad():
        net.classifier.bias[0] += 1.0  # masked out for task 1 examples, still distilled
    term = lwf.loss_terms(ctx, batch, net(batch.x, batch.t))["distill"]
    assert term.item() > 0 and term.requires_grad


@pytest.mark.parametrize("task_classes", [None, [[0, 1], [2, 3]]])
def test_alpha_weights_the_whole_term(task_classes):
    """alpha scales the term once, over every head (task-IL: a KL per earlier head)."""
    net, tasks = tiny_net(task_classes=task_classes), toy_tasks(2)
    ctx = context(net, tasks, 1)
    strategies = [Distill(DistillConfig(alpha=alpha)) for alpha in (1.0, 0.5)]
    for lwf in strategies:
        lwf.after_task(context(net, tasks, 0))
        lwf.before_task(ctx)  # both teachers: the same snapshot
    with torch.no_grad():
        net.classifier.bias[:2] += torch.tensor([1.0, -1.0])  # the student moves away
    batch = Batch(tasks[1].x[:8], tasks[1].y[:8], tasks[1].t[:8])
    whole, half = (lwf.loss_terms(ctx, batch, net(batch.x, batch.t))["distill"]
                   for lwf in strategies)
    assert whole.item() > 0 and torch.allclose(half, 0.5 * whole)


def test_language_model_kl_ignores_padded_positions():
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    y = torch.full((2, 5), -100)
    y[0, :3] = 1
    teacher_same = teacher.clone()
    teacher_same[0, :3] = student[0, :3]  # equal wherever a target exists
    assert soft_kl(at_targets(student, y), at_targets(teacher_same, y), 2.0).item() == 0.0
    assert soft_kl(at_targets(student, y), at_targets(teacher, y), 2.0).item() > 0


@pytest.mark.parametrize("cols", [None, slice(2, 5), torch.tensor([4, 0, 6]), torch.tensor([3])])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kl_value_and_gradient_match_the_formulas(cols, dtype):
    """``kl_to`` against the definitions written out: value sum q (log q - log p) / rows, and
    gradient (p - q) / (T rows) on the picked columns, zero on the others, in the student's
    dtype (p, q: softmax of student and teacher over the columns, at temperature T)."""
    g = torch.Generator().manual_seed(0)
    student = (3 * torch.randn(6, 7, generator=g)).to(dtype).requires_grad_()
    teacher = (3 * torch.randn(6, 7, generator=g)).to(dtype)
    picked = list(range(7)) if cols is None else torch.arange(7)[cols].tolist()
    T, rows = 2.0, 6
    s, t = student.detach().double()[:, picked] / T, teacher.double()[:, picked] / T
    p, q = s.exp() / s.exp().sum(1, keepdim=True), t.exp() / t.exp().sum(1, keepdim=True)
    want_value = (q * (q.log() - p.log())).sum() / rows
    want_grad = torch.zeros(6, 7, dtype=torch.float64)
    want_grad[:, picked] = (p - q) / (T * rows)

    got = kl_to(student, log_targets(teacher, cols, T), cols, T)
    got.backward()
    assert got.dtype == torch.float32 and student.grad.dtype == dtype
    assert got.item() == pytest.approx(want_value.item(), rel=1e-5)
    tol = {"rtol": 1e-2, "atol": 1e-4} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-8}
    assert torch.allclose(student.grad.double(), want_grad, **tol)


def test_consecutive_classes_are_read_as_a_slice():
    assert columns(torch.tensor([2, 3, 4]), 10) == slice(2, 5)
    assert columns(torch.arange(10), 10) is None  # every class: no selection at all
    assert torch.equal(columns(torch.tensor([1, 3]), 10), torch.tensor([1, 3]))
    assert torch.equal(columns(torch.tensor([3, 2]), 10), torch.tensor([3, 2]))


def test_resume_between_and_inside_tasks_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    resume_matches(tmp_path, monkeypatch, "strategy.name=[replay,distill]",
                   "strategy.replay.mem_size=50")


def _counting(teacher, monkeypatch) -> list[int]:
    """The batch sizes the teacher's forward pass is called with, from now on."""
    calls, original = [], teacher.forward
    monkeypatch.setattr(teacher, "forward",
                        lambda x, t=None: calls.append(len(x)) or original(x, t))
    return calls


def test_teacher_outputs_are_cached_per_task_for_indexed_batches(monkeypatch):
    """Batches of the task's own data (Batch.index) read the teacher's outputs computed once
    for the task, in evaluation-size batches; other batches run the teacher. Both give the same
    term, and the next task's teacher gets a cache of its own."""
    net, tasks = tiny_net(), toy_tasks(2)
    lwf = Distill(DistillConfig(alpha=0.5))
    lwf.after_task(context(net, tasks, 0))
    ctx = dataclasses.replace(context(net, tasks, 1), max_epochs=2, eval_batch_size=24)
    lwf.before_task(ctx)
    sgd_steps(net, lwf, ctx, steps=3)  # the student moves away from the teacher
    calls = _counting(lwf.teacher, monkeypatch)
    index = torch.tensor([5, 0, 63, 7])
    data = tasks[1]
    plain = Batch(data.x[index], data.y[index], data.t[index])
    indexed = Batch(*plain[:3], index)
    out = net(plain.x, plain.t)
    fresh = lwf.loss_terms(ctx, plain, out)["distill"]
    assert calls == [4]  # no index: the teacher runs on the batch
    cached = lwf.loss_terms(ctx, indexed, out)["distill"]
    assert calls == [4, 24, 24, 16]  # the whole task (64) once, in batches of 24 ...
    again = lwf.loss_terms(ctx, indexed, out)["distill"]
    assert len(calls) == 4  # ... and never again this task
    assert fresh.item() > 0 and torch.allclose(cached, fresh) and torch.equal(again, cached)

    lwf.after_task(ctx)
    assert lwf._cache is None  # not kept past its task
    lwf.before_task(ctx)  # a new teacher: the current network, a new cache
    calls = _counting(lwf.teacher, monkeypatch)
    assert lwf.loss_terms(ctx, indexed, out)["distill"].item() < 1e-6  # student == teacher
    assert calls == [24, 24, 16]


@pytest.mark.parametrize("why", ["one epoch", "two processes, two epochs", "memory"])
def test_teacher_outputs_are_not_cached_where_that_costs_more(why, monkeypatch):
    """Caching costs a pass over the whole task: not worth it when each example is read once
    per process (one epoch; DDP ranks each read a share); wrong for a teacher with memory."""
    from types import SimpleNamespace

    import strategies.distill as distill

    net, tasks = tiny_net(), toy_tasks(2)
    lwf = Distill(DistillConfig())
    lwf.after_task(context(net, tasks, 0))
    ctx = dataclasses.replace(context(net, tasks, 1), max_epochs=1 if why == "one epoch" else 2)
    if why.startswith("two processes"):
        ctx = dataclasses.replace(ctx, dist=SimpleNamespace(world_size=2, rank=0))
    if why == "memory":
        monkeypatch.setattr(distill, "carries_memory", lambda model: True)
    lwf.before_task(ctx)
    data = tasks[1]
    batch = Batch(data.x[:4], data.y[:4], data.t[:4], torch.arange(4))
    calls = _counting(lwf.teacher, monkeypatch)
    lwf.loss_terms(ctx, batch, net(batch.x, batch.t))
    assert calls == [4] and lwf._cache == []


def test_a_new_teacher_is_a_copy_of_the_network_now_and_stays_frozen():
    net, tasks = tiny_net(), toy_tasks(2)
    lwf = Distill(DistillConfig())
    lwf.after_task(context(net, tasks, 0))
    for _ in range(2):  # a first teacher, then a fresh one for the trained network
        lwf.before_task(context(net, tasks, 1))
        teacher = lwf.teacher
        assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(),
                                                      net.state_dict().values()))
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        assert all(a.data_ptr() != b.data_ptr() for a, b in zip(teacher.parameters(),
                                                                  net.parameters()))
        sgd_steps(net, lwf, context(net, tasks, 1), steps=3)
