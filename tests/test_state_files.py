"""Files a run leaves behind, read back, property-based: any results.json or checkpoint, however
damaged or foreign, is either read into a well-typed record or refused with one line naming
the file; ``retain run`` (its "already complete") and ``retain compare`` agree about every
results.json; and the typed records round-trip through their on-disk form.
"""

import contextlib
import copy
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import quick
from conftest_report import matrix, write_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import config
from harness.cli import main
from harness.errors import UserError
from harness.experiment import checkpoint
from harness.experiment.records import Results, load_results
from harness.experiment.state import Checkpoint
from harness.runtime import faults

DIGITS = ["scenario.name=split-digits", "scenario.n_experiences=2", "model.name=mlp",
          "trainer.max_epochs=2", "trainer.batch_size=64", "checkpoint.every_n_steps=4",
          "strategy=[replay,ewc]", "strategy.replay.mem_size=50"]
FEW = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


def retain(*args: str) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def refused_in_one_line(code: int, lines: list[str], path) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("retain: error: "), lines
    assert str(path) in lines[0] and "Traceback" not in lines[0], lines


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8)


# -- results.json ----------------------------------------------------------------------------


def valid_results() -> dict:
    root = Path("runs")
    write_run(root, "r", "naive", 0, matrix(0.5, np.random.default_rng(0)))
    return json.loads((root / "r" / "results.json").read_text())


def _ragged(doc: dict, data) -> dict:
    rows = doc["matrices"]["accuracy"]
    rows[data.draw(st.integers(0, len(rows) - 1))].pop()
    return doc


def _set(doc: dict, data, value) -> dict:
    key = data.draw(st.sampled_from(sorted(doc)))
    doc[key] = value
    return doc


def _mutate_results(doc: dict, data) -> str | bytes:
    """One damage from the classes a file meets: the whole document, a key, a shape."""
    kind = data.draw(st.sampled_from(["whole", "drop", "retype", "ragged", "strings", "deep",
                                      "format", "summary", "bytes"]))
    if kind == "whole":
        return json.dumps(data.draw(json_values))
    if kind == "drop":
        doc.pop(data.draw(st.sampled_from(sorted(doc))))
    elif kind == "retype":
        _set(doc, data, data.draw(json_values))
    elif kind == "ragged":
        _ragged(doc, data)
    elif kind == "strings":
        doc["matrices"]["accuracy"] = [[str(x) for x in row]
                                       for row in doc["matrices"]["accuracy"]]
    elif kind == "deep":
        depth = data.draw(st.integers(60, 5000))
        return json.dumps({**doc, "config": {}})[:-1] + ', "x": ' + "[" * depth + "]" * depth \
            + "}"
    elif kind == "format":
        doc["format"] = data.draw(st.one_of(st.integers(-3, 9), st.text(max_size=3)))
    elif kind == "summary":
        doc["summary"][data.draw(st.sampled_from(sorted(doc["summary"])))] = \
            data.draw(json_values)
    else:
        return b"\xff\xfe{" + json.dumps(doc).encode()  # not UTF-8
    return json.dumps(doc)


@FEW
@given(st.data())
def test_any_results_file_is_read_or_refused_alike_by_run_and_compare(data):
    doc = valid_results()
    path = Path("runs/r/results.json")
    text = _mutate_results(doc, data)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    cfg = config.load(None, quick(*DIGITS, "name=r"))
    Path("runs/r/status.json").write_text(json.dumps({
        "status": "complete", "config_hash": config.config_hash(cfg)}))
    run_code, run_lines = retain("run", *quick(*DIGITS, "name=r"))
    compare_code, compare_lines = retain("compare", "runs/r")
    assert (run_code == 0) == (compare_code == 0), (run_lines, compare_lines)
    if run_code:
        refused_in_one_line(run_code, run_lines, path)
        refused_in_one_line(compare_code, compare_lines, path)
    else:  # accepted: every field has its type
        results = load_results(path)
        n = len(results.task_names)
        assert all(len(row) == n for rows in results.matrices.values() for row in rows)
        assert isinstance(results.summary.wall_time_s, (int, float))


@pytest.mark.parametrize("damage", ["[1, 2]", '"text"', "", "{", "[" * 3000 + "]" * 3000,
                                    "ragged", "strings", "no-metric", "format-9"])
def test_each_class_of_damaged_results_is_refused(damage):
    doc = valid_results()
    if damage == "ragged":
        doc["matrices"]["accuracy"][2].pop()
    elif damage == "strings":
        doc["matrices"]["accuracy"][0][0] = "0.5"
    elif damage == "no-metric":
        doc["matrices"].pop("accuracy")
    elif damage == "format-9":
        doc["format"] = 9
    text = json.dumps(doc) if damage in ("ragged", "strings", "no-metric", "format-9") \
        else damage
    Path("runs/r/results.json").write_text(text)
    refused_in_one_line(*retain("compare", "runs"), "runs/r/results.json")


