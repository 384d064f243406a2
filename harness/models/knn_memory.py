"""A fixed-capacity, non-parametric key-value store searched by inner product.

The store is the long-term memory of the ``knn`` model. It is not a parameter: no gradient
reaches it and the optimiser never sees it. Its buffers are preallocated at full capacity, so
``state_dict()`` shapes never change and any checkpoint loads into a fresh model; ``count``
says how many slots hold entries.

Writes are staged and committed later (``write`` then ``commit``): the model commits a call's
entries when the next call starts, so a batch never retrieves its own keys (for the kNN-LM
store, whose values are next tokens, that would leak the answer). Under DDP every rank's
writes are all-gathered when staged, so all ranks hold the same global memory, bounded
globally by ``capacity``.

With ``unique=True`` a committed entry whose key and value the store already holds (or that
repeats earlier in the same write) is skipped, so the store holds distinct pairs, not copies
(bit-identical ones: fixed keys of the same context are; learned keys rarely repeat).

Search is exact top-k by inner product: a chunked matrix product in torch (default), or a
FAISS ``IndexFlatIP`` (``index="faiss"``, needs ``faiss-cpu``), which searches large memories
without materialising the full score matrix; or approximate, in ~sqrt(n), with an inverted-file
index (``index="faiss-ivf"``, ``knn_ivf.py``) from 4,096 entries on.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import Tensor, nn

from harness.errors import UserError
from harness.models.knn_ivf import MIN_ENTRIES as IVF_MIN_ENTRIES
from harness.models.knn_ivf import IVFIndex

EVICTIONS = ("fifo", "random", "reservoir")
INDEXES = ("exact", "faiss", "faiss-ivf")


class KVStore(nn.Module):
    """Keys (capacity, key_dim) float32 and values (capacity, *value_shape) of value_dtype."""

    def __init__(self, capacity: int, key_dim: int, value_shape: tuple = (),
                 value_dtype: torch.dtype = torch.float32, eviction: str = "fifo",
                 index: str = "exact", seed: int = 0, unique: bool = False):
        super().__init__()
        if eviction not in EVICTIONS:
            raise UserError(f"eviction must be one of {', '.join(EVICTIONS)}, not '{eviction}'")
        if index not in INDEXES:
            raise UserError(f"index must be one of {', '.join(INDEXES)}, not '{index}'")
        if index != "exact":
            _import_faiss()  # fail at construction, not at the first search
        self.capacity, self.eviction, self.index = capacity, eviction, index
        self.unique = unique
        self.register_buffer("keys", torch.zeros(capacity, key_dim))
        self.register_buffer("values", torch.zeros(capacity, *value_shape, dtype=value_dtype))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # filled slots
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))  # entries ever written
        # Eviction draws from its own generator so that every DDP rank draws the same slots.
        self.generator = torch.Generator().manual_seed(seed)
        self.pending: list[tuple[Tensor, Tensor]] = []
        self.retrieval_s, self.searches = 0.0, 0
        self._faiss, self._faiss_dirty = None, True
        self._ivf = IVFIndex(key_dim, seed) if index == "faiss-ivf" else None
        # Staged entries belong in a checkpoint too.
        self.register_state_dict_pre_hook(lambda module, prefix, keep_vars: module.commit())

    # ----------------------------------------------------------------------------- writing
    def write(self, keys: Tensor, values: Tensor) -> None:
        """Stage entries; they become searchable at the next ``commit()``."""
        keys, values = keys.detach().float(), values.detach().to(self.values.dtype)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            keys, values = _all_gather_rows(keys), _all_gather_rows(values)
        self.pending.append((keys, values))

    @torch.no_grad()
    def commit(self) -> None:
        for keys, values in self.pending:
            if self.unique:
                keys, values = self._novel(keys, values)
            dropped = max(0, len(keys) - self.capacity)  # more than the store holds: newest win
            keys, values = keys[dropped:], values[dropped:]
            self.seen += dropped
            slots = self._slots(len(keys)).to(self.keys.device)
            keep = slots >= 0  # reservoir sampling may decline an entry
            self.keys[slots[keep]] = keys[keep].to(self.keys.device)
            if self._ivf is not None:
                self._ivf.mark(slots[keep])
            self.values[slots[keep]] = values[keep].to(self.values.device)
            self.count.fill_(min(int(self.count) + int(keep.sum()), self.capacity))
            self.seen += len(keys)
            self._faiss_dirty = True
        self.pending = []

    def _novel(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """The entries not held yet: the first of each (key, value) repeated in this write, none
        already in the store. Equal means bit-identical, as fixed context keys of one context
        are; one sort of held and new rows, not a search."""
        n, width = int(self.count), self.values[0].numel()
        if len(keys) == 0:
            return keys, values
        held = torch.cat([self.keys[:n], self.values[:n].reshape(n, width).float()], dim=1)
        new = torch.cat([keys, values.reshape(len(keys), width).float()], dim=1).to(held.device)
        rows = torch.cat([held, new])
        _, group = torch.unique(rows, dim=0, return_inverse=True)
        order = torch.arange(len(rows), device=rows.device)
        first = torch.full((int(group.max()) + 1,), len(rows), device=rows.device)
        first = first.scatter_reduce(0, group, order, "amin")  # earliest row of each group
        keep = (first[group[n:]] == order[n:]).to(keys.device)
        return keys[keep], values[keep]

    def _slots(self, n: int) -> Tensor:
        """Slot of each new entry (-1 = dropped), by the eviction policy."""
        count, seen, cap = int(self.count), int(self.seen), self.capacity
        if self.eviction == "fifo":  # a ring buffer: the oldest entry is overwritten
            return (seen + torch.arange(n)) % cap
        free = torch.arange(count, min(count + n, cap))
        rest = n - len(free)
        if self.eviction == "random":  # fill free slots, then overwrite uniformly at random
            taken = torch.randint(cap, (rest,), generator=self.generator)
        else:  # reservoir: keep a uniform sample of everything ever written
            stream = seen + len(free) + torch.arange(rest)
            taken = (torch.rand(rest, generator=self.generator) * (stream + 1)).long()
            taken[taken >= cap] = -1
        return _last_wins(torch.cat([free, taken]), cap)

    def clear(self) -> None:
        self.pending = []
        self.count.zero_()
        self.seen.zero_()
        self._faiss_dirty = True
        if self._ivf is not None:
            self._ivf.reset()

    # --------------------------------------------------------------------------- reading
    @torch.no_grad()
    def search(self, queries: Tensor, k: int) -> Tensor:
        """Indices (Q, min(k, count)) of the entries with the largest inner product."""
        n, k = int(self.count), min(k, int(self.count))
        if k == 0:
            return torch.zeros(len(queries), 0, dtype=torch.long, device=queries.device)
        start = time.perf_counter()
        queries = queries.detach().float()
        if self.index == "faiss":
            idx = self._faiss_search(queries, k)
        elif self.index == "faiss-ivf" and n >= IVF_MIN_ENTRIES:
            idx = self._ivf.search(self.keys, n, int(self.seen), queries, k)
        else:
            # Chunk the queries so the (chunk, n) score matrix stays below ~64 MB.
            step = max(1, (1 << 24) // n)
            keys = self.keys[:n].to(queries.device)
            idx = torch.cat([(q @ keys.T).topk(k, dim=-1).indices for q in queries.split(step)])
        if idx.is_cuda:
            torch.cuda.synchronize(idx.device)  # time the search, not its launch
        self.retrieval_s += time.perf_counter() - start
        self.searches += 1
        return idx

    def _faiss_search(self, queries: Tensor, k: int) -> Tensor:
        faiss = _import_faiss()
        if self._faiss is None or self._faiss_dirty:
            # A flat index cannot overwrite slots in place; rebuilding it after writes is
            # one copy of the keys, cheaper than the search that follows.
            self._faiss = faiss.IndexFlatIP(self.keys.shape[1])
            self._faiss.add(self.keys[: int(self.count)].cpu().numpy())
            self._faiss_dirty = False
        _, idx = self._faiss.search(queries.cpu().numpy(), k)
        return torch.from_numpy(idx).to(queries.device)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.pending, self._faiss_dirty = [], True

    # The eviction generator's position is state too: without it, a run resumed inside a task
    # would draw other slots than the uninterrupted run (random and reservoir eviction).
    # So is an IVF index: rebuilt, its lists would be trained at another time, on other keys.
    def get_extra_state(self) -> dict:
        state = {"generator": self.generator.get_state()}
        if self._ivf is not None:
            state["ivf"] = self._ivf.state(self.keys, int(self.count), int(self.seen))
        return state

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self._ivf is not None and "ivf" in state:
            self._ivf.load(state["ivf"])

    def stats(self) -> dict:
        return {"entries": int(self.count), "capacity": self.capacity,
                "bytes": self.keys.nbytes + self.values.nbytes,
                "retrieval_s": self.retrieval_s, "searches": self.searches}


def _last_wins(slots: Tensor, capacity: int) -> Tensor:
    """Drop (-1) all but the last write to each slot, so a batch's writes are deterministic."""
    pos, valid = torch.arange(len(slots)), slots >= 0
    last = torch.full((capacity,), -1).scatter_reduce(0, slots[valid], pos[valid], "amax")
    return torch.where(valid & (last[slots.clamp(min=0)] == pos), slots, -1)


def _all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate every rank's rows (ranks may hold different numbers of rows)."""
    world = dist.get_world_size()
    n = torch.tensor([len(t)], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(sizes))
    padded = torch.zeros(longest, *t.shape[1:], dtype=t.dtype, device=t.device)
    padded[: len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])


def _import_faiss():
    try:
        import faiss
    except ImportError as err:
        raise UserError("index=faiss needs FAISS: pip install faiss-cpu "
                        "(or use the default index=exact)") from err
    return faiss
