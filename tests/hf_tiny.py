"""Tiny randomly initialised Hugging Face causal LMs saved to folders, for offline tests.

``tiny_llama()`` needs only transformers and tokenizers: a two-layer Llama with a byte-level
BPE trained here on a few sentences, so CI without the pretrained weight packages covers the
hf model, its tokenizer, adapters and checkpoints. The checks are of the wrapper, not of
pretrained weights.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

TEXTS = ["def add(x, y):\n    return x + y\n", "In the beginning God created the heaven.",
         "The Python documentation describes the language: café, naïve, déjà vu.",
         "import os\nfor path in os.listdir('.'):\n    print(path)\n"]


def _folder(prefix: str) -> str:
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def tiny_tokenizer(vocab_size: int = 400):
    """A byte-level BPE with an end-of-text token, as a transformers tokenizer."""
    import tokenizers as tk
    import transformers

    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"], show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 20, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|pad|>")


def llama(vocab_size: int, seed: int = 0):
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config)


@functools.cache
def tiny_llama() -> str:
    """A folder with a tiny Llama and its own tokenizer (what model.source loads)."""
    folder = _folder("retain-tiny-llama-")
    tokenizer = tiny_tokenizer()
    llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@functools.cache
def without_tokenizer() -> str:
    folder = _folder("retain-tiny-notok-")
    llama(64).save_pretrained(folder)
    return folder


@functools.cache
def encoder_only() -> str:
    """A BERT folder (with a tokenizer): loadable, but not a causal language model."""
    import transformers

    folder = _folder("retain-tiny-bert-")
    config = transformers.BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
