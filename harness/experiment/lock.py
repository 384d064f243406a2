"""One writer per run directory: an exclusive lock on ``<run>/.lock``.

The lock is ``flock`` on that file, held while the run writes: the kernel drops it when the
process ends, however it ends (SIGKILL included), so a lock is never left stale. The file names
its holder (pid, host) for the message that refuses a second writer. Where the file system
has no ``flock``, the recorded holder decides instead: it is stale when it ran on this host and
its process is gone. Only rank zero of a DDP run locks; the other ranks only read.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import time
from pathlib import Path

from harness.errors import UserError

NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLock:
    """``acquire`` or refuse with one line naming the holder; ``release`` when done."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / ".lock"
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot lock {self.path}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise self._busy(holder) from None
        except OSError as err:
            if err.errno not in NO_FLOCK:
                os.close(fd)
                raise UserError(f"cannot lock {self.path}: {err.strerror or err}") from None
            holder = _holder(fd)  # no flock here: trust the recorded holder unless stale
            if holder and _alive(holder):
                os.close(fd)
                raise self._busy(holder) from None
        _record(fd, {"pid": os.getpid(), "host": platform.node(),
                     "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # no holder recorded: also free where flock is missing
        except OSError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = None

    def check_free(self) -> None:
        """Refuse now if another process holds the lock; takes nothing."""
        self.acquire().release()

    def _busy(self, holder: dict) -> UserError:
        who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"
               if holder else "another process")
        return UserError(f"{self.root} is in use by another retain process ({who}); wait for "
                         "it to finish or stop it, or choose another name=")


def _holder(fd: int) -> dict:
    """The pid and host recorded in the lock file; {} when none is."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(fd: int, holder: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode())


def _alive(holder: dict) -> bool:
    """Whether the recorded process may still run: yes unless it ran on this host and is gone
    (another host's processes cannot be checked from here)."""
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False  # nothing recorded that could be checked
    if holder.get("host") != platform.node():
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    return True
