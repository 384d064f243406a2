"""Replay: the buffer holds the policy's distribution within its bound; replay beats naive."""

import pytest
import torch
from strategy_checks import context, digits_run, resume_matches, tiny_net, toy_tasks

from harness.api import BatchLoader, TaskData
from harness.errors import UserError
from strategies.buffer import Buffer, key_seed
from strategies.replay import Replay, ReplayConfig


def stream(n_tasks: int, n: int, classes_per_task: int = 2) -> list[TaskData]:
    tasks = []
    for k in range(n_tasks):
        y = torch.arange(n) % classes_per_task + classes_per_task * k
        tasks.append(TaskData(torch.arange(n * k, n * (k + 1)).float()[:, None], y,
                              torch.full((n,), k)))
    return tasks


def test_reservoir_is_a_uniform_sample_of_the_stream_within_its_bound():
    counts = torch.zeros(300)
    for seed in range(300):
        buf = Buffer(30, "reservoir")
        for k, data in enumerate(stream(3, 100)):
            buf.add(data, k, seed)
            assert len(buf) == 30
        counts[buf.fields["x"].long().squeeze(1)] += 1
    # Every example of every experience is kept with probability 30/300.
    assert counts.sum() == 300 * 30
    per_task = counts.view(3, 100).sum(1) / (300 * 30)
    assert torch.allclose(per_task, torch.full((3,), 1 / 3), atol=0.03)
    assert counts.std() < 10  # binomial(300, 0.1): std ~5


def test_balanced_policies_split_the_memory_equally():
    cls, task = Buffer(50, "class_balanced"), Buffer(50, "task_balanced")
    for k, data in enumerate(stream(3, 60, classes_per_task=2)):
        cls.add(data, k, seed=1)
        task.add(data, k, seed=1)
    assert len(cls) == 50 and len(task) == 50
    assert sorted(cls.fields["y"].bincount().tolist()) == [8, 8, 8, 8, 9, 9]
    assert task.fields["task"].bincount().tolist() == [17, 17, 16]  # remainder to the first


def test_balanced_sample_draws_each_group_uniformly_without_replacement():
    """A-GEM's reference sample: ``n // groups`` distinct examples of every group, each
    equally likely; all of a group that holds fewer. Groups of 17, 17 and 16 (padded) and of
    25 and 25 (not)."""
    for n_tasks, sizes in ((3, [17, 17, 16]), (2, [25, 25])):
        buf = Buffer(50, "task_balanced")
        for k, data in enumerate(stream(n_tasks, 60)):
            buf.add(data, k, seed=3)
        gen = torch.Generator().manual_seed(0)
        counts = torch.zeros(len(buf))
        draws = 3000
        for _ in range(draws):
            index = buf.sample_balanced(10 * n_tasks, gen)
            assert len(index.unique()) == len(index) == 10 * n_tasks
            assert buf.fields["task"][index].bincount().tolist() == [10] * n_tasks
            counts[index] += 1
        for k, size in enumerate(sizes):  # each member: binomial(draws, 10 / size)
            mine = counts[buf.fields["task"] == k] / draws
            assert (mine - 10 / size).abs().max() < 0.04, (k, mine)
        everything = buf.sample_balanced(100 * n_tasks, gen)
        assert sorted(everything.tolist()) == list(range(len(buf)))


def test_shrinking_keeps_the_largest_keys_and_extras_stay_aligned():
    buf = Buffer(20, "task_balanced")
    for k, data in enumerate(stream(4, 50)):
        buf.add(data, k, seed=0, extra=lambda b: {"twice": b.x * 2})
    assert torch.equal(buf.fields["twice"], buf.fields["x"] * 2)
    for k, data in enumerate(stream(4, 50)):
        kept = buf.fields["key"][buf.fields["task"] == k]
        # the keys every example of task k drew when it was offered (Buffer.add)
        drawn = torch.rand(len(data), dtype=torch.float64,
                           generator=torch.Generator().manual_seed(key_seed(0, k)))
        assert torch.equal(kept.sort().values, drawn.topk(5).values.sort().values)


def test_token_sequences_are_stored_and_class_balance_needs_labels():
    x = torch.randint(0, 50, (40, 12))
    data = TaskData(x, torch.roll(x, -1, 1), torch.zeros(40, dtype=torch.long))
    buf = Buffer(10, "reservoir")
    buf.add(data, 0, seed=0)
    assert buf.batch(torch.arange(len(buf))).x.shape == (10, 12)
    assert buf.nbytes() == 10 * 12 * 8 * 2 + 10 * 8 * 3  # x, y; t, task, key (8 bytes)
    with pytest.raises(UserError):
        Buffer(10, "class_balanced").add(data, 0, seed=0)


def test_replay_concatenates_a_memory_batch_to_every_batch():
    tasks = toy_tasks(2, n=64)
    net = tiny_net()
    replay = Replay(ReplayConfig(mem_size=20, batch_size_mem=8))
    ctx0 = context(net, tasks, 0)
    assert replay.train_loader(ctx0, "loader") == "loader"  # nothing to replay yet
    replay.after_task(ctx0)
    ctx1 = context(net, tasks, 1)
    plain = BatchLoader(tasks[1], 16, shuffle=True)
    loader = replay.train_loader(ctx1, plain)
    batches = list(loader)
    assert len(batches) == len(loader) == len(plain) == 4
    # Shuffled passes over the 20 stored examples, like a DataLoader without drop_last.
    assert [len(b) - 16 for b in batches] == [8, 8, 4, 8]
    first_pass = torch.cat([b.x[16:] for b in batches[:3]])
    assert len(first_pass.unique(dim=0)) == 20
    assert all((b.t[16:] == 0).all() and (b.t[:16] == 1).all() for b in batches)
    assert replay.memory_bytes() == 20 * (8 * 4 + 8 * 4)  # x; y, t, task, key


def test_state_dict_loads_back_with_weights_only(tmp_path):
    replay = Replay(ReplayConfig(mem_size=10))
    replay.after_task(context(tiny_net(), toy_tasks(1), 0))
    torch.save(replay.state_dict(), tmp_path / "s.pt")
    other = Replay(ReplayConfig(mem_size=10))
    other.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert len(other.buffer) == 10  # its part is claimed at first use
    assert torch.equal(other.buffer.fields["x"], replay.buffer.fields["x"])


def test_replay_and_der_beat_naive_on_split_digits_by_a_wide_margin(tmp_path):
    scores = {name: digits_run(tmp_path / name, f"strategy={name}", "name=r", epochs=3)
              ["summary"]["accuracy/avg"] for name in ("naive", "replay", "der")}
    assert scores["naive"] < 0.3
    assert scores["replay"] > scores["naive"] + 0.4
    assert scores["der"] > scores["naive"] + 0.4


def test_resume_between_and_inside_tasks_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    resume_matches(tmp_path, monkeypatch, "strategy.name=[replay]", "strategy.replay.mem_size=60",
                   "strategy.replay.policy=class_balanced")
