"""Checkpoints that are safe to load and never half-written.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts. It is written as
one file: the ``torch.save`` bytes followed by a footer holding their SHA-256, first to a
temporary name, fsynced, then renamed into place. Before the rename the current checkpoint is
hard-linked to ``prev.ckpt`` (and that one to ``prev2.ckpt``, ..., as ``checkpoint.keep``
asks), so at every instant ``last.ckpt`` is a complete old or new file and ``prev.ckpt`` the
one before: an interrupted write never leaves zero good checkpoints.

``Writer`` does the writing in a background thread, so training goes on while the file is
hashed, written and fsynced; the state is serialised before ``Writer.save`` returns.

Loading checks the footer and uses ``torch.load(weights_only=True)``: a truncated or altered
file reads as missing (the previous good one is used instead), and a file crafted to run code
when unpickled is refused with a ``UserError``. What a run's checkpoint holds, and how it is
checked, is ``harness.experiment.state.Checkpoint``.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import torch

from harness.errors import UserError
from harness.experiment.state import Checkpoint
from harness.runtime import faults

MAGIC = b"\nretain-sha256:"
FOOTER = len(MAGIC) + 64


def names(keep: int = 2) -> list[str]:
    """The files ``keep`` checkpoints occupy, newest first (at least last.ckpt)."""
    return ["last.ckpt", "prev.ckpt", *(f"prev{k}.ckpt" for k in range(2, keep))][:max(keep, 1)]


def save(path: Path, state: dict, keep: int = 2) -> None:
    """Write ``state`` to ``path`` now, in this thread."""
    _write(Path(path), _serialise(state), keep)


class Writer:
    """Writes checkpoints in a background thread, in order, one at a time.

    Why: a write is two fsyncs, a hard link and two renames (2.7 ms of a 3.3 ms save for a
    100 KB MLP checkpoint here; seconds for a large model), and training need not wait for it.
    ``save`` serialises the state in the caller's thread, so the tensors may change as soon as
    it returns, waits for the previous write, and hands the bytes over: at most one write is
    pending and two copies are in memory. A crash before the write lands leaves the previous
    checkpoint, which a resume treats like a crash a little earlier (metric lines past it are
    dropped). A failed write's error (a full disk: a ``UserError``) is raised in the caller's
    thread by ``check`` (the training loop asks after every step), by the next ``save`` or by
    ``flush``; the run flushes before it reports itself complete.
    """

    def __init__(self, keep: int = 2):
        self.keep = keep  # files kept, last.ckpt included (harness.config.CheckpointConfig)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, path: Path, state: dict) -> None:
        data = _serialise(state)
        self.flush()
        self._thread = threading.Thread(target=self._write, args=(Path(path), data),
                                        name="retain-checkpoint", daemon=True)
        self._thread.start()

    def _write(self, path: Path, data: memoryview) -> None:
        try:
            _write(path, data, self.keep)
        except BaseException as err:  # re-raised by flush, in the training thread
            self._error = err

    def check(self) -> None:
        """Raise the error of a write that has failed already; never waits."""
        if self._thread is not None and not self._thread.is_alive():
            self.flush()

    def flush(self) -> None:
        """Wait for the pending write; raise its error, if it failed."""
        err = self.wait()
        if err is not None:
            raise err

    def wait(self) -> BaseException | None:
        """Wait for the pending write; return its error instead of raising it."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        err, self._error = self._error, None
        return err


def _serialise(state: dict) -> memoryview:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer()  # a view: the state's bytes are not copied again


def _write(path: Path, data: memoryview, keep: int = 2) -> None:
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
        _keep_previous(path, keep)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write checkpoint {path}: {err.strerror or err}") from None


def _keep_previous(path: Path, keep: int) -> None:
    """Shift the kept checkpoints one place older (prev.ckpt to prev2.ckpt, ..., the current
    one to prev.ckpt), each by an atomic hard link (a file is renamed into place only once
    complete, so each is a good one)."""
    files = [path, *(path.with_name(n) for n in names(keep)[1:])]
    for newer, older in reversed(list(zip(files, files[1:]))):
        if newer.exists():
            link = older.with_name(f".{older.name}.tmp")
            link.unlink(missing_ok=True)
            os.link(newer, link)
            os.replace(link, older)


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
    """The file's plain-data dict, or None if it is missing, truncated or altered."""
    body = read(path)
    if body is None:
        return None
    try:
        return torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as err:  # pickle.UnpicklingError: something other than plain data
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"refusing to load {path}: not a plain-data checkpoint ({first})") \
            from None


def load_latest(folder: Path) -> tuple[Checkpoint, Path] | None:
    """The newest good checkpoint in ``folder`` (last.ckpt, else prev.ckpt, prev2.ckpt, ...)
    and its path; None when there is none. Damaged files only: a UserError, for starting over
    must be asked for."""
    damaged = []
    for name in names(2 + len(list(Path(folder).glob("prev*.ckpt")))):
        path = Path(folder) / name
        raw = load(path)
        if raw is not None:
            return Checkpoint.from_dict(raw, path), path
        if path.exists():
            damaged.append(name)
    if damaged:
        which = " and ".join(damaged)
        raise UserError(f"{folder} holds no readable checkpoint ({which}: truncated or altered); "
                        "start over from task 1 with --restart, or start a new run (another "
                        "name=)")
    return None
