"""Every strategy and memory under DDP: two CPU processes (gloo) against one.

* Memories (in-process, simulated ranks): every rank keeps the single-process memory, draws
  the same memory batches and takes its rows of each, like the current batch; DER's weighted
  terms average over the ranks to the single-process terms.
* End to end (``slow``): one set of two processes runs every strategy on Split-Digits' 5
  tasks x 3 epochs, the ``knn`` model on a tiny text stream and evaluation during training
  (``test_ddp_driver.py``); each final row must be within 0.005 of the single-process run's
  (0.5% perplexity), and the memories in the checkpoints must be the single-process ones.
* A crash on one rank ends the run within a bounded time, with the failed rank and its error
  in the message and in status.json; the checkpoint it left (written by two ranks) resumes
  with one process.
* Mixed precision, gradient accumulation and clipping with every strategy (one process), the
  strategies' loss terms being computed in fp32.

EWC's and SI's importances and the logged loss on two processes: ``test_ddp_importance.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import quick
from test_ddp_threads import run_ranks
from torch import Tensor

from harness import config
from harness.api import Batch, BatchLoader, Context, TaskData
from harness.experiment import checkpoint
from harness.runtime.distributed import DIST
from strategies.buffer import Buffer
from strategies.replay import Replay, ReplayConfig

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DDP = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu"]
DIGITS = ["scenario.name=split-digits", "model.name=mlp", "scenario.n_experiences=2",
          "trainer.max_epochs=2", "trainer.optimizer=sgd", "trainer.lr=0.05",
          "trainer.momentum=0.9", "trainer.accelerator=cpu", "eval_init=false"]
TEXT = ["scenario.name=text-domains", "scenario.domains=[python,bible]",
        "scenario.n_experiences=2", "scenario.seq_len=64", "scenario.train_tokens=8192",
        "scenario.val_tokens=0", "scenario.test_tokens=2048", "trainer.max_epochs=1",
        "trainer.accelerator=cpu", "eval_init=false"]
# The store holds two steps' writes (32 x 64 per step): which entries survive does not depend
# on the order the ranks' writes arrive in (see test_knn_store_is_global).
KNN = ["model.name=knn", "model.d_model=32", "model.n_layer=1", "model.n_head=2",
       "model.seg_len=32", "model.top_k=4", "model.capacity=4096"]
STRATEGIES = {
    "naive": ["strategy.name=[naive]"],
    "joint": ["strategy.name=[joint]"],
    "replay": ["strategy.name=[replay]", "strategy.replay.mem_size=100",
               "strategy.replay.policy=class_balanced"],
    "der": ["strategy.name=[der]", "strategy.der.mem_size=100"],
    "ewc": ["strategy.name=[ewc]", "strategy.ewc.lam=100"],
    "distill": ["strategy.name=[distill]"],
    "si": ["strategy.name=[si]"],
    "agem": ["strategy.name=[agem]", "strategy.agem.patterns_per_experience=30"],
}
# The strategies' comparison: Split-Digits' 5 tasks, 3 epochs each, the default optimizer.
STREAM = ["scenario.name=split-digits", "model.name=mlp", "trainer.max_epochs=3",
          "trainer.accelerator=cpu", "eval_init=false"]
EXPERIMENTS = {name: STREAM + o for name, o in STRATEGIES.items()} | {"knn": TEXT + KNN}
# evaluation during training: a collective at the same steps on every rank
EXPERIMENTS["curves"] = [*DIGITS, "strategy.name=[naive]", "eval.every_n_steps=3",
                         "eval.subsample=41"]
# Two processes train on the same global batches, weighted so that the gradient is one
# process's, and draw the same memory batches: the final rows agree up to float summation
# order (measured: equal for every strategy and knn on this stream).
TOLERANCE = {"accuracy": 0.005, "perplexity": 0.005}  # absolute; perplexity relative


def _env(tmp: Path, **extra) -> dict:
    env = dict(os.environ, RETAIN_CACHE=str(tmp / "cache"), WANDB_MODE="offline",
               WANDB_SILENT="true", PYTHONPATH=str(ROOT))
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


# -- memories on simulated ranks ----------------------------------------------------------


def _stream(n_tasks: int = 3, n: int = 101) -> list[TaskData]:
    g = torch.Generator().manual_seed(0)
    tasks = []
    for k in range(n_tasks):
        y = torch.randint(2, (n,), generator=g) + 2 * k
        x = torch.arange(k * n, (k + 1) * n, dtype=torch.float32)[:, None]  # x = example id
        tasks.append(TaskData(x, y, torch.full((n,), k, dtype=torch.long)))
    return tasks


def _ctx(tasks, task_id: int, dist, batch_size: int = 32, net=None) -> Context:
    from types import SimpleNamespace

    return Context(system=SimpleNamespace(net=net, batch_share=None), task_id=task_id,
                   n_tasks=len(tasks), train_data=lambda i: tasks[i], make_loader=None,
                   batch_size=batch_size, dist=dist, seed=0)


def _replay(world: int, mem_size: int, policy: str, tasks) -> list:
    """A replay strategy on each of ``world`` simulated ranks, after the given tasks."""

    def rank(dist):
        strategy = Replay(ReplayConfig(mem_size=mem_size, policy=policy))
        for k in range(len(tasks)):
            strategy.after_task(_ctx(tasks, k, dist))
        return strategy

    return run_ranks(world, rank)


@pytest.mark.parametrize("policy", ["reservoir", "class_balanced", "task_balanced"])
def test_every_rank_keeps_the_single_process_memory(policy):
    tasks, mem = _stream(), 37
    one = _replay(1, mem, policy, tasks)[0].buffer
    ids = one.fields["x"][:, 0].long()
    assert len(ids) == mem and len(set(ids.tolist())) == mem  # bounded, used, none twice
    everything = Buffer(10**9, policy)
    for k, data in enumerate(tasks):
        everything.add(data, k, seed=0)
    groups = one.groups(everything.fields["y"], everything.fields["task"])
    expected = set()
    for g, cap in one.capacities(sorted(set(groups.tolist()))).items():
        members = (groups == g).nonzero().squeeze(1)
        top = everything.fields["key"][members].topk(min(cap, len(members))).indices
        expected |= set(everything.fields["x"][members[top], 0].long().tolist())
    assert set(ids.tolist()) == expected  # the policy's top keys of each group
    for world in (2, 3):
        for strategy in _replay(world, mem, policy, tasks):  # the same examples, same order
            assert all(torch.equal(v, one.fields[k]) for k, v in strategy.buffer.fields.items())


def test_memory_checkpoint_is_stored_once_and_an_older_per_rank_one_loads_as_the_union():
    tasks = _stream()
    buf = _replay(1, 40, "class_balanced", tasks[:2])[0].buffer
    state = buf.state_dict()
    again = Buffer(40, "class_balanced")
    again.load_state_dict(state)
    assert all(torch.equal(v, buf.fields[k]) for k, v in again.fields.items())
    halves = [{k: v[r::2] for k, v in buf.fields.items()} for r in range(2)]
    older = Buffer(40, "class_balanced")
    older.load_state_dict({"policy": "class_balanced", "mem_size": 40, "seen": state["seen"],
                           "ranks": halves})
    assert sorted(older.fields["key"].tolist()) == sorted(buf.fields["key"].tolist())
    older.add(tasks[2], 2, seed=0)  # and it goes on under the policy
    assert sorted(torch.bincount(older.fields["y"]).tolist()) == [6, 6, 7, 7, 7, 7]


def _memory_rows(world: int) -> list[Tensor]:
    """The memory examples (ids) in each rank's first two replay batches of task 2 (global
    batch 32: each of ``world`` ranks reads 32 / world current examples)."""
    tasks = _stream(2, 200)

    def rank(dist):
        strategy = _replay(1, 64, "reservoir", tasks[:1])[0]
        ctx = _ctx(tasks, 1, dist)
        local = BatchLoader(tasks[1], 32, shuffle=True, rank=dist.rank, world_size=world,
                            split_batches=True)
        batches = iter(strategy.train_loader(ctx, local))
        return torch.cat([next(batches).x[32 // world:, 0] for _ in range(2)])

    return run_ranks(world, rank)


@pytest.mark.parametrize("world", [2, 4])
def test_memory_batch_is_split_over_ranks_like_the_current_batch(world):
    (one,) = _memory_rows(1)
    parts = _memory_rows(world)
    assert len(one) == 64 and all(len(p) == 64 // world for p in parts)
    for step in range(2):  # rank r's rows of each step are rows r::W of one process's
        whole = one[32 * step: 32 * (step + 1)]
        for r, part in enumerate(parts):
            per = 32 // world
            assert torch.equal(part[per * step: per * (step + 1)], whole[r::world])


@pytest.mark.parametrize("batch_size_mem", [8, 7, 1])
def test_der_terms_of_the_ranks_average_to_the_single_process_terms(batch_size_mem):
    """Each rank forwards its rows of the same memory batch, weighted by its share of them
    (7 splits 4 + 3; 1 leaves a rank without rows)."""
    from strategy_checks import tiny_net, toy_tasks

    from strategies.der import DER, DERConfig

    tasks = toy_tasks(2)

    def terms(dist, nets):
        net = nets[dist.rank]  # one per rank, identical
        der = DER(DERConfig(mem_size=32, batch_size_mem=batch_size_mem, beta=0.5))
        der.after_task(_ctx(tasks, 0, dist, net=net))
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # the network moves: the stored logits no longer match
            for p in net.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        ctx = _ctx(tasks, 1, dist, net=net)
        der.before_task(ctx)
        out = [der.loss_terms(ctx, tasks[1].batch(torch.arange(4)), None) for _ in range(3)]
        return torch.stack([torch.stack(list(t.values())) for t in out])

    one = terms(DIST, [tiny_net()])
    assert (one != 0).all()  # both terms, every step
    for world in (2, 3):
        nets = [tiny_net() for _ in range(world)]  # before the threads: it seeds torch's RNG
        parts = run_ranks(world, lambda d, nets=nets: terms(d, nets))
        torch.testing.assert_close(sum(parts) / world, one, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("n", "world"), [(101, 2), (101, 4), (98, 4), (96, 3)])
def test_ranks_batches_together_are_one_processs_batches(n, world):
    """Rank r reads rows r::W of every single-process batch, the last, shorter one too (101 =
    3 x 32 + 5); only a last batch with fewer examples than ranks is left out (98 = 3 x 32 + 2
    on 4 ranks)."""
    data = TaskData(torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n).long(),
                    torch.zeros(n).long())
    one = [b.x[:, 0].long() for b in BatchLoader(data, 32, shuffle=True, seed=3)]
    ranks = [BatchLoader(data, 32, shuffle=True, seed=3, rank=r, world_size=world,
                         split_batches=True, with_index=True) for r in range(world)]
    batches = [list(loader) for loader in ranks]
    parts = [[b.x[:, 0].long() for b in rank] for rank in batches]
    kept = one if n % 32 == 0 or n % 32 >= world else one[:-1]
    assert all(len(loader) == len(kept) == len(p) for loader, p in zip(ranks, parts))
    for k, whole in enumerate(kept):
        for r in range(world):
            assert torch.equal(parts[r][k], whole[r::world])
    assert all(torch.equal(b.index, p) for b, p in zip(batches[1], parts[1]))  # positions


def test_weighted_rank_losses_average_to_the_global_batch_mean():
    """Language-model rows hold different numbers of loss-carrying tokens: each rank's mean,
    weighed by the system's share, averages over the ranks to the whole batch's mean."""
    from harness.config import TrainerConfig
    from harness.core.system import ContinualSystem

    g = torch.Generator().manual_seed(0)
    y = torch.randint(10, (6, 8), generator=g)
    y[torch.rand(6, 8, generator=g) < 0.4] = -100  # ignored positions, unevenly spread
    values = torch.rand(6, 8, generator=g)
    want = values[y != -100].mean()

    def rank_mean(dist, weigh: bool):
        rows = torch.arange(6)[dist.rank::dist.world_size]
        mean = values[rows][y[rows] != -100].mean()
        if not weigh:
            return mean
        system = ContinualSystem(torch.nn.Linear(1, 1), [], TrainerConfig())
        system.ctx = _ctx([], 0, dist)
        return mean * system._share(Batch(torch.zeros(len(rows), 8), y[rows], rows))

    for world in (2, 3):
        got = sum(run_ranks(world, lambda d: rank_mean(d, True))) / world
        torch.testing.assert_close(got, want)
        plain = sum(run_ranks(world, lambda d: rank_mean(d, False))) / world
        assert not torch.allclose(plain, want)  # unweighted, the ranks' means are not it


def test_other_ranks_join_a_named_run_that_rank_zero_is_writing(tmp_path, monkeypatch):
    """Lightning re-runs ``retain run name=x ...`` for rank 1 while rank 0 writes runs/x."""
    import platform

    from harness.cli import _resumable

    cfg = config.load(None, quick(*EXPERIMENTS["naive"], *DDP, "name=x", f"out_dir={tmp_path}"))
    root = tmp_path / "x"
    root.mkdir()
    (root / "config.yaml").write_text(config.to_yaml(cfg))
    (root / "status.json").write_text(json.dumps({
        "status": "running", "config_hash": config.config_hash(cfg), "pid": os.getppid(),
        "host": platform.node()}))  # rank 0: alive, on this host
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _resumable(cfg, None).root == root


# -- two processes against one, end to end -------------------------------------------------


@pytest.fixture(scope="module")
def two_procs(tmp_path_factory):
    """Every experiment of EXPERIMENTS in one set of two DDP processes."""
    tmp = tmp_path_factory.mktemp("ddp")
    runs = [[*overrides, *DDP, f"name={name}", f"out_dir={tmp / 'runs'}", "logger=none",
             "trainer.progress=false"] for name, overrides in EXPERIMENTS.items()]
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"runs": runs, "eval_ids": [0, 1, 31, 397],
                                "eval_ids_out": str(tmp / "eval_ids.json")}))
    started = time.time()
    proc = subprocess.run([PY, str(ROOT / "tests" / "test_ddp_driver.py"), str(spec)],
                          cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"two processes, {len(runs)} experiments: {time.time() - started:.1f} s")
    return tmp / "runs"


@pytest.fixture(scope="module")
def one_proc(tmp_path_factory):
    """The single-process run of an experiment of EXPERIMENTS (in this process, memoised)."""
    from harness.experiment.run import run

    tmp, done = tmp_path_factory.mktemp("one"), {}

    def get(name: str) -> dict:
        if name not in done:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as each DDP rank; tiny models run faster on one thread
            try:
                done[name] = run(config.load(None, quick(*EXPERIMENTS[name], f"out_dir={tmp}",
                                                         f"name={name}")))
            finally:
                torch.set_num_threads(threads)
        return done[name]

    return get


@pytest.mark.slow
def test_two_processes_score_every_test_example_exactly_once(two_procs):
    seen = json.loads((two_procs.parent / "eval_ids.json").read_text())
    for n, got in seen.items():
        assert got["world_size"] == 2
        assert sorted(got["ids"]) == list(range(int(n)))  # none missing, none twice
        assert sum(got["per_rank"]) == int(n)


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _close(metric: str, got: list, want: list) -> float:
    """Largest difference between two score rows (relative for perplexity)."""
    if metric == "perplexity":
        return max(abs(a - b) / b for a, b in zip(got, want))
    return max(abs(a - b) for a, b in zip(got, want))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_two_processes_match_one(name, two_procs, one_proc):
    two, one = _results(two_procs / name), one_proc(name)
    metric = one["metric"]
    assert two["config_hash"] == one["config_hash"]  # the same experiment, placed elsewhere
    got, want = two["matrices"][metric], one["matrices"][metric]
    assert len(got) == len(want)
    diff = _close(metric, got[-1], want[-1])
    print(f"{name}: final {metric} row, 2 vs 1 processes: max difference {diff:.4f}")
    assert diff <= TOLERANCE[metric], (got, want)
    # Rank zero alone wrote the run folder; evaluation counted every test example once.
    assert json.loads((two_procs / name / "status.json").read_text())["status"] == "complete"
    assert two["config"]["trainer"]["devices"] == 2


@pytest.mark.slow
def test_two_processes_evaluate_during_training_like_one(two_procs, one_proc):
    """The same points, each subsample example scored once (41 is odd: shards of 21 and 20),
    the same scores; and the training FLOPs summed over ranks are one process's."""
    two, one = _results(two_procs / "curves"), one_proc("curves")
    assert two["curves"]["step"] == one["curves"]["step"]
    assert two["curves"]["task"] == one["curves"]["task"] and two["curves"]["examples"] == [41] * 2
    for got, want in zip(two["curves"]["scores"]["accuracy"], one["curves"]["scores"]["accuracy"]):
        assert got == pytest.approx(want, abs=TOLERANCE["accuracy"])
    assert two["summary"]["train_flops"] == one["summary"]["train_flops"]


