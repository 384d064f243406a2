"""Evaluate the network on every test experience: the row of the score matrix.

Under DDP each rank scores a disjoint shard (no padding duplicates) and the sums are
all-reduced, so every test example counts exactly once. Language modelling reports token
accuracy, mean loss (nats), perplexity and bits per token; classification reports accuracy
and macro-F1 from a confusion matrix of the gathered predictions (``metrics.confusion_scores``,
tested equal to scikit-learn's).
"""

from __future__ import annotations

import contextlib
import math

import torch

from harness.data import BatchLoader, TaskData
from harness.distributed import DIST
from harness.metrics import confusion_scores
from harness.network import IGNORE, Network


@torch.no_grad()
def evaluate(net: Network, datasets: list[TaskData], batch_size: int,
             precision: str = "32-true") -> dict[str, list[float]]:
    """``{metric: [score on experience j for j in ...]}``."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    rows: dict[str, list[float]] = {}
    try:
        for data in datasets:
            net.model.reset_memory()
            loader = BatchLoader(data, batch_size, shuffle=False, rank=DIST.rank,
                                 world_size=DIST.world_size)
            with _autocast(device, precision):
                scores = (_score_lm if net.classifier is None else _score_classes)(
                    net, loader, device)
            for name, value in scores.items():
                rows.setdefault(name, []).append(value)
    finally:
        net.train(was_training)
    return rows


def _score_lm(net: Network, loader, device) -> dict[str, float]:
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, tokens
    for batch in loader:
        batch = batch.to(device)
        logits = net(batch.x, batch.t).logits.float()
        mask = batch.y != IGNORE
        target = batch.y[mask]
        flat = logits[mask]
        sums[0] += torch.nn.functional.cross_entropy(flat, target, reduction="sum").double()
        sums[1] += (flat.argmax(-1) == target).sum()
        sums[2] += mask.sum()
    DIST.all_reduce_(sums)
    loss = (sums[0] / sums[2].clamp_min(1)).item()
    return {"accuracy": (sums[1] / sums[2].clamp_min(1)).item(), "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)), "bits_per_token": loss / math.log(2)}


def _score_classes(net: Network, loader, device) -> dict[str, float]:
    preds, labels, loss = [], [], torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        batch = batch.to(device)
        logits = net(batch.x, batch.t).logits.float()
        loss[0] += torch.nn.functional.cross_entropy(logits, batch.y, reduction="sum").double()
        loss[1] += len(batch)
        preds.append(logits.argmax(-1).cpu())
        labels.append(batch.y.cpu())
    DIST.all_reduce_(loss)
    pred = DIST.all_gather_cat(torch.cat(preds) if preds else torch.empty(0, dtype=torch.long))
    true = DIST.all_gather_cat(torch.cat(labels) if labels else torch.empty(0, dtype=torch.long))
    scores = confusion_scores(true, pred, net.spec.n_classes)
    scores["loss"] = (loss[0] / loss[1].clamp_min(1)).item()
    return scores


def _autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision.startswith(("bf16", "16")):
        dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()
