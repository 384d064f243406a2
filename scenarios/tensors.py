"""Tensors: continual learning on your own arrays, from one ``.npz`` (numpy) or ``.pt`` (torch)
file. The file holds, under these names (N rows each, per split)::

    x_train, y_train        inputs and targets of the training split
    x_test,  y_test         the test split
    t_train, t_test         optional: the task of each example (integers; tasks in sorted order)
    x_val, y_val (, t_val)  optional: a validation split

Float inputs are feature vectors of any shape; integer inputs are token ids, one row per
sequence. One integer label per example is classification; one target per token (the shape of
the inputs, -100 = no loss) is language modelling (``scenarios.infer``). Without task ids the
classes are dealt to tasks: ``scenario.classes_per_task=[[0,1],[2,3]]``, or
``scenario.n_experiences=K`` for K equal groups of the sorted classes. ``scenario.setting``
states the setting (default: class-IL when the tasks' classes differ, else domain-IL)::

    import numpy as np
    x, y = np.random.rand(600, 20).astype("float32"), np.arange(600) % 6
    np.savez("blobs.npz", x_train=x[:500], y_train=y[:500], x_test=x[500:], y_test=y[500:])

    retain run scenario.name=tensors scenario.path=blobs.npz scenario.n_experiences=3 \\
        model.name=mlp

A missing file or array, rows that do not line up, or labels that are not integers are one
error naming the file and the array.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.api import DataSpec, Scenario, TaskData
from harness.errors import UserError
from harness.registry import register_scenario
from scenarios.infer import classes_of, data_option, infer_spec, setting_of

SPLITS = ("train", "test", "val")


@dataclass
class TensorsConfig:
    name: str = "tensors"
    path: str = field(default="", metadata={
        "help": ".npz or .pt file with x_train, y_train, x_test, y_test (optional: t_train, "
                "t_test task ids; x_val, y_val, t_val)"})
    n_experiences: int = field(default=0, metadata={
        "help": "without task ids: split the classes into this many tasks; with them: use "
                "the first n tasks (0 = all)", "min": 0})
    classes_per_task: list[list[int]] = field(default_factory=list, metadata={
        "help": "without task ids: each task's classes, e.g. [[0,1],[2,3]]"})
    task_names: list[str] = field(default_factory=list, metadata={
        "help": "one name per task (default: 'task <id>' or 'classes 0+1')"})
    setting: str = data_option("setting")
    n_classes: int = data_option("n_classes")
    vocab_size: int = data_option("vocab_size")
    pad_id: int = data_option("pad_id")


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, or every tensor of a dict saved with ``torch.save``."""
    if not path.is_file():
        raise UserError(f"scenario.path: file not found: {path}")
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix == ".pt":
        return _read_pt(path)
    raise UserError(f"scenario.path must be a .npz or .pt file, not {path}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            out = {}
            for key in arrays.files:
                try:
                    out[key] = arrays[key]
                except ValueError:  # object arrays need pickle, which is never allowed here
                    raise UserError(f"{path}: array {key} holds Python objects; save numeric "
                                    "arrays") from None
            return out
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"cannot read {path}: {_first_line(err)}") from None


def _read_pt(path: Path) -> dict[str, np.ndarray]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise UserError(f"cannot read {path} as a dict of tensors saved with torch.save: "
                        f"{_first_line(err)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} holds a {type(data).__name__}; save a dict of tensors "
                        "({'x_train': ..., 'y_train': ..., ...})")
    out = {}
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
        value = value.detach()
        out[str(key)] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return out


