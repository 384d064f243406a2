"""Proof that the memories work: recall beyond one attention window, and retention across tasks.

Passkey probe (token level, tiny vocabulary so a 2-layer model learns it in seconds): segment 1
holds ``MARK value`` at a random position among filler tokens; segment 2 is filler ending in
``QUERY``, whose next token must be the value. Every model sees one segment at a time
(``seg_len``), so a GPT restricted to that window (``xl`` with ``mem_len=0``) can only guess
(chance 1/16), while ``xl``, ``rmt`` and ``knn`` must carry the value across the boundary.

Retention probe: three tasks, each a fixed key -> value table over its own keys and values.
After training on tasks 2 and 3, the network's own LM head has forgotten task 1; the kNN-LM
store written while training on task 1 still answers it. The store is keyed by token embeddings
(``knn_lm_layer=0``) with an untied head: under Adam, a tied head moves the embedding rows of
every absent token each step, so an old task's tokens collapse together; upper-layer states
drift with the new tasks. Either way keys written in task 1 would no longer be found.
"""

import pytest
import torch
import torch.nn.functional as F

from harness.api import DataSpec
from harness.models.knn import KNN, KNNConfig
from harness.models.rmt import RMT, RMTConfig
from harness.models.xl import XL, XLConfig

SEG, N_FILL, N_VAL = 8, 16, 16
MARK, QUERY = N_FILL + N_VAL, N_FILL + N_VAL + 1
SPEC = DataSpec("tokens", "lm", vocab_size=QUERY + 1, seq_len=2 * SEG)
SMALL = dict(d_model=64, n_head=4, n_layer=2, seg_len=SEG)
CHANCE = 1 / N_VAL


pytestmark = pytest.mark.usefixtures("one_thread")


def passkey(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(N_FILL, (n, 2 * SEG), generator=gen)
    value = N_FILL + torch.randint(N_VAL, (n,), generator=gen)
    pos = torch.randint(SEG - 1, (n,), generator=gen)  # MARK value, both inside segment 1
    rows = torch.arange(n)
    x[rows, pos], x[rows, pos + 1] = MARK, value
    x[:, -2], x[:, -1] = QUERY, value
    y = torch.full_like(x, -100)
    y[:, -2] = value
    return x, y


def accuracy(model, x, y, logits_fn=None) -> float:
    model.eval()
    with torch.no_grad():
        logits = (logits_fn or model.lm_logits)(model(x))
    scored = y != -100
    return (logits.argmax(-1)[scored] == y[scored]).float().mean().item()


def train(model, batches, steps, test=None, lr=3e-3, target=0.95):
    """A plain loop; stops early once the held-out accuracy passes ``target``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for step in range(1, steps + 1):
        model.train()
        x, y = batches()
        loss = F.cross_entropy(model.lm_logits(model(x)).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if test is not None and step % 25 == 0 and accuracy(model, *test) >= target:
            break
    return model


MODELS = {
    "gpt-window": lambda: XL(XLConfig(mem_len=0, **SMALL), SPEC),
    "xl": lambda: XL(XLConfig(mem_len=SEG, **SMALL), SPEC),
    "rmt": lambda: RMT(RMTConfig(n_mem_tokens=1, **SMALL), SPEC),
    "knn": lambda: KNN(KNNConfig(capacity=0, top_k=4, **SMALL), SPEC),
}


def passkey_accuracy(name: str, steps: int, seed: int = 1) -> float:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    test = passkey(256, torch.Generator().manual_seed(1000))
    model = train(MODELS[name](), lambda: passkey(32, gen), steps, test)
    return accuracy(model, *test)


@pytest.mark.parametrize("name", ["xl", "rmt", "knn"])
def test_memory_recalls_passkey_beyond_the_window(name):
    acc = passkey_accuracy(name, steps=600)
    print(f"passkey recall {name}: {acc:.3f} (chance {CHANCE:.3f})")
    assert acc > 0.8


def test_windowed_gpt_cannot_recall_passkey():
    acc = passkey_accuracy("gpt-window", steps=300)
    print(f"passkey recall gpt-window: {acc:.3f} (chance {CHANCE:.3f})")
    assert acc < 3 * CHANCE


# ------------------------------------------------------------------- retention across tasks
N_FACTS = 8
FACT_VOCAB = 3 * 2 * N_FACTS  # per task: N_FACTS keys then N_FACTS values


def fact_table(task: int) -> tuple[torch.Tensor, torch.Tensor]:
    base = task * 2 * N_FACTS
    keys = torch.arange(base, base + N_FACTS)
    values = base + N_FACTS + torch.randperm(N_FACTS, generator=torch.Generator().manual_seed(task))
    return keys, values


def facts(task: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``k1 v1 k2 v2 ...``: every key of the task once, in random order; loss on values."""
    keys, values = fact_table(task)
    order = torch.rand(n, N_FACTS, generator=gen).argsort(-1)
    x = torch.stack([keys[order], values[order]], dim=-1).flatten(1)
    y = torch.full_like(x, -100)
    y[:, 0::2] = values[order]
    return x, y


@pytest.mark.slow
def test_knn_store_remembers_task_one_after_tasks_two_and_three():
    torch.manual_seed(0)
    spec = DataSpec("tokens", "lm", vocab_size=FACT_VOCAB, seq_len=2 * N_FACTS)
    # Reservoir eviction keeps a uniform sample of all three tasks in a small store.
    model = KNN(KNNConfig(d_model=64, n_head=4, n_layer=2, seg_len=2 * N_FACTS, capacity=1024,
                          eviction="reservoir", lambda_knn=0.5, top_k=8, knn_lm_layer=0,
                          knn_lm_keys="hidden", knn_lm_unique=False, knn_temperature=0.1,
                          tie_weights=False), spec)
    gen = torch.Generator().manual_seed(0)
    task1 = facts(0, 128, torch.Generator().manual_seed(100))
    parametric = model.head  # the LM head alone, without the store
    train(model, lambda: facts(0, 32, gen), steps=100)
    before = accuracy(model, *task1, parametric)
    for task in (1, 2):
        train(model, lambda t=task: facts(t, 32, gen), steps=100)
    forgot = accuracy(model, *task1, parametric)
    recalled = accuracy(model, *task1)
    stats = model.memory_stats()
    print(f"task-1 facts: parametric {before:.3f} -> {forgot:.3f} after tasks 2-3; "
          f"with the kNN-LM store {recalled:.3f} (chance {1 / N_FACTS:.3f}); {stats}")
    assert before > 0.9
    assert forgot < 0.3
    assert recalled > 0.9