def test_results_without_a_format_field_are_format_1_and_read():
    doc = valid_results()
    doc.pop("format")
    Path("runs/r/results.json").write_text(json.dumps(doc))
    assert retain("compare", "runs")[0] == 0


@pytest.mark.parametrize("option", ["--csv", "--json"])
@pytest.mark.parametrize("target", ["/proc/x.out", "missing-folder/x.out", "."])
def test_compare_output_that_cannot_be_written_is_one_line(option, target):
    """Before: an OSError traceback."""
    valid_results()
    refused_in_one_line(*retain("compare", "runs", option, target), target)


def test_report_output_that_cannot_be_written_is_one_line():
    valid_results()
    refused_in_one_line(*retain("report", "runs", "-o", "/proc/x.html"), "/proc/x.html")


# -- checkpoints -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """A real checkpoint inside task 1 (step 8) and one after it, from a replay+ewc run."""
    from harness.experiment.run import run

    out = tmp_path_factory.mktemp("ckpt")
    os.environ.update(RETAIN_FAULT_MODE="raise", RETAIN_FAULT="task:1")
    faults.reset()
    try:
        with pytest.raises(faults.SimulatedCrash):
            run(config.load(None, quick(*DIGITS, "name=c", f"out_dir={out}")))
    finally:
        del os.environ["RETAIN_FAULT"], os.environ["RETAIN_FAULT_MODE"]
        faults.reset()
    folder = out / "c" / "checkpoints"
    return {"between": checkpoint.load(folder / "last.ckpt"),
            "inside": checkpoint.load(folder / "prev.ckpt")}


tensors = st.builds(lambda n: torch.zeros(n), st.integers(0, 3))
ckpt_values = st.one_of(json_values, tensors, st.lists(tensors, max_size=2),
                        st.dictionaries(st.sampled_from(["state", "param_groups", "torch",
                                                         "python", "a"]),
                                        st.one_of(json_values, tensors), max_size=3))


def _mutate_checkpoint(state: dict, data) -> dict:
    target = state
    if state["partial"] is not None and data.draw(st.booleans()):
        target = state["partial"]
    kind = data.draw(st.sampled_from(["drop", "retype", "count"]))
    key = data.draw(st.sampled_from(sorted(target)))
    if kind == "drop":
        target.pop(key)
    elif kind == "retype":
        target[key] = data.draw(ckpt_values)
    else:
        target[key] = data.draw(st.integers(-2, 200))
    return state


@FEW
@given(st.data())
def test_any_checkpoint_is_read_or_refused_in_one_line(saved, data):
    which = data.draw(st.sampled_from(sorted(saved)))
    state = _mutate_checkpoint(copy.copy(saved[which]) | {
        "partial": copy.copy(saved[which]["partial"])}, data)
    path = Path("runs/c/checkpoints/last.ckpt")
    try:
        ckpt = Checkpoint.from_dict(state, path)
        ckpt.fits(path, n_tasks=2, n_strategies=2)
    except UserError as err:
        message = str(err)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        assert "--restart" in message
        return
    assert 0 <= ckpt.position <= 2 and len(ckpt.per_task) == ckpt.position
    assert all(len(row) == 2 for rows in ckpt.rows.values() for row in rows)
    assert (ckpt.partial is None) != (ckpt.rng is None)


def test_a_checkpoint_round_trips_through_its_plain_data_form(saved, tmp_path):
    for state in saved.values():
        path = tmp_path / "last.ckpt"
        checkpoint.save(path, Checkpoint.from_dict(state, path).to_dict())
        again, _ = checkpoint.load_latest(tmp_path)
        assert again.to_dict().keys() == state.keys()
        for key, value in state.items():
            if key in ("net", "partial", "rng", "strategies"):
                continue
            assert again.to_dict()[key] == value, key
        assert all(torch.equal(again.net[k], v) for k, v in state["net"].items())


def test_to_dict_is_shallow_and_the_results_record_round_trips(saved):
    ckpt = Checkpoint.from_dict(saved["between"], Path("x"))
    assert all(ckpt.to_dict()["net"][k] is v for k, v in ckpt.net.items())
    doc = valid_results()
    out = Results.from_dict(doc, Path("r")).to_dict()
    summary = out.pop("summary")
    assert {key: summary[key] for key in doc["summary"]} == doc["summary"]
    assert {key: out[key] for key in doc if key != "summary"} == {
        key: value for key, value in doc.items() if key != "summary"}
    # what the older layout lacks comes back as its default (no curves, not pretrained, ...)
    assert all(out[key] in (None, False) for key in out.keys() - doc.keys())
    assert all(summary[key] is None for key in summary.keys() - doc["summary"].keys())
