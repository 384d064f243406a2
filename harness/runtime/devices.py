"""Whether CUDA is usable, asked once per process.

Under the Trainer engine Lightning is imported, which sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``
(so that forking stays safe); from then on every ``torch.cuda.is_available()`` loads NVML
again, many times a run (RNG state, peak memory, devices; the cost is in docs/performance.md).
The lean engine never imports Lightning, but asks as often.
Which devices a process can see does not change while it runs.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def cuda_available() -> bool:
    return torch.cuda.is_available()
