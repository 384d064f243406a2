"""The hf model on a tiny random Llama with its own tokenizer (tests/hf_tiny.py), offline:
tokenizer bridging into the text scenarios, LoRA through peft, adapter-only checkpoints and
bit-identical resume, and one error line for each bad source."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402
from conftest import quick  # noqa: E402
from hf_tiny import (  # noqa: E402
    encoder_only,
    llama,
    tiny_llama,
    tiny_tokenizer,
    without_tokenizer,
)
from resume_helpers import resumes_bit_identically  # noqa: E402

from harness import config  # noqa: E402
from harness.api import trainable  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.core.build import build  # noqa: E402
from harness.experiment import checkpoint  # noqa: E402
from harness.experiment.run import run  # noqa: E402
from harness.models.hf_causal import HFCausalConfig, HFCausalLM  # noqa: E402
from scenarios.tokenize import decode  # noqa: E402

TEXT = ["scenario.name=text-domains", "scenario.domains=[python,docs]", "scenario.n_experiences=2",
        "scenario.seq_len=32", "scenario.train_tokens=2048", "scenario.val_tokens=0",
        "scenario.test_tokens=512"]
SHORT = ["trainer.max_steps=3", "trainer.batch_size=8", "trainer.accelerator=cpu",
         "trainer.lr=0.01"]

pytestmark = pytest.mark.usefixtures("one_thread")


def hf(*extra: str) -> list[str]:
    return quick("model.name=hf", f"model.source={tiny_llama()}", *TEXT, *SHORT, *extra)


def test_text_domains_are_encoded_with_the_models_tokenizer(tmp_path):
    cfg = config.load(None, hf(f"scenario.cache_dir={tmp_path}"))
    _, scenario, net = build(cfg)
    tok = net.model.tokenizer
    assert scenario.spec.vocab_size == len(tok) and scenario.spec.pad_id == tok.pad_token_id
    assert net.model.vocab == "model" and scenario.info["tokenizer"].startswith("hf (")
    x = scenario.test_data(0).x
    assert int(x.max()) >= 258  # BPE pieces, not bytes
    with torch.no_grad():
        assert net(x[:2]).logits.shape == (2, 32, len(tok))
    byte_cfg = config.load(None, hf(f"scenario.cache_dir={tmp_path}", "scenario.tokenizer=byte"))
    _, byte_scenario, byte_net = build(byte_cfg)
    assert byte_scenario.spec.vocab_size == 258 and byte_net.model.vocab == "bytes"
    assert set(byte_scenario.info["cache_entries"]).isdisjoint(scenario.info["cache_entries"])
    text = tok.decode(x[:2].reshape(-1).tolist())  # the same documents, in the same order
    assert decode(byte_scenario.test_data(0).x.reshape(-1)).startswith(text)


def test_each_id_knows_its_bytes():
    tok = HFCausalLM.text_tokenizer(HFCausalConfig(source=tiny_llama()))
    sizes = tok.token_bytes()
    for text in ("def add(x, y): return naïve café", "日本語 and unseen words ZQX"):
        ids = tok.join_documents([text])
        assert ids[-1] == tok.eos_id and sum(sizes[i] for i in ids) == len(text.encode()) + 1
    assert sizes[tok.pad_id] == 0


def test_lora_trains_only_the_adapter():
    _, _, net = build(config.load(None, hf("model.adapter=lora", "model.lora_rank=4")))
    names = [n for n, _ in trainable(net)]
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert names and all("lora_" in n for n in names) and frozen
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert wrapped == {"q_proj", "v_proj"}  # peft's default for Llama
    _, _, all_linear = build(config.load(None, hf(
        "model.adapter=lora", "model.lora_targets=[q_proj,k_proj,v_proj,o_proj,gate_proj]")))
    assert len(trainable(all_linear)) == 2 * 5 * 2  # A and B, five modules, two layers


def test_lora_run_changes_only_the_adapter_and_checkpoints_only_it(tmp_path):
    cfg = config.load(None, hf("model.adapter=lora", f"out_dir={tmp_path}", "name=lora"))
    _, _, before = build(cfg)
    out = run(cfg)
    ckpt, _ = checkpoint.load_latest(tmp_path / "lora" / "checkpoints")
    assert ckpt.base["tensors"] > 0 and len(ckpt.base["fingerprint"]) == 64
    assert ckpt.net and all("lora_" in k for k in ckpt.net)
    assert out["matrices"]["perplexity"][0][0] < out["baseline"]["perplexity"][0]
    assert "bits_per_byte" in out["matrices"]
    summary = out["summary"]  # the cost line counts every weight and, apart, the trained ones
    assert summary["trained_parameters"] == sum(p.numel() for _, p in trainable(before))
    assert summary["trained_parameters"] < summary["parameters"] == sum(
        p.numel() for p in before.parameters())


def test_lora_run_resumes_bit_identically(tmp_path, monkeypatch):
    resumes_bit_identically(hf("model.adapter=lora", "model.lora_dropout=0.1",
                               "checkpoint.every_n_steps=1", "strategy=replay",
                               "strategy.replay.mem_size=16", f"out_dir={tmp_path}",
                               "eval_init=false"), monkeypatch)


def test_resume_refuses_a_changed_base(tmp_path, capsys):
    """The checkpoint leaves the base out: a resume on other base weights would be wrong."""
    source = tmp_path / "model"
    shutil.copytree(tiny_llama(), source)
    assert main(["run", *hf(f"model.source={source}", "model.adapter=lora",
                            f"out_dir={tmp_path}", "name=r", "trainer.max_steps=1")]) == 0
    (tmp_path / "r" / "results.json").unlink()  # as if it had stopped after a task
    llama(len(tiny_tokenizer()), seed=1).save_pretrained(source)  # the folder's weights change
    capsys.readouterr()
    code = main(["run", "--resume", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "the frozen base weights differ from the ones it was trained on" in err


@pytest.mark.parametrize("option, message", [
    ("model.source=''", "model hf needs model.source="),
    ("model.source=/no/such/folder", "no such folder"),
    ("model.source=NOTOK", "has no tokenizer"),
    ("model.source=BERT", "is a 'bert' model, not a causal language model"),
    ("model.lora_targets=[nothing_here]", "modules LoRA can wrap here: down_proj"),
])
def test_bad_sources_are_one_line_before_any_run_directory(option, message, tmp_path, capsys):
    option = option.replace("NOTOK", without_tokenizer()).replace("BERT", encoder_only())
    code = main(["run", *hf("model.adapter=lora", option, f"out_dir={tmp_path / 'runs'}")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("retain: error: ")
    assert message in err[0] and not (tmp_path / "runs").exists()


def test_a_model_without_tokenizer_refuses_scenario_tokenizer_model(tmp_path, capsys):
    code = main(["run", *quick("model.name=gpt", *TEXT, "scenario.tokenizer=model",
                               f"out_dir={tmp_path / 'runs'}")])
    err = capsys.readouterr().err
    assert code == 2 and "has no tokenizer of its own (models with one: " in err


def test_files_scenarios_are_encoded_with_the_models_tokenizer(tmp_path):
    from harness.core.build import build_scenario

    data = Path(__file__).resolve().parent / "data"
    tok = HFCausalLM.text_tokenizer(HFCausalConfig(source=tiny_llama()))
    common = ["model.name=hf", f"model.source={tiny_llama()}", "scenario.name=files",
              "scenario.seq_len=16", "scenario.min_train_examples=1",
              f"scenario.cache_dir={tmp_path}"]
    lm = build_scenario(config.load(None, [*common, f"scenario.path={data / 'files_folder'}"]))
    assert lm.spec.vocab_size == tok.vocab_size and len(lm.info["token_bytes"]) == tok.vocab_size
    y = lm.test_data(0).y
    assert (y[y >= 0] != tok.pad_id).all() and (lm.test_data(0).x == tok.pad_id).any()
    labelled = build_scenario(config.load(None, [
        *common, f"scenario.path={data / 'files_tasks.jsonl'}", "scenario.task=classification"]))
    x = labelled.train_data(0).x
    assert labelled.spec.pad_id == tok.pad_id and (x == tok.pad_id).any()
    assert tok.tok.decode([i for i in x[0].tolist() if i != tok.pad_id]) in (
        data / "files_tasks.jsonl").read_text()


@pytest.mark.parametrize("strategy", ["replay", "ewc", "si", "distill", "der", "agem"])
def test_every_strategy_runs_on_the_adapter_alone(strategy, tmp_path):
    small = {"replay": ["strategy.replay.mem_size=16"], "der": ["strategy.der.mem_size=16"],
             "agem": ["strategy.agem.patterns_per_experience=8", "strategy.agem.sample_size=4"]}
    cfg = config.load(None, hf("model.adapter=lora", f"strategy={strategy}",
                               *small.get(strategy, []), f"out_dir={tmp_path}", "name=s",
                               "trainer.max_steps=2"))
    out = run(cfg)
    assert len(out["matrices"]["perplexity"]) == 2
    ckpt, _ = checkpoint.load_latest(tmp_path / "s" / "checkpoints")
    lora = set(ckpt.net)
    state = ckpt.strategies[0]
    per_parameter = [set(state[k]) for k in ("importance", "anchor", "omega") if k in state]
    if per_parameter:  # EWC's and SI's tensors: one per adapter weight, none for the base
        assert set().union(*per_parameter) and set().union(*per_parameter) <= lora
