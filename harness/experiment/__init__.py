"""One experiment: the task loop ``run(cfg)`` and everything it leaves behind (the run
directory, checkpoints, results, W&B tracking, the printed report, the environment record).

Imports ``harness.core`` and below, and reaches components through ``harness.registry``.
"""
