"""retain's contracts: what every model, strategy and scenario implements or receives.

Plug-ins (``harness.models``, ``strategies``, ``scenarios`` and components from outside the
repository) import these names from here. This package imports nothing of retain but
``harness.errors``, so depending on it never pulls in the harness; the harness in turn reaches
plug-ins only through ``harness.registry``.

* data: ``DataSpec`` (a scenario's data, handed to every model), ``TaskData`` (one split of
  one experience as tensors), ``Batch``, ``BatchLoader``, ``IGNORE``;
* models: ``SequenceModel`` (the protocol), ``Outputs`` (logits and hidden states),
  ``misfit`` (why a model cannot take a scenario's data);
* strategies: ``Strategy`` (the hooks), ``Context`` (what a hook may read), ``Penalty``,
  ``FlopCount`` (``ctx.flops``: how repeated after-task passes are counted);
* scenarios: ``Scenario`` (a task stream as tensors and as an Avalanche benchmark).
"""

from harness.api.data import IGNORE, Batch, BatchLoader, DataSpec, TaskData
from harness.api.model import KINDS, TASKS, Outputs, SequenceModel, carries_memory, misfit
from harness.api.scenario import SETTINGS, Scenario
from harness.api.strategy import (
    UNCOUNTED,
    Collectives,
    Context,
    FlopCount,
    Penalty,
    Strategy,
    System,
    trainable,
)

__all__ = [
    "IGNORE", "KINDS", "SETTINGS", "TASKS", "UNCOUNTED", "Batch", "BatchLoader", "Collectives",
    "Context", "DataSpec", "FlopCount", "Outputs", "Penalty", "Scenario", "SequenceModel",
    "Strategy", "System", "TaskData", "carries_memory", "misfit", "trainable",
]
