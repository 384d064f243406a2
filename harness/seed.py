"""One seed for Python's, NumPy's and torch's generators, as Lightning's ``seed_everything``.

Written out so that a run on the lean engine does not import Lightning for it. It also sets
``PL_GLOBAL_SEED``: under DDP, Lightning re-seeds each rank from it (``reset_seed``), so both
engines start every process from the same generator states.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device's too
    os.environ["PL_SEED_WORKERS"] = "0"
