"""Byte-level tokenizer and sequence packing: nothing to download, any language, any file.

Ids 0..255 are the UTF-8 bytes, ``PAD`` = 256 pads classification inputs, ``EOS`` = 257
separates documents when they are packed into one stream. With 258 symbols the embedding stays
a small part of a tiny model, and bits per byte is simply the loss in bits per token.

A pretrained model reads text through its own tokenizer instead: the text scenarios' option
``tokenizer`` (``text_tokenizer_option``) is ``auto`` by default, which takes the model's
tokenizer when the model lends one (``harness.api.tokenizer``) and bytes otherwise.
"""

from __future__ import annotations

from dataclasses import field

import numpy as np

from harness.errors import UserError

PAD = 256
EOS = 257
VOCAB_SIZE = 258
IGNORE = -100  # target id that carries no loss (torch cross_entropy's ignore_index)


def text_tokenizer_option(choices=("auto", "byte", "model"), extra: str = ""):
    """A text scenario's ``tokenizer`` option: which ids the text becomes."""
    return field(default="auto", metadata={
        "help": "auto: the model's own tokenizer when it has one (pretrained LMs), else bytes; "
                "model: the model's tokenizer; byte: UTF-8 bytes" + extra
                + " (with a tokenizer other than bytes, *_tokens count bytes of text)",
        "choices": tuple(choices)})


def chosen_tokenizer(choice: str, lent):
    """The tokenizer a scenario encodes with: the model's (``lent``), or None for bytes."""
    if choice == "model" and lent is None:
        raise UserError("scenario.tokenizer=model needs a model with its own tokenizer "
                        "(smollm2, hf); use scenario.tokenizer=byte or auto")
    return lent if choice in ("auto", "model") else None


def encode_with(tok, text: str) -> np.ndarray:
    """Ids of ``text``: the model's tokenizer's, or UTF-8 bytes when ``tok`` is None."""
    return encode(text) if tok is None else tok.encode(text)


def join_with(tok, docs: list[str]) -> np.ndarray:
    """One id stream of documents, each followed by the tokenizer's (or the byte) EOS."""
    return join_documents(docs) if tok is None else tok.join_documents(docs)


def vocab_and_pad(tok) -> tuple[int, int]:
    """The DataSpec's vocabulary size and pad id for ``tok`` (None: bytes)."""
    return (VOCAB_SIZE, PAD) if tok is None else (tok.vocab_size, tok.pad_id)


def encode(text: str) -> np.ndarray:
    """UTF-8 bytes of ``text`` as uint16 ids (uint16 so PAD and EOS fit alongside)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)


def decode(ids) -> str:
    """Text of byte ids; PAD is dropped, EOS becomes a newline, broken UTF-8 is replaced."""
    ids = np.asarray(ids)
    out = np.where(ids == EOS, ord("\n"), ids)
    out = out[(out >= 0) & (out < 256)].astype(np.uint8)
    return out.tobytes().decode("utf-8", errors="replace")


def join_documents(docs: list[str]) -> np.ndarray:
    """One token stream: every document followed by EOS."""
    if not docs:
        return np.zeros(0, dtype=np.uint16)
    eos = np.array([EOS], dtype=np.uint16)
    return np.concatenate([part for d in docs for part in (encode(d), eos)])


def pack(stream: np.ndarray, seq_len: int, n_seqs: int | None = None,
         pad_tail: bool = False, pad: int = PAD) -> np.ndarray:
    """Cut a token stream into ``(N, seq_len + 1)`` windows that overlap by one token.

    Row ``r`` holds inputs ``row[:-1]`` and next-token targets ``row[1:]``, so every token of
    the stream is predicted exactly once. The incomplete tail is dropped, or with ``pad_tail``
    kept as a last window padded with PAD (PAD targets carry no loss: see lm_task_data), which
    small user data sets need so that no text is lost.
    """
    if pad_tail and len(stream) > 1 and (len(stream) - 1) % seq_len:
        fill = seq_len - (len(stream) - 1) % seq_len
        stream = np.concatenate([stream, np.full(fill, pad, dtype=stream.dtype)])
    n = (len(stream) - 1) // seq_len
    if n_seqs is not None:
        n = min(n, n_seqs)
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return stream[idx] if n else np.zeros((0, seq_len + 1), dtype=stream.dtype)


def pad_to(ids: np.ndarray, length: int, pad: int = PAD) -> np.ndarray:
    """Truncate or right-pad with ``pad`` to exactly ``length`` ids (classification inputs)."""
    out = np.full(length, pad, dtype=np.uint16 if ids.dtype == np.uint16 else np.int32)
    out[: min(length, len(ids))] = ids[:length]
    return out
