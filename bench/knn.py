"""kNN store search: exact top-k (retain's default) against FAISS flat, IVF and HNSW indexes.

For each store size: the time of one model call's search (``--queries`` vectors, top-``--k``),
the time to add one call's writes, and recall@k of the approximate indexes against exact
search. Keys are clustered unit vectors (real attention keys are far from uniform; uniform
random keys are the worst case for IVF and HNSW). One thread, as inside a training process
that shares its cores; times are CPU time, so a busy machine does not inflate them.

    python -m bench knn                              # 1k .. 256k entries, dim 32
    python -m bench knn --sizes 65536 262144 --queries 4096
"""

from __future__ import annotations

import argparse
import time

from bench.common import print_table


def clustered(n: int, dim: int, centers, rng):
    import numpy as np

    x = centers[rng.integers(len(centers), size=n)] + 0.35 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def best_of(fn, repeats: int = 3) -> float:
    """Least CPU seconds of ``repeats`` calls: with one thread, CPU time is the work done,
    whatever else shares the machine."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def exact_search(keys, queries, k: int):
    """retain's ``KVStore.search``: chunked matrix product and torch top-k."""
    import torch

    keys, queries = torch.from_numpy(keys), torch.from_numpy(queries)
    step = max(1, (1 << 24) // len(keys))
    return torch.cat([(q @ keys.T).topk(k, dim=-1).indices for q in queries.split(step)]).numpy()


def indexes(dim: int, n: int):
    """The FAISS indexes compared, built empty: name -> (index, needs training)."""
    import faiss

    nlist = max(16, int(4 * n ** 0.5))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.nprobe = 16
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = 64
    return {"faiss-flat": (faiss.IndexFlatIP(dim), False),
            f"faiss-ivf{nlist}/16": (ivf, True), "faiss-hnsw32": (hnsw, False)}


def measure(n: int, dim: int, n_queries: int, k: int, rng, hnsw_max: int) -> list[dict]:
    import numpy as np

    centers = rng.standard_normal((256, dim))
    keys, queries = clustered(n, dim, centers, rng), clustered(n_queries, dim, centers, rng)
    writes = clustered(n_queries, dim, centers, rng)  # one call's entries
    truth = exact_search(keys, queries, k)
    rows = [{"entries": n, "index": "exact (torch)",
             "search CPU ms": f"{1e3 * best_of(lambda: exact_search(keys, queries, k)):.1f}",
             "add CPU ms": "0.0", "build CPU s": "0.0", "recall@k": "1.000"}]
    for name, (index, trains) in indexes(dim, n).items():
        if "hnsw" in name and n > hnsw_max:
            continue
        start = time.process_time()
        if trains:
            index.train(keys[: min(n, 64 * index.nlist)])
        index.add(keys)
        build = time.process_time() - start
        search = best_of(lambda ix=index: ix.search(queries, k))
        found = index.search(queries, k)[1]
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)])
        add = best_of(lambda ix=index: ix.add(writes), repeats=1)
        rows.append({"entries": n, "index": name, "search CPU ms": f"{1e3 * search:.1f}",
                     "add CPU ms": f"{1e3 * add:.1f}", "build CPU s": f"{build:.2f}",
                     "recall@k": f"{recall:.3f}"})
    return rows


def model_step(capacity: int, index: str, steps: int = 3) -> float:
    """CPU seconds of one knn training step (d_model 128, 4 heads, 8 x 256 tokens) with a
    full store of ``capacity`` entries behind the memory attention."""
    import torch
    import torch.nn.functional as F

    from harness.api import DataSpec
    from harness.models.knn import KNN, KNNConfig

    torch.manual_seed(0)
    spec = DataSpec("tokens", "lm", vocab_size=258, seq_len=256)
    model = KNN(KNNConfig(capacity=capacity, index=index), spec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(258, (8, 256))

    def step():
        loss = F.cross_entropy(model.lm_logits(model(x)).flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()

    while int(model.attn_store.count) < capacity:  # fill the store with the model's own keys
        step()
        model.attn_store.commit()
    step()  # the IVF index trains on its first search over a full store
    return best_of(step, steps)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m bench knn", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536, 262144])
    p.add_argument("--dim", type=int, default=32, help="key size (knn: d_model / n_head)")
    p.add_argument("--queries", type=int, default=2048, help="queries per call (B*T*heads)")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--hnsw-max", type=int, default=65536,
                   help="largest store given an HNSW index (its build is slow)")
    p.add_argument("--model-capacities", type=int, nargs="*", default=[16384, 65536],
                   help="store sizes of the knn training-step comparison (none: skip it)")
    args = p.parse_args(argv)
    try:
        import faiss
    except ImportError:
        print("\nknn: needs faiss-cpu (pip install faiss-cpu)")
        return
    import numpy as np
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rows = []
    for n in args.sizes:
        rows += measure(n, args.dim, args.queries, args.k, np.random.default_rng(0),
                        args.hnsw_max)
    print_table(f"kNN store search, one call ({args.queries} queries, top-{args.k}, "
                f"dim {args.dim}, 1 thread)", rows)
    steps = []
    for capacity in args.model_capacities:
        exact, ivf = (model_step(capacity, index) for index in ("exact", "faiss-ivf"))
        steps.append({"store entries": capacity, "exact step CPU s": f"{exact:.2f}",
                      "faiss-ivf step CPU s": f"{ivf:.2f}", "speed-up": f"{exact / ivf:.1f}x"})
    print_table("knn training step (d_model 128, 8 x 256 tokens, 1 thread), full store", steps)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
