"""Scenario contract, byte tokenizer and packing, and the scenario registry's promises."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api import DataSpec, Scenario, TaskData
from harness.api.scenario import materialise
from harness.registry import SCENARIOS
from scenarios.splits import lm_task_data
from scenarios.tokenize import EOS, PAD, VOCAB_SIZE, decode, encode, join_documents, pack, pad_to


def tiny(n, task, dim=3):
    return TaskData(torch.arange(n * dim, dtype=torch.float32).reshape(n, dim) + 100 * task,
                    torch.arange(n) % 2 + 2 * task, torch.full((n,), task))


def tiny_scenario():
    spec = DataSpec(kind="vectors", task="classification", input_dim=3, n_classes=4)
    return Scenario.from_splits("tiny", spec, ["a", "b"], "class-il",
                                [tiny(10, 0), tiny(12, 1)], [tiny(4, 0), tiny(5, 1)],
                                classes_per_task=[[0, 1], [2, 3]])


def test_scenario_streams_and_fast_path():
    s = tiny_scenario()
    assert s.n_experiences == 2 and len(s.benchmark.test_stream) == 2
    assert s.val_data(0) is None
    exp = s.benchmark.train_stream[1]
    assert exp.task_label == 1 and len(exp.dataset) == 12
    x, y, t = exp.dataset[3]  # Avalanche items are (x, y, t)
    assert torch.equal(x, tiny(12, 1).x[3]) and int(y) == 3 and t == 1
    assert s.train_data(1) is s.train_data(1)  # materialised once
    assert materialise(exp.dataset) is s.train_data(1)  # kept tensors, checked, reused


def test_benchmark_is_built_only_when_asked_for():
    # The task loop reads tensors: a run pays for Avalanche (import 6-7 s beyond torch, benchmark
    # construction) only if something asks for the benchmark.
    code = (f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from test_scenario_base import tiny_scenario; "
            "s = tiny_scenario(); s.train_data(1); s.test_data(0); s.val_data(0); "
            "assert 'avalanche' not in sys.modules, 'imported early'; "
            "assert s.benchmark.train_stream[1].dataset.task_data is s.train_data(1); "
            "assert 'avalanche' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_scenario_from_an_avalanche_benchmark():
    bench = tiny_scenario().benchmark
    spec = DataSpec(kind="vectors", task="classification", input_dim=3, n_classes=4)
    s = Scenario.from_benchmark("wrapped", bench, spec, ["a", "b"], "class-il")
    assert s.n_experiences == 2 and s.benchmark is bench
    assert torch.equal(s.test_data(1).x, tiny(5, 1).x)
    with pytest.raises(ValueError, match="task names"):
        Scenario.from_benchmark("wrapped", bench, spec, ["a"], "class-il")


def test_streams_of_different_lengths_are_rejected():
    spec = DataSpec(kind="vectors", task="classification", input_dim=3, n_classes=4)
    with pytest.raises(ValueError, match="differ in length"):
        Scenario.from_splits("x", spec, ["a"], "class-il", [tiny(2, 0)], [tiny(2, 0), tiny(2, 1)])


def test_materialise_falls_back_for_derived_datasets():
    s = tiny_scenario()
    sub = s.benchmark.train_stream[0].dataset.subset([1, 3, 5])
    data = materialise(sub)
    want = tiny(10, 0)
    assert torch.equal(data.x, want.x[[1, 3, 5]]) and torch.equal(data.y, want.y[[1, 3, 5]])


def test_unknown_setting_and_name_count_are_rejected():
    spec = DataSpec(kind="vectors", task="classification", input_dim=3, n_classes=4)
    with pytest.raises(ValueError, match="setting"):
        Scenario.from_splits("x", spec, ["a"], "online", [tiny(2, 0)], [tiny(2, 0)])
    with pytest.raises(ValueError, match="task names"):
        Scenario.from_splits("x", spec, ["a", "b"], "class-il", [tiny(2, 0)], [tiny(2, 0)])


def test_byte_tokenizer_round_trip():
    text = "héllo, wörld — 你好\n"
    ids = encode(text)
    assert ids.dtype == np.uint16 and ids.max() < 256 and decode(ids) == text
    assert VOCAB_SIZE == 258 and PAD == 256 and EOS == 257
    assert decode(join_documents(["a", "b"])) == "a\nb\n"
    assert decode(pad_to(encode("abc"), 5)) == "abc" and len(pad_to(encode("abcdef"), 4)) == 4


def test_pack_predicts_every_token_once():
    stream = np.arange(1, 42, dtype=np.uint16)
    w = pack(stream, 8)
    assert w.shape == (5, 9) and (w[1:, 0] == w[:-1, -1]).all()  # windows overlap by one
    data = lm_task_data(w, 3)
    assert torch.equal(data.y.flatten(), torch.arange(2, 42))
    padded = lm_task_data(pack(np.arange(1, 12, dtype=np.uint16), 8, pad_tail=True), 0)
    assert padded.x.shape == (2, 8) and (padded.y[1, 2:] == -100).all()
    assert padded.y[padded.y != -100].tolist() == list(range(2, 12))


def test_every_declared_scenario_has_a_documented_config():
    from omegaconf import OmegaConf

    for name in SCENARIOS.names():
        entry = SCENARIOS.get(name)
        fields = dataclasses.fields(entry.config)
        assert fields[0].name == "name" and fields[0].default == name
        assert all(f.metadata.get("help") for f in fields[1:]), name
        OmegaConf.structured(entry.config)  # the harness's config system accepts it


def test_listing_scenarios_imports_neither_torch_nor_avalanche():
    code = ("import sys; from harness.registry import SCENARIOS; SCENARIOS.summaries(); "
            "assert 'torch' not in sys.modules and 'avalanche' not in sys.modules, "
            "[m for m in sys.modules if m.split('.')[0] in ('torch', 'avalanche')][:3]")
    subprocess.run([sys.executable, "-c", code], check=True)
