"""Built-in task streams, declared lazily: importing this package imports neither torch nor
avalanche. Each name maps to one module whose ``build(cfg, seed)`` returns a ``Scenario``."""

from harness.registry import SCENARIOS

SCENARIOS.declare("split-digits", "scenarios.split_digits",
                  "class-IL sklearn digits (8x8), 5 experiences of 2 classes")
SCENARIOS.declare("text-domains", "scenarios.text_domains",
                  "domain-IL byte-level LM: Python code, KJV Bible, English dialogue (default)")
