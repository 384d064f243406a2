"""mqar: the generator's answers are right, loss sits only at queries, tasks own their tokens."""

import pytest
import torch

from harness.errors import UserError
from scenarios.mqar import MQARConfig, build, mqar_sequences, power_law_gaps, vocab_slices


def test_answers_are_the_bound_values():
    g = torch.Generator().manual_seed(0)
    keys, values = torch.arange(10, 40), torch.arange(40, 70)
    x, y = mqar_sequences(64, 64, 8, keys, values, g, torch.arange(5))
    assert x.shape == y.shape == (64, 64) and x.dtype == y.dtype == torch.long
    for row_x, row_y in zip(x, y):
        bound = dict(zip(row_x[0:16:2].tolist(), row_x[1:16:2].tolist()))
        assert len(bound) == 8 and set(bound) <= set(keys.tolist())
        asked = (row_y != -100).nonzero().flatten()
        assert len(asked) == 8 and asked.min() >= 16  # queries come after all the pairs
        assert sorted(row_x[asked].tolist()) == sorted(bound)  # each key asked exactly once
        assert all(bound[int(row_x[p])] == int(row_y[p]) for p in asked)
        rest = torch.ones(64, dtype=torch.bool)
        rest[:16] = False
        rest[asked] = False
        assert (row_x[rest] < 5).all()  # everything else is filler


def test_same_generator_seed_same_sequences():
    make = lambda: mqar_sequences(4, 32, 4, torch.arange(8), torch.arange(8, 16),  # noqa: E731
                                  torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(make(), make()))


def test_query_distances_favour_short_gaps():
    g = torch.Generator().manual_seed(0)
    _, y = mqar_sequences(500, 256, 8, torch.arange(64), torch.arange(64, 128), g, alpha=0.01)
    pos = (y != -100).nonzero()[:, 1].float()
    assert (pos < 16 + 120).float().mean() > 0.6  # power law: most queries in the first half


def test_larger_alpha_means_longer_gaps():
    def mean_gap(alpha):
        g = torch.Generator().manual_seed(0)
        return power_law_gaps(2000, 30, 1, alpha, g).float().mean().item()

    assert mean_gap(0.01) < mean_gap(1.0) < mean_gap(2.0)
    assert mean_gap(1.0) == pytest.approx(14.5, abs=0.5)  # 1 is uniform over 0..29


def test_invalid_shapes_raise():
    with pytest.raises(ValueError, match="4\\*n_pairs"):
        mqar_sequences(1, 16, 8, torch.arange(20), torch.arange(20, 40), torch.Generator())


def test_stream_has_one_vocabulary_per_task():
    cfg = MQARConfig(n_experiences=3, seq_len=64, n_pairs=4, n_keys=16, n_values=16,
                     n_train=64, n_val=8, n_test=16)
    s = build(cfg, 0)
    assert s.n_experiences == 3 and s.setting == "domain-il" and s.spec.task == "lm"
    assert s.spec.vocab_size == 16 + 3 * 32 and s.spec.seq_len == 64
    for i, (keys, values) in enumerate(vocab_slices(cfg)):
        tr, te = s.train_data(i), s.test_data(i)
        assert (len(tr), len(s.val_data(i)), len(te)) == (64, 8, 16)
        answers = torch.cat([tr.y[tr.y != -100], te.y[te.y != -100]])
        assert set(answers.tolist()) <= set(values.tolist())
        own = set(range(16)) | set(keys.tolist()) | set(values.tolist())  # filler + this task
        assert set(torch.cat([tr.x, te.x]).flatten().tolist()) <= own
        assert not any(torch.equal(a, b) for a in te.x[:4] for b in tr.x)  # fresh test rows


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="4\\*n_pairs"):
        build(MQARConfig(seq_len=16, n_pairs=8), 0)
