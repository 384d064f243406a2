"""Resume: a run crashed anywhere (inside a task, in a checkpoint write, during evaluation,
between tasks) and continued ends with the same matrices, bit for bit, as a run that never
stopped; the same config and seed give the same results; a damaged checkpoint is skipped.

Crashes here are in-process (``RETAIN_FAULT_MODE=raise``); ``test_faults.py`` kills real
processes with SIGKILL.
"""

import json
import os
import random
from pathlib import Path

import pytest
from conftest import quick

from harness import config
from harness.cli import _resumable, main
from harness.experiment import checkpoint
from harness.experiment.run import run
from harness.runtime import faults
from harness.runtime.seed import rng_state, set_rng_state

# 2 tasks x 2 epochs x 11-12 batches: ~46 optimizer steps, a step checkpoint every 4.
DIGITS = ["scenario.name=split-digits", "scenario.n_experiences=2", "model.name=mlp",
          "trainer.max_epochs=2", "trainer.batch_size=64", "checkpoint.every_n_steps=4"]
# knn's memory (a store written during training) must survive a resume too.
KNN = ["scenario.name=mqar", "scenario.n_experiences=2", "scenario.seq_len=32",
       "scenario.n_pairs=4", "scenario.n_train=96", "scenario.n_val=0", "scenario.n_test=32",
       "model.name=knn", "model.d_model=32", "model.n_head=2", "model.seg_len=16",
       "model.capacity=256", "model.top_k=4", "trainer.max_epochs=3",
       "checkpoint.every_n_steps=2"]
