"""The text tokenizer a model may lend to the text scenarios, so they encode with its vocabulary.

A model class that reads text through its own tokenizer (a pretrained LM) defines the
classmethod ``text_tokenizer(cfg) -> TextTokenizer``; a text scenario whose ``tokenizer``
option is ``auto`` (the model's when it has one, else bytes) or ``model`` receives it from the
framework as the builder's ``tokenizer=`` argument (``harness.core.build``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class TextTokenizer(Protocol):
    name: str  # how results and errors name it (the model and its source)
    vocab_size: int  # ids are 0 .. vocab_size - 1
    eos_id: int  # separates documents packed into one stream
    pad_id: int  # fills short inputs; never produced by encoding text

    def fingerprint(self) -> str:
        """A digest of the vocabulary and rules: the scenarios' preparation cache key."""

    def join_documents(self, docs: list[str]) -> np.ndarray:
        """One id stream: every document's ids followed by ``eos_id``."""

    def encode(self, text: str) -> np.ndarray:
        """The ids of one text (no special tokens)."""

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each id stands for (EOS counts one, PAD none): bits per byte."""
