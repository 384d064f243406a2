"""The run directory: everything a run leaves behind, written so that nothing half-done
ever looks complete.

Every file is written to a temporary name and renamed into place (atomic on POSIX), and
``results.json`` is written last, only when the run finished: a folder without it is a run
that is still going, crashed, failed or was interrupted (``status.json`` says which:
``running`` with the writer's pid and host, ``failed`` with the error, ``interrupted`` after a
Ctrl-C or SIGTERM, ``complete``). A full disk or an unwritable folder is a one-line
``UserError``, and whatever was there before stays as it was. A run's name is one folder inside
``out_dir`` (``run_path``), and one process at a time writes it (``harness.experiment.lock``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from harness.errors import UserError
from harness.experiment.lock import RunLock
from harness.experiment.records import Results

NAME_MAX = 255  # bytes in one file name on Linux and macOS file systems


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename; a full disk raises a one-line UserError."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _unlink(tmp)
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(tmp: str | None) -> None:
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_path(out_dir: str, name: str) -> Path:
    """``out_dir/name``, once ``name`` is known to be one plain folder name: a run never
    writes outside ``out_dir`` nor into a folder nested in another run's."""
    rule = ("a run name is one folder name: no '/' or '\\', not '.' or '..', no control "
            f"characters, at most {NAME_MAX} bytes")
    if not name or name in (".", "..") or "/" in name or "\\" in name or not name.isprintable():
        raise UserError(f"invalid run name {name!r}: {rule}")
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > NAME_MAX:
        raise UserError(f"invalid run name ({size} bytes, starting {name[:20]!r}): {rule}")
    return Path(out_dir) / name


class RunDir:
    """One run's folder. Only rank zero creates, locks and writes one."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = RunLock(self.root)

    @classmethod
    def create(cls, out_dir: str, name: str) -> RunDir:
        run_dir = cls(run_path(out_dir, name).resolve())
        run_dir.make_folders()
        return run_dir

    def make_folders(self) -> None:
        """The folder and its checkpoints/ (again, if someone deleted it), known writable."""
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write the run directory {self.root}: {err.strerror}") \
                from None

    def lock(self) -> None:
        """Become its only writer, or refuse (harness.experiment.lock)."""
        self._lock.acquire()

    def unlock(self) -> None:
        self._lock.release()

    def check_unlocked(self) -> None:
        """Refuse now if another process writes this run."""
        if self.root.is_dir():
            self._lock.check_free()

    def holds_run(self) -> bool:
        """Whether a run has been started here (its config, a checkpoint or its results)."""
        return any(p.is_file() for p in (self.root / "config.yaml", self.results_path,
                                          *self.checkpoint_dir.glob("*.ckpt")))

    def start_over(self) -> None:
        """Clear what an earlier attempt left, for a run that starts again from task 1: its
        checkpoints, metric lines, results and W&B run id (a new W&B run begins)."""
        for path in (*self.checkpoint_dir.glob("*.ckpt"), self.root / "metrics.jsonl",
                     self.results_path, self.root / ".wandb-id"):
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                raise UserError(f"cannot start {self.root} over: cannot remove {path}: "
                                f"{err.strerror or err}") from None

    @property
    def results_path(self) -> Path:
        return self.root / "results.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.root / "config.yaml", yaml_text)

    def set_status(self, status: str, **extra) -> None:
        atomic_write_json(self.root / "status.json",
                          {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})

    def append_metrics(self, step: int, metrics: dict) -> None:
        line = json.dumps({"step": step, **metrics}) + "\n"
        try:
            with open(self.root / "metrics.jsonl", "a") as f:
                f.write(line)
        except OSError as err:
            raise UserError(f"cannot write {self.root / 'metrics.jsonl'}: "
                            f"{err.strerror or err}") from None

    def truncate_metrics(self, step: int, eval_from: int | None = None) -> None:
        """On resume: drop lines logged after the checkpoint (steps >= ``step``), evaluation
        rows at steps >= ``eval_from`` (a task's row is logged at its last training step, so
        one written after a checkpoint inside that task has a step below the checkpoint's) and
        any torn last line, so the resumed run's lines follow on without repeats. Curve points
        (``curve/``, after ``step`` optimizer steps) are taken before that step's checkpoint,
        which holds them: those up to ``step`` stay."""
        path = self.root / "metrics.jsonl"
        if not path.exists():
            return
        eval_from = step if eval_from is None else eval_from
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                is_eval = any(key.startswith(("eval/", "general/")) for key in record)
                if any(key.startswith("curve/") for key in record):
                    if record["step"] <= step:
                        kept.append(line + "\n")
                elif record["step"] < (eval_from if is_eval else step):
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        atomic_write_text(path, "".join(kept))

    def finish(self, results: Results) -> None:
        atomic_write_json(self.results_path, results.to_dict())
        self.set_status("complete", config_hash=results.config_hash)

    def status(self) -> dict:
        """status.json, or {} if it is missing or unreadable: it only informs."""
        try:
            status = json.loads((self.root / "status.json").read_text())
        except (OSError, ValueError, RecursionError):
            return {}
        return status if isinstance(status, dict) else {}

    def fail(self, error: str, config_hash: str | None = None) -> None:
        self.set_status("failed", error=error, config_hash=config_hash)
