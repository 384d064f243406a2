"""Every strategy and memory under DDP: two CPU processes (gloo) against one.

* Memories (in-process, simulated ranks): the union of the ranks' replay memories is exactly
  the policy's choice over the global stream, within the global bound, and a checkpoint of
  two ranks loads on one or three.
* End to end (``slow``): one set of two processes runs every strategy and the ``knn`` model on
  tiny streams (``test_ddp_driver.py``); each final matrix must be close to the
  single-process run's, the memories in the two-rank checkpoints must obey their policy and
  global bound.
* A crash on one rank ends the run within a bounded time, with the failed rank and its error
  in the message and in status.json; the checkpoint it left (written by two ranks) resumes
  with one process.
* Mixed precision, gradient accumulation and clipping with every strategy (one process), the
  strategies' loss terms being computed in fp32.
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

from harness import config
from harness.api import TaskData
from harness.experiment import checkpoint
from harness.runtime.distributed import DIST
from strategies.buffer import Buffer

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
EXPERIMENTS = {name: DIGITS + o for name, o in STRATEGIES.items()} | {"knn": TEXT + KNN}
# evaluation during training: a collective at the same steps on every rank
EXPERIMENTS["curves"] = [*DIGITS, "strategy.name=[naive]", "eval.every_n_steps=3",
                         "eval.subsample=41"]
# Two processes see the same global batches and keep the same memories, but sum floats in
# another order and draw replay batches per rank: final accuracies agree to a test example or
# two (measured: 0 for naive/joint/ewc/si/distill/knn, 0.005 for replay/der/agem).
TOLERANCE = {"accuracy": 0.03, "perplexity": 0.02}  # absolute; perplexity relative


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


def _fill(world: int, mem_size: int, policy: str, tasks, per_group=None) -> list[Buffer]:
    def rank(dist):
        buf = Buffer(mem_size, policy, per_group=per_group, dist=dist)
        for k, data in enumerate(tasks):
            buf.add(data, k, seed=0)
        return buf

    return run_ranks(world, rank)


def _union(parts: list[dict]) -> dict:
    return {k: torch.cat([p[k] for p in parts if p]) for k in parts[0]}


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("policy", ["reservoir", "class_balanced", "task_balanced"])
def test_memory_union_is_the_policys_sample_of_the_global_stream(world, policy):
    tasks, mem = _stream(), 37
    bufs = _fill(world, mem, policy, tasks)
    # Every candidate with its key: the same ranks with room for everything.
    everything = _union([b.fields for b in _fill(world, 10**9, policy, tasks)])
    union = _union([b.fields for b in bufs])
    assert len(union["key"]) == mem  # the bound is global, and it is used
    ids = union["x"][:, 0].long()
    assert len(set(ids.tolist())) == mem  # no example kept twice
    for r, b in enumerate(bufs):  # each rank keeps examples of its own shard
        own = b.fields["x"][:, 0].long()
        assert torch.all((own % len(tasks[0])) % world == r)
    groups = bufs[0].groups(everything["y"], everything["task"])
    caps = bufs[0].capacities(sorted(set(groups.tolist())))
    expected = set()
    for g, cap in caps.items():
        members = (groups == g).nonzero().squeeze(1)
        top = everything["key"][members].topk(min(cap, len(members))).indices
        expected |= set(everything["x"][members[top], 0].long().tolist())
    assert set(ids.tolist()) == expected  # exactly the global top keys of each group
    if policy != "reservoir":
        kept = bufs[0].groups(union["y"], union["task"])
        assert {g: int((kept == g).sum()) for g in caps} == caps


def test_memory_checkpoint_of_two_ranks_loads_on_one_and_on_three():
    tasks = _stream()
    bufs = _fill(2, 40, "class_balanced", tasks[:2])
    states = run_ranks(2, lambda d: bufs[d.rank].state_dict())  # collective: every rank
    state = states[0]
    assert len(state["ranks"]) == 2
    saved = set(_union(state["ranks"])["x"][:, 0].long().tolist())

    one = Buffer(40, "class_balanced", dist=DIST)
    one.load_state_dict(state)
    assert len(one) == 40 and set(one.fields["x"][:, 0].long().tolist()) == saved

    def three(dist):
        b = Buffer(40, "class_balanced", dist=dist)
        b.load_state_dict(state)
        return set(b.fields["x"][:, 0].long().tolist()) if len(b) else set()

    parts = run_ranks(3, three)
    assert set().union(*parts) == saved and sum(map(len, parts)) == len(saved)

    # And it goes on under the policy on the new number of ranks.
    def more(dist):
        b = Buffer(40, "class_balanced", dist=dist)
        b.load_state_dict(state)
        b.add(tasks[2], 2, seed=0)
        return b

    union = _union([b.fields for b in run_ranks(3, more)])
    assert len(union["key"]) == 40
    assert sorted(torch.bincount(union["y"]).tolist()) == [6, 6, 7, 7, 7, 7]


def _replay_batch_sizes(strategy_name: str) -> tuple[int, int]:
    """(current, memory) examples in one rank's step of task 2: global batch 32, 2 ranks."""
    from test_ddp_threads import ThreadDist, _Group

    from harness.api import BatchLoader, Context
    from harness.registry import STRATEGIES as REGISTRY

    tasks = _stream(2, 200)
    strategy = REGISTRY.get(strategy_name).cls(REGISTRY.get(strategy_name).config(mem_size=64))
    group = _Group(1)
    group.world = 2  # rank 0 of 2; nothing below calls a collective
    first = tasks[0]
    strategy.buffer.fields = {"x": first.x[:64], "y": first.y[:64], "t": first.t[:64],
                              "task": first.t[:64], "key": torch.rand(64).double(),
                              "logits": torch.zeros(64, 4)}
    strategy.filled = 1
    ctx = Context(system=None, task_id=1, n_tasks=2, train_data=lambda i: tasks[i],
                  make_loader=None, batch_size=32, dist=ThreadDist(group, 0), seed=0)
    local = BatchLoader(tasks[1], 16, shuffle=True, rank=0, world_size=2)  # DistLoader's shard
    if strategy_name == "replay":
        return 16, len(next(iter(strategy.train_loader(ctx, local)))) - 16
    strategy.before_task(ctx)
    try:
        strategy.loss_terms(ctx, next(iter(local)), None)  # fails at the forward (no network)
    except AttributeError:
        pass
    return 16, strategy.stream.batch_size


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("policy", ["reservoir", "class_balanced", "task_balanced"])
def test_memory_union_is_the_single_process_memory(world, policy):
    tasks = _stream()
    one = _fill(1, 37, policy, tasks)[0].fields["x"][:, 0].long()
    many = _union([b.fields for b in _fill(world, 37, policy, tasks)])["x"][:, 0].long()
    assert sorted(many.tolist()) == sorted(one.tolist())


