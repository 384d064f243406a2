"""Any Hugging Face causal LM from a folder, in the SequenceModel protocol, optionally with LoRA.

    retain run model.name=hf model.source=/path/to/model model.adapter=lora trainer.lr=2e-4

``model.source`` is a folder ``save_pretrained`` wrote (config, weights, tokenizer), or a Hub
name when online. Why a model of its own rather than more options on ``smollm2``: any decoder
that ``AutoModelForCausalLM`` loads fits (Llama, Qwen, Mistral, GPT-2, ...), and ``smollm2`` is
this model with the bundled GGUF as its default source.

Tokens. The text scenarios encode with the model's own tokenizer by default
(``scenario.tokenizer=auto``: ``text_tokenizer`` lends it to them), so the model reads the
pieces it was pretrained on and scores over its own vocabulary. With a byte-level scenario
(``scenario.tokenizer=byte``) each byte maps to the model's single-byte token, and it
predicts over those ids only. ``model.vocab`` says which (``auto``: from the scenario).

Precision: ``model.dtype`` loads the weights in float32 or bfloat16 (LoRA weights stay float32,
as peft keeps them); ``model.gradient_checkpointing`` recomputes activations in backward.
``model.adapter=lora`` freezes the base and trains LoRA adapters (``harness.models.hf_adapter``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import DataSpec, SequenceModel
from harness.errors import UserError
from harness.models import hf_load
from harness.models.hf_adapter import ADAPTERS, with_adapter
from harness.models.hf_tokenizer import HFTextTokenizer, byte_symbols
from harness.registry import register_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
VOCABS = ("auto", "bytes", "model")
BYTE_VOCAB = 260  # at most this many ids: a byte-level scenario (256 bytes and specials)


@dataclass
class HFCausalConfig:
    name: str = "hf"
    source: str = field(default="", metadata={
        "help": "folder of a Hugging Face causal LM (config, weights, tokenizer) or a Hub name"})
    vocab: str = field(default="auto", metadata={
        "help": "model: the scenario is encoded with the model's tokenizer; bytes: byte-level "
                "scenario ids mapped to single-byte tokens; auto: whichever the scenario is",
        "choices": VOCABS})
    dtype: str = field(default="float32", metadata={
        "help": "precision the weights are loaded in", "choices": tuple(DTYPES)})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in backward to save memory"})
    adapter: str = field(default="none", metadata={
        "help": "lora: train LoRA adapters (peft) on a frozen base; osf: peft's orthogonal "
                "subspace fine-tuning (osf_preserved); none: train every weight",
        "choices": ADAPTERS})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r", "min": 1, "max": 4096})
    lora_alpha: float = field(default=16.0, metadata={
        "help": "LoRA scale numerator: updates are scaled by alpha / rank", "above": 0.0,
        "max": 1e6})
    lora_dropout: float = field(default=0.0, metadata={
        "help": "dropout on the LoRA input", "min": 0.0, "below": 1.0})
    osf_preserved: float = field(default=0.5, metadata={
        "help": "adapter=osf: fraction of each weight's singular directions kept frozen (the "
                "top ones); updates stay orthogonal to them (lora_targets picks the modules)",
        "above": 0.0, "below": 1.0})
    lora_targets: list[str] = field(default_factory=list, metadata={
        "help": "names (suffixes) of the modules LoRA wraps, e.g. [q_proj,v_proj]; [] = PEFT's "
                "default for the architecture"})


@register_model("hf", config=HFCausalConfig)
class HFCausalLM(SequenceModel):
    """A pretrained causal LM loaded with transformers (and wrapped by peft with an adapter)."""

    pretrained = True  # the model before the stream is a meaningful FWT reference

    @classmethod
    def locate(cls, cfg) -> tuple[str, str | None]:
        """(source, GGUF file name or None) to load from."""
        if not cfg.source:
            raise UserError(f"model {cfg.name} needs model.source=/path/to/folder (a Hugging "
                            "Face causal LM saved with save_pretrained) or a Hub name")
        hf_load.check_folder(cfg.source)
        return str(cfg.source), None

    @classmethod
    def text_tokenizer(cls, cfg) -> HFTextTokenizer:
        """The model's tokenizer for the text scenarios (``harness.api.tokenizer``)."""
        source, gguf = cls.locate(cfg)
        hf_load.causal_config(source, gguf)
        return HFTextTokenizer(hf_load.tokenizer(source, gguf), f"{cfg.name} ({source})")

    def __init__(self, cfg: HFCausalConfig, spec: DataSpec):
        super().__init__()
        tf = hf_load.transformers_module()
        source, gguf = self.locate(cfg)
        config = hf_load.causal_config(source, gguf)
        self.tokenizer = hf_load.tokenizer(source, gguf)
        self.vocab = _vocab_mode(cfg, spec, len(self.tokenizer), config.vocab_size, source)
        kwargs = {"gguf_file": gguf} if gguf else {}
        lm = hf_load.load(tf.AutoModelForCausalLM, source, dtype=DTYPES[cfg.dtype], **kwargs)
        lm.config.use_cache = False  # training and scoring never decode step by step
        if cfg.gradient_checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lm = with_adapter(lm, cfg, source)
        self.cfg, self.hidden_size = cfg, config.hidden_size
        token_of = self._byte_tokens(spec.vocab_size) if self.vocab == "bytes" else None
        self.register_buffer("token_of", token_of, persistent=False)
        self.n_ids = spec.vocab_size  # the scenario's ids: logits cover those only

    @property
    def causal(self):
        """The transformers model (inside the peft wrapper, whose layers it shares)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def _byte_tokens(self, vocab_size: int) -> Tensor:
        """Model token id of each byte-level id: its single-byte token; end-of-text otherwise.

        SmolLM2 has single-byte tokens for all bytes but 20: the ones that never occur in
        valid UTF-8 (192, 193, 245-255) and a few control characters. Those, PAD and EOS map
        to end-of-text (``self.missing_bytes`` lists the bytes).
        """
        eos, unk = self.tokenizer.eos_token_id, self.tokenizer.unk_token_id
        ids = self.tokenizer.convert_tokens_to_ids(byte_symbols())
        self.missing_bytes = [b for b, i in enumerate(ids) if i is None or i == unk]
        if len(self.missing_bytes) > 32:
            raise UserError(f"{self.cfg.source or self.cfg.name}: its vocabulary lacks "
                            "single-byte tokens, so byte-level scenarios cannot feed it; use "
                            "scenario.tokenizer=model")
        ids = [eos if b in self.missing_bytes else i for b, i in enumerate(ids)]
        return torch.tensor([*ids, *[eos] * max(0, vocab_size - 256)][:vocab_size])

    def forward(self, x: Tensor) -> Tensor:
        ids = x if self.token_of is None else self.token_of[x]
        out = self.causal.base_model(input_ids=ids, use_cache=False)
        return out.last_hidden_state  # after the final norm

    def lm_logits(self, hidden: Tensor) -> Tensor:
        head = self.causal.get_output_embeddings()
        rows = self.token_of if self.token_of is not None else slice(0, self.n_ids)
        bias = None if head.bias is None else head.bias[rows]
        # float32 logits: the loss and perplexity stay exact when the weights are bfloat16
        return F.linear(hidden, head.weight[rows], bias).float()


def _vocab_mode(cfg, spec: DataSpec, tokenizer_ids: int, model_ids: int, source: str) -> str:
    """``bytes`` or ``model``: how the scenario's ids reach the model, checked against it."""
    mode = cfg.vocab
    if mode == "auto":
        mode = "model" if spec.vocab_size == tokenizer_ids else "bytes"
    if mode == "bytes" and not 0 < spec.vocab_size <= BYTE_VOCAB:
        raise UserError(f"model {cfg.name} ({source}) reads the scenario's ids as bytes, but "
                        f"its vocabulary has {spec.vocab_size} ids, not at most {BYTE_VOCAB}; "
                        f"encode the scenario with the model's tokenizer "
                        f"(scenario.tokenizer=model, {tokenizer_ids} ids)")
    if mode == "model" and not 0 < spec.vocab_size <= model_ids:
        raise UserError(f"model {cfg.name} ({source}) has {model_ids} token ids, but the "
                        f"scenario's vocabulary has {spec.vocab_size}; encode it with the "
                        "model's tokenizer (scenario.tokenizer=model)")
    return mode