def _memory(run_dir: Path | str, index: int = 0) -> dict:
    state = checkpoint.load(Path(run_dir) / "checkpoints" / "last.ckpt")
    return state["strategies"][index]["buffer"]["fields"]


def _same_memory(two_procs: Path, one_proc, name: str) -> dict:
    """The memory two processes keep (stored once) is the one a single process keeps."""
    two, one = _memory(two_procs / name), _memory(one_proc(name)["run_dir"])
    assert two.keys() == one.keys()
    for key in ("x", "y", "t", "task", "key"):
        assert torch.equal(two[key], one[key]), key
    return two


@pytest.mark.slow
def test_replay_memory_is_one_processs_class_balanced_memory(two_procs, one_proc):
    memory = _same_memory(two_procs, one_proc, "replay")
    assert len(memory["key"]) == 100
    assert torch.bincount(memory["y"], minlength=10).tolist() == [10] * 10  # 10 classes seen


@pytest.mark.slow
def test_der_memory_is_one_processs_and_keeps_its_logits(two_procs, one_proc):
    memory = _same_memory(two_procs, one_proc, "der")
    assert len(memory["key"]) == 100
    assert memory["logits"].shape == (100, 10) and torch.isfinite(memory["logits"]).all()
    one = _memory(one_proc("der")["run_dir"])["logits"]
    torch.testing.assert_close(memory["logits"], one, rtol=1e-4, atol=1e-4)
    assert len(set(memory["task"].tolist())) > 1  # reservoir over the whole stream


