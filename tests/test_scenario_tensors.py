"""The tensors scenario: your own arrays from an .npz or .pt file, read back exactly, the data
spec and setting inferred, and one error line naming the file and array for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import UserError
from scenarios.tensors import TensorsConfig, build

RNG = np.random.default_rng(0)


def vectors(n=60, dim=5, n_classes=6):
    return RNG.random((n, dim)).astype(np.float32), np.arange(n) % n_classes


def save(path: Path, **arrays) -> Path:
    if path.suffix == ".pt":
        torch.save({k: torch.as_tensor(v) for k, v in arrays.items()}, path)
    else:
        np.savez(path, **arrays)
    return path


def scenario(path: Path, **options):
    return build(TensorsConfig(path=str(path), **options), seed=0)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_task_ids_give_one_experience_each_in_sorted_order(tmp_path, suffix):
    x, y = vectors()
    t = np.where(np.arange(60) % 2, 7, 3)  # ids need not be 0..K-1
    path = save(tmp_path / f"d{suffix}", x_train=x[:40], y_train=y[:40], t_train=t[:40],
                x_test=x[40:], y_test=y[40:], t_test=t[40:])
    s = scenario(path)
    assert s.task_names == ["task 3", "task 7"] and s.n_experiences == 2
    for k, tid in enumerate((3, 7)):
        keep = t[:40] == tid
        torch.testing.assert_close(s.train_data(k).x, torch.from_numpy(x[:40][keep]))
        assert s.train_data(k).y.tolist() == y[:40][keep].tolist()
        assert set(s.train_data(k).t.tolist()) == {k} == set(s.test_data(k).t.tolist())
    assert s.spec.kind == "vectors" and s.spec.task == "classification"
    assert s.spec.input_dim == 5 and s.spec.n_classes == 6
    assert s.classes_per_task == [[0, 2, 4], [1, 3, 5]] and s.setting == "class-il"
    assert s.val_data(0) is None


def test_tasks_sharing_their_classes_are_domain_incremental_unless_stated(tmp_path):
    x, y = vectors(n_classes=2)
    t = np.arange(60) // 30
    path = save(tmp_path / "d.npz", x_train=x[::2], y_train=y[::2], t_train=t[::2],
                x_test=x[1::2], y_test=y[::2], t_test=t[::2])
    assert scenario(path).setting == "domain-il"
    assert scenario(path, setting="task-il").setting == "task-il"
    assert scenario(path, task_names=["a", "b"]).task_names == ["a", "b"]
    assert scenario(path, n_experiences=1).n_experiences == 1


def test_without_task_ids_the_classes_are_dealt_to_tasks(tmp_path):
    x, y = vectors()
    path = save(tmp_path / "d.npz", x_train=x[:48], y_train=y[:48], x_test=x[48:],
                y_test=y[48:])
    s = scenario(path, n_experiences=3)
    assert s.task_names == ["classes 0+1", "classes 2+3", "classes 4+5"]
    assert s.classes_per_task == [[0, 1], [2, 3], [4, 5]] and s.setting == "class-il"
    assert sorted(set(s.train_data(1).y.tolist())) == [2, 3]
    chosen = scenario(path, classes_per_task=[[5, 0], [3]])
    assert chosen.task_names == ["classes 5+0", "classes 3"]
    assert sorted(set(chosen.test_data(0).y.tolist())) == [0, 5]
    assert chosen.spec.n_classes == 6  # the largest label, also of classes left out


def test_token_arrays_are_language_modelling_or_classification(tmp_path):
    tokens = RNG.integers(0, 50, (40, 9))
    y = np.roll(tokens, -1, axis=1)
    y[:, -1] = -100
    t = np.arange(40) % 2
    lm = scenario(save(tmp_path / "lm.npz", x_train=tokens[:30], y_train=y[:30],
                       t_train=t[:30], x_test=tokens[30:], y_test=y[30:], t_test=t[30:]))
    assert (lm.spec.kind, lm.spec.task, lm.spec.seq_len) == ("tokens", "lm", 9)
    assert lm.spec.vocab_size == int(tokens.max()) + 1 and lm.setting == "domain-il"
    assert lm.classes_per_task is None and lm.train_data(0).x.dtype == torch.long
    labels = np.arange(40) % 4
    cls = scenario(save(tmp_path / "cls.npz", x_train=tokens[:30], y_train=labels[:30],
                        x_test=tokens[30:], y_test=labels[30:]),
                   n_experiences=2, pad_id=0, vocab_size=64)
    assert (cls.spec.kind, cls.spec.task, cls.spec.n_classes) == ("tokens", "classification", 4)
    assert cls.spec.pad_id == 0 and cls.spec.vocab_size == 64


def test_a_validation_split_and_whole_float_labels_are_read(tmp_path):
    x, y = vectors(n_classes=2)
    path = save(tmp_path / "d.npz", x_train=x[:30], y_train=y[:30].astype(float),
                x_test=x[30:45], y_test=y[30:45], x_val=x[45:], y_val=y[45:])
    s = scenario(path, n_experiences=2)
    assert s.train_data(0).y.dtype == torch.long
    assert len(s.val_data(0)) + len(s.val_data(1)) == 15


def _good(n=20):
    x, y = vectors(n=n, n_classes=2)
    return {"x_train": x[:16], "y_train": y[:16], "x_test": x[16:], "y_test": y[16:]}


@pytest.mark.parametrize("change, options, expected", [
    ({"y_test": None}, {}, "has no array y_test (found: x_test, x_train, y_train)"),
    ({"t_train": np.zeros(16, int)}, {}, "has no array t_test"),
    ({"y_train": np.zeros(15, int)}, {}, "x_train has 16 rows but y_train has 15"),
    ({"y_train": np.full(16, 0.5)}, {}, "y_train holds a non-integer value 0.5 at index 0"),
    ({"y_train": np.array(["a"] * 16)}, {}, "y_train has dtype <U1; it must hold integers"),
    ({"x_train": np.zeros(16)}, {}, "x_train has shape (16,); inputs need one row per example"),
    ({"x_train": np.full((16, 5), True)}, {}, "x_train has dtype bool"),
    ({}, {}, "has no task ids (t_train, t_test): split its classes"),
    ({}, {"n_experiences": 3}, "scenario.n_experiences=3 must divide the 2 classes"),
    ({}, {"classes_per_task": [[0], [7]]}, "names class(es) [7] that y_train"),
    ({}, {"n_experiences": 2, "n_classes": 1}, "label 1 is out of range for scenario.n_classes=1"),
    ({"y_test": np.full(4, -1), "t_train": np.zeros(16, int), "t_test": np.zeros(4, int)}, {},
     "a target is negative (-1)"),
    ({"y_test": np.zeros(4, int)}, {"n_experiences": 2}, "classes 1 has no examples in the test"),
    ({"x_test": np.zeros((4, 3), np.float32)}, {"n_experiences": 2}, "the inputs of test"),
    ({"x_train": np.full((16, 5), np.nan, np.float32)}, {"n_experiences": 2}, "NaN"),
    ({"t_train": np.zeros(16, int), "t_test": np.zeros(4, int)},
     {"classes_per_task": [[0], [1]]}, "leave out scenario.classes_per_task"),
    ({}, {"n_experiences": 2, "task_names": ["one"]}, "scenario.task_names has 1 names for 2"),
])
def test_bad_arrays_are_one_error_naming_the_file_and_array(tmp_path, change, options,
                                                            expected):
    arrays = {k: v for k, v in {**_good(), **change}.items() if v is not None}
    path = save(tmp_path / "data.npz", **arrays)
    with pytest.raises(UserError) as err:
        scenario(path, **options)
    message = str(err.value)
    assert "\n" not in message and expected in message
    if "scenario." not in expected:
        assert str(path) in message


def test_bad_files_are_one_error(tmp_path):
    cases = {"missing.npz": "file not found", "data.csv": "must be a .npz or .pt file",
             "broken.npz": "cannot read", "list.pt": "holds a list",
             "values.pt": "x_train is a int, not a tensor", "objects.npz": "holds Python objects"}
    (tmp_path / "data.csv").write_text("1,2\n")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"x_train": 3}, tmp_path / "values.pt")
    np.savez(tmp_path / "objects.npz", x_train=np.array([{}, []], dtype=object))
    for name, expected in cases.items():
        with pytest.raises(UserError, match=expected):
            scenario(tmp_path / name)
    with pytest.raises(UserError, match="needs scenario.path"):
        build(TensorsConfig(), seed=0)
