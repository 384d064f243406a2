"""Preparation cache: a scenario's arrays stored once as .npy files, memory-mapped afterwards.

Why: reading and tokenizing sources (YAML, JSONL, CSV) takes seconds; a sweep of fifty runs
should pay that once. An entry is a folder ``<root>/<scenario>-<hash>/`` whose hash covers the
scenario's data config, a content fingerprint of its sources and the builder's format version,
so editing a source file or a config field makes a new entry instead of reusing a stale one.

Safety: an entry is written into a temporary folder and renamed into place (a reader never sees
half an entry), and ``manifest.json`` records each array's size and SHA-256. Loading verifies
both; a truncated or corrupt entry is reported, moved aside, rebuilt, and never used.

The root is ``cache_dir`` when given, else ``$RETAIN_CACHE``, else ``~/.cache/retain``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"


@dataclass
class Prepared:
    """Arrays of one cache entry and how they were obtained (for logs and bench output)."""

    arrays: dict[str, np.ndarray]
    path: Path | None  # the entry folder; None when caching is off or the folder is unwritable
    hit: bool  # True when loaded from an existing entry
    seconds: float  # time to build (miss) or to verify and map (hit)
    nbytes: int


def cache_flag(help: str = "store prepared arrays on disk"):
    """A scenario config's ``cache`` option (``enabled`` of ``prepare``)."""
    return field(default=True, metadata={"help": help})


def cache_dir_option():
    """A scenario config's ``cache_dir`` option (``cache_dir`` of ``prepare``)."""
    return field(default="", metadata={
        "help": "prep cache folder ('' = $RETAIN_CACHE or ~/.cache/retain)"})


def cache_root(cache_dir: str = "") -> Path:
    """Where entries live: the argument, else $RETAIN_CACHE, else ~/.cache/retain."""
    root = cache_dir or os.environ.get("RETAIN_CACHE") or "~/.cache/retain"
    return Path(root).expanduser()


def fingerprint(*parts) -> str:
    """SHA-256 hex of strings, bytes and JSON-able values, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            part = part.encode("utf-8")
        elif not isinstance(part, bytes | bytearray):
            part = json.dumps(part, sort_keys=True, default=str).encode("utf-8")
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def file_fingerprint(paths, root: Path | None = None) -> str:
    """Content fingerprint of files: their names (relative to ``root`` when given, else the
    base name, so an installed package hashes the same wherever it lives) and their bytes."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        name = p.relative_to(root).as_posix() if root is not None else p.name
        for part in (name.encode("utf-8"), p.read_bytes()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def prepare(kind: str, key: dict, source: str, build: Callable[[], dict[str, np.ndarray]],
            cache_dir: str = "", enabled: bool = True) -> Prepared:
    """The arrays for (``key``, ``source``) from the cache, or built by ``build()`` and stored.

    ``kind`` names the entry folder (the scenario name), ``key`` is the JSON-able config that
    determines the arrays, ``source`` a fingerprint of the source data.
    """
    start = time.perf_counter()
    if not enabled:
        arrays = build()
        return Prepared(arrays, None, False, time.perf_counter() - start, _nbytes(arrays))
    entry = cache_root(cache_dir) / f"{kind}-{fingerprint(kind, key, source)[:20]}"
    if entry.exists():
        arrays = load_entry(entry)
        if arrays is not None:
            return Prepared(arrays, entry, True, time.perf_counter() - start, _nbytes(arrays))
        _discard(entry)
    arrays = build()
    try:
        _write_entry(entry, arrays, {"kind": kind, "key": key, "source": source})
    except OSError as err:  # a read-only or full disk: the run goes on without the cache
        warnings.warn(f"retain cache {entry.parent} is not writable ({err.strerror or err}); "
                      "going on without it", stacklevel=2)
        return Prepared(arrays, None, False, time.perf_counter() - start, _nbytes(arrays))
    loaded = load_entry(entry)
    if loaded is None:  # a concurrent writer's entry went bad between rename and read
        loaded = arrays
    return Prepared(loaded, entry, False, time.perf_counter() - start, _nbytes(arrays))


def load_entry(entry: Path) -> dict[str, np.ndarray] | None:
    """Memory-mapped arrays of a verified entry, or None (with a warning) if it is damaged."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text("utf-8"))
        arrays = {}
        for name, meta in manifest["arrays"].items():
            path = entry / f"{name}.npy"
            if path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
                raise ValueError(f"{path.name} does not match its checksum")
            arrays[name] = np.load(path, mmap_mode="r")
        return arrays
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"retain cache entry {entry} is damaged ({err}); rebuilding it",
                      stacklevel=3)
        return None


def _write_entry(entry: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        files = {}
        for name, array in arrays.items():
            path = tmp / f"{name}.npy"
            np.save(path, np.ascontiguousarray(array), allow_pickle=False)
            files[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path),
                           "shape": list(array.shape), "dtype": str(array.dtype)}
        manifest = {**meta, "arrays": files, "created": time.time()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str), "utf-8")
        try:
            os.rename(tmp, entry)  # atomic; fails if another process got there first
        except OSError:
            if load_entry(entry) is None:
                _discard(entry)
                os.rename(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _discard(entry: Path) -> None:
    """Move a damaged entry aside first (rename is atomic), then delete it."""
    trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}-{time.time_ns()}")
    try:
        os.rename(entry, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _nbytes(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(a.nbytes for a in arrays.values()))

