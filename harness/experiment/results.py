"""The run directory: everything a run leaves behind, written so that nothing half-done
ever looks complete.

Every file is written to a temporary name and renamed into place (atomic on POSIX), and
``results.json`` is written last, only when the run finished: a folder without it is a run
that is still going, crashed, failed or was interrupted (``status.json`` says which:
``running`` with the writer's pid and host, ``failed`` with the error, ``interrupted`` after a
Ctrl-C or SIGTERM, ``complete``). A full disk or an unwritable folder is a one-line
``UserError``, and whatever was there before stays as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from harness.errors import UserError


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


class RunDir:
    """One run's folder. Only rank zero creates one."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def create(cls, out_dir: str, name: str) -> RunDir:
        root = (Path(out_dir) / name).resolve()
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "checkpoints").mkdir(exist_ok=True)
            probe = root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write the run directory {root}: {err.strerror}") from None
        return cls(root)

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
        any torn last line, so the resumed run's lines follow on without repeats."""
        path = self.root / "metrics.jsonl"
        if not path.exists():
            return
        eval_from = step if eval_from is None else eval_from
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                is_eval = any(key.startswith("eval/") for key in record)
                if record["step"] < (eval_from if is_eval else step):
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        atomic_write_text(path, "".join(kept))

    def finish(self, results: dict) -> None:
        atomic_write_json(self.results_path, {"status": "complete", **results})
        self.set_status("complete", config_hash=results.get("config_hash"))

    def status(self) -> dict:
        try:
            return json.loads((self.root / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def fail(self, error: str, config_hash: str | None = None) -> None:
        self.set_status("failed", error=error, config_hash=config_hash)


def load_results(path: Path) -> dict | None:
    """A completed run's results, or None for a run that is incomplete or unreadable."""
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("status") == "complete" else None
