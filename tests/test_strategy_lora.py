"""The LoRA strategies on a tiny randomly initialised Llama (offline): ``lora_per_task`` keeps
each task's adapter (no forgetting at all under task-aware scoring) or merges it into the base;
``olora`` keeps each new adapter's input subspace orthogonal to the earlier ones; both refuse a
model without adapters in one line."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import quick

pytest.importorskip("peft")
from lora_tiny import lora_run  # noqa: E402
from resume_helpers import resumes_bit_identically  # noqa: E402

from harness import config  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.experiment import checkpoint  # noqa: E402
from harness.experiment.run import run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))


def train(*overrides: str) -> dict:
    return run(config.load(None, quick(*lora_run(*overrides), "trainer.max_epochs=2")))


def strategy_state(results: dict) -> dict:
    return checkpoint.load(Path(results["run_dir"]) / "checkpoints" / "last.ckpt")[
        "strategies"][0]


def test_kept_adapters_chosen_by_task_forget_nothing_and_unseen_tasks_see_the_base():
    naive = train("strategy=naive", "name=naive")["matrices"]["perplexity"]
    kept = train("strategy=lora_per_task", "name=keep")
    R, base = kept["matrices"]["perplexity"], kept["baseline"]["perplexity"]
    assert R[1][0] == R[0][0]  # task 1's own adapter, untouched by task 2's training
    assert naive[1][0] != naive[0][0]  # one shared adapter moves on task 1's score
    assert R[0][1] == base[1]  # task 2 has no adapter yet after task 1: the base model
    assert R[1][1] < base[1]  # its own adapter trained
    assert kept["summary"]["bits_per_token/forgetting"] == 0.0
    assert len(strategy_state(kept)["adapters"]) == 2


def test_merged_adapters_build_on_each_other_in_the_base_weights():
    kept = train("strategy=lora_per_task", "name=keep")["matrices"]["perplexity"]
    merged = train("strategy=lora_per_task", "strategy.lora_per_task.after_task=merge",
                   "name=merge")
    R = merged["matrices"]["perplexity"]
    # after task 1 the merged model scores task 1 as its adapter did (float rounding aside)
    assert R[0][0] == pytest.approx(kept[0][0], rel=1e-4)
    assert R[0][1] != kept[0][1]  # no task selection: task 2 is scored by the merged model
    assert R[1][0] != R[0][0]  # task 2 trains on top of it: task 1 moves
    state = strategy_state(merged)
    assert state["base"] and all(k.endswith("base_layer.weight") for k in state["base"])


def orthogonality(results: dict) -> float:
    """sum |A_1 A_2^T| over layers, from the two tasks' A the run kept."""
    total = 0.0
    for stacked in strategy_state(results)["previous"]:
        first, second = stacked.chunk(2)
        total += (first @ second.T).abs().sum().item()
    return total


def test_olora_keeps_the_new_adapter_orthogonal_to_the_earlier_ones():
    free = train("strategy=olora", "strategy.olora.lambda_orth=0", "name=free")
    olora = train("strategy=olora", "strategy.olora.lambda_orth=1", "name=olora")
    assert orthogonality(olora) < 0.5 * orthogonality(free)
    lines = Path(olora["run_dir"], "metrics.jsonl").read_text()
    assert '"loss/olora"' in lines  # logged from task 2 on (there is nothing before it)
    # the earlier adapter still applies: merged into the base weights
    assert all(k.endswith("base_layer.weight") for k in strategy_state(olora)["base"])


def test_olora_l2_shrinks_the_adapter():
    plain = train("strategy=olora", "name=plain")
    shrunk = train("strategy=olora", "strategy.olora.lambda_l2=1", "name=l2")
    norms = [sum(p.norm().item() for p in strategy_state(r)["previous"]) for r in (plain, shrunk)]
    assert norms[1] < norms[0]


@pytest.mark.parametrize("name", ["olora", "lora_per_task"])
def test_without_adapters_it_is_refused_in_one_line_before_any_run_directory(name, tmp_path):
    with pytest.raises(UserError, match=f"{name} needs model.adapter=lora"):
        run(config.load(None, quick(*lora_run(f"strategy={name}", "model.adapter=none",
                                              f"out_dir={tmp_path / 'runs'}"))))
    assert not (tmp_path / "runs").exists()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", f"strategy={name}",
                           "scenario.name=split-digits", "model.name=mlp"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"retain: error: {name} needs model.adapter=lora")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_kept_adapters_are_swapped_back_after_scoring():
    """Scoring another task's adapter in eval mode must leave the training slot as it was."""
    from harness.core.build import build
    from harness.core.system import ContinualSystem
    from harness.core.task import begin_task

    cfg = config.load(None, quick(*lora_run("strategy=lora_per_task")))
    strategies, scenario, net = build(cfg)
    system = ContinualSystem(net, strategies, cfg.trainer)
    begin_task(system, scenario, cfg.trainer, 0, 0)
    slot = {n: p.detach().clone() for n, p in net.named_parameters() if "lora_B" in n}
    with torch.no_grad():
        for p in slot:
            net.get_parameter(p).add_(0.1)  # a "trained" task-1 adapter
    live = {n: net.get_parameter(n).detach().clone() for n in slot}
    net.eval()
    x = scenario.test_data(1).x[:2]
    with torch.no_grad():
        unseen = net(x, torch.ones(2, dtype=torch.long)).logits  # task 2: no adapter yet
        own = net(x, torch.zeros(2, dtype=torch.long)).logits
        general = net(x, torch.full((2,), -1)).logits  # no task (a general set): as trained
    assert not torch.equal(unseen, own) and torch.equal(general, own)
    assert all(torch.equal(net.get_parameter(n), v) for n, v in live.items())
    with pytest.raises(UserError, match="mixes tasks"):
        net(x, torch.tensor([0, 1]))


def test_merge_mode_resumed_inside_task_2_rewrites_the_merged_base(monkeypatch):
    setting = [*lora_run("strategy=lora_per_task", "strategy.lora_per_task.after_task=merge"),
               "trainer.max_steps=3", "checkpoint.every_n_steps=1", "eval_init=false"]
    # the crash inside task 2 comes after task 1's merge
    resumes_bit_identically(quick(*setting), monkeypatch, crash_at="step:5")


@pytest.mark.parametrize("strategy", ["lora_per_task", "olora"])
def test_a_fresh_network_gets_the_merged_base_from_the_strategys_state(strategy):
    """Checkpoints may leave frozen base weights out: the strategy writes back its merges."""
    from harness.core.build import build
    from harness.core.system import ContinualSystem
    from harness.core.task import begin_task

    extra = ["strategy.lora_per_task.after_task=merge"] if strategy == "lora_per_task" else []
    results = train(f"strategy={strategy}", *extra, "trainer.max_steps=2", "name=merged")
    state = strategy_state(results)
    cfg = config.load(None, quick(*lora_run(f"strategy={strategy}", *extra)))
    strategies, scenario, net = build(cfg)
    name = next(iter(state["base"]))
    assert not torch.equal(net.get_parameter(name), state["base"][name])  # as built
    strategies[0].load_state_dict(state)
    begin_task(ContinualSystem(net, strategies, cfg.trainer), scenario, cfg.trainer, 0, 1)
    assert all(torch.equal(net.get_parameter(n), w) for n, w in state["base"].items())