@pytest.mark.parametrize("name", ["replay", "der"])
def test_memory_batch_is_split_over_ranks_like_the_current_batch(name):
    current, memory = _replay_batch_sizes(name)
    assert memory == current  # batch_size_mem=0 means "the training batch size", globally


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
            done[name] = run(config.load(None, quick(*EXPERIMENTS[name], f"out_dir={tmp}",
                                                     f"name={name}")))
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


def _memory_parts(run_dir: Path, index: int = 0) -> list[dict]:
    state = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    return state["strategies"][index]["buffer"]["ranks"]


def _train_sets(name: str) -> list[TaskData]:
    from harness.registry import SCENARIOS

    cfg = config.load(None, quick(*EXPERIMENTS[name]))
    scenario = SCENARIOS.get(cfg.scenario.name).cls(cfg.scenario, cfg.seed)
    return [scenario.train_data(i) for i in range(scenario.n_experiences)]


def _check_parts(parts: list[dict], train: list[TaskData], world: int) -> dict:
    """The ranks' memories: each from its own shard, none twice; returns their union."""
    assert len(parts) == world and all(p for p in parts)
    for rank, part in enumerate(parts):
        for x, y, task in zip(part["x"], part["y"], part["task"].tolist()):
            shard_x, shard_y = train[task].x[rank::world], train[task].y[rank::world]
            assert ((shard_x == x).all(1) & (shard_y == y)).any(), "not from this rank's shard"
    union = _union(parts)
    assert len(set(union["key"].tolist())) == len(union["key"])
    return union


@pytest.mark.slow
def test_replay_memory_union_obeys_class_balance_and_global_bound(two_procs):
    union = _check_parts(_memory_parts(two_procs / "replay"), _train_sets("replay"), 2)
    assert len(union["key"]) == 100  # mem_size over both ranks
    assert torch.bincount(union["y"], minlength=10).tolist() == [10] * 10  # 10 classes seen


@pytest.mark.slow
def test_der_memory_union_is_bounded_and_keeps_its_logits(two_procs):
    parts = _memory_parts(two_procs / "der")
    union = _check_parts(parts, _train_sets("der"), 2)
    assert len(union["key"]) == 100
    assert union["logits"].shape == (100, 10) and torch.isfinite(union["logits"]).all()
    assert set(union["task"].tolist()) == {0, 1}  # reservoir over the whole stream


@pytest.mark.slow
def test_agem_memory_keeps_its_patterns_per_experience_over_all_ranks(two_procs):
    union = _check_parts(_memory_parts(two_procs / "agem"), _train_sets("agem"), 2)
    assert torch.bincount(union["task"]).tolist() == [30, 30]


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
    assert state["position"] == 1 and len(state["strategies"][0]["buffer"]["ranks"]) == 2
    proc = subprocess.run([PY, "-m", "harness", "run", "--resume", str(run_dir),
                           "trainer.devices=1", "trainer.strategy=auto"],
                          cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(run_dir)
    assert results["config"]["trainer"]["devices"] == 1
    parts = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["strategies"][0]
    union = _check_parts(parts["buffer"]["ranks"], _train_sets("replay"), 1)
    assert torch.bincount(union["y"], minlength=10).tolist() == [10] * 10
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
