"""Reading the user's own data for the ``files`` scenario, with errors that point at the input.

Every problem is a ``UserError`` naming the file (and line, where there is one), raised while
the scenario is built, before any training: a run that would fail on task 3 after an hour on
tasks 1 and 2 fails in the first second instead. See scenarios/files.py for the layouts.
"""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError

SUFFIXES = (".txt", ".jsonl")
SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
           (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


@dataclass
class Record:
    """One document (language modelling) or example (classification) and where it came from."""

    text: str
    label: object
    where: str  # "file:line" or "file"


@dataclass
class TaskSource:
    name: str
    files: list[Path] = field(default_factory=list)
    origin: Path | None = None  # the folder or file that defines the task, for messages


def discover(path: Path) -> list[TaskSource]:
    """The tasks at ``path``: a single JSONL file (tasks named by its ``task`` field) or a
    folder whose sub-folders and .txt/.jsonl files are the tasks, in name order."""
    if not path.exists():
        raise UserError(f"scenario.path '{path}' does not exist")
    if not path.is_dir():
        if regular(path).suffix != ".jsonl":
            raise UserError(f"{path}: a single data file must be .jsonl with a 'task' field "
                            f"(or give a folder with one sub-folder or file per task)")
        return [TaskSource("", [path], path)]
    tasks = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = sorted(regular(f) for f in entry.rglob("*")
                           if f.suffix in SUFFIXES and not f.is_dir()
                           and not any(p.startswith(".") for p in f.relative_to(entry).parts))
            tasks.append(TaskSource(entry.name, files, entry))
        elif entry.suffix in SUFFIXES:
            tasks.append(TaskSource(entry.stem, [regular(entry)], entry))
    if not tasks:
        raise UserError(f"{path}: no task sub-folders or .txt/.jsonl files found")
    return tasks


def regular(path: Path) -> Path:
    """``path``, which must be a regular file (or a link to one). A named pipe or a device
    would block the read or never end, and cannot be fingerprinted for the cache; skipping it
    quietly would drop data the user put there, so it is an error that says what it is."""
    if path.is_file():
        return path
    try:
        mode = path.stat().st_mode
    except OSError:
        what = "a broken link"
    else:
        what = next((name for test, name in SPECIAL if test(mode)), "not a regular file")
    raise UserError(f"{path}: {what}; scenario 'files' reads regular .txt and .jsonl files only")


def read_utf8(path: Path) -> str:
    """The text of a file; a UserError with the line of the first invalid byte otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x}); "
                        f"save the file as UTF-8") from None


def jsonl_objects(path: Path):
    """(line number, object) for every non-blank line of a JSONL file."""
    for n, line in enumerate(read_utf8(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{n}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _field(obj: dict, name: str, where: str, text_only: bool):
    """``obj[name]``, which must be a string (or, unless ``text_only``, an integer)."""
    if name not in obj:
        raise UserError(f"{where}: missing '{name}' field")
    value = obj[name]
    kinds = str if text_only else (str, int)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "a string" if text_only else "a string or an integer"
        raise UserError(f"{where}: '{name}' must be {what}, got {json.dumps(value)[:40]}")
    return value


def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def read_task(task: TaskSource, *, labelled: bool, text_field: str, label_field: str,
              txt_split: str) -> list[Record]:
    """Records of a task from a folder or a per-task file (not the single-JSONL layout)."""
    records = []
    for f in task.files:
        if f.suffix == ".jsonl":
            for n, obj in jsonl_objects(f):
                where = f"{f}:{n}"
                text = _field(obj, text_field, where, True)
                label = _field(obj, label_field, where, False) if labelled else None
                records.append(Record(text, label, where))
        elif labelled:
            raise UserError(f"{f}: classification needs .jsonl files with a '{label_field}' "
                            f"field; a .txt file has no labels")
        else:
            text = read_utf8(f)
            split = txt_split if txt_split != "auto" else (
                "paragraph" if task.origin == f else "file")
            docs = paragraphs(text) if split == "paragraph" else [text] if text.strip() else []
            records += [Record(d, None, str(f)) for d in docs]
    return [r for r in records if r.text.strip()]


def read_single_jsonl(path: Path, *, labelled: bool, text_field: str, label_field: str,
                      task_field: str) -> dict[str, list[Record]]:
    """Records grouped by task (in order of first appearance) from one JSONL file."""
    tasks: dict[str, list[Record]] = {}
    for n, obj in jsonl_objects(path):
        where = f"{path}:{n}"
        task = str(_field(obj, task_field, where, False))
        text = _field(obj, text_field, where, True)
        label = _field(obj, label_field, where, False) if labelled else None
        tasks.setdefault(task, [])
        if text.strip():
            tasks[task].append(Record(text, label, where))
    if not tasks:
        raise UserError(f"{path}: no records (the file is empty)")
    return tasks


def load_tasks(path: Path, *, labelled: bool, text_field: str = "text",
               label_field: str = "label", task_field: str = "task",
               txt_split: str = "auto") -> dict[str, list[Record]]:
    """Task name -> records, in task order; every task non-empty."""
    if txt_split not in ("auto", "file", "paragraph"):
        raise UserError(f"scenario.txt_split must be auto, file or paragraph, got '{txt_split}'")
    sources = discover(path)
    if sources[0].name == "" and len(sources) == 1:
        tasks = read_single_jsonl(path, labelled=labelled, text_field=text_field,
                                  label_field=label_field, task_field=task_field)
        origins = {name: path for name in tasks}
    else:
        tasks = {s.name: read_task(s, labelled=labelled, text_field=text_field,
                                   label_field=label_field, txt_split=txt_split)
                 for s in sources}
        origins = {s.name: s.origin for s in sources}
    for name, records in tasks.items():
        if not records:
            raise UserError(f"task '{name}' ({origins[name]}) is empty: no non-blank "
                            f"documents in .txt/.jsonl files")
    return tasks


def source_files(path: Path) -> list[Path]:
    """Every file the tasks at ``path`` read, for the cache fingerprint."""
    return [f for s in discover(path) for f in s.files]
