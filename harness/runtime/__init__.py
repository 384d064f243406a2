"""Where a run executes: DDP collectives and rank start-up, devices, seeds and RNG states,
progress lines, fault injection for tests. Imports only ``harness.config`` and
``harness.errors``.
"""
