"""Metric formulas against matrices worked out by hand."""

import math

import numpy as np
import pytest

from harness.core import metrics

# R[i][j]: accuracy on task j after training task i.
R = [[0.9, 0.1, 0.2],
     [0.6, 0.8, 0.3],
     [0.5, 0.7, 0.9]]
B = [0.1, 0.2, 0.25]


def test_average_is_last_row_mean():
    assert metrics.average(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_backward_transfer_is_negative_when_old_tasks_drop():
    # ((0.5 - 0.9) + (0.7 - 0.8)) / 2
    assert metrics.backward_transfer(R) == pytest.approx(-0.25)


def test_forward_transfer_against_untrained_baseline():
    # ((0.1 - 0.2) + (0.3 - 0.25)) / 2
    assert metrics.forward_transfer(R, B) == pytest.approx(-0.025)


def test_forgetting_uses_best_earlier_score():
    # task 0: max(0.9, 0.6) - 0.5 = 0.4 ; task 1: max(0.8) - 0.7 = 0.1
    assert metrics.forgetting(R) == pytest.approx(0.25)


def test_forgetting_for_lower_is_better_metric_is_positive_when_worse():
    ppl = [[10.0, 50.0], [30.0, 12.0]]
    assert metrics.forgetting(ppl, higher_is_better=False) == pytest.approx(20.0)
    assert metrics.backward_transfer(ppl) == pytest.approx(20.0)  # positive: perplexity rose


def test_no_forgetting_when_scores_improve():
    improving = [[0.5, 0.0], [0.7, 0.9]]
    assert metrics.backward_transfer(improving) == pytest.approx(0.2)
    assert metrics.forgetting(improving) == pytest.approx(-0.2)


def test_single_task_leaves_transfer_undefined():
    assert metrics.backward_transfer([[0.7]]) is None
    assert metrics.forward_transfer([[0.7]], [0.1]) is None
    assert metrics.forgetting([[0.7]]) is None


def test_summarize_names_every_metric_and_respects_direction():
    out = metrics.summarize({"accuracy": R, "loss": [[10.0, 50.0], [30.0, 12.0]]},
                            {"accuracy": B, "loss": [100.0, 100.0]})
    assert out["accuracy/forgetting"] == pytest.approx(0.25)
    assert out["loss/forgetting"] == pytest.approx(20.0)
    assert out["loss/fwt"] == pytest.approx(50.0 - 100.0)  # domain-IL classification: reported
    assert not any(isinstance(v, float) and math.isnan(v) for v in out.values())


# A language model's loss matrix in nats: R[i][j] after training task i, on task j.
LOSS = [[2.0, 6.0, 6.2],
        [3.0, 1.5, 5.0],
        [14.0, 2.5, 1.0]]  # task 0 blew up: perplexity e^14 = 1.2 million
LOSS_B = [5.5, 5.6, 5.4]


def lm_matrices(loss):
    bits = [[v / math.log(2) for v in row] for row in loss]
    ppl = [[math.exp(v) for v in row] for row in loss]
    return {"loss": loss, "bits_per_token": bits, "perplexity": ppl}


def test_language_model_summary_is_on_the_log_scale():
    ln2 = math.log(2)
    baseline = {"loss": LOSS_B, "bits_per_token": [v / ln2 for v in LOSS_B]}
    out = metrics.summarize(lm_matrices(LOSS), baseline, task="lm", setting="domain-il",
                            pretrained=True)
    # average: mean bits of the last row; perplexity: exp of the mean log-loss, 2^(mean bits)
    assert out["bits_per_token/avg"] == pytest.approx((14.0 + 2.5 + 1.0) / 3 / ln2)
    assert out["perplexity/avg"] == pytest.approx(math.exp((14.0 + 2.5 + 1.0) / 3))  # 339
    arithmetic = sum(math.exp(v) for v in LOSS[-1]) / 3  # 400,000: what it used to report
    assert out["perplexity/avg"] < arithmetic / 1000
    # BWT ((14 - 2) + (2.5 - 1.5)) / 2 nats; forgetting the same (worst since learned)
    assert out["bits_per_token/bwt"] == pytest.approx(6.5 / ln2)
    assert out["bits_per_token/forgetting"] == pytest.approx(6.5 / ln2)
    # FWT against the pretrained start: ((6.0 - 5.6) + (5.0 - 5.4)) / 2 = 0
    assert out["bits_per_token/fwt"] == pytest.approx(0.0)
    assert not [k for k in out if k.startswith("perplexity/") and k != "perplexity/avg"]


@pytest.mark.parametrize("task, setting, pretrained, reported", [
    ("classification", "domain-il", False, True),
    ("classification", "class-il", False, False),
    ("classification", "task-il", False, False),
    ("lm", "domain-il", False, False),
    ("lm", "domain-il", True, True),
])
def test_forward_transfer_is_reported_only_where_it_means_something(task, setting, pretrained,
                                                                   reported):
    note = metrics.fwt_note(task, setting, pretrained)
    out = metrics.summarize({"accuracy": R}, {"accuracy": B}, task, setting, pretrained)
    assert (note is None) == reported
    assert out["accuracy/fwt"] == (pytest.approx(-0.025) if reported else None)
    assert out["accuracy/bwt"] == pytest.approx(-0.25)  # the rest does not depend on it


def test_summary_metric_is_bits_for_language_models():
    assert metrics.summary_metric("lm", "perplexity") == "bits_per_token"
    assert metrics.summary_metric("classification", "accuracy") == "accuracy"


def test_confusion_scores_by_hand():
    scores = metrics.confusion_scores([0, 0, 1, 1], [0, 1, 1, 1], n_classes=3)
    assert scores["accuracy"] == pytest.approx(0.75)
    # per-class F1: class 0 is 2/3, class 1 is 0.8; class 2 is absent from both, so not averaged
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_torch_confusion_scores_agree_with_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    for n_classes, n in ((10, 397), (3, 7), (5, 1)):
        y_true = rng.integers(0, n_classes, n)
        y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, n_classes, n))
        fast = metrics.confusion_scores(y_true, y_pred, n_classes)
        assert fast["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
        assert fast["macro_f1"] == pytest.approx(
            f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_grouped_confusion_scores_equal_each_group_scored_alone():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    group = np.repeat([0, 2, 3], [25, 30, 5])  # group 1 is empty
    together = metrics.grouped_confusion_scores(y_true, y_pred, group, 4, n_classes=4)
    for g in (0, 2, 3):
        alone = metrics.confusion_scores(y_true[group == g], y_pred[group == g], 4)
        assert together[g] == pytest.approx(alone), g
    assert np.isnan(together[1]["accuracy"]) and np.isnan(together[1]["macro_f1"])
