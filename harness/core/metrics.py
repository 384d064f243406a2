"""Continual-learning metrics from the score matrix.

``R[i][j]`` is the score on test experience ``j`` after training experience ``i``; ``b[j]``
is the untrained model's score on ``j``. For a metric where higher is better (accuracy)::

    average     = mean_j R[T-1][j]
    BWT         = mean_{j<T-1} (R[T-1][j] - R[j][j])        (Lopez-Paz & Ranzato, 2017)
    FWT         = mean_{j>0}   (R[j-1][j] - b[j])
    forgetting  = mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j])   (Chaudhry et al., 2018)

BWT and FWT are plain differences of the metric, so for a lower-is-better metric (loss,
perplexity) a *positive* BWT means the old tasks got worse. Forgetting is direction-aware:
it is always the drop from the best earlier score, so positive always means forgotten.
Undefined quantities (one task; no baseline) are None.

Language models are summarised on the log scale: averages, BWT, FWT and forgetting of bits per
token (and of the loss in nats), never of perplexity, whose arithmetic mean one blown-up task
swamps (a task at perplexity 10^6 makes the average of {20, 30, 10^6} a third of a million).
The perplexity summary is the exponential of the mean log-loss, i.e. the geometric mean of the
tasks' perplexities.

Forward transfer compares the score on task j just before it is trained with a reference that
has learned nothing of the stream, the model before the stream (``b``). That reference is only
meaningful in some settings (``fwt_note`` says why not, and FWT is then None):

* domain-IL classification: the untrained model is at chance on the same labels: reported;
* class-IL: a single head does not predict classes it has never been trained on, so
  ``R[j-1][j]`` is ~0 for every strategy and FWT is minus the untrained score: n/a;
* task-IL: task j's output units are untouched before task j: n/a;
* language models: against a pretrained model, reported; from scratch the untrained model
  predicts near-uniformly (bits ~ log2 vocabulary) and FWT would measure having learned the
  data's bytes at all, the random initialisation speaking: n/a.

docs/evaluation.md states every definition with a worked example.
"""

from __future__ import annotations

import math

LOWER_IS_BETTER = {"loss", "perplexity", "bits_per_token", "bits_per_byte"}  # evaluate's


def summary_metric(task: str, metric: str, per_byte: bool = False) -> str:
    """The metric a run's summary (and ``retain compare``) is read on: bits per token for a
    language model (bits per byte where the tokenizer is not byte-level, so tokenizers
    compare), the primary metric otherwise."""
    if task == "lm":
        return "bits_per_byte" if per_byte else "bits_per_token"
    return metric


def fwt_note(task: str, setting: str, pretrained: bool = False) -> str | None:
    """None where forward transfer means something in this setting; else why it is n/a."""
    if task == "lm":
        return None if pretrained else (
            "trained from scratch: the untrained model predicts near-uniformly, so FWT would "
            "measure learning the data's bytes at all (a pretrained model gives a reference)")
    if setting == "class-il":
        return ("class-IL: a single head does not predict classes before it is trained on "
                "them, so FWT is minus the untrained score, the same for every strategy")
    if setting == "task-il":
        return "task-IL: a task's output units are untrained before the task"
    return None


def average(R: list[list[float]]) -> float:
    return _mean(R[-1])


def average_seen(row: list[float], i: int) -> float:
    """The mean over the experiences seen so far (0..i) of one row, skipping empty test sets."""
    return _mean(row[: i + 1])


def backward_transfer(R) -> float | None:
    T = len(R)
    return _mean([R[T - 1][j] - R[j][j] for j in range(T - 1)]) if T > 1 else None


def forward_transfer(R, baseline) -> float | None:
    T = len(R)
    if T < 2 or baseline is None:
        return None
    return _mean([R[j - 1][j] - baseline[j] for j in range(1, T)])


def forgetting(R, higher_is_better: bool = True) -> float | None:
    T = len(R)
    if T < 2:
        return None
    drops = []
    for j in range(T - 1):
        earlier = [R[i][j] for i in range(j, T - 1)]
        best = max(earlier) if higher_is_better else min(earlier)
        drops.append(best - R[T - 1][j] if higher_is_better else R[T - 1][j] - best)
    return _mean(drops)


def summarize(matrices: dict, baseline: dict | None, task: str = "classification",
              setting: str = "domain-il", pretrained: bool = False) -> dict:
    """``{"<metric>/avg": ..., "<metric>/bwt": ..., "/fwt", "/forgetting"}`` for every metric
    but perplexity, which gets only ``perplexity/avg`` = exp(mean log-loss). FWT is None where
    ``fwt_note`` says it means nothing."""
    out = {}
    no_fwt = fwt_note(task, setting, pretrained) is not None
    for name, R in matrices.items():
        if not R or name == "perplexity":
            continue
        hib = name not in LOWER_IS_BETTER
        out[f"{name}/avg"] = average(R)
        out[f"{name}/bwt"] = backward_transfer(R)
        out[f"{name}/fwt"] = None if no_fwt else forward_transfer(R, (baseline or {}).get(name))
        out[f"{name}/forgetting"] = forgetting(R, hib)
    if "perplexity" in matrices and matrices.get("loss"):
        out["perplexity/avg"] = math.exp(min(average(matrices["loss"]), 50.0))
    return out


def confusion_scores(y_true, y_pred, n_classes: int) -> dict:
    """Accuracy and macro-F1 from a torch confusion matrix (evaluation's per-set path).

    Same definitions as scikit-learn's ``accuracy_score`` and ``f1_score(average="macro")``
    (macro over the labels present in ``y_true`` or ``y_pred``, an undefined F1 counting as 0;
    a test checks they agree), without scikit-learn's per-call input validation, which
    dominated evaluation on small streams.
    """
    import torch

    y_true = torch.as_tensor(y_true).long()
    return grouped_confusion_scores(y_true, y_pred, torch.zeros_like(y_true), 1, n_classes)[0]


def grouped_confusion_scores(y_true, y_pred, group, n_groups: int, n_classes: int) -> list[dict]:
    """``confusion_scores`` of each group of examples (``group``: its index per example), all
    groups in one pass: one confusion matrix per group from a single bincount."""
    import torch

    y_true, y_pred = torch.as_tensor(y_true).long(), torch.as_tensor(y_pred).long()
    group = torch.as_tensor(group).long()
    cells = n_classes * n_classes
    cm = torch.bincount(group * cells + y_true * n_classes + y_pred, minlength=n_groups * cells)
    cm = cm.reshape(n_groups, n_classes, n_classes).double()
    tp = cm.diagonal(dim1=1, dim2=2)
    total = cm.sum((1, 2))
    denom = cm.sum(2) + cm.sum(1)  # 2tp + fp + fn; 0 for a label neither true nor predicted
    present = denom > 0
    f1 = torch.where(present, 2 * tp / denom.clamp_min(1), 0.0).sum(1) / present.sum(1)
    accuracy = tp.sum(1) / total
    return [{"accuracy": a, "macro_f1": f} if n else {"accuracy": float("nan"),
                                                     "macro_f1": float("nan")}
            for a, f, n in zip(accuracy.tolist(), f1.tolist(), total.tolist())]


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")
