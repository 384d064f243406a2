"""The files scenario reads regular files only and refuses labels it cannot hold: a named
pipe used to block the run forever, a label of 10^30 ended in an OverflowError traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading

import pytest

from harness.cli import main
from harness.errors import UserError
from harness.experiment import results
from scenarios.files import FilesConfig, build

TEXT = "\n\n".join(f"paragraph {i} " * 6 for i in range(12))


def within(seconds: float, fn):
    """``fn()``'s result or exception; a failure (not a hung test) if it blocks."""
    outcome = {}

    def call():
        try:
            outcome["value"] = fn()
        except BaseException as err:  # handed to the test
            outcome["error"] = err

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"blocked for {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def lm(path, **kw):
    cfg = FilesConfig(path=str(path), min_train_examples=1, seq_len=16, **kw)
    return within(60, lambda: build(cfg, 0))


@pytest.mark.parametrize("where", ["b.txt", "c/pipe.jsonl"])
def test_a_named_pipe_among_the_data_is_refused_with_what_it_is(tmp_path, where):
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "doc.txt").write_text(TEXT)
    os.mkfifo(tmp_path / where)
    with pytest.raises(UserError, match=rf"{tmp_path / where}: a named pipe \(FIFO\); "
                                        "scenario 'files' reads regular"):
        lm(tmp_path)


def test_a_named_pipe_as_the_path_is_refused(tmp_path):
    os.mkfifo(tmp_path / "all.jsonl")
    with pytest.raises(UserError, match=r"all.jsonl: a named pipe \(FIFO\)"):
        lm(tmp_path / "all.jsonl")


def test_other_files_in_the_folder_are_still_ignored(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    os.mkfifo(tmp_path / "notes")  # not a .txt or .jsonl: not data
    assert lm(tmp_path).task_names == ["a"]


def labelled(tmp_path, labels) -> str:
    path = tmp_path / "cls.jsonl"
    path.write_text("".join(json.dumps({"task": "t", "text": f"example {i}", "label": lab})
                            + "\n" for i, lab in enumerate(labels)))
    return str(path)


@pytest.mark.parametrize("label", [10**30, 2**63, 1_000_000, -1])
def test_an_integer_label_out_of_range_names_its_line(tmp_path, label):
    path = labelled(tmp_path, [0, 1, label, 0, 1, 0, 1, 0])
    with pytest.raises(UserError, match=rf"cls.jsonl:3: label {label} is out of range: integer "
                                        "labels are class ids from 0 to 999,999"):
        build(FilesConfig(path=path, task="classification", min_train_examples=1), 0)


def test_the_largest_class_id_is_accepted(tmp_path):
    path = labelled(tmp_path, [0, 999_999] * 4)
    s = build(FilesConfig(path=path, task="classification", min_train_examples=1), 0)
    assert s.spec.n_classes == 1_000_000


def test_a_huge_label_is_one_line_from_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(results.RunDir, "create", lambda *a, **k: pytest.fail("accepted"))
    path = labelled(tmp_path, [0, 1, 10**30, 0, 1, 0, 1, 0])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["run", "scenario.name=files", f"scenario.path={path}",
                     "scenario.task=classification", "scenario.min_train_examples=1",
                     "logger=none"])
    assert code == 2 and err.getvalue().count("\n") == 1
    assert err.getvalue().startswith(f"retain: error: {path}:3: label {10**30} is out of range")
