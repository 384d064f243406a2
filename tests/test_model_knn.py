"""The knn model's long-term store: capacity, eviction, write modes, persistence, backends."""

import pytest
import torch

from harness.api import DataSpec
from harness.errors import UserError
from harness.models.knn import KNN, KNNConfig
from harness.models.knn_context import ContextKeys
from harness.models.knn_memory import KVStore

SPEC = DataSpec("tokens", "lm", vocab_size=40, seq_len=16)


def model(**overrides):
    torch.manual_seed(0)
    cfg = dict(d_model=32, n_head=4, n_layer=2, seg_len=8, capacity=100, top_k=4)
    return KNN(KNNConfig(**{**cfg, **overrides}), SPEC)


def tokens(n=2, T=16, seed=0):
    return torch.randint(40, (n, T), generator=torch.Generator().manual_seed(seed))


def store_of(rows, **kwargs):
    store = KVStore(capacity=4, key_dim=2, value_shape=(), value_dtype=torch.long, **kwargs)
    for ids in rows:
        ids = torch.as_tensor(ids)
        store.write(torch.randn(len(ids), 2), ids)
        store.commit()
    return store


def test_fifo_evicts_the_oldest():
    store = store_of([[1, 2, 3], [4, 5]])
    assert sorted(store.values.tolist()) == [2, 3, 4, 5]
    assert int(store.count) == 4 and int(store.seen) == 5


@pytest.mark.parametrize("eviction", ["random", "reservoir"])
def test_random_evictions_stay_within_capacity(eviction):
    store = store_of([list(range(i, i + 3)) for i in range(0, 30, 3)], eviction=eviction)
    assert int(store.count) == 4 and len(set(store.values.tolist())) == 4
    assert int(store.seen) == 30


def test_a_unique_store_writes_each_pair_once():
    store = KVStore(capacity=8, key_dim=2, value_dtype=torch.long, unique=True)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    store.write(torch.stack([a, a, b, a]), torch.tensor([1, 1, 1, 2]))  # (a, 1) twice
    store.commit()
    store.write(torch.stack([b, b]), torch.tensor([1, 3]))  # (b, 1) is held already
    store.commit()
    held = {(tuple(k.tolist()), int(v)) for k, v in zip(store.keys[:4], store.values[:4])}
    assert int(store.count) == 4 and int(store.seen) == 4
    assert held == {((1.0, 0.0), 1), ((0.0, 1.0), 1), ((1.0, 0.0), 2), ((0.0, 1.0), 3)}


def test_writes_are_searchable_only_after_commit():
    store = KVStore(capacity=8, key_dim=2)
    store.write(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2))
    assert store.search(torch.tensor([[1.0, 0.0]]), k=1).shape == (1, 0)
    store.commit()
    assert store.search(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), k=1).tolist() == [[0], [1]]


def test_faiss_matches_exact_search():
    pytest.importorskip("faiss")
    keys, queries = torch.randn(50, 8), torch.randn(10, 8)
    found = []
    for index in ("exact", "faiss"):
        store = KVStore(capacity=64, key_dim=8, index=index)
        store.write(keys, torch.zeros(50))
        store.commit()
        found.append(store.search(queries, k=5))
    assert torch.equal(found[0], found[1])


def clustered(n, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(64, dim, generator=torch.Generator().manual_seed(99))
    x = centers[torch.randint(64, (n,), generator=g)] + 0.35 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=-1)


def test_ivf_index_is_exact_below_its_threshold_and_close_above():
    pytest.importorskip("faiss")
    from harness.models.knn_ivf import MIN_ENTRIES

    queries = clustered(200, seed=1)
    for n, least in ((MIN_ENTRIES - 1, 1.0), (4 * MIN_ENTRIES, 0.95)):
        stores = [KVStore(capacity=n, key_dim=16, index=index) for index in ("exact", "faiss-ivf")]
        for store in stores:
            for part in clustered(n).split(1000):  # written in calls, as the model does
                store.write(part, torch.zeros(len(part)))
                store.commit()
        exact, ivf = (store.search(queries, k=8) for store in stores)
        hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, ivf))
        recall = hits / exact.numel()
        assert recall >= least, (n, recall)


def test_ivf_index_resumes_identically():
    """The index travels in the state_dict: a restored store searches as the original does,
    through later writes that update and retrain its lists."""
    pytest.importorskip("faiss")
    original = KVStore(capacity=20000, key_dim=16, index="faiss-ivf", eviction="random")
    keys, queries = clustered(30000), clustered(100, seed=1)
    for part in keys[:9000].split(1000):
        original.write(part, torch.zeros(len(part)))
        original.commit()  # as each forward call does, then searches (and syncs the index)
        original.search(queries, 4)
    restored = KVStore(capacity=20000, key_dim=16, index="faiss-ivf", eviction="random")
    restored.load_state_dict(original.state_dict())
    for part in keys[9000:].split(1000):
        results = []
        for store in (original, restored):
            store.write(part, torch.zeros(len(part)))
            store.commit()
            results.append(store.search(queries, 4))
        assert torch.equal(*results)
    assert original._ivf.trained == restored._ivf.trained and original._ivf.trained[1] > 9000


def test_faiss_missing_is_a_user_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(UserError, match="pip install faiss-cpu"):
        KVStore(capacity=4, key_dim=2, index="faiss")


@pytest.mark.parametrize("write, train_writes, eval_writes", [
    ("train", True, False), ("eval", False, True), ("both", True, True), ("none", False, False)])
