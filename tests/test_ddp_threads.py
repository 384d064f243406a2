"""Simulated DDP ranks in one process: threads that exchange through a shared barrier.

``ThreadDist`` has the interface of ``harness.runtime.distributed.Dist`` with the semantics of
the real collectives (sums in rank order, gathers in rank order), so code that takes a ``dist`` (the
strategies' memories, ``Context.dist``) or reads a module's ``DIST`` (patched with
``thread_dist()``'s proxy) can be checked for world sizes 2 and 3 in milliseconds. The real
process-group checks are in ``test_ddp.py``. Not a test module: it defines no tests.
"""

from __future__ import annotations

import threading

import torch


class _Group:
    def __init__(self, world: int):
        self.world = world
        self.barrier = threading.Barrier(world, timeout=60)
        self.slots: list = [None] * world


class ThreadDist:
    """One simulated rank of a group of threads."""

    active = True

    def __init__(self, group: _Group, rank: int):
        self.group, self._rank = group, rank

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self.group.world

    @property
    def is_main(self) -> bool:
        return self._rank == 0

    def _exchange(self, obj) -> list:
        self.group.slots[self._rank] = obj
        self.group.barrier.wait()
        out = list(self.group.slots)
        self.group.barrier.wait()
        return out

    def all_reduce_(self, tensor, op: str = "sum"):
        parts = self._exchange(tensor.detach().clone())
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        tensor.copy_(total / self.world_size if op == "mean" else total)
        return tensor

    def all_gather_object(self, obj) -> list:
        return self._exchange(obj)

    def all_gather_cat(self, tensor):
        return torch.cat(self._exchange(tensor.cpu())).to(tensor.device)

    def barrier(self) -> None:
        self.group.barrier.wait()


def run_ranks(world: int, fn) -> list:
    """``fn(dist)`` on ``world`` threads; their results in rank order (errors re-raised)."""
    group = _Group(world)
    results, errors = [None] * world, []

    def target(rank: int) -> None:
        try:
            results[rank] = fn(ThreadDist(group, rank))
        except BaseException as err:  # noqa: BLE001 - re-raised below
            errors.append(err)
            group.barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def thread_dist():
    """A stand-in for a module-level ``DIST``, and ``bind(dist)`` to call on each thread."""
    local = threading.local()

    class Proxy:
        def __getattr__(self, name):
            return getattr(local.dist, name)

    def bind(dist) -> None:
        local.dist = dist

    return Proxy(), bind
