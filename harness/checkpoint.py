"""Checkpoints that are safe to load and never half-written.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved to a
temporary file and renamed into place, with a SHA-256 of its bytes beside it. Loading checks
the digest and uses ``torch.load(weights_only=True)``, so a truncated file is refused (the
previous good one is used instead) and a file from an untrusted source cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

FORMAT = 1


def save(path: Path, state: dict) -> None:
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    data = buffer.getvalue()
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    digest = path.with_name(path.name + ".sha256")
    digest_tmp = digest.with_name(f".{digest.name}.tmp")
    digest_tmp.write_text(hashlib.sha256(data).hexdigest())
    # The digest goes first: a crash between the two renames leaves a digest that does not
    # match the old checkpoint, which then reads as corrupt rather than silently stale.
    os.replace(digest_tmp, digest)
    os.replace(tmp, path)


def load(path: Path) -> dict | None:
    """The checkpoint's state, or None if it is missing, truncated or altered."""
    path = Path(path)
    digest = path.with_name(path.name + ".sha256")
    try:
        data = path.read_bytes()
        expected = digest.read_text().strip()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        return None
    state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    return state if state.get("format") == FORMAT else None


def rng_state() -> dict:
    import random

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
