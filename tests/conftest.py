"""Shared fixtures: every test runs offline, in a temporary folder, with its own data cache."""

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run faster and identically, also on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quick(*overrides: str) -> list[str]:
    """Overrides that keep an end-to-end run to seconds on CPU."""
    return ["logger=none", "trainer.progress=false", *overrides]
