"""Random generators: one seed for Python's, NumPy's and torch's generators, as Lightning's
``seed_everything``, and their whole state for checkpoints (``rng_state`` / ``set_rng_state``).

Written out so that a run on the lean engine does not import Lightning for it. It also sets
``PL_GLOBAL_SEED``: under DDP, Lightning re-seeds each rank from it (``reset_seed``), so both
engines start every process from the same generator states.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from harness.runtime.devices import cuda_available


def seed_everything(seed: int) -> None:
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device's too
    os.environ["PL_SEED_WORKERS"] = "0"


def rng_state() -> dict:
    version, words, gauss = random.getstate()
    # Python's 625 state words as one tensor: pickled one by one they were half a small
    # model's checkpoint time.
    state = {"torch": torch.get_rng_state(),
             "python": (version, torch.tensor(words, dtype=torch.int64), gauss),
             "numpy": _numpy_state(np.random.get_state())}
    if cuda_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words.tolist() if isinstance(words, torch.Tensor)
                                    else words), gauss))  # a list in checkpoints before this one
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and cuda_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state(state) -> tuple:
    name, keys, pos, has_gauss, gauss = state  # keys: uint32 array; weights_only wants tensors
    return (name, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(gauss))

