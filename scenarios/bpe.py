"""Optional byte-level BPE (Hugging Face ``tokenizers``), trained on a stream's training split.

Why an option: byte tokens keep tiny models honest and need nothing, but a BPE shortens
sequences 2-4x, so a model sees more context per step. The tokenizer is trained only on the
training documents (never on validation or test text), and its JSON is stored in the prep cache
so every run of a sweep uses the identical vocabulary.

Id 0 is PAD and id 1 is EOS (the document separator); their strings are chosen so that no
natural text contains them.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from harness.errors import UserError

PAD_TOKEN, EOS_TOKEN = "<|retain-pad|>", "<|retain-eos|>"
PAD_ID, EOS_ID = 0, 1


def _tokenizers():
    if importlib.util.find_spec("tokenizers") is None:
        raise UserError("scenario.tokenizer=bpe needs the PyPI package 'tokenizers': "
                        "pip install tokenizers")
    import tokenizers

    return tokenizers


def train_bpe(texts: list[str], vocab_size: int) -> str:
    """A byte-level BPE of ``vocab_size`` ids (specials included) as its JSON string."""
    tk = _tokenizers()
    if vocab_size < 258 + 2:
        raise UserError(f"scenario.bpe_vocab_size must be at least 260, got {vocab_size}")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD_TOKEN, EOS_TOKEN], show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok.to_str()


class BPE:
    """Encoding with a trained BPE: documents to one EOS-separated id stream."""

    name = "bpe"
    pad_id, eos_id = PAD_ID, EOS_ID

    def __init__(self, tokenizer_json: str):
        self.tok = _tokenizers().Tokenizer.from_str(tokenizer_json)
        self.vocab_size = self.tok.get_vocab_size()

    def join_documents(self, docs: list[str]) -> np.ndarray:
        ids = [np.append(np.asarray(e.ids, dtype=np.int32), EOS_ID)
               for e in self.tok.encode_batch(docs, add_special_tokens=False)]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each id stands for, for bits per byte: a byte-level token's string has
        one character per byte; EOS counts one (a byte tokenizer's EOS is one symbol), PAD
        none (it is never predicted)."""
        lengths = [len(self.tok.id_to_token(i) or "") for i in range(self.vocab_size)]
        lengths[PAD_ID], lengths[EOS_ID] = 0, 1
        return lengths

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids if int(i) > EOS_ID])
