"""A multi-layer perceptron over feature vectors: the classic continual-learning baseline
(e.g. 64-256-10 on Split-Digits, the setting of the Avalanche reference numbers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.api import DataSpec, SequenceModel
from harness.registry import register_model


@dataclass
class MLPConfig:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256], metadata={
        "help": "hidden sizes ([]: a linear classifier)", "min": 1})
    dropout: float = field(default=0.0, metadata={"help": "dropout after each hidden layer",
                                                  "min": 0, "below": 1})


@register_model("mlp", config=MLPConfig)
class MLP(SequenceModel):
    """Feed-forward network; the system's classifier head is its output layer."""

    inputs, tasks = ("vectors",), ("classification",)

    def __init__(self, cfg: MLPConfig, spec: DataSpec):
        super().__init__()
        layers, width = [], spec.input_dim
        for size in cfg.hidden:
            # Identity keeps the layer indices (and checkpoints) of dropout > 0 and costs nothing
            dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
            layers += [nn.Linear(width, size), nn.ReLU(), dropout]
            width = size
        self.body = nn.Sequential(*layers)
        self.hidden_size = width

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() > 2:
            x = x.flatten(1)
        return self.body(x if x.dtype == torch.float32 else x.float())
