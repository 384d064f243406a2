"""A tiny randomly initialised Llama with its own byte-level BPE, saved where ``model.source``
loads it: offline runs of the LoRA strategies in seconds (the checks are of the strategies,
not of pretrained weights)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

TEXTS = ["def add(x, y):\n    return x + y\n", "In the beginning God created the heaven.",
         "The Python documentation describes the language and its library.",
         "import os\nfor path in os.listdir('.'):\n    print(path)\n"]


@functools.cache
def tiny_lora_llama() -> str:
    import tokenizers as tk
    import torch
    import transformers

    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    tok.train_from_iterator(TEXTS * 20, tk.trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|pad|>"], show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True)
    folder = tempfile.mkdtemp(prefix="retain-tiny-lora-llama-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lora_run(*overrides: str) -> list[str]:
    """Overrides for a two-task text-domains run of the tiny Llama with LoRA adapters."""
    return ["model.name=hf", f"model.source={tiny_lora_llama()}", "model.adapter=lora",
            "model.lora_targets=[q_proj,v_proj]", "scenario.name=text-domains",
            "scenario.domains=[python,bible]", "scenario.n_experiences=2",
            "scenario.seq_len=32", "scenario.train_tokens=4096", "scenario.val_tokens=0",
            "scenario.test_tokens=1024", "trainer.batch_size=8", "trainer.lr=0.01",
            *overrides]
