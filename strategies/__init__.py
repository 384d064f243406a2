"""Continual-learning strategies: one plug-in per file, declared here by name.

Declarations are lazy: listing them imports nothing heavy. See ``harness.api.strategy`` for the
protocol and ``harness.registry`` for how registration works.
"""

from harness.registry import STRATEGIES

STRATEGIES.declare("naive", "strategies.naive", "fine-tune on each task in turn (lower bound)")
STRATEGIES.declare("joint", "strategies.joint", "train on all tasks so far (upper bound)")
STRATEGIES.declare("cumulative", "strategies.joint", "alias of joint (Avalanche's name)")
STRATEGIES.declare("replay", "strategies.replay", "experience replay from a bounded memory")
STRATEGIES.declare("ewc", "strategies.ewc", "elastic weight consolidation (separate or online)")
STRATEGIES.declare("distill", "strategies.distill", "learning without forgetting (KL to a teacher)")
STRATEGIES.declare("der", "strategies.der", "dark experience replay (DER / DER++)")
STRATEGIES.declare("si", "strategies.si", "synaptic intelligence")
STRATEGIES.declare("agem", "strategies.agem", "averaged gradient episodic memory")
STRATEGIES.declare("sparse_memory", "strategies.sparse_memory",
                   "train only the memory slots most specific to a task (TF-IDF)")