def test_write_modes(write, train_writes, eval_writes):
    m = model(write=write)
    m.train()(tokens())
    assert (m.memory_stats()["entries"] > 0) == train_writes
    m.attn_store.clear()
    m.eval()(tokens())
    assert (m.memory_stats()["entries"] > 0) == eval_writes


def test_store_is_bounded_persists_and_checkpoints():
    m = model(lambda_knn=0.5).train()
    for seed in range(5):
        m(tokens(seed=seed))
    stats = m.memory_stats()
    assert stats["entries"] == 200 and stats["lm_entries"] == 100  # capacity per store
    assert stats["bytes"] > 0 and stats["searches"] > 0 and stats["retrieval_s"] > 0
    m.reset_memory()  # persist=True: the store survives (e.g. between tasks)
    assert m.memory_stats()["entries"] == 200
    fresh = model(lambda_knn=0.5)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.attn_store.keys, m.attn_store.keys)
    assert torch.equal(fresh.lm_store.values, m.lm_store.values)
    assert fresh.memory_stats()["entries"] == 200
    cleared = model(persist=False).train()
    cleared(tokens())
    cleared.reset_memory()
    assert cleared.memory_stats()["entries"] == 0


def test_the_store_changes_outputs():
    m = model()
    x = tokens(seed=5)
    m.eval()
    with torch.no_grad():
        empty = m(x)
    m.train()(tokens(seed=1))
    m.eval()
    with torch.no_grad():
        assert not torch.allclose(m(x), empty)


def test_knn_lm_never_retrieves_its_own_next_token():
    m = model(lambda_knn=0.9, knn_lm_layer=0).train()
    x = tokens(seed=3)
    h = m(x)
    # This call's (state, next token) pairs are staged, not searchable: the LM alone answers.
    torch.testing.assert_close(m.lm_logits(h), m.head(h))
    h = m(x)  # the first call's entries are searchable now
    mixed = m.lm_logits(h)
    assert not torch.allclose(mixed, m.head(h).log_softmax(-1))
    torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(2, 16))  # a distribution
    with pytest.raises(RuntimeError, match="latest forward"):
        m.lm_logits(h.clone())


@pytest.mark.parametrize("eviction", ["random", "reservoir"])
def test_a_restored_store_evicts_as_the_original_would(eviction):
    """The eviction generator travels in the state_dict: a store loaded from a checkpoint draws
    the same slots as the store that kept going."""
    kept = store_of([[1, 2, 3], [4, 5, 6]], eviction=eviction)
    restored = KVStore(capacity=4, key_dim=2, value_shape=(), value_dtype=torch.long,
                       eviction=eviction, seed=123)  # another seed: only the state decides
    restored.load_state_dict(kept.state_dict())
    for store in (kept, restored):
        for start in range(10, 40, 3):
            store.write(torch.zeros(3, 2), torch.arange(start, start + 3))
            store.commit()
    assert torch.equal(kept.values, restored.values)


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    store = KVStore(capacity=8, key_dim=2, eviction="random", seed=0)
    for step in range(3):  # ranks write different numbers of rows; 15 in all > capacity
        n = 2 + rank + step
        store.write(torch.full((n, 2), 10.0 * rank + step), torch.full((n,), float(rank)))
        store.commit()
    torch.save(store.state_dict(), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_writes_are_gathered_so_ranks_hold_one_global_memory(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert int(a["count"]) == 8 and int(a["seen"]) == 2 + 3 + 3 + 4 + 4 + 5
    for key in a:
        if key == "_extra_state":  # the eviction generators drew the same slots
            assert torch.equal(a[key]["generator"], b[key]["generator"])
        else:
            assert torch.equal(a[key], b[key])
    assert set(a["values"].tolist()) == {0.0, 1.0}  # both ranks' entries are in the memory


def test_context_keys_are_causal_and_do_not_depend_on_the_weights():
    m = model(lambda_knn=0.5)
    x = tokens(seed=4)
    keys = m.context_keys(x)
    torch.testing.assert_close(keys.norm(dim=-1), torch.ones(2, 16))
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 40
    assert torch.equal(m.context_keys(changed)[:, :10], keys[:, :10])  # no future token
    assert not torch.equal(m.context_keys(changed)[:, 10:], keys[:, 10:])
    torch.manual_seed(1)
    again = KNN(KNNConfig(d_model=32, n_head=4, n_layer=2, seg_len=8, capacity=100, top_k=4,
                          lambda_knn=0.5), SPEC)
    assert torch.equal(again.context_keys(x), keys)  # from model.seed, not the weights
    short = ContextKeys(40, 32, window=4, seed=0)
    shifted = torch.cat([tokens(T=5, seed=5), x], dim=1)  # the same contexts, 5 places on
    # bit-identical, whatever the position: what knn_lm_unique's exact match relies on
    assert torch.equal(short(shifted)[:, 5 + 3:], short(x)[:, 3:])


@pytest.mark.parametrize("keys", ["context", "hidden"])
def test_context_keys_recall_what_was_written_after_the_weights_move(keys):
    """The kNN-LM finds an old entry only if the old context still gives the same key: fixed
    context keys do after every weight has changed; learned (hidden) keys do not."""
    m = model(lambda_knn=0.9, knn_lm_keys=keys, capacity=200).train()
    x = tokens(seed=6)
    m(x)  # written
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(generator=torch.Generator().manual_seed(2))  # a later task's weights
    m.eval()
    p = m.lm_logits(m(x)).exp()[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1)
    if keys == "context":
        assert p.min() > 0.85  # 0.9 * p_kNN: the stored next token, found again
    else:
        assert p.mean() < 0.5
