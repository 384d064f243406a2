"""Evaluate the network on every test experience: the row of the score matrix.

Under DDP each rank scores a disjoint shard (no padding duplicates) and the sums are
all-reduced, so every test example counts exactly once. Language modelling reports token
accuracy, mean loss (nats), perplexity and bits per token, and bits per byte when the
scenario's tokenizer is not byte-level (``token_bytes``: the UTF-8 bytes of each id), so runs
with different tokenizers compare; classification reports accuracy
and macro-F1 from a confusion matrix of the gathered predictions (``metrics.confusion_scores``,
tested equal to scikit-learn's).

A classifier without memory on one process is scored on all test sets in one pass: batches
run across the sets' boundaries and one bincount gives every set's confusion matrix. On
Split-Digits that is 4 forward passes an evaluation instead of 5 (one per set) and a fraction
of the bookkeeping. Models that carry memory between calls (``reset_memory``) are scored set by
set, each from a cleared memory.
"""

from __future__ import annotations

import contextlib
import math

import torch

from harness.api import IGNORE, BatchLoader, TaskData, carries_memory
from harness.core.metrics import confusion_scores, grouped_confusion_scores
from harness.core.network import Network
from harness.runtime.distributed import DIST

# Most logits one evaluation batch may hold (float32 elements, 256 MB): a pretrained LM's
# vocabulary of 50k ids times 128 positions times the default 128 rows would be 3.2 GB.
LOGIT_BUDGET = 2**26


@torch.no_grad()
def evaluate(net: Network, datasets: list[TaskData], batch_size: int,
             precision: str = "32-true", token_bytes=None,
             ticker=None) -> dict[str, list[float]]:
    """``{metric: [score on experience j for j in ...]}``; ``ticker``
    (``harness.runtime.progress.Ticker``) counts the batches, for progress lines."""
    tick = ticker.step if ticker is not None else _no_tick
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    rows: dict[str, list[float]] = {}
    try:
        if net.classifier is not None and DIST.world_size == 1 and not carries_memory(net.model):
            datasets = list(datasets)
            with _autocast(device, precision):
                for scores in _score_classes_together(net, datasets, batch_size, device, tick):
                    for name, value in scores.items():
                        rows.setdefault(name, []).append(value)
            return rows
        batch_size = lm_batch_size(net, batch_size)
        for data in datasets:
            net.model.reset_memory()
            loader = BatchLoader(data, batch_size, shuffle=False, rank=DIST.rank,
                                 world_size=DIST.world_size)
            with _autocast(device, precision):
                scores = (_score_classes(net, loader, device, tick)
                          if net.classifier is not None
                          else _score_lm(net, loader, device, token_bytes, tick))
            for name, value in scores.items():
                rows.setdefault(name, []).append(value)
    finally:
        net.train(was_training)
        if ticker is not None:
            ticker.close()
    return rows


def lm_batch_size(net: Network, batch_size: int) -> int:
    """The evaluation batch, smaller where its logits would pass ``LOGIT_BUDGET`` (sums do not
    depend on it). A model carrying memory keeps its batches: memory flows between them."""
    spec = net.spec
    if net.classifier is not None or carries_memory(net.model):
        return batch_size
    return max(1, min(batch_size, LOGIT_BUDGET // max(spec.seq_len * spec.vocab_size, 1)))


def eval_batches(net: Network, datasets: list[TaskData], batch_size: int) -> int:
    """Batches ``evaluate`` reads on this rank (what its ticker counts to)."""
    if net.classifier is None:
        batch_size = lm_batch_size(net, batch_size)
    return sum(len(BatchLoader(d, batch_size, shuffle=False, rank=DIST.rank,
                               world_size=DIST.world_size)) for d in datasets)


def _no_tick(n: int = 1) -> None:
    pass


def _score_lm(net: Network, loader, device, token_bytes=None, tick=_no_tick) -> dict[str, float]:
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct, tokens, bytes
    if token_bytes is not None:
        token_bytes = torch.as_tensor(token_bytes, dtype=torch.float64, device=device)
    for batch in loader:
        batch = batch.to(device)
        logits = net(batch.x, batch.t).logits.float()
        mask = batch.y != IGNORE
        target = batch.y[mask]
        flat = logits[mask]
        sums[0] += torch.nn.functional.cross_entropy(flat, target, reduction="sum").double()
        sums[1] += (flat.argmax(-1) == target).sum()
        sums[2] += mask.sum()
        if token_bytes is not None:
            sums[3] += token_bytes[target].sum()
        tick()
    DIST.all_reduce_(sums)
    loss = (sums[0] / sums[2].clamp_min(1)).item()
    scores = {"accuracy": (sums[1] / sums[2].clamp_min(1)).item(), "loss": loss,
              "perplexity": math.exp(min(loss, 50.0)), "bits_per_token": loss / math.log(2)}
    if token_bytes is not None:
        scores["bits_per_byte"] = (sums[0] / sums[3].clamp_min(1)).item() / math.log(2)
    return scores


def _score_classes(net: Network, loader, device, tick=_no_tick) -> dict[str, float]:
    preds, labels, loss = [], [], torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        batch = batch.to(device)
        logits = net(batch.x, batch.t).logits.float()
        loss[0] += torch.nn.functional.cross_entropy(logits, batch.y, reduction="sum").double()
        loss[1] += len(batch)
        preds.append(logits.argmax(-1).cpu())
        labels.append(batch.y.cpu())
        tick()
    DIST.all_reduce_(loss)
    pred = DIST.all_gather_cat(torch.cat(preds) if preds else torch.empty(0, dtype=torch.long))
    true = DIST.all_gather_cat(torch.cat(labels) if labels else torch.empty(0, dtype=torch.long))
    scores = confusion_scores(true, pred, net.spec.n_classes)
    scores["loss"] = (loss[0] / loss[1].clamp_min(1)).item()
    return scores


def _score_classes_together(net: Network, datasets: list[TaskData], batch_size: int,
                            device, tick=_no_tick) -> list[dict[str, float]]:
    """``_score_classes`` of every dataset, read in one pass of batches that cross them."""
    if not datasets:
        return []
    preds, losses = [], []
    data = TaskData.cat(datasets)
    for batch in BatchLoader(data, batch_size, shuffle=False):
        batch = batch.to(device)
        logits = net(batch.x, batch.t).logits.float()
        losses.append(torch.nn.functional.cross_entropy(logits, batch.y, reduction="none"))
        preds.append(logits.argmax(-1))
        tick()
    sizes = torch.tensor([len(d) for d in datasets])
    owner = torch.repeat_interleave(torch.arange(len(datasets)), sizes)
    labels = data.y
    pred = torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)
    loss = torch.zeros(len(datasets), dtype=torch.float64)
    if losses:
        loss.index_add_(0, owner, torch.cat(losses).double().cpu())
    rows = grouped_confusion_scores(labels, pred, owner, len(datasets), net.spec.n_classes)
    for row, total, n in zip(rows, loss.tolist(), sizes.tolist()):
        row["loss"] = total / max(n, 1)
    return rows


def _autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision.startswith(("bf16", "16")):
        dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()
