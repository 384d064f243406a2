"""``BatchLoader`` copies rows a block of batches at a time; what it yields must not depend on
the block size: the same batches, in the same shuffled order, with the right indices."""

from __future__ import annotations

import pytest
import torch

from harness.api import BatchLoader, TaskData
from harness.api import data as data_mod


def _batches(loader) -> list[tuple]:
    return [(b.x.clone(), b.y.clone(), b.t.clone(), b.index) for b in loader]


@pytest.mark.parametrize("n, batch_size, drop_last", [(103, 8, False), (103, 8, True),
                                                      (5, 8, False), (0, 4, False)])
def test_blocks_of_any_size_give_the_batches_of_the_shuffled_order(monkeypatch, n, batch_size,
                                                                   drop_last):
    g = torch.Generator().manual_seed(0)
    data = TaskData(torch.randn(n, 3, generator=g), torch.randint(0, 9, (n,), generator=g),
                    torch.arange(n) % 2)
    runs = []
    row = data_mod._row_bytes(data)
    for gather_bytes in (1, 3 * batch_size * row, 1 << 30):  # a batch, 3 batches, everything
        monkeypatch.setattr(data_mod, "GATHER_BYTES", gather_bytes)
        loader = BatchLoader(data, batch_size, shuffle=True, seed=3, drop_last=drop_last,
                             with_index=True)
        runs.append([_batches(loader) for _epoch in range(2)])
    for epoch in range(2):
        batches = runs[0][epoch]
        assert len(batches) == len(BatchLoader(data, batch_size, shuffle=True,
                                               drop_last=drop_last))
        for x, y, t, index in batches:  # each batch holds the rows its index names
            assert torch.equal(x, data.x[index]) and torch.equal(y, data.y[index])
            assert torch.equal(t, data.t[index])
        seen = torch.cat([b[3] for b in batches]) if batches else torch.empty(0)
        expected = n - n % batch_size if drop_last else n
        assert len(seen) == expected and len(set(seen.tolist())) == expected
        for other in runs[1:]:
            assert all(all(torch.equal(a, b) for a, b in zip(p, q))
                       for p, q in zip(batches, other[epoch], strict=True))
    assert n < 2 or not torch.equal(torch.cat([b[3] for b in runs[0][0]]),
                                    torch.cat([b[3] for b in runs[0][1]]))  # reshuffled


@pytest.mark.parametrize("world_size", [1, 2])
def test_in_order_batches_are_views_of_the_data_only_when_unsharded(world_size):
    """Evaluation reads in order: one process slices the data (no copy); a rank of several
    gathers its strided shard. Either way the batches hold the data's rows in order."""
    data = TaskData(torch.randn(50, 3), torch.arange(50), torch.zeros(50, dtype=torch.long))
    batches = [BatchLoader(data, 8, shuffle=False, rank=rank, world_size=world_size,
                           with_index=True) for rank in range(world_size)]
    for rank, loader in enumerate(batches):
        got = list(loader)
        assert torch.equal(torch.cat([b.y for b in got]), torch.arange(50)[rank::world_size])
        assert all(torch.equal(b.x, data.x[b.index]) for b in got)
        shares = {b.x.untyped_storage().data_ptr() for b in got}
        assert (shares == {data.x.untyped_storage().data_ptr()}) == (world_size == 1)
