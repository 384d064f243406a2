"""Parameter-efficient adapters on a Hugging Face model, through the ``peft`` library.

With an adapter the base weights are frozen (``requires_grad=False``) and only the adapter's
train: the optimizer, every strategy (``harness.api.trainable``) and the checkpoint see those
alone, and the checkpoint records a fingerprint of the frozen rest instead of its bytes.
"""

from __future__ import annotations

import warnings

from torch import nn

from harness.errors import UserError

ADAPTERS = ("none", "lora", "osf")


def with_adapter(lm: nn.Module, cfg, source: str) -> nn.Module:
    """``lm`` wrapped in the adapter ``cfg.adapter`` names (a peft model), or ``lm`` itself."""
    if cfg.adapter == "none":
        return lm
    try:
        import peft
    except ImportError as err:
        raise UserError("model.adapter=lora needs the peft package: "
                        "pip install 'retain[pretrained]'") from err
    config = peft.LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                             lora_dropout=cfg.lora_dropout, bias="none",
                             target_modules=list(cfg.lora_targets) or None)
    if cfg.adapter == "osf":  # peft's Orthogonal Subspace Fine-tuning (Nayak et al. 2025)
        config = peft.OSFConfig(effective_rank=cfg.osf_preserved,
                                target_modules=list(cfg.lora_targets) or None)
    try:
        with warnings.catch_warnings():  # peft calls an API transformers has deprecated
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(lm, config)
    except ValueError as err:  # no module matches, or no default for this architecture
        first = str(err).strip().splitlines()[0]
        raise UserError(f"model.lora_targets={list(cfg.lora_targets)} on {source}: {first}; "
                        f"modules LoRA can wrap here: {', '.join(linear_names(lm))}") from None


def linear_names(lm: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (what ``lora_targets`` matches)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in lm.named_modules()
                   if isinstance(module, nn.Linear)})
