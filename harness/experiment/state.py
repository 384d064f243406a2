"""A checkpoint's contents as one typed record: ``Checkpoint``, with a format number.

On disk a checkpoint stays a plain dict of tensors, numbers, strings, lists and dicts (so it
loads with ``torch.load(weights_only=True)``); ``to_dict`` and ``from_dict`` convert at that
boundary, shallowly (tensors are never copied), and ``from_dict`` checks every key and its type
(``fits`` the bounds a run implies), so a checkpoint of another format, a foreign file with a
valid digest or a hand-edited one is one clear error rather than a traceback mid-training.
A checkpoint of another format is refused, not converted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from harness.core.general import is_record
from harness.core.resume import TaskProgress
from harness.experiment.schema import (
    Reader,
    dict_of,
    is_bool,
    is_count,
    is_dict,
    is_int,
    is_str,
    is_time,
    list_of,
    optional,
    table,
)

FORMAT = 3
REMEDY = "start over with --restart, or start a new run (another name=)"


@dataclasses.dataclass
class Checkpoint:
    """Everything needed to continue a run: after ``position`` tasks, or inside the next one."""

    config_hash: str  # of the run that wrote it: a resume with another config is refused
    position: int  # tasks finished (and evaluated)
    partial: TaskProgress | None  # how far into task ``position`` it was taken, if inside it
    net: dict  # the network's state_dict (without frozen weights when ``base`` is set)
    strategies: list[dict]  # each strategy's state_dict, in the run's order
    rows: dict[str, list[list[float]]]  # metric -> the score matrix's first ``position`` rows
    baseline: dict[str, list[float]] | None  # the untrained model's scores (eval_init)
    per_task: list[dict]  # timings and memory of each finished task
    resumes: list[dict]  # where each earlier resume started
    stream_step: int  # optimizer steps over the whole stream so far
    rng: dict | None  # generator states after task ``position`` (None: ``partial`` has them)
    compute: list[dict] = dataclasses.field(default_factory=list)  # FLOPs per task so far
    curves: dict | None = None  # evaluation during training (harness.core.curves)
    general: dict | None = None  # the general set's scores so far (harness.core.general)
    # the frozen weights left out of ``net``: their fingerprint and number of tensors
    # (harness.experiment.weights); None: ``net`` holds every weight
    base: dict | None = None

    def to_dict(self) -> dict:
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        state["partial"] = self.partial.to_dict() if self.partial else None
        return {"format": FORMAT, **state}

    @classmethod
    def from_dict(cls, raw, path: Path) -> Checkpoint:
        read = Reader(path, REMEDY)
        raw = read.mapping(raw)
        version = raw.get("format")
        if not is_int(version) or version != FORMAT:
            written = f"format {version}" if is_int(version) else "no known format"
            read.fail(f"written by retain checkpoint {written}; this version reads {FORMAT}")
        get = read.get
        partial = get(raw, "partial", optional(is_dict), "a mapping or null")
        ckpt = cls(
            config_hash=get(raw, "config_hash", is_str, "a string"),
            position=get(raw, "position", is_count, "a count"),
            partial=_progress(read, partial) if partial is not None else None,
            net=get(raw, "net", _is_net, "a mapping of named tensors"),
            strategies=get(raw, "strategies", list_of(is_dict), "a list of mappings"),
            rows=get(raw, "rows", dict_of(table(None, None)), "a mapping of score rows"),
            baseline=get(raw, "baseline", optional(dict_of(list_of(_is_score))),
                         "a mapping of score lists or null"),
            per_task=get(raw, "per_task", list_of(is_dict), "a list of mappings"),
            resumes=get(raw, "resumes", list_of(is_dict), "a list of mappings"),
            stream_step=get(raw, "stream_step", is_count, "a count"),
            rng=get(raw, "rng", optional(_is_rng), "random generator states or null"),
            compute=get(raw, "compute", list_of(is_dict), "a list of mappings", default=[]),
            curves=get(raw, "curves", optional(is_dict), "a mapping or null", default=None),
            general=get(raw, "general", optional(is_record),
                        "a general-evaluation record (name, before, after) or null",
                        default=None),
            base=get(raw, "base", optional(_is_base), "a fingerprint mapping or null",
                     default=None))
        if (ckpt.rng is None) == (ckpt.partial is None):
            read.fail("'rng' must be set exactly when the checkpoint was taken between tasks")
        return ckpt

    def fits(self, path: Path, n_tasks: int, n_strategies: int, trainer_cfg=None) -> None:
        """Refuse a checkpoint whose numbers cannot belong to a run of this stream (and, given
        the trainer settings, whose task progress is past their epochs or steps)."""
        read = Reader(path, REMEDY)
        if self.position > n_tasks or (self.partial and self.position == n_tasks):
            read.fail(f"its position (task {self.position + 1}) is past the end of this "
                      f"{n_tasks}-task stream")
        p, cfg = self.partial, trainer_cfg
        if p and cfg and not p.trained and (p.epoch >= cfg.max_epochs
                                            or 0 < cfg.max_steps <= p.steps):
            read.fail(f"its task progress (epoch {p.epoch + 1}, step {p.steps}) is past "
                      f"trainer.max_epochs={cfg.max_epochs} / max_steps={cfg.max_steps}")
        if len(self.strategies) != n_strategies:
            read.fail(f"it holds the state of {len(self.strategies)} strategies; this run has "
                      f"{n_strategies}")
        if len(self.per_task) != self.position:
            read.fail(f"'per_task' has {len(self.per_task)} entries for {self.position} "
                      "finished tasks")
        for metric, rows in self.rows.items():
            if not table(self.position, n_tasks)(rows):
                read.fail(f"'rows.{metric}' must be {self.position} x {n_tasks} scores")
        for metric, scores in (self.baseline or {}).items():
            if len(scores) != n_tasks:
                read.fail(f"'baseline.{metric}' must hold {n_tasks} scores, not {len(scores)}")
        for metric, scores in (self.general or {}).get("after", {}).items():
            if len(scores) != self.position:
                read.fail(f"'general.after.{metric}' must hold {self.position} scores, "
                          f"not {len(scores)}")


def _progress(read: Reader, raw: dict) -> TaskProgress:
    """The ``partial`` mapping, key by key."""
    def get(key, check, what):
        return read.get(raw, key, check, what, prefix="partial.")

    return TaskProgress(
        epoch=get("epoch", is_count, "a count"), batch=get("batch", is_count, "a count"),
        steps=get("steps", is_count, "a count"), trained=get("trained", is_bool, "a boolean"),
        optimizer=get("optimizer", _is_optimizer, "an optimizer state (state, param_groups)"),
        scaler=get("scaler", optional(is_dict), "a mapping or null"),
        rng=get("rng", _is_rng, "random generator states"),
        task_start_step=get("task_start_step", is_count, "a count"),
        train_time_s=get("train_time_s", is_time, "a duration in seconds"))


def _is_net(value) -> bool:
    """A module's state_dict: tensors by name (and a module's own ``*._extra_state``)."""
    return is_dict(value) and all(
        isinstance(k, str) and (torch.is_tensor(v) or k.endswith("_extra_state"))
        for k, v in value.items())


def _is_base(value) -> bool:
    return is_dict(value) and is_str(value.get("fingerprint")) and is_count(value.get("tensors"))


def _is_score(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_optimizer(value) -> bool:
    return is_dict(value) and is_dict(value.get("state")) and list_of(is_dict)(
        value.get("param_groups"))


def _is_rng(value) -> bool:
    """The shape ``harness.runtime.seed.rng_state`` gives: set_rng_state can read it."""
    if not is_dict(value):
        return False
    python = value.get("python")
    return (torch.is_tensor(value.get("torch")) and isinstance(python, (list, tuple))
            and len(python) == 3)
