"""Valid values of config fields, declared in the dataclasses' metadata and enforced here.

Every field of a config dataclass (the run's, the trainer's and each component's) may say,
beside its ``help``, which values it takes::

    batch_size: int = field(default=32, metadata={"help": "...", "min": 1})
    dropout: float = field(default=0.0, metadata={"help": "...", "min": 0.0, "below": 1.0})
    max_steps: int = field(default=-1, metadata={"help": "... (-1: none)", "min": 1, "or": (-1,)})
    optimizer: str = field(default="adamw", metadata={"help": "...", "choices": ("adamw", "sgd")})

``min`` / ``max`` are inclusive bounds, ``above`` / ``below`` exclusive ones, ``or`` lists values
allowed besides the range (sentinels such as -1 = none), ``choices`` the only values allowed.
A float must be finite unless its field says ``"finite": False``; an integer must fit in 64
bits. A list field's rules apply to each element (``model.hidden=[-5]`` names
``model.hidden[0]``). Rules across fields live in the dataclass's ``check(self)`` method, which
the validator calls once the fields themselves are in range.

``check`` walks a resolved RunConfig (``harness.config.load`` calls it), so ``retain run``,
``retain sweep`` (and its dry run) and a W&B agent's ``retain run --key=value`` all refuse the
same values, with one ``UserError`` naming the key, the value and what is valid. ``describe``
is the range as ``--help`` and ``retain list`` print it. Imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from harness.errors import UserError, did_you_mean

RULES = ("help", "choices", "min", "max", "above", "below", "or", "finite")
INT64 = (-(2**63), 2**63 - 1)  # what torch and numpy hold: a larger integer overflows there
LOWER = (("min", "<="), ("above", "<"))  # the rule and how it reads in `bound <= x`
UPPER = (("max", "<="), ("below", "<"))


def check(cfg: Any, prefix: str = "") -> None:
    """Check every field of the dataclass ``cfg`` (and of the dataclasses it holds), then each
    one's ``check()`` hook; the first invalid value raises a UserError."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check(value, f"{key}.")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                check_value(f"{key}[{i}]", item, f.metadata)
        else:
            check_value(key, value, f.metadata)
    hook = getattr(cfg, "check", None)
    if callable(hook):
        hook()


def check_value(key: str, value: Any, rules) -> None:
    """One value against one field's rules."""
    unknown = set(rules) - set(RULES)
    if unknown:  # a typo such as "mni" would silently allow everything
        raise TypeError(f"'{key}': unknown metadata {sorted(unknown)}; known: {RULES}")
    if "choices" in rules:
        if value not in rules["choices"]:
            shown = [str(c) for c in rules["choices"] if c is not None]
            raise UserError(f"invalid value {value!r} for '{key}'"
                            f"{did_you_mean(str(value), shown)}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value in rules.get("or", ()):
        return
    if isinstance(value, float) and not math.isfinite(value):
        if rules.get("finite", True):
            raise UserError(f"invalid value {value} for '{key}': must be a finite number"
                            f"{_spaced(_words(rules))}")
        return
    if not _in_range(value, rules):
        raise UserError(f"invalid value {value!r} for '{key}': must be {_words(rules)}")
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise UserError(f"invalid value {value} for '{key}': must fit in 64 bits "
                        f"(from {INT64[0]} to {INT64[1]})")


def describe(rules) -> str:
    """The valid values in brief, as help shows them: ``>= 1``, ``0 <= x < 1``, ``a | b``."""
    if "choices" in rules:
        return " | ".join("null" if c is None else str(c) for c in rules["choices"])
    low = next(((op, rules[k]) for k, op in LOWER if k in rules), None)
    high = next(((op, rules[k]) for k, op in UPPER if k in rules), None)
    if low and high:
        text = f"{low[1]} {low[0]} x {high[0]} {high[1]}"
    elif low:
        text = f"{'>=' if low[0] == '<=' else '>'} {low[1]}"
    else:
        text = f"{high[0]} {high[1]}" if high else ""
    sentinels = " or ".join(str(v) for v in rules.get("or", ()))
    return f"{sentinels} or {text}" if sentinels and text else sentinels or text


def _in_range(value, rules) -> bool:
    return (rules.get("min", value) <= value <= rules.get("max", value)
            and ("above" not in rules or value > rules["above"])
            and ("below" not in rules or value < rules["below"]))


def _words(rules) -> str:
    """``at least 1``, ``from 0 to 1``, ``-1 or at least 1``: the range in a sentence."""
    parts = []
    if "min" in rules and "max" in rules:
        parts.append(f"from {rules['min']} to {rules['max']}")
    else:
        for key, word in (("min", "at least"), ("above", "above"), ("max", "at most"),
                          ("below", "below")):
            if key in rules:
                parts.append(f"{word} {rules[key]}")
    text = " and ".join(parts)
    sentinels = " or ".join(str(v) for v in rules.get("or", ()))
    return f"{sentinels} or {text}" if sentinels and text else sentinels or text


def _spaced(text: str) -> str:
    return f" {text}" if text else ""
