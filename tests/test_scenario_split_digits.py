"""split-digits and permuted-digits: the reference split, class groups, pixel permutations."""

import numpy as np
import pytest
import torch

from harness.errors import UserError
from scenarios import permuted_digits, split_digits


def test_split_digits_reference_setup():
    s = split_digits.build(split_digits.SplitDigitsConfig(), 0)
    assert s.n_experiences == 5 and s.setting == "class-il"
    assert s.classes_per_task == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert s.spec.kind == "vectors" and s.spec.input_dim == 64 and s.spec.n_classes == 10
    assert sum(len(s.train_data(i)) for i in range(5)) == 1400
    assert sum(len(s.test_data(i)) for i in range(5)) == 397
    for i, classes in enumerate(s.classes_per_task):
        for data in (s.train_data(i), s.test_data(i)):
            assert set(data.y.tolist()) == set(classes) and (data.t == i).all()
            assert data.x.dtype == torch.float32 and 0 <= data.x.min() and data.x.max() <= 1
    assert s.val_data(0) is None


def test_split_is_disjoint_and_stratified():
    x_tr, y_tr, x_te, y_te = split_digits.digits_split()
    train_rows = {r.tobytes(): c for r, c in zip(x_tr, y_tr)}
    leaked = [r for r in x_te if r.tobytes() in train_rows]
    assert len(leaked) <= 2  # load_digits holds a few duplicate images, nothing more
    assert np.abs(np.bincount(y_te) - 39.7).max() <= 2
    # made once per process, and nobody may change what the next build reads
    assert split_digits.digits_split()[0] is x_tr and not x_tr.flags.writeable


def test_class_order_and_shuffle():
    cfg = split_digits.SplitDigitsConfig(class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
                                         n_experiences=2)
    s = split_digits.build(cfg, 0)
    assert s.classes_per_task == [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]
    a = split_digits.build(split_digits.SplitDigitsConfig(shuffle_classes=True), 1)
    b = split_digits.build(split_digits.SplitDigitsConfig(shuffle_classes=True), 2)
    assert a.classes_per_task != b.classes_per_task
    with pytest.raises(UserError, match="permutation"):
        split_digits.build(split_digits.SplitDigitsConfig(class_order=[0, 1]), 0)
    with pytest.raises(UserError, match="divide"):
        split_digits.build(split_digits.SplitDigitsConfig(n_experiences=3), 0)


def test_permuted_digits():
    cfg = permuted_digits.PermutedDigitsConfig(n_experiences=3, identity_first=True)
    s = permuted_digits.build(cfg, 0)
    assert s.n_experiences == 3 and s.setting == "domain-il"
    perms = permuted_digits.permutations(3, 64, cfg.perm_seed, True)
    base = s.train_data(0)
    for i in range(3):
        data = s.train_data(i)
        assert torch.equal(data.y, base.y) and len(s.test_data(i)) == 397
        assert torch.equal(data.x, base.x[:, perms[i]])  # same images, pixels permuted
    assert not torch.equal(s.train_data(1).x, s.train_data(2).x)