@pytest.mark.slow
def test_agem_memory_keeps_its_patterns_per_experience(two_procs, one_proc):
    memory = _same_memory(two_procs, one_proc, "agem")
    assert torch.bincount(memory["task"]).tolist() == [30] * 5


# -- a rank that crashes; resuming its checkpoint on one process ----------------------------


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """Two processes, replay, a named run; rank 1 raises at its first batch of task 2."""
    tmp = tmp_path_factory.mktemp("crash")
    out = tmp / "runs"
    cmd = [PY, "-m", "harness", "run", *EXPERIMENTS["replay"], *DDP, f"out_dir={out}",
           "name=crashed", "logger=none", "trainer.progress=false", "trainer.ddp_timeout_s=60"]
    started = time.time()
    proc = subprocess.run(cmd, cwd=tmp, env=_env(tmp, RETAIN_RANK_FAULT="rank=1,task=2"),
                          capture_output=True, text=True, timeout=600)
    (run_dir,) = out.iterdir()
    return proc, time.time() - started, run_dir, tmp


@pytest.mark.slow
def test_a_crash_on_one_rank_fails_the_run_with_its_error(crashed):
    proc, seconds, run_dir, _ = crashed
    assert proc.returncode not in (0, -9, 137), proc.stderr[-3000:]  # not SIGKILLed
    last = proc.stderr.strip().splitlines()[-1]
    assert "RankFailure: rank 1 (pid" in last and "injected fault on rank 1 at task 2" in last
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed"
    assert status["error"].startswith("RankFailure: rank 1 (pid")
    assert "injected fault" in status["error"]
    assert not (run_dir / "results.json").exists()
    print(f"crash on rank 1 ended the run in {seconds:.1f} s (start-up included)")