CASES = {
    "naive": [*DIGITS, "strategy=naive"],
    "replay": [*DIGITS, "strategy.name=[replay]", "strategy.replay.mem_size=100"],
    "ewc": [*DIGITS, "strategy=ewc"],
    "distill": [*DIGITS, "strategy=distill"],
    "replay+ewc+distill": [*DIGITS, "strategy=[replay,ewc,distill]"],
    "knn": [*KNN, "strategy=naive"],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def crash(overrides: list[str], name: str, spec: str, monkeypatch) -> bool:
    """Run (or resume) ``name`` with a crash at ``spec``; False if it finished first."""
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    monkeypatch.setenv("RETAIN_FAULT", spec)
    faults.reset()
    cfg = config.load(None, quick(*overrides, f"name={name}"))
    try:
        run(cfg, _resumable(cfg, None))
    except faults.SimulatedCrash:
        return True
    finally:
        monkeypatch.delenv("RETAIN_FAULT")
    return False


def finish(overrides: list[str], name: str) -> dict:
    cfg = config.load(None, quick(*overrides, f"name={name}"))
    return run(cfg, _resumable(cfg, None))


def crash_then_resume(overrides: list[str], name: str, faults_at: list[str],
                      monkeypatch) -> dict:
    """Run ``name`` crashing at each fault point in turn, resuming each time; the results."""
    crashes = sum(crash(overrides, name, spec, monkeypatch) for spec in faults_at)
    assert crashes >= min(2, len(faults_at)), f"only {crashes} of {faults_at} happened"
    return finish(overrides, name)


def random_faults(rng: random.Random, steps: int, n: int = 3) -> list[str]:
    """n crash points, one of each kind first: inside a task, in a checkpoint write, in an
    evaluation, between tasks. Counts restart in each process, so small counts suffice."""
    menu = [f"step:{rng.randint(1, steps)}", f"checkpoint:{rng.randint(1, 3)}",
            f"eval:{rng.randint(1, 3)}", "task:1"]
    rng.shuffle(menu)
    return menu[:n]


@pytest.mark.parametrize("case", list(CASES))
def test_crashed_and_resumed_run_equals_uninterrupted_run(case, monkeypatch):
    seed = int(os.environ.get("RETAIN_FAULT_SEED", "8"))
    faults_at = random_faults(random.Random(f"{seed}-{case}"), steps=6)
    reference = run(config.load(None, quick(*CASES[case], "name=reference")))
    resumed = crash_then_resume(CASES[case], "crashed", faults_at, monkeypatch)
    # a crash before the first checkpoint of a resumed attempt leaves no trace of that attempt
    assert 1 <= len(resumed["resumes"]) <= len(faults_at), faults_at
    assert resumed["matrices"] == reference["matrices"], (faults_at, seed)
    assert resumed["baseline"] == reference["baseline"]
    assert [t["steps"] for t in resumed["per_task"]] == [
        t["steps"] for t in reference["per_task"]]


def test_same_config_and_seed_give_identical_results_and_record_the_environment():
    first = run(config.load(None, quick(*CASES["replay"], "name=a")))
    second = run(config.load(None, quick(*CASES["replay"], "name=b")))
    assert first["matrices"] == second["matrices"] and first["baseline"] == second["baseline"]
    env = first["env"]
    for key in ("python", "torch", "lightning", "numpy", "host", "git_commit", "device"):
        assert key in env
    assert env["exactly_reproducible"] is True and "CPU" in env["reproducibility_note"]
    assert first["config"]["checkpoint"]["every_n_steps"] == 4


def test_resume_mid_task_drops_repeated_metric_lines(monkeypatch):
    overrides = [*CASES["naive"], "trainer.log_every_n_steps=1"]
    results = crash_then_resume(overrides, "m", ["step:7"], monkeypatch)
    lines = [json.loads(line) for line in Path("runs/m/metrics.jsonl").open()]
    steps = [line["step"] for line in lines if "loss/task" in line]
    assert steps == list(range(sum(t["steps"] for t in results["per_task"])))
    evals = [line["task"] for line in lines if "eval/accuracy/average_seen" in line]
    assert evals == list(range(len(results["per_task"])))  # one row per task, none repeated


def test_a_crash_after_a_tasks_evaluation_does_not_log_its_row_twice(monkeypatch):
    """Killed in the task checkpoint's write, after the row was logged: the resume starts
    from the step checkpoint taken after the task's last step and evaluates again."""
    overrides = [*CASES["naive"], "trainer.max_steps=5", "checkpoint.every_n_steps=5"]
    results = crash_then_resume(overrides, "e", ["checkpoint:3"], monkeypatch)
    assert results["resumes"][-1]["steps"] == 5  # from the trained=True step checkpoint
    lines = [json.loads(line) for line in Path("runs/e/metrics.jsonl").open()]
    evals = [line["task"] for line in lines if "eval/accuracy/average_seen" in line]
    assert evals == [0, 1]


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(monkeypatch):
    assert crash(CASES["naive"], "d", "task:1", monkeypatch)  # after task 1's checkpoint
    ckpts = Path("runs/d/checkpoints")
    last, prev = checkpoint.load(ckpts / "last.ckpt"), checkpoint.load(ckpts / "prev.ckpt")
    assert last["position"] == 1 and last["partial"] is None
    assert prev["position"] == 0 and prev["partial"]["steps"] > 0  # a step checkpoint
    data = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[: len(data) // 2])  # torn, as by a crash or a disk
    assert checkpoint.load(ckpts / "last.ckpt") is None
    state, path = checkpoint.load_latest(ckpts)
    assert path.name == "prev.ckpt" and state.partial.steps == prev["partial"]["steps"]
    reference = run(config.load(None, quick(*CASES["naive"], "name=ref")))
    assert finish(CASES["naive"], "d")["matrices"] == reference["matrices"]


def test_cli_resume_and_rerun_continue_then_report_complete(monkeypatch, capsys):
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    monkeypatch.setenv("RETAIN_FAULT", "step:5")
    faults.reset()
    args = ["run", *quick(*CASES["naive"], "name=c")]
    with pytest.raises(faults.SimulatedCrash):
        main(args)
    monkeypatch.delenv("RETAIN_FAULT")
    faults.reset()
    assert main(["run", "--resume", "runs/c"]) == 0
    assert "accuracy after task" in capsys.readouterr().out
    assert json.loads(Path("runs/c/results.json").read_text())["resumes"][0]["steps"] == 4
    assert main(args) == 0  # the same command again: nothing left to do
    assert "already complete" in capsys.readouterr().out
    assert main(["run", *args[1:], "trainer.lr=0.5"]) == 2  # same name, other config
    assert "different configuration" in capsys.readouterr().err


def test_a_checkpoint_whose_network_does_not_match_is_refused_with_a_clear_error(
        monkeypatch, capsys):
    """E.g. written by an older retain whose model had other tensors: exit 2, one line."""
    assert crash(CASES["naive"], "old", "task:1", monkeypatch)
    path = Path("runs/old/checkpoints/last.ckpt")
    state = checkpoint.load(path)
    state["net"].pop(next(iter(state["net"])))
    checkpoint.save(path, state)
    assert main(["run", "--resume", "runs/old"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume from" in err and "Missing key" in err and "Traceback" not in err


def test_background_writer_snapshots_the_state_keeps_order_and_reports_errors(tmp_path):
    """The state is serialised before save returns (training may change it at once), writes
    land in order with prev.ckpt one behind, and a failed write raises in the caller."""
    import torch

    from harness.errors import UserError

    writer = checkpoint.Writer()
    weights = torch.zeros(3)
    for step in range(3):
        writer.save(tmp_path / "last.ckpt", {"step": step, "w": weights})
        weights += 1  # what a training step does right after the save
    writer.flush()
    last, prev = checkpoint.load(tmp_path / "last.ckpt"), checkpoint.load(tmp_path / "prev.ckpt")
    assert last["step"] == 2 and torch.equal(last["w"], torch.full((3,), 2.0))
    assert prev["step"] == 1 and torch.equal(prev["w"], torch.ones(3))

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / ".last.ckpt.tmp").symlink_to("/dev/full")
    writer.save(tmp_path / "full" / "last.ckpt", {"step": 0})
    with pytest.raises(UserError, match="No space left on device"):
        writer.flush()
    writer.flush()  # the error was reported once; nothing is pending
    assert not (tmp_path / "full" / "last.ckpt").exists()


@pytest.mark.parametrize("python_words_as", ["tensor", "list"])  # list: older checkpoints
def test_random_states_survive_a_checkpoint(tmp_path, python_words_as):
    """Python's, NumPy's and torch's generators continue where the checkpoint left them."""
    import numpy as np
    import torch

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = rng_state()
    if python_words_as == "list":
        version, words, gauss = state["python"]
        state["python"] = (version, words.tolist(), gauss)
    checkpoint.save(tmp_path / "last.ckpt", {"rng": state})

    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    expected = draw()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(checkpoint.load(tmp_path / "last.ckpt")["rng"])
    assert draw() == expected
