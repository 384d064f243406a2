"""The run directory is the run's alone: a name is one folder inside out_dir, one process at a
time writes it, and a resume trusts nothing it has not checked (damaged or missing
checkpoints, another configuration, a checkpoint past the stream, a damaged results.json).
"""

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import quick
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import config
from harness.cli import main
from harness.errors import UserError
from harness.experiment import checkpoint, lock, results
from harness.experiment.results import RunDir, run_path
from harness.experiment.run import run
from harness.runtime import faults

DIGITS = ["scenario.name=split-digits", "scenario.n_experiences=2", "model.name=mlp",
          "trainer.max_epochs=2", "trainer.batch_size=64", "checkpoint.every_n_steps=4"]

pytestmark = pytest.mark.usefixtures("one_thread")


def retain(*args: str) -> tuple[int, str]:
    """``retain ARGS`` in this process: the exit code and the last line on stderr."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return code, lines[-1] if lines else ""


def one_error_line(code: int, last: str, *words: str) -> None:
    assert code == 2, last
    assert last.startswith("retain: error: ") and "Traceback" not in last, last
    for word in words:
        assert word in last, (word, last)


def crash_after_task_1(name: str, monkeypatch, *extra: str) -> Path:
    """A run of ``name`` that stops (in-process) after task 1's checkpoint."""
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    monkeypatch.setenv("RETAIN_FAULT", "task:1")
    faults.reset()
    with pytest.raises(faults.SimulatedCrash):
        main(["run", *quick(*DIGITS, *extra, f"name={name}")])
    monkeypatch.delenv("RETAIN_FAULT")
    faults.reset()
    return Path("runs") / name


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escaped", "{tmp}/absolute", "a/b", "..", ".",
                                  "x" * 300, "tab\there", "a\\b", "é" * 130])
def test_a_name_that_is_not_one_folder_in_out_dir_is_refused(name, tmp_path, monkeypatch):
    """Before: ../../x wrote to <cwd>/../../x, /abs wrote there, a/b nested, 300 characters
    failed with an OSError traceback."""
    cwd = tmp_path / "deep" / "cwd"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    code, last = retain("run", *quick(*DIGITS, f"name={name.format(tmp=tmp_path)}"))
    one_error_line(code, last, "invalid run name")
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in p.parts}
    assert written == {Path("deep"), Path("deep/cwd")}


def test_an_existing_folder_elsewhere_is_never_taken_for_a_run(tmp_path):
    """Before: name=/that/folder resumed it, replaced its config.yaml and added status.json."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.yaml").write_text("mine: 1\n")
    proc = subprocess.run([sys.executable, "-m", "harness", "run", *quick(*DIGITS),
                           f"name={victim}"], cwd=tmp_path / "victim", capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("retain: error: invalid run name")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in victim.iterdir()) == ["config.yaml"]
    assert (victim / "config.yaml").read_text() == "mine: 1\n"


class Accepted(BaseException):
    """The name got as far as creating the run directory."""


names = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["..", ".", "/", "\\", "a", "é", "中", "\x00", "\n", "\x7f",
                              "\u2028", " ", "-", "x" * 100, "~", "$HOME", "\udcff"]),
             min_size=1, max_size=6).map("".join),
    st.text(min_size=250, max_size=300))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(names)
def test_any_run_name_is_one_folder_inside_out_dir_or_one_line_exit_2(name):
    """Stopped where the run directory would be made: an accepted name must lie directly in
    out_dir (checked by ``run_path``, which ``RunDir.create`` uses too)."""
    seen = []

    def create(cls, out_dir, run_name):
        seen.append(run_path(out_dir, run_name))
        raise Accepted

    before = set(os.listdir("."))
    original = results.RunDir.create
    results.RunDir.create = classmethod(create)
    try:
        code, last = retain("run", *quick(*DIGITS), "out_dir=out", f"--name={name}")
    except Accepted:
        code = None
    finally:
        results.RunDir.create = original
    if code is None or code == 0:  # name= empty: a generated name
        path = seen[-1]
        assert path.parent == Path("out") and path.resolve().parent == Path("out").resolve()
        assert len(os.fsencode(path.name)) <= 255 and path.name.isprintable()
    else:
        one_error_line(code, last)
    assert set(os.listdir(".")) - {"cache"} <= before


# -- one writer ------------------------------------------------------------------------------


def _launch(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def _stopped(proc: subprocess.Popen) -> bool:
    return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_two_processes_on_one_name_one_is_refused_and_the_other_completes():
    """Both start at once and pause (SIGSTOP) at their third step, if they get that far.
    Before: both ran, the loser failed with "cannot write checkpoint", the winner's
    metrics.jsonl held every step twice."""
    args = quick(*DIGITS, "name=twin", "trainer.log_every_n_steps=1")
    procs = [_launch(*args, RETAIN_FAULT="step:3", RETAIN_FAULT_MODE="stop")
             for _ in range(2)]
    try:
        deadline = time.time() + 300
        while all(p.poll() is None for p in procs):
            assert time.time() < deadline, "neither run was refused"
            time.sleep(0.2)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        while winner.poll() is None and not _stopped(winner):
            assert time.time() < deadline
            time.sleep(0.2)
        status = json.loads(Path("runs/twin/status.json").read_text())
        assert status["pid"] == winner.pid and status["status"] == "running"
        third = _launch(*args)  # while the winner holds the run, paused
        assert third.wait(timeout=300) == 2
        os.kill(winner.pid, signal.SIGCONT)
        assert winner.wait(timeout=300) == 0, winner.stderr.read()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for refused in (loser, third):
        err = refused.stderr.read().strip().splitlines()
        assert refused.returncode == 2 and len(err) == 1, err
        assert err[0].startswith("retain: error: ") and "in use by another retain" in err[0]
    assert f"pid {winner.pid} on {platform.node()}" in err[0]  # the third names the holder
    steps = [json.loads(line)["step"] for line in open("runs/twin/metrics.jsonl")
             if "loss/task" in line]
    assert steps == sorted(set(steps)) and steps[0] == 0
    assert json.loads(Path("runs/twin/status.json").read_text())["status"] == "complete"


def test_a_run_killed_while_it_holds_its_folder_can_be_resumed():
    """The lock is the kernel's (flock): a SIGKILLed holder leaves none behind."""
    args = quick(*DIGITS, "name=killed")
    assert _launch(*args, RETAIN_FAULT="step:5").wait(timeout=300) == -9
    assert json.loads(Path("runs/killed/status.json").read_text())["status"] == "running"
    done = _launch(*args)
    assert done.wait(timeout=300) == 0, done.stderr.read()[-2000:]


