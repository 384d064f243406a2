"""A plug-in as a researcher would write one outside retain: one model, one strategy and one
scenario. Tests load it with ``plugins=[tests/data/plugin_example.py]``, and the conformance
suite (tests/test_conformance.py) checks its components like the built-in ones.

Its model and scenario configs leave out the ``name`` field: the registry adds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import DataSpec, Scenario, SequenceModel, Strategy, TaskData
from harness.registry import register_model, register_scenario, register_strategy


@dataclass
class CumMeanConfig:
    d_model: int = field(default=16, metadata={"help": "embedding size", "min": 1})


@register_model("example-cummean", config=CumMeanConfig)
class CumMean(SequenceModel):
    """Causal bag of tokens: a position's state is the mean of the embeddings up to it."""

    def __init__(self, cfg: CumMeanConfig, spec: DataSpec):
        super().__init__()
        self.embed = nn.Embedding(spec.vocab_size, cfg.d_model)
        self.mix = nn.Linear(cfg.d_model, cfg.d_model)
        self.hidden_size = cfg.d_model

    def forward(self, x: Tensor) -> Tensor:
        seen = torch.arange(1, x.shape[1] + 1, device=x.device).unsqueeze(-1)
        return torch.tanh(self.mix(self.embed(x).cumsum(1) / seen))

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.embed.weight)


@dataclass
class AnchorConfig:
    weight: float = field(default=0.1, metadata={"help": "pull towards the last task's weights",
                                              "min": 0.0})


@register_strategy("example_anchor", config=AnchorConfig)
class Anchor(Strategy):
    """L2 pull towards the weights the previous task ended with."""

    def __init__(self, cfg: AnchorConfig):
        super().__init__(cfg)
        self.anchor: dict[str, Tensor] = {}

    def loss_terms(self, ctx, batch, outputs) -> dict[str, Tensor]:
        if not self.anchor:
            return {}
        pull = sum(((p - self.anchor[n]) ** 2).sum() for n, p in ctx.trainable)
        return {"anchor": self.cfg.weight * pull}

    def after_task(self, ctx) -> None:
        self.anchor = {n: p.detach().clone() for n, p in ctx.trainable}

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.anchor.values())

    def state_dict(self) -> dict:
        return {"anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict) -> None:
        self.anchor = dict(state["anchor"])


@dataclass
class BlobsConfig:
    n_experiences: int = field(default=2, metadata={"help": "tasks of two new classes each",
                                                            "min": 1})
    n_train: int = field(default=48, metadata={"help": "training examples per class", "min": 1})
    n_test: int = field(default=16, metadata={"help": "test examples per class", "min": 1})
    dim: int = field(default=8, metadata={"help": "features per example", "min": 1})


@register_scenario("example-blobs", config=BlobsConfig)
def build(cfg: BlobsConfig, seed: int) -> Scenario:
    """Gaussian blobs, two new classes per task (class-incremental)."""
    g = torch.Generator().manual_seed(1234)  # fixed data: every run sees the same blobs
    n_classes = 2 * cfg.n_experiences
    centres = 3 * torch.randn(n_classes, cfg.dim, generator=g)

    def split(n: int) -> list[TaskData]:
        tasks = []
        for k in range(cfg.n_experiences):
            y = torch.tensor([2 * k, 2 * k + 1]).repeat_interleave(n)
            x = centres[y] + torch.randn(len(y), cfg.dim, generator=g)
            tasks.append(TaskData(x, y, torch.full((len(y),), k)))
        return tasks

    spec = DataSpec("vectors", "classification", input_dim=cfg.dim, n_classes=n_classes)
    return Scenario.from_splits(cfg.name, spec, [f"blobs {2 * k}+{2 * k + 1}"
                                                 for k in range(cfg.n_experiences)],
                                "class-il", split(cfg.n_train), split(cfg.n_test),
                                classes_per_task=[[2 * k, 2 * k + 1]
                                                  for k in range(cfg.n_experiences)])
