"""LoRA adapters with replay under DDP: two CPU processes (gloo) against one.

The tiny randomly initialised Llama of ``hf_tiny`` with LoRA on q/v (``lora_dropout`` is 0, its
default, so no rank draws its own dropout masks) and a replay memory, on two text domains. The
final perplexity row of two processes must be within 0.5% (relative) of one process's.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch
from conftest import quick
from lora_tiny import lora_run
from test_ddp import DDP, PY, TOLERANCE, _close, _env

from harness import config

pytest.importorskip("peft")

RUN = lora_run("strategy.name=[replay]", "strategy.replay.mem_size=32",
               "model.lora_dropout=0", "trainer.max_epochs=1", "trainer.accelerator=cpu",
               "eval_init=false")


@pytest.mark.slow
def test_lora_with_replay_on_two_processes_matches_one(tmp_path):
    from harness.experiment.run import run

    out = tmp_path / "runs"
    started = time.time()
    proc = subprocess.run([PY, "-m", "harness", "run", *quick(*RUN, *DDP), f"out_dir={out}",
                           "name=two"], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two_seconds = time.time() - started
    two = json.loads((out / "two" / "results.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each DDP rank
    try:
        one = run(config.load(None, quick(*RUN, f"out_dir={out}", "name=one")))
    finally:
        torch.set_num_threads(threads)
    assert two["config_hash"] == one["config_hash"]
    assert two["config"]["trainer"]["devices"] == 2
    got, want = two["matrices"]["perplexity"], one["matrices"]["perplexity"]
    assert len(got) == len(want) == 2 and len(got[-1]) == 2
    diff = _close("perplexity", got[-1], want[-1])
    print(f"lora+replay: final perplexity row {got[-1]} (2 processes, {two_seconds:.1f} s) "
          f"vs {want[-1]} (1): max relative difference {diff:.2e}")
    assert diff <= TOLERANCE["perplexity"], (got, want)