@pytest.mark.parametrize("holder, refused", [
    ({"pid": 2**22 + 12345, "host": platform.node()}, False),  # gone: a stale lock
    ({"pid": os.getppid(), "host": platform.node()}, True),  # alive on this host
    ({"pid": 1234, "host": "another-host"}, True),  # cannot be checked: trusted
    ({}, False)])
def test_where_flock_is_missing_the_recorded_holder_decides(tmp_path, monkeypatch, holder,
                                                             refused):
    def no_flock(fd, op):
        raise OSError(lock.errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock.fcntl, "flock", no_flock)
    (tmp_path / ".lock").write_text(json.dumps(holder))
    run_lock = lock.RunLock(tmp_path)
    if refused:
        with pytest.raises(UserError, match=f"pid {holder['pid']} on {holder['host']}"):
            run_lock.acquire()
        return
    run_lock.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    run_lock.release()
    assert (tmp_path / ".lock").read_text() == ""


def test_run_from_code_refuses_a_folder_that_holds_another_run(monkeypatch):
    crash_after_task_1("taken", monkeypatch)
    with pytest.raises(UserError, match="already holds a run"):
        run(config.load(None, quick(*DIGITS, "name=taken")))


# -- resume checks what it resumes ------------------------------------------------------------


def reference_matrix() -> list:
    return run(config.load(None, quick(*DIGITS, "name=reference")))["matrices"]["accuracy"]


def test_damaged_checkpoints_need_an_explicit_restart(monkeypatch):
    """Before: the run silently started again from task 1."""
    root = crash_after_task_1("torn", monkeypatch)
    for name in ("last.ckpt", "prev.ckpt"):
        path = root / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:100])
    code, last = retain("run", *quick(*DIGITS, "name=torn"))
    one_error_line(code, last, "no readable checkpoint", "--restart", "last.ckpt and prev.ckpt")
    assert retain("run", "--restart", *quick(*DIGITS, "name=torn"))[0] == 0
    saved = json.loads((root / "results.json").read_text())
    assert saved["resumes"] == [] and saved["matrices"]["accuracy"] == reference_matrix()
    steps = [json.loads(line)["step"] for line in open(root / "metrics.jsonl")]
    assert steps == sorted(steps)  # the first attempt's lines were cleared


def test_a_deleted_checkpoints_folder_starts_again_from_task_1(monkeypatch):
    """Before: task 1 trained, then every checkpoint write failed (the folder was gone)."""
    root = crash_after_task_1("bare", monkeypatch)
    for path in (root / "checkpoints").iterdir():
        path.unlink()
    (root / "checkpoints").rmdir()
    assert retain("run", "--resume", str(root))[0] == 0
    assert checkpoint.load(root / "checkpoints" / "last.ckpt")["position"] == 2
    assert json.loads((root / "results.json").read_text())["matrices"]["accuracy"] == \
        reference_matrix()


