"""Faults: real processes killed with SIGKILL anywhere and resumed, Ctrl-C and SIGTERM, a
diverging loss, W&B without a network or failing mid-run, a full disk, an unwritable run
directory, and a checkpoint crafted to run code.

The kills use the ``RETAIN_FAULT`` hook (``harness.runtime.faults``) in ``python -m harness run``
subprocesses; the reference runs in this process (same seed, one thread: bit-identical).
"""

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import quick

from harness import config
from harness.cli import main
from harness.experiment import checkpoint
from harness.experiment.run import run
from harness.experiment.state import FORMAT
from harness.runtime import faults

# Two tasks, two epochs, every strategy with state at once; a step checkpoint every 4 steps.
RUN = ["scenario.name=split-digits", "scenario.n_experiences=2", "model.name=mlp",
       "trainer.max_epochs=2", "trainer.batch_size=64", "checkpoint.every_n_steps=4",
       "strategy=[replay,ewc,distill]", "strategy.replay.mem_size=100"]
# Evaluation during training every 3 steps: a kill at "eval" may land in one of those.
CURVES = ["eval.every_n_steps=3", "eval.subsample=30"]


pytestmark = pytest.mark.usefixtures("one_thread")


def retain(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m harness run ARGS`` with one torch thread and the given environment."""
    return subprocess.run([sys.executable, "-m", "harness", "run", *args], capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def reference(name: str = "reference", *extra: str) -> dict:
    return run(config.load(None, quick(*RUN, *extra, f"name={name}")))


def status(name: str) -> dict:
    return json.loads(Path(f"runs/{name}/status.json").read_text())


def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_matrix():
    seed = int(os.environ.get("RETAIN_FAULT_SEED", "0"))
    rng = random.Random(seed)
    kills = [f"step:{rng.randint(1, 8)}", f"checkpoint:{rng.randint(1, 3)}",
             f"eval:{rng.randint(1, 3)}", "task:1"]
    rng.shuffle(kills)
    args = quick(*RUN, *CURVES, "name=killed")
    for spec in kills:
        proc = retain(*args, RETAIN_FAULT=spec)
        assert proc.returncode in (-9, 0), proc.stderr[-2000:]  # 0: it finished first
    done = retain(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads(Path("runs/killed/results.json").read_text())
    assert resumed["resumes"], kills
    ref = reference("reference", *CURVES)
    assert resumed["matrices"] == ref["matrices"], (kills, seed)
    assert resumed["baseline"] == ref["baseline"]
    assert resumed["curves"] == ref["curves"], (kills, seed)  # every point, bit for bit
    assert status("killed")["status"] == "complete"
    assert not list(Path("runs/killed/checkpoints").glob(".*.tmp"))  # no torn leftovers


def test_ctrl_c_and_sigterm_stop_cleanly_and_resume():
    args = quick(*RUN, "name=stopped")
    proc = retain(*args, RETAIN_FAULT="step:5", RETAIN_FAULT_MODE="int")
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "stopped by SIGINT" in proc.stderr and "Traceback" not in proc.stderr
    assert status("stopped")["status"] == "interrupted"
    state = checkpoint.load(Path("runs/stopped/checkpoints/last.ckpt"))
    assert state["partial"]["steps"] == 5  # saved at the step it stopped after
    proc = retain("--resume", "runs/stopped", RETAIN_FAULT="eval:2", RETAIN_FAULT_MODE="term")
    assert proc.returncode == 143, proc.stderr[-2000:]  # SIGTERM: evaluation ends, then stop
    assert checkpoint.load(Path("runs/stopped/checkpoints/last.ckpt"))["position"] == 1
    assert retain("--resume", "runs/stopped").returncode == 0
    resumed = json.loads(Path("runs/stopped/results.json").read_text())
    assert resumed["matrices"] == reference()["matrices"]


def test_non_finite_loss_marks_the_run_failed_and_leaves_it_readable(capsys):
    code = main(["run", *quick(*RUN, "name=nan", "trainer.optimizer=sgd", "trainer.lr=1e30",
                               "trainer.log_every_n_steps=1")])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite loss at task 1, step" in err and "Traceback" not in err
    assert status("nan")["status"] == "failed" and "non-finite" in status("nan")["error"]
    assert not Path("runs/nan/results.json").exists()
    lines = Path("runs/nan/metrics.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["step"] >= 0 for line in lines)
    assert checkpoint.load(Path("runs/nan/checkpoints/last.ckpt"))["baseline"]


def test_wandb_online_without_network_falls_back_to_offline_quickly(monkeypatch, capsys):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("RETAIN_WANDB_INIT_TIMEOUT", "3")
    started = time.time()
    code = main(["run", *RUN, "name=wb", "wandb.mode=online", "trainer.progress=false"])
    assert code == 0 and time.time() - started < 120
    err = capsys.readouterr().err
    assert "W&B could not start in online mode" in err and "switching to offline" in err
    assert list(Path("runs/wb/wandb").glob("offline-run-*"))


def test_a_wandb_error_mid_run_turns_logging_off_and_the_run_goes_on(monkeypatch, capsys):
    from harness.experiment.tracking import WandbRun

    def broken(self, metrics, step=None):
        raise ConnectionError("wandb is down")

    monkeypatch.setattr(WandbRun, "log_metrics", broken)
    assert main(["run", *RUN, "name=wb2", "trainer.progress=false"]) == 0
    err = capsys.readouterr().err
    assert err.count("W&B failed while logging metrics (ConnectionError: wandb is down)") == 1
    assert status("wb2")["status"] == "complete"


@pytest.mark.parametrize("target", ["metrics.jsonl", "checkpoints/.last.ckpt.tmp"])
def test_a_full_disk_is_a_clear_error_and_nothing_looks_complete(target, capsys):
    root = Path("runs/full")
    (root / "checkpoints").mkdir(parents=True)
    (root / target).symlink_to("/dev/full")  # every write there fails with ENOSPC
    code = main(["run", *quick(*RUN, "name=full")])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("retain: error: cannot write")  # one line
    assert status("full")["status"] == "failed"
    assert not (root / "results.json").exists()


def test_an_unwritable_run_directory_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    code = main(["run", *quick(*RUN, f"out_dir={tmp_path / 'afile' / 'runs'}")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("retain: error: cannot write the run directory")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _crafted_checkpoint(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "net": _Payload()}, buffer)
    data = buffer.getvalue()
    path.write_bytes(data + checkpoint.MAGIC + hashlib.sha256(data).hexdigest().encode())


def test_a_checkpoint_crafted_to_run_code_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    monkeypatch.setenv("RETAIN_FAULT", "task:1")
    faults.reset()
    with pytest.raises(faults.SimulatedCrash):
        main(["run", *quick(*RUN, "name=evil")])
    monkeypatch.delenv("RETAIN_FAULT")
    ckpts = Path("runs/evil/checkpoints")
    for name in ("last.ckpt", "prev.ckpt"):
        _crafted_checkpoint(ckpts / name)
    with pytest.raises(Exception, match="refusing to load"):
        checkpoint.load(ckpts / "last.ckpt")
    assert main(["run", "--resume", "runs/evil"]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not Path("pwned").exists()
