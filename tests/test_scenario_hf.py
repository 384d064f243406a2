"""hf: a clear error without the ``datasets`` package, and the pipeline on an in-memory fake.

No test touches the Hub: the fake module below stands in for ``datasets.load_dataset``.
"""

import importlib.util
import sys
import types

import pytest

from harness.errors import UserError
from scenarios.hf import HFConfig, build

SMALL = dict(seq_len=32, train_tokens=1024, val_tokens=0, test_tokens=256)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fake_datasets(monkeypatch):
    calls = []

    def load_dataset(path, config=None, split="train", streaming=False, revision=None):
        calls.append((path, config, split, streaming, revision))
        if path == "missing":
            raise FileNotFoundError("Dataset 'missing' doesn't exist on the Hub")
        return iter({"text": f"{path} document {i}. " * 5} for i in range(200))

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    real = importlib.util.find_spec
    monkeypatch.setitem(sys.modules, "datasets", module)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "datasets" else real(name, *a))
    return calls


def test_missing_package_is_a_user_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasets" else real(name, *a))
    with pytest.raises(UserError, match="pip install datasets"):
        build(HFConfig(datasets=["wikitext:wikitext-2-raw-v1"], **SMALL), 0)


def test_stream_from_fake_hub(fake_datasets):
    s = build(HFConfig(datasets=["alpha:x", "beta"], **SMALL), 0)
    assert s.task_names == ["alpha:x", "beta"] and s.setting == "domain-il"
    assert [len(s.train_data(i)) for i in range(2)] == [32, 32]
    assert fake_datasets[0] == ("alpha", "x", "train", True, None)
    pinned = HFConfig(datasets=["beta"], revision="abc123", **SMALL)
    build(pinned, 0)
    calls = len(fake_datasets)
    assert build(pinned, 0).info["cache_hits"] == 1 and len(fake_datasets) == calls  # offline


def test_hub_errors_are_user_errors(fake_datasets):
    with pytest.raises(UserError, match="could not load dataset 'missing'"):
        build(HFConfig(datasets=["missing"], **SMALL), 0)
    with pytest.raises(UserError, match="no column 'body'"):
        build(HFConfig(datasets=["alpha"], text_field="body", **SMALL), 0)
    with pytest.raises(UserError, match="needs scenario.datasets"):
        build(HFConfig(), 0)
