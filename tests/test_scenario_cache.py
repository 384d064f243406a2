"""The prep cache returns identical arrays, and detects and rebuilds damaged entries."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scenarios.cache import MANIFEST, cache_root, prepare
from scenarios.text_domains import TextDomainsConfig, build


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))


def arrays():
    rng = np.random.default_rng(0)
    return {"a": rng.integers(0, 258, (50, 17)).astype(np.uint16), "b": np.arange(7.0)}


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return arrays()


def test_root_from_env_and_argument(tmp_path):
    assert cache_root() == tmp_path / "cache"
    assert cache_root(str(tmp_path / "x")) == tmp_path / "x"


def test_second_prepare_is_a_hit_with_identical_arrays():
    build_fn = Counter()
    first = prepare("t", {"k": 1}, "src", build_fn)
    second = prepare("t", {"k": 1}, "src", build_fn)
    assert build_fn.calls == 1 and not first.hit and second.hit
    for name, want in arrays().items():
        np.testing.assert_array_equal(second.arrays[name], want)
        assert isinstance(second.arrays[name], np.memmap)  # memory-mapped, not read in full
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]  # no temp left


def test_key_and_source_change_the_entry():
    build_fn = Counter()
    a = prepare("t", {"k": 1}, "src", build_fn)
    b = prepare("t", {"k": 2}, "src", build_fn)
    c = prepare("t", {"k": 1}, "changed source", build_fn)
    assert build_fn.calls == 3 and len({a.path, b.path, c.path}) == 3


def damage_truncate(entry):
    path = entry / "a.npy"
    path.write_bytes(path.read_bytes()[:-10])


def damage_flip(entry, name="a"):
    path = entry / f"{name}.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # same size, different content: only the checksum can tell
    path.write_bytes(bytes(raw))


def damage_manifest(entry):
    (entry / MANIFEST).write_text("{not json")


def damage_missing(entry):
    os.remove(entry / "b.npy")


@pytest.mark.parametrize("damage", [damage_truncate, damage_flip, damage_manifest,
                                    damage_missing])
def test_damaged_entry_is_rebuilt_not_used(damage):
    build_fn = Counter()
    entry = prepare("t", {"k": 1}, "src", build_fn).path
    damage(entry)
    with pytest.warns(UserWarning, match="damaged"):
        again = prepare("t", {"k": 1}, "src", build_fn)
    assert build_fn.calls == 2 and not again.hit
    np.testing.assert_array_equal(again.arrays["a"], arrays()["a"])
    assert prepare("t", {"k": 1}, "src", build_fn).hit  # the rebuilt entry is sound


def test_cache_off_writes_nothing(tmp_path):
    got = prepare("t", {"k": 1}, "src", Counter(), enabled=False)
    assert got.path is None and not (tmp_path / "cache").exists()


def test_scenario_tensors_identical_from_cache_and_corruption_noticed():
    cfg = TextDomainsConfig(domains=["bible", "docs"], n_experiences=2, seq_len=32,
                            train_tokens=2048, val_tokens=256, test_tokens=512)
    first, second = build(cfg, 0), build(cfg, 0)
    assert first.info["cache_hits"] == 0 and second.info["cache_hits"] == 2
    for i in range(2):
        for get in ("train_data", "val_data", "test_data"):
            a, b = getattr(first, get)(i), getattr(second, get)(i)
            assert all(torch.equal(u, v) for u, v in zip((a.x, a.y, a.t), (b.x, b.y, b.t)))
    entry = Path(first.info["cache_entries"][0])
    manifest = json.loads((entry / MANIFEST).read_text())
    assert set(manifest["arrays"]) >= {"train", "val", "test", "train_docs"}
    damage_flip(entry, "train")
    with pytest.warns(UserWarning, match="damaged"):
        third = build(cfg, 0)
    assert third.info["cache_hits"] == 1
    assert torch.equal(third.train_data(0).x, first.train_data(0).x)


@pytest.mark.parametrize("scenario", ["split-digits", "permuted-digits", "split-mnist"])
def test_a_warm_cache_builds_the_same_scenario_without_importing_scikit_learn(scenario, tmp_path):
    """The parsed data and the stratified split come from the cache: a run's start-up skips
    scikit-learn's import (1-1.5 s) and gets the very same tensors."""
    import subprocess
    import sys

    code = ("import sys, torch; import scenarios; from harness.registry import SCENARIOS; "
            f"e = SCENARIOS.get({scenario!r}); s = e.cls(e.config(), 0); "
            "torch.save([d.x for i in range(s.n_experiences) "
            "for d in (s.train_data(i), s.test_data(i))], sys.argv[1]); "
            "print('sklearn' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "RETAIN_CACHE": str(tmp_path / "cache")}
    imported = []
    for name in ("cold.pt", "warm.pt"):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], cwd=root,
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        imported.append(out.stdout.strip())
    assert imported == ["True", "False"]
    cold, warm = (torch.load(tmp_path / name) for name in ("cold.pt", "warm.pt"))
    assert all(torch.equal(a, b) for a, b in zip(cold, warm, strict=True))


def test_an_unwritable_cache_warns_and_the_build_goes_on(tmp_path, monkeypatch):
    """A cache root that cannot be created (here: under a file; a read-only home alike)."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "a-file" / "cache"))
    with pytest.warns(UserWarning, match="is not writable"):
        prep = prepare("unit", {"k": 1}, "src", arrays)
    assert prep.path is None and not prep.hit
    assert all(np.array_equal(prep.arrays[k], v) for k, v in arrays().items())