@pytest.mark.slow
def test_a_hung_rank_fails_the_run_after_the_ddp_timeout(tmp_path):
    out = tmp_path / "runs"
    cmd = [PY, "-m", "harness", "run", *EXPERIMENTS["naive"], *DDP, f"out_dir={out}",
           "logger=none", "trainer.progress=false", "trainer.ddp_timeout_s=10"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=_env(tmp_path, RETAIN_RANK_FAULT="rank=1,task=2,mode=hang"))
    assert proc.returncode not in (0, -9, 137)
    last = proc.stderr.strip().splitlines()[-1]
    assert "rank(s) 1 did not join a collective within trainer.ddp_timeout_s=10 s" in last
    (run_dir,) = out.iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "ddp_timeout_s=10" in status["error"]


@pytest.mark.slow
def test_knn_store_is_global(two_procs, one_proc):
    """Every rank's writes reach the store: as many entries written as by one process."""
    one = checkpoint.load(Path(one_proc("knn")["run_dir"]) / "checkpoints" / "last.ckpt")
    two = checkpoint.load(two_procs / "knn" / "checkpoints" / "last.ckpt")
    for key in ("model.attn_store.seen", "model.attn_store.count"):
        assert int(two["net"][key]) == int(one["net"][key]), key
    assert int(two["net"]["model.attn_store.count"]) == 4096  # full, and bounded globally


