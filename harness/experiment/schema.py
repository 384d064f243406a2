"""Reading a file's nested mappings into typed records, key by key.

Every problem is one ``UserError`` that names the file, the dotted key and what is wrong,
followed by what the user can do about it: a foreign, damaged or older file is refused at the
boundary instead of failing later, deep inside training or a report, with a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from harness.errors import UserError

MISSING = object()
MAX_DEPTH = 64  # deeper than any file retain writes; bounds the readers' recursion


class Reader:
    """Reads the values of one file; ``remedy`` ends every error message."""

    def __init__(self, path: Path | str, remedy: str):
        self.path, self.remedy = path, remedy

    def fail(self, problem: str) -> NoReturn:
        raise UserError(f"{self.path}: {problem}; {self.remedy}")

    def mapping(self, value: Any, key: str = "") -> dict:
        if not isinstance(value, dict):
            where = f"{key!r} must be" if key else "must hold"
            self.fail(f"{where} a mapping, not {kind(value)}")
        return value

    def get(self, data: dict, key: str, check: Callable[[Any], bool], what: str,
            prefix: str = "", default: Any = MISSING) -> Any:
        """``data[key]`` if ``check`` accepts it; ``default`` if it is absent and one is given."""
        name = f"{prefix}{key}"
        if key not in data:
            if default is MISSING:
                self.fail(f"{name!r} is missing")
            return default
        value = data[key]
        if not check(value):
            self.fail(f"{name!r} must be {what}, not {kind(value)}")
        return value

    def check_depth(self, value: Any) -> None:
        """Refuse nesting deeper than MAX_DEPTH (iteratively: the check itself cannot overflow)."""
        stack = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > MAX_DEPTH:
                self.fail(f"nested deeper than {MAX_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else (
                item if isinstance(item, (list, tuple)) else ())
            stack.extend((child, depth + 1) for child in children)


def kind(value: Any) -> str:
    """How an error message names a value's type: its JSON name where it has one."""
    names = {dict: "a mapping", list: "a list", tuple: "a list", str: "a string",
             bool: "a boolean", int: "an integer", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    return is_int(value) and value >= 0


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_time(value: Any) -> bool:
    return is_number(value) and math.isfinite(value) and value >= 0


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def list_of(check: Callable[[Any], bool], length: int | None = None) -> Callable[[Any], bool]:
    """A list (or tuple: torch.load gives tuples back) whose items all pass ``check``."""
    return lambda value: (isinstance(value, (list, tuple))
                          and (length is None or len(value) == length)
                          and all(check(item) for item in value))


def dict_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: (isinstance(value, dict) and all(isinstance(k, str) for k in value)
                          and all(check(item) for item in value.values()))


def table(rows: int | None, columns: int | None) -> Callable[[Any], bool]:
    """``rows`` x ``columns`` numbers (None: any number)."""
    return list_of(list_of(is_number, columns), rows)
