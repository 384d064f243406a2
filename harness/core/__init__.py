"""The training core: the network and its heads, the continual system (one training step),
the two engines that fit it on an experience (the lean loop, Lightning's Trainer), stopping and
resuming inside a task, evaluation and the continual-learning metrics.

Imports ``harness.api``, ``harness.config`` and ``harness.runtime``; nothing above it.
"""
