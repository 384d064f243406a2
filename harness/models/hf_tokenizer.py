"""A Hugging Face tokenizer as the ``TextTokenizer`` the text scenarios encode with.

Why: a pretrained LM fed single bytes is fed text it never saw in pretraining; through its own
tokenizer it starts from its real perplexity. Bits per byte needs each id's byte count:
byte-level BPEs (GPT-2, Llama 3, SmolLM2, Qwen) spell every byte as one printable character,
SentencePiece vocabularies (Llama 2, Mistral) write spaces as U+2581 and raw bytes as
``<0xNN>``; special tokens count no bytes, except the document separator (one, as EOS in the
byte tokenizer).
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from harness.errors import UserError

BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def byte_symbols() -> list[str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


class HFTextTokenizer:
    """Documents to ids with a transformers tokenizer; its EOS separates documents."""

    def __init__(self, tok, name: str):
        self.tok, self.name = tok, name
        self.vocab_size = len(tok)
        if tok.eos_token_id is None:
            raise UserError(f"{name}: its tokenizer has no end-of-text token to separate "
                            "documents; set tokenizer.eos_token and save it again")
        self.eos_id = int(tok.eos_token_id)
        self.pad_id = self._pad()
        backend = getattr(tok, "backend_tokenizer", None)
        self._backend = backend
        self._json = backend.to_str() if backend is not None else None

    def _pad(self) -> int:
        """The pad token, else another special token: never the separator, whose targets
        count, and never an id that encoding text produces."""
        if self.tok.pad_token_id is not None and self.tok.pad_token_id != self.eos_id:
            return int(self.tok.pad_token_id)
        others = [i for i in self.tok.all_special_ids if i != self.eos_id]
        return int(others[0]) if others else self.eos_id

    def fingerprint(self) -> str:
        body = self._json or json.dumps(sorted(self.tok.get_vocab().items()))
        return hashlib.sha256(f"{type(self.tok).__name__}\n{body}".encode()).hexdigest()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._ids([text])[0], dtype=np.int32)

    def join_documents(self, docs: list[str]) -> np.ndarray:
        if not docs:
            return np.zeros(0, dtype=np.int32)
        return np.concatenate([np.asarray([*ids, self.eos_id], dtype=np.int32)
                               for ids in self._ids(docs)])

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if self._backend is not None:  # no max-length warnings, no Python-side special tokens
            return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        return self.tok(texts, add_special_tokens=False)["input_ids"]

    def token_bytes(self) -> list[int]:
        tokens = self.tok.convert_ids_to_tokens(list(range(self.vocab_size)))
        special = set(self.tok.all_special_ids)
        if self._byte_level():
            symbols = set(byte_symbols())

            def count(token: str) -> int:
                return sum(1 if ch in symbols else len(ch.encode("utf-8")) for ch in token)
        else:
            count = _piece_count
        sizes = [0 if i in special or t is None else count(t) for i, t in enumerate(tokens)]
        sizes[self.eos_id] = 1
        return sizes

    def _byte_level(self) -> bool:
        decoder = json.loads(self._json).get("decoder") if self._json else None
        return '"ByteLevel"' in json.dumps(decoder)


def _piece_count(token: str) -> int:
    """Bytes of a SentencePiece-style (or plain) token."""
    if BYTE_PIECE.fullmatch(token):
        return 1
    return len(token.replace("\u2581", " ").encode("utf-8"))