@pytest.mark.slow
def test_a_checkpoint_of_two_ranks_resumes_on_one(crashed, one_proc):
    _, _, run_dir, tmp = crashed
    state = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert state["position"] == 1 and len(state["strategies"][0]["buffer"]["fields"]["key"])
    proc = subprocess.run([PY, "-m", "harness", "run", "--resume", str(run_dir),
                           "trainer.devices=1", "trainer.strategy=auto"],
                          cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(run_dir)
    assert results["config"]["trainer"]["devices"] == 1
    memory = _memory(run_dir)
    assert torch.bincount(memory["y"], minlength=10).tolist() == [10] * 10
    # The first row was computed by two processes, the second by one: close to one process's.
    diff = _close("accuracy", results["matrices"]["accuracy"][-1],
                  one_proc("replay")["matrices"]["accuracy"][-1])
    print(f"replay resumed on 1 process after task 1 on 2: final row differs by {diff:.4f}")
    assert diff <= TOLERANCE["accuracy"]


# -- mixed precision, accumulation and clipping with every strategy --------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_bf16_accumulation_and_clipping_work_with_every_strategy(name, tmp_path, monkeypatch):
    from harness.experiment.run import run
    from harness.registry import STRATEGIES as REGISTRY

    dtypes = []
    cls = REGISTRY.get(name).cls
    original = cls.loss_terms

    def spy(self, ctx, batch, outputs):
        terms = original(self, ctx, batch, outputs)
        dtypes.extend(v.dtype for v in terms.values())
        return terms

    from strategies.penalty import Quadratic

    original_add, penalised = Quadratic.add_gradient_, []

    def spy_add(self, net):  # the penalty's gradient, added to the accumulated gradients
        penalised.extend(p.grad.dtype for p in net.parameters() if p.grad is not None)
        return original_add(self, net)

    monkeypatch.setattr(cls, "loss_terms", spy)
    monkeypatch.setattr(Quadratic, "add_gradient_", spy_add)
    cfg = config.load(None, quick(*DIGITS, *STRATEGIES[name], "trainer.max_epochs=1",
                                  "trainer.precision=bf16-mixed",
                                  "trainer.accumulate_grad_batches=2", "trainer.grad_clip=1.0",
                                  f"out_dir={tmp_path}"))
    results = run(cfg)
    scores = [v for row in results["matrices"]["accuracy"] for v in row]
    assert all(0.0 <= v <= 1.0 for v in scores) and scores[0] > 0.5  # it learnt task 1
    assert all(torch.isfinite(torch.tensor(row)).all() for row in results["matrices"]["loss"])
    assert all(d == torch.float32 for d in dtypes), dtypes  # loss terms (KL, DER) in fp32
    if name in ("der", "distill"):
        assert dtypes, f"{name} added no loss term in task 2"
    if name in ("ewc", "si"):  # penalties: a closed-form gradient, no loss term
        assert penalised and not dtypes, f"{name} added no penalty gradient in task 2"
        assert set(penalised) == {torch.float32}  # onto fp32 gradients under bf16 autocast