def check_arrays(arrays: dict[str, np.ndarray], path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per split, its checked ``x``, ``y`` (int64) and, with task ids, ``t`` (int64)."""
    with_tasks = "t_train" in arrays or "t_test" in arrays
    found = ", ".join(sorted(arrays)) or "none"
    splits = {}
    for split in SPLITS:
        if split == "val" and f"x_{split}" not in arrays:
            continue
        names = ["x", "y", "t"] if with_tasks else ["x", "y"]
        missing = [f"{n}_{split}" for n in names if f"{n}_{split}" not in arrays]
        if missing:
            raise UserError(f"{path} has no array {', '.join(missing)} (found: {found})")
        x = _inputs(arrays[f"x_{split}"], f"x_{split}", path)
        part = {"x": x}
        for n in names[1:]:
            part[n] = _integers(arrays[f"{n}_{split}"], f"{n}_{split}", path)
            if len(part[n]) != len(x):
                raise UserError(f"{path}: x_{split} has {len(x)} rows but {n}_{split} has "
                                f"{len(part[n])}")
        splits[split] = part
    if not len(splits["train"]["x"]):
        raise UserError(f"{path}: x_train is empty")
    return splits


def _inputs(x: np.ndarray, name: str, path: Path) -> np.ndarray:
    if x.ndim < 2:
        raise UserError(f"{path}: {name} has shape {x.shape}; inputs need one row per example")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise UserError(f"{path}: {name} has dtype {x.dtype}; inputs are float features or "
                        "integer token ids")
    return x


def _integers(values: np.ndarray, name: str, path: Path) -> np.ndarray:
    """Labels or task ids as int64; floats are accepted when every value is whole."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if len(bad) == 0:
            return values.astype(np.int64)
        where = np.unravel_index(bad[0], values.shape)
        raise UserError(f"{path}: {name} holds a non-integer value {values[where].item()!r} at "
                        f"index {where[0] if len(where) == 1 else where}")
    raise UserError(f"{path}: {name} has dtype {values.dtype}; it must hold integers")


def by_task(splits: dict, cfg: TensorsConfig, path: Path) -> tuple[list[str], dict]:
    """Task names and, per split, one TaskData per task (task label = its position)."""
    if "t" in splits["train"]:
        if cfg.classes_per_task:
            raise UserError(f"{path} has task ids (t_train, t_test): leave out "
                            "scenario.classes_per_task, or the task ids")
        ids = sorted(set(splits["train"]["t"].tolist()))
        if cfg.n_experiences > len(ids):
            raise UserError(f"scenario.n_experiences={cfg.n_experiences} but t_train of {path} "
                            f"names {len(ids)} task(s): {ids}")
        ids = ids[:cfg.n_experiences or None]
        masks = {s: [p["t"] == i for i in ids] for s, p in splits.items()}
        names = [f"task {i}" for i in ids]
    else:
        if splits["train"]["y"].ndim != 1:
            raise UserError(f"{path}: language-modelling arrays need task ids (t_train, t_test)")
        groups = class_groups(splits["train"]["y"], cfg, path)
        masks = {s: [np.isin(p["y"], g) for g in groups] for s, p in splits.items()}
        names = [f"classes {'+'.join(map(str, g))}" for g in groups]
    data = {s: [TaskData(_tensor(p["x"][m]), torch.from_numpy(p["y"][m]),
                         torch.full((int(m.sum()),), k, dtype=torch.long))
                for k, m in enumerate(masks[s])] for s, p in splits.items()}
    for split in ("train", "test"):
        empty = next((n for n, d in zip(names, data[split]) if not len(d)), None)
        if empty is not None:
            raise UserError(f"{path}: {empty} has no examples in the {split} split")
    if cfg.task_names:
        if len(cfg.task_names) != len(names):
            raise UserError(f"scenario.task_names has {len(cfg.task_names)} names for "
                            f"{len(names)} tasks")
        names = list(cfg.task_names)
    return names, data


def class_groups(y: np.ndarray, cfg: TensorsConfig, path: Path) -> list[list[int]]:
    classes = sorted(set(y.tolist()))
    if cfg.classes_per_task:
        groups = [list(g) for g in cfg.classes_per_task]
        if cfg.n_experiences and cfg.n_experiences != len(groups):
            raise UserError(f"scenario.n_experiences={cfg.n_experiences} but "
                            f"scenario.classes_per_task has {len(groups)} groups")
        flat = [c for g in groups for c in g]
        if not all(groups) or len(set(flat)) != len(flat):
            raise UserError(f"scenario.classes_per_task={groups} must be non-empty groups "
                            "with no class in two of them")
        absent = sorted(set(flat) - set(classes))
        if absent:
            raise UserError(f"scenario.classes_per_task names class(es) {absent} that y_train "
                            f"of {path} does not hold")
        return groups
    k = cfg.n_experiences
    if k < 1:
        raise UserError(f"{path} has no task ids (t_train, t_test): split its classes with "
                        "scenario.n_experiences=K or scenario.classes_per_task=[[0,1],[2,3]]")
    if len(classes) % k:
        raise UserError(f"scenario.n_experiences={k} must divide the {len(classes)} classes "
                        f"of y_train in {path}")
    size = len(classes) // k
    return [classes[i * size:(i + 1) * size] for i in range(k)]


def _tensor(x: np.ndarray) -> torch.Tensor:
    dtype = np.float32 if np.issubdtype(x.dtype, np.floating) else np.int64
    return torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


@register_scenario("tensors", config=TensorsConfig)
def build(cfg: TensorsConfig, seed: int) -> Scenario:
    if not cfg.path:
        raise UserError("scenario 'tensors' needs scenario.path=<file.npz or file.pt>")
    path = Path(cfg.path).expanduser()
    names, data = by_task(check_arrays(read_arrays(path), path), cfg, path)
    spec: DataSpec = infer_spec(data, str(path), cfg.n_classes, cfg.vocab_size, cfg.pad_id)
    classes = classes_of(data["train"], data["test"]) if spec.task == "classification" else None
    return Scenario.from_splits(cfg.name, spec, names, setting_of(cfg.setting, spec, classes),
                                data["train"], data["test"], data.get("val"),
                                classes_per_task=classes)
