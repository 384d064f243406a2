"""Runs of the LoRA strategies on the tiny randomly initialised Llama of ``hf_tiny`` (its own
byte-level BPE, no weight packages): offline, in seconds; the checks are of the strategies."""

from __future__ import annotations

from hf_tiny import tiny_llama


def lora_run(*overrides: str) -> list[str]:
    """Overrides for a two-task text-domains run of the tiny Llama with LoRA adapters."""
    return ["model.name=hf", f"model.source={tiny_llama()}", "model.adapter=lora",
            "model.lora_targets=[q_proj,v_proj]", "scenario.name=text-domains",
            "scenario.domains=[python,bible]", "scenario.n_experiences=2",
            "scenario.seq_len=32", "scenario.train_tokens=4096", "scenario.val_tokens=0",
            "scenario.test_tokens=1024", "trainer.batch_size=8", "trainer.lr=0.01",
            *overrides]
