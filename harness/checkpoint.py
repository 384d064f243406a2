"""Checkpoints that are safe to load and never half-written.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts. It is written as
one file: the ``torch.save`` bytes followed by a footer holding their SHA-256, first to a
temporary name, fsynced, then renamed into place. Before the rename the current checkpoint is
hard-linked to ``prev.ckpt``, so at every instant ``last.ckpt`` is a complete old or new file
and ``prev.ckpt`` the one before: an interrupted write never leaves zero good checkpoints.

Loading checks the footer and uses ``torch.load(weights_only=True)``: a truncated or altered
file reads as missing (the previous good one is used instead), and a file crafted to run code
when unpickled is refused with a ``UserError``.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from harness import faults
from harness.errors import UserError

FORMAT = 2
MAGIC = b"\nretain-sha256:"
FOOTER = len(MAGIC) + 64


def save(path: Path, state: dict) -> None:
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    data = buffer.getbuffer()  # a view: the state's bytes are not copied again
    footer = MAGIC + hashlib.sha256(data).hexdigest().encode()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            faults.point("checkpoint")  # a kill here leaves a truncated temp file
            f.write(data[half:])
            f.write(footer)
            f.flush()
            os.fsync(f.fileno())
        _keep_previous(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write checkpoint {path}: {err.strerror or err}") from None


def _keep_previous(path: Path) -> None:
    """Hard-link the current checkpoint to prev.ckpt, atomically (it was renamed into place
    only once complete, so it is a good one)."""
    if not path.exists():
        return
    prev, link = path.with_name("prev.ckpt"), path.with_name(".prev.ckpt.tmp")
    link.unlink(missing_ok=True)
    os.link(path, link)
    os.replace(link, prev)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> bytes | None:
    """The payload bytes if the file is complete and its digest matches, else None."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    body, footer = data[:-FOOTER], data[-FOOTER:]
    if len(data) <= FOOTER or not footer.startswith(MAGIC):
        return None
    return body if hashlib.sha256(body).hexdigest().encode() == footer[len(MAGIC):] else None


def load(path: Path) -> dict | None:
    """The checkpoint's state, or None if it is missing, truncated or altered."""
    body = read(path)
    if body is None:
        return None
    try:
        state = torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as err:  # pickle.UnpicklingError: something other than plain data
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"refusing to load {path}: not a plain-data checkpoint ({first})") \
            from None
    return state if isinstance(state, dict) and state.get("format") == FORMAT else None


def load_latest(folder: Path) -> tuple[dict, Path] | None:
    """The newest good checkpoint in ``folder`` (last.ckpt, else prev.ckpt) and its path."""
    for name in ("last.ckpt", "prev.ckpt"):
        state = load(Path(folder) / name)
        if state is not None:
            return state, Path(folder) / name
    return None


def rng_state() -> dict:
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": _numpy_state(np.random.get_state())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state(state) -> tuple:
    name, keys, pos, has_gauss, gauss = state  # keys: uint32 array; weights_only wants tensors
    return (name, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(gauss))


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