@pytest.mark.parametrize("lost", [["status.json"], ["status.json", "config.yaml"]])
def test_another_configuration_is_refused_without_status_json(lost, monkeypatch):
    """The checkpoint carries the config hash. Before: with status.json gone, a run with
    another learning rate resumed the old checkpoint."""
    root = crash_after_task_1("lr", monkeypatch)
    for name in lost:
        (root / name).unlink()
    code, last = retain("run", *quick(*DIGITS, "name=lr", "trainer.lr=0.5"))
    one_error_line(code, last, "different configuration")
    assert not (root / "results.json").exists()
    assert checkpoint.load(root / "checkpoints" / "last.ckpt")["position"] == 1


def _edit_checkpoint(root: Path, edit) -> None:
    path = root / "checkpoints" / "last.ckpt"
    state = checkpoint.load(path)
    edit(state)
    checkpoint.save(path, state)


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.update(position=100), ["last.ckpt", "task 101", "past the end"]),
    (lambda s: s.update(format=2), ["format 2; this version reads 3"]),
    (lambda s: s.pop("config_hash") and None, ["'config_hash' is missing"]),
    (lambda s: s.update(rows={"accuracy": [[0.5, "x"]]}), ["'rows'"]),
    (lambda s: s.update(rows={"accuracy": [[0.5]]}), ["'rows.accuracy' must be 1 x 2"]),
    (lambda s: s.update(strategies=[]), ["state of 0 strategies"]),
    (lambda s: s.update(stream_step=-1), ["'stream_step' must be a count"]),
    (lambda s: s.update(rng=None), ["'rng'"]),
    (lambda s: s.update(strategies=[{"nonsense": 1}]), ["strategy Replay", "does not match"]),
])
def test_a_checkpoint_with_a_valid_digest_but_a_wrong_shape_is_one_line(edit, words,
                                                                         monkeypatch):
    """Before: position 100 of 2 wrote a "complete" results.json with 1 of 2 rows; a missing
    or mistyped key was a KeyError or TypeError traceback."""
    root = crash_after_task_1("shape", monkeypatch, "strategy=replay")
    _edit_checkpoint(root, edit)
    code, last = retain("run", "--resume", str(root))
    one_error_line(code, last, *words)
    assert not (root / "results.json").exists()


@pytest.mark.parametrize("key, value, words", [
    ("batch", 999, ["batch 999 of an epoch of 11 batches"]),
    ("epoch", 7, ["past trainer.max_epochs=2"]),  # under Lightning: -5 epochs, unbounded
    ("optimizer", {"state": {}, "param_groups": []}, ["cannot resume from", "optimizer"])])
def test_a_checkpoint_inside_a_task_past_its_epochs_or_batches_is_one_line(
        key, value, words, monkeypatch):
    monkeypatch.setenv("RETAIN_FAULT_MODE", "raise")
    monkeypatch.setenv("RETAIN_FAULT", "step:6")  # after the step-4 checkpoint
    faults.reset()
    with pytest.raises(faults.SimulatedCrash):
        main(["run", *quick(*DIGITS, "name=inside")])
    monkeypatch.delenv("RETAIN_FAULT")
    root = Path("runs/inside")
    _edit_checkpoint(root, lambda s: s["partial"].update({key: value}))
    code, last = retain("run", "--resume", str(root))
    one_error_line(code, last, *words)


def test_a_damaged_results_json_is_an_error_for_resume_and_compare_alike(monkeypatch):
    """Before: `retain run` said "already complete" while `retain compare` left it out."""
    run(config.load(None, quick(*DIGITS, "name=done")))
    path = Path("runs/done/results.json")
    saved = json.loads(path.read_text())
    saved["matrices"]["accuracy"][1] = saved["matrices"]["accuracy"][1][:1]  # ragged
    path.write_text(json.dumps(saved))
    for command in (["run", *quick(*DIGITS, "name=done")], ["compare", "runs/done"]):
        code, last = retain(*command)
        one_error_line(code, last, str(path), "'matrices' must be")
    assert retain("run", "--restart", *quick(*DIGITS, "name=done"))[0] == 0
    assert retain("compare", "runs/done")[0] == 0


def test_a_missing_run_directory_is_not_created_by_run_dir():
    with pytest.raises(UserError, match="invalid run name"):
        RunDir.create("runs", "../outside")
    assert not Path("outside").exists() and not Path("runs").exists()
