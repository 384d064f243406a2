"""The network's LoRA adapter as the per-task strategies use it (``lora_per_task``, ``olora``):
found, started afresh, merged into the base weights, copied out and back, through peft.

The network keeps the one adapter ``model.adapter=lora`` built (peft's ``default``); finished
tasks' adapters live in the strategy's state. So the network has the same parameters at every
task, and a checkpoint of it (trainable weights only, with adapters) fits any task's run.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.errors import UserError


def lora_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every peft LoRA layer in the network (none without peft)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    return [(name, m) for name, m in net.named_modules() if isinstance(m, LoraLayer)]


def require_lora(net: nn.Module, strategy: str) -> list[tuple[str, nn.Module]]:
    """The LoRA layers, or one line saying the strategy needs them."""
    layers = lora_layers(net)
    if not layers:
        raise UserError(f"{strategy} needs model.adapter=lora (a Hugging Face model with LoRA "
                        f"adapters: model.name=hf or smollm2, model.adapter=lora); "
                        f"model {type(getattr(net, 'model', net)).__name__} has none")
    return layers


def adapter_params(net: nn.Module) -> dict[str, Tensor]:
    """The trainable LoRA tensors by name (``...q_proj.lora_A.default.weight``)."""
    return {name: p for name, p in net.named_parameters() if p.requires_grad and "lora_" in name}


def snapshot(params: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in params.items()}


@torch.no_grad()
def write(params: dict[str, Tensor], values: dict[str, Tensor]) -> None:
    for name, p in params.items():
        p.copy_(values[name])


def restart(layers) -> None:
    """A fresh adapter: peft's own initialisation (A random, B zero: no change yet)."""
    for _, layer in layers:
        for adapter in layer.active_adapters:
            layer.reset_lora_parameters(adapter, True)


@torch.no_grad()
def merge(layers) -> dict[str, Tensor]:
    """Add each adapter's update (peft's ``get_delta_weight``) to its frozen base weight;
    returns the merged base weights by parameter name, for the strategy's state."""
    merged = {}
    for name, layer in layers:
        base = layer.get_base_layer()
        for adapter in layer.active_adapters:
            base.weight += layer.get_delta_weight(adapter).to(base.weight.dtype)
        merged[f"{name}.base_layer.weight"] = base.weight.detach().clone()
    return merged


@torch.no_grad()
def write_base(net: nn.Module, weights: dict[str, Tensor]) -> None:
    """Put merged base weights (``merge``'s result, from a checkpoint) back into the network."""
    for name, value in weights.items():
        net.get_parameter(name).copy_(value)


def down_projections(layers) -> list[Tensor]:
    """Each layer's LoRA ``A`` (rank x input): the input subspace the adapter reads."""
    return [layer.lora_A[adapter].weight for _, layer in layers
            for adapter in layer.active_adapters if adapter in layer.lora_A]
