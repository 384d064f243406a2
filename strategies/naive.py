"""Naive fine-tuning: train on each experience in turn with nothing against forgetting.

The lower bound every strategy is compared with::

    retain run strategy=naive
"""

from dataclasses import dataclass

from harness.api import Strategy
from harness.registry import register_strategy


@dataclass
class NaiveConfig:
    pass


@register_strategy("naive", config=NaiveConfig)
class Naive(Strategy):
    """Fine-tune on each task in turn (lower bound)."""
