"""text-topics: class-incremental language identification with no utterance in two splits."""

import pytest

from harness.errors import UserError
from scenarios.text_topics import TextTopicsConfig, build
from scenarios.tokenize import PAD, decode


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))


def test_stream():
    cfg = TextTopicsConfig(classes=["english", "spanish", "japanese", "korean"], n_experiences=2,
                           n_train=40, n_val=5, n_test=10, seq_len=48)
    s = build(cfg, 0)
    assert s.n_experiences == 2 and s.setting == "class-il"
    assert s.task_names == ["english+spanish", "japanese+korean"]
    assert s.classes_per_task == [[0, 1], [2, 3]] and s.spec.n_classes == 4
    assert s.spec.pad_id == PAD and s.spec.seq_len == 48
    for i, classes in enumerate(s.classes_per_task):
        splits = [s.train_data(i), s.val_data(i), s.test_data(i)]
        assert [len(d) for d in splits] == [80, 10, 20]
        texts = [{decode(x.numpy()) for x in d.x} for d in splits]
        assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
        assert all(set(d.y.tolist()) == set(classes) for d in splits)
    assert build(cfg, 0).info["cache_hits"] == 1


def test_bad_configs():
    with pytest.raises(UserError, match="divide"):
        build(TextTopicsConfig(n_experiences=3), 0)
    with pytest.raises(UserError, match="no language 'klingon'"):
        build(TextTopicsConfig(classes=["english", "klingon"], n_experiences=1), 0)
    with pytest.raises(UserError, match="fewer than"):
        build(TextTopicsConfig(classes=["english", "telugu"], n_experiences=1), 0)
