"""The lean engine (``harness.core.loop``) trains exactly as Lightning's Trainer does.

Same config, same seed, CPU: the two engines must give bit-identical score matrices and loss
curves, with gradient clipping, accumulation (an epoch whose length is not a multiple of the
window), a step cap, strategies that edit gradients before the optimizer step, and bf16
autocast; and a run checkpointed inside a task by one engine resumes under the other.
"""

import json
from pathlib import Path

import lightning as L
import pytest
from conftest import quick

from harness import config
from harness.cli import _resumable
from harness.core.loop import LEAN_HOOKS
from harness.core.system import ContinualSystem
from harness.errors import UserError
from harness.experiment.run import run
from harness.runtime import faults

# 2 tasks x 2 epochs of 11-12 batches: steps on an epoch's last, incomplete window too.
DIGITS = ["scenario.name=split-digits", "scenario.n_experiences=2", "model.name=mlp",
          "trainer.max_epochs=2", "trainer.batch_size=64"]
SETTINGS = {
    "replay+ewc+distill": ["strategy=[replay,ewc,distill]"],
    "agem+si, clip, accumulate 3, step cap, evaluation during training": [
        "strategy=[agem,si]", "trainer.grad_clip=0.5", "trainer.accumulate_grad_batches=3",
        "trainer.max_steps=7", "trainer.optimizer=adamw", "eval.every_n_steps=2",
        "eval.subsample=20"],
    # distill alone reads its teacher's cached outputs (Batch.index); ewc's penalty in bf16
    "bf16 autocast": ["strategy=[distill,ewc]", "trainer.precision=bf16-mixed"],
}

pytestmark = pytest.mark.usefixtures("one_thread")


def train(engine: str, name: str, *overrides: str) -> tuple[dict, list[dict]]:
    results = run(config.load(None, quick(*DIGITS, *overrides, f"trainer.engine={engine}",
                                          f"name={name}")))
    lines = Path(results["run_dir"], "metrics.jsonl").read_text().splitlines()
    return results, [json.loads(line) for line in lines]


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_lean_loop_and_lightning_trainer_train_bit_identically(setting):
    lean, lean_log = train("lean", "lean", *SETTINGS[setting])
    lightning, lightning_log = train("lightning", "lightning", *SETTINGS[setting])
    assert lean["matrices"] == lightning["matrices"]
    assert lean["baseline"] == lightning["baseline"]
    assert [t["steps"] for t in lean["per_task"]] == [t["steps"] for t in lightning["per_task"]]
    assert lean_log == lightning_log  # every logged loss term, at the same steps
    assert lean["curves"] == lightning["curves"]  # evaluation during training, if on
    assert [t["step_flops"] for t in lean["per_task"]] == [
        t["step_flops"] for t in lightning["per_task"]]  # the same sample step counted
    assert any("loss/task" in line for line in lean_log)


def test_a_run_checkpointed_inside_a_task_by_one_engine_resumes_under_the_other(monkeypatch):
    setting = [*SETTINGS["replay+ewc+distill"], "checkpoint.every_n_steps=4"]
    reference, _ = train("lean", "reference", *setting)
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    monkeypatch.setenv("RETAIN_FAULT", "step:9")
    faults.reset()
    cfg = config.load(None, quick(*DIGITS, *setting, "trainer.engine=lightning", "name=moved"))
    with pytest.raises(faults.SimulatedCrash):
        run(cfg, _resumable(cfg, None))
    monkeypatch.delenv("RETAIN_FAULT")
    cfg = config.load(None, quick(*DIGITS, *setting, "trainer.engine=lean", "name=moved"))
    resumed = run(cfg, _resumable(cfg, None))
    assert resumed["resumes"][-1]["task"] == 0 and resumed["resumes"][-1]["steps"] == 8
    assert resumed["matrices"] == reference["matrices"]


def test_the_trainer_calls_only_the_hooks_the_lean_loop_calls():
    """A hook added to LightningSystem would run under the Trainer and silently not under
    the lean loop: this fails first. Each one hands over to the ContinualSystem's own."""
    from harness.core.trainer import LightningSystem

    lightning_names = {n for n in dir(L.LightningModule) if not n.startswith("_")}
    overridden = {n for cls in LightningSystem.__mro__
                  if cls.__module__.startswith("harness.")
                  for n in vars(cls) if n in lightning_names and callable(vars(cls)[n])}
    assert overridden == set(LEAN_HOOKS)
    assert all(callable(getattr(ContinualSystem, hook)) for hook in LEAN_HOOKS)


def test_a_lean_run_never_imports_lightning(tmp_path):
    """Lightning's import is 3-5 s of a run's start-up; the lean engine does without."""
    import subprocess
    import sys

    code = ("import sys; from harness import config; from harness.experiment.run import run; "
            f"run(config.load(None, {quick(*DIGITS, 'strategy=[replay,ewc,distill]')!r} + "
            f"['out_dir={tmp_path}', 'logger=wandb', 'wandb.mode=offline'])); "
            "print('LIGHTNING' if 'lightning' in sys.modules else 'WITHOUT')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "WITHOUT"


@pytest.mark.parametrize("overrides, engine", [
    ([], "lean"),
    (["trainer.devices=2"], "lightning"),
    (["trainer.precision=16-mixed"], "lightning"),
    (["trainer.engine=lightning"], "lightning"),
    (["trainer.precision=bf16-true"], "lightning"),
    (["trainer.accelerator=mps"], "lightning"),
    (["trainer.strategy=ddp"], "lightning"),
    (["trainer.num_nodes=2"], "lightning"),
])
def test_auto_picks_the_lean_loop_for_one_process_only(overrides, engine):
    assert config.engine_for(config.load(None, overrides).trainer) == engine


def test_auto_follows_the_device_auto_resolved_to_and_a_launcher():
    trainer = config.load(None, []).trainer
    assert config.engine_for(trainer, "cuda") == "lean"
    assert config.engine_for(trainer, "mps") == "lightning"  # a Mac: Lightning's MPS support
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORLD_SIZE", "2")  # launched by torchrun
        assert config.engine_for(trainer) == "lightning"


def test_asking_for_the_lean_loop_where_it_cannot_run_names_the_reason():
    with pytest.raises(UserError, match="trainer.engine=lean .* trainer.devices=2"):
        config.load(None, ["trainer.engine=lean", "trainer.devices=2"])


def test_the_bare_optimizer_step_still_runs_hooks_and_instance_wrappers():
    """The lean loop skips torch's step wrapper only where nothing could notice."""
    import torch

    from harness.core.loop import bare_step

    def sgd():
        p = torch.nn.Parameter(torch.ones(2))
        p.grad = torch.ones(2)
        return p, torch.optim.SGD([p], lr=0.1)

    p, opt = sgd()
    bare_step(opt)()
    assert torch.allclose(p, torch.full((2,), 0.9))  # a plain step

    p, opt = sgd()
    hooked = []
    opt.register_step_post_hook(lambda *args: hooked.append(1))
    bare_step(opt)()
    assert hooked == [1] and torch.allclose(p, torch.full((2,), 0.9))

    p, opt = sgd()
    wrapped, original = [], opt.step
    opt.step = lambda *a, **k: wrapped.append(1) or original(*a, **k)  # e.g. an LR scheduler's
    bare_step(opt)()
    assert wrapped == [1] and torch.allclose(p, torch.full((2,), 0.9))
