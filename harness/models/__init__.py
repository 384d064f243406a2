"""Models: one language model (or baseline) per file, declared here by name.

Declarations are lazy: listing them imports nothing heavy. See ``harness.registry``.
"""

from harness.registry import MODELS

MODELS.declare("gpt", "harness.models.gpt", "decoder-only transformer baseline (SDPA, RoPE)")
MODELS.declare("xl", "harness.models.xl", "Transformer-XL segment recurrence (attention memory)")
MODELS.declare("rmt", "harness.models.rmt", "Recurrent Memory Transformer (memory tokens)")
MODELS.declare("knn", "harness.models.knn", "external key-value memory with kNN attention")
MODELS.declare("titans", "harness.models.titans",
               "Titans neural long-term memory learned at test time (MAC or MAG)")
MODELS.declare("memory_layer", "harness.models.memory_layer",
               "GPT with product-key memory layers in place of feed-forward blocks")
MODELS.declare("lstm", "harness.models.lstm", "recurrent LSTM baseline")
MODELS.declare("mlp", "harness.models.mlp", "multi-layer perceptron for vector inputs")
MODELS.declare("smollm2", "harness.models.pretrained", "pretrained SmolLM2-135M (offline)")
MODELS.declare("minilm", "harness.models.pretrained", "pretrained MiniLM sentence encoder")
