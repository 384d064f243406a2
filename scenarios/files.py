"""Files: continual learning on your own text, one task per folder, file, or ``task`` value.

Two layouts are accepted at ``scenario.path``:

1. A folder with one entry per task, tasks in name order (or ``scenario.tasks``)::

       my_data/
         1_legal/            a sub-folder: every .txt / .jsonl file inside, recursively
           contract_a.txt    a .txt file in a task folder is one document
           contract_b.txt
         2_medical.jsonl     a task as one JSONL file: one document per line {"text": ...}
         3_news.txt          a task as one .txt file: one document per paragraph
                             (blank-line separated; see scenario.txt_split)

2. One JSONL file, one document per line, the task named by a field::

       {"task": "legal", "text": "This agreement ..."}
       {"task": "medical", "text": "The patient ...", "label": "cardiology"}

For classification (``scenario.task=classification``) every line also needs a ``label``
(a string or an integer; .txt files cannot carry labels). String labels are numbered in
sorted order; integer labels are used as class ids. ``scenario.n_classes`` (when set) must
match the labels found.

    retain run scenario.name=files scenario.path=my_data
    retain run scenario.name=files scenario.path=all.jsonl scenario.task=classification \\
        scenario.n_classes=4

Each task's documents (exact repeats dropped) are split into train / validation / test by
document (never one document in two splits) and packed into ``seq_len`` byte windows;
classification examples are split by example and truncated or padded to ``seq_len`` bytes.
Bad input (missing path, empty task, a named pipe or device instead of a regular file, not
UTF-8, a bad JSON line, a missing field, a task smaller than one batch, an integer label beyond
``MAX_CLASSES``, labels that do not match ``n_classes``) is a one-line error naming the file and
line, before training starts.
Prepared arrays are cached, keyed by the files' contents and the data options.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.api import DataSpec, Scenario
from harness.errors import UserError
from harness.registry import register_scenario
from scenarios.cache import cache_dir_option, cache_flag, file_fingerprint, prepare
from scenarios.files_reader import load_tasks, source_files
from scenarios.splits import class_task_data, lm_task_data
from scenarios.tokenize import (
    chosen_tokenizer,
    encode_with,
    join_with,
    pack,
    pad_to,
    text_tokenizer_option,
    vocab_and_pad,
)

FORMAT_VERSION = 2
MAX_CLASSES = 1_000_000  # an integer label is a class id: the head has max(label) + 1 outputs
SPLITS = ("train", "val", "test")


@dataclass
class FilesConfig:
    name: str = "files"
    path: str = field(default="", metadata={
        "help": "folder with one sub-folder or .txt/.jsonl file per task, or one .jsonl file "
                "with a 'task' field"})
    task: str = field(default="lm", metadata={"help": "what to learn",
                                              "choices": ("lm", "classification")})
    n_experiences: int = field(default=0, metadata={
        "help": "use the first n tasks (0 = all tasks found)", "min": 0})
    tasks: list[str] = field(default_factory=list, metadata={
        "help": "task order by name (default: folder name order, or first appearance in JSONL)"})
    setting: str = field(default="auto", metadata={
        "help": "auto: domain-il for lm and for tasks sharing one label set, else class-il",
        "choices": ("auto", "class-il", "domain-il", "task-il")})
    seq_len: int = field(default=128, metadata={"help": "tokens (bytes) per sequence", "min": 1})
    tokenizer: str = text_tokenizer_option()
    n_classes: int = field(default=0, metadata={
        "help": "classification: expected number of classes (0 = as found)", "min": 0})
    test_fraction: float = field(default=0.1, metadata={
        "help": "share of each task's documents (examples) held out for testing",
        "above": 0, "below": 1})
    val_fraction: float = field(default=0.0, metadata={
        "help": "share held out for validation (0 = no validation stream)", "min": 0, "below": 1})
    min_train_examples: int = field(default=32, metadata={
        "help": "each task needs at least this many training sequences: one batch "
                "(match trainer.batch_size)", "min": 1})
    text_field: str = field(default="text", metadata={"help": "JSONL field with the text"})
    label_field: str = field(default="label", metadata={"help": "JSONL field with the label"})
    task_field: str = field(default="task", metadata={
        "help": "JSONL field naming the task (single-file layout)"})
    txt_split: str = field(default="auto", metadata={
        "help": "documents of a .txt file (auto: paragraphs when the file is a whole task, "
                "else the file)", "choices": ("auto", "file", "paragraph")})
    split_seed: int = field(default=0, metadata={"help": "shuffle of documents for the splits",
                                                 "min": 0, "max": 2**32 - 1})
    cache: bool = cache_flag()
    cache_dir: str = cache_dir_option()

    def check(self) -> None:
        if not self.path:
            raise UserError("scenario 'files' needs scenario.path=<folder or .jsonl file>")
        if self.test_fraction + self.val_fraction >= 1:
            raise UserError(f"scenario.test_fraction + scenario.val_fraction must be below 1, "
                            f"not {self.test_fraction} + {self.val_fraction}")


def split_indices(n: int, cfg: FilesConfig, rng, what: str) -> dict[str, np.ndarray]:
    """Shuffled indices of n documents dealt to test, validation and train."""
    n_test = max(1, round(n * cfg.test_fraction))
    n_val = max(1, round(n * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise UserError(f"{what} has {n} document(s); at least {n_test + n_val + 1} are needed "
                        f"to split train, validation and test by document")
    order = rng.permutation(n)
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:])}


def label_ids(tasks: dict) -> tuple[dict, list]:
    """Label -> class id for all records, and the label names in id order."""
    records = [r for rs in tasks.values() for r in rs]
    kinds = {type(r.label) for r in records}
    if len(kinds) > 1:
        odd = next(r for r in records if type(r.label) is not type(records[0].label))
        raise UserError(f"{odd.where}: label {odd.label!r} mixes strings and integers; use one")
    found = sorted({r.label for r in records})
    if kinds == {int}:
        bad = next((r for r in records if not 0 <= r.label < MAX_CLASSES), None)
        if bad:
            raise UserError(f"{bad.where}: label {bad.label} is out of range: integer labels "
                            f"are class ids from 0 to {MAX_CLASSES - 1:,} (string labels may "
                            "name anything)")
        return {v: v for v in found}, found
    return {v: i for i, v in enumerate(found)}, found


def distinct(records: list, labelled: bool) -> list:
    """Records without exact repeats (same text, and same label when labelled): a repeat that
    landed in another split would put test text in the training set."""
    seen, out = set(), []
    for r in records:
        key = (r.text, r.label) if labelled else r.text
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def build_arrays(root: Path, cfg: FilesConfig, tok=None) -> dict[str, np.ndarray]:
    """Per task ``<i>_<split>`` windows (lm) or ``<i>_<split>_x`` / ``_y`` (classification),
    and ``meta``: task names, labels and where each label first occurs, as JSON bytes."""
    labelled = cfg.task == "classification"
    tasks = load_tasks(root, labelled=labelled, text_field=cfg.text_field,
                       label_field=cfg.label_field, task_field=cfg.task_field,
                       txt_split=cfg.txt_split)
    rng = np.random.default_rng(cfg.split_seed)
    ids, names = label_ids(tasks) if labelled else ({}, [])
    _, pad = vocab_and_pad(tok)
    arrays, first_where = {}, {}
    for i, (task, records) in enumerate(tasks.items()):
        records = distinct(records, labelled)
        parts = split_indices(len(records), cfg, rng, f"task '{task}' ({records[0].where})")
        for split, idx in parts.items():
            picked = [records[j] for j in idx]
            if labelled:
                arrays[f"{i}_{split}_x"] = np.stack(
                    [pad_to(encode_with(tok, r.text), cfg.seq_len, pad) for r in picked]
                ) if picked else np.zeros((0, cfg.seq_len), np.uint16)
                arrays[f"{i}_{split}_y"] = np.array([ids[r.label] for r in picked], np.int64)
            else:
                stream = join_with(tok, [r.text for r in picked])
                arrays[f"{i}_{split}"] = pack(stream, cfg.seq_len, pad_tail=True, pad=pad)
        for r in records:
            first_where.setdefault(str(r.label), r.where)
    meta = {"tasks": list(tasks), "labels": names, "first_where": first_where,
            "origins": {t: rs[0].where for t, rs in tasks.items()}}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return arrays


def choose_tasks(cfg: FilesConfig, found: list[str], root: Path) -> list[int]:
    """Indices (into ``found``) of the tasks to use, in order."""
    order = list(cfg.tasks) or found
    missing = [t for t in order if t not in found]
    if missing:
        raise UserError(f"{root}: no task named {missing}; found {found}")
    if cfg.n_experiences > len(order):
        raise UserError(f"scenario.n_experiences={cfg.n_experiences} but {root} has "
                        f"{len(order)} task(s): {order}")
    return [found.index(t) for t in order[: cfg.n_experiences or len(order)]]


def check_labels(cfg: FilesConfig, meta: dict, root: Path) -> int:
    """The number of classes, checked against scenario.n_classes."""
    labels = meta["labels"]
    ints = all(isinstance(v, int) for v in labels)
    n = (max(labels) + 1 if ints else len(labels)) if labels else 0
    if cfg.n_classes:
        if ints and n > cfg.n_classes:
            bad = max(labels)
            raise UserError(f"{meta['first_where'][str(bad)]}: label {bad} is out of range for "
                            f"scenario.n_classes={cfg.n_classes}")
        if len(labels) != cfg.n_classes:
            raise UserError(f"{root}: found {len(labels)} distinct labels {labels}, but "
                            f"scenario.n_classes={cfg.n_classes}")
        n = cfg.n_classes
    return n


@register_scenario("files", config=FilesConfig)
def build(cfg: FilesConfig, seed: int, tokenizer=None) -> Scenario:
    start = time.perf_counter()
    cfg.check()
    tok = chosen_tokenizer(cfg.tokenizer, tokenizer)
    vocab, pad = vocab_and_pad(tok)
    root = Path(cfg.path).expanduser()
    files = source_files(root)
    key = {k: getattr(cfg, k) for k in ("task", "seq_len", "test_fraction", "val_fraction",
                                        "text_field", "label_field", "task_field", "txt_split",
                                        "split_seed")}
    key["version"] = FORMAT_VERSION
    if tok is not None:  # byte entries keep the key they always had
        key["tokenizer"] = tok.fingerprint()
    base = root if root.is_dir() else root.parent
    prep = prepare("files", key, file_fingerprint(files, base),
                   lambda: build_arrays(root, cfg, tok), cfg.cache_dir, cfg.cache)
    meta = json.loads(bytes(prep.arrays["meta"]).decode("utf-8"))
    chosen = choose_tasks(cfg, meta["tasks"], root)
    labelled = cfg.task == "classification"
    splits = {s: [] for s in SPLITS}
    for pos, i in enumerate(chosen):
        for s in SPLITS:
            if labelled:
                x, y = prep.arrays[f"{i}_{s}_x"], prep.arrays[f"{i}_{s}_y"]
                splits[s].append(class_task_data(x.astype(np.int64), np.asarray(y), pos))
            else:
                splits[s].append(lm_task_data(prep.arrays[f"{i}_{s}"], pos, pad))
        n_train = len(splits["train"][-1])
        if n_train < cfg.min_train_examples:
            task = meta["tasks"][i]
            raise UserError(f"task '{task}' ({meta['origins'][task]}) has {n_train} training "
                            f"{'examples' if labelled else 'sequences'}, fewer than one batch "
                            f"(scenario.min_train_examples={cfg.min_train_examples})")
    names = [meta["tasks"][i] for i in chosen]
    n_classes = check_labels(cfg, meta, root) if labelled else 0
    per_task = ([sorted(set(d.y.tolist()) | set(e.y.tolist()))
                 for d, e in zip(splits["train"], splits["test"])] if labelled else None)
    setting = cfg.setting
    if setting == "auto":
        shared = per_task is None or all(c == per_task[0] for c in per_task)
        setting = "domain-il" if shared else "class-il"
    spec = (DataSpec(kind="tokens", task="classification", vocab_size=vocab,
                     seq_len=cfg.seq_len, n_classes=n_classes, pad_id=pad) if labelled else
            DataSpec(kind="tokens", task="lm", vocab_size=vocab, seq_len=cfg.seq_len,
                     pad_id=pad))
    info = {"prep_s": time.perf_counter() - start, "cache_hits": int(prep.hit),
            "bytes": prep.nbytes, "cache_entries": [str(prep.path)] if prep.path else []}
    if tok is not None and not labelled:  # bits per byte, comparable across tokenizers
        info["token_bytes"], info["tokenizer"] = tok.token_bytes(), tok.name
    return Scenario.from_splits(cfg.name, spec, names, setting, splits["train"], splits["test"],
                                splits["val"] if cfg.val_fraction > 0 else None,
                                classes_per_task=per_task, info=info)
