"""Per-experience task data from prepared arrays: next-token windows or labelled examples."""

from __future__ import annotations

import numpy as np
import torch

from harness.api import TaskData
from scenarios.tokenize import IGNORE, PAD


def lm_task_data(windows, task: int, pad_id: int = PAD) -> TaskData:
    """Next-token TaskData from packed ``(N, T + 1)`` windows (see scenarios.tokenize.pack).

    A padding target is never a token to predict: it becomes -100 (no loss).
    """
    w = torch.from_numpy(np.asarray(windows).astype(np.int64))
    y = w[:, 1:].clone()
    y[y == pad_id] = IGNORE
    return TaskData(w[:, :-1].contiguous(), y, torch.full((len(w),), task, dtype=torch.long))


def class_task_data(x, y, task: int) -> TaskData:
    """Classification TaskData: inputs as given (float features or long tokens), long labels.

    Arrays are copied: memory-mapped cache arrays and the process-wide digits split are
    read-only, torch needs writable memory, and a tensor sharing them could change them.
    """
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))
    y = torch.from_numpy(np.array(y, dtype=np.int64))
    return TaskData(x, y, torch.full((len(y),), task, dtype=torch.long))
