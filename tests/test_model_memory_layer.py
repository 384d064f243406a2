"""memory_layer: product-key lookup is the exact top-k, reads are sparse, options are checked."""

import pytest
import torch

from harness import config
from harness.api import DataSpec
from harness.errors import UserError
from harness.models.memory_layer import MemoryLayerConfig, MemoryLayerGPT
from harness.models.product_keys import ProductKeyMemory

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("heads", [1, 2])
def test_product_keys_find_the_exact_top_k_of_all_slots(heads):
    torch.manual_seed(0)
    layer = ProductKeyMemory(16, n_keys=6, top_k=4, key_dim=8, value_dim=16, heads=heads)
    x = torch.randn(2, 5, 16)
    indices, weights = layer.lookup(x)
    # brute force: the score of slot (i, j) is q1 . k1_i + q2 . k2_j, over all n_keys^2 slots
    q = layer.query_norm(layer.query(x).unflatten(-1, (heads, 8)))
    q1, q2 = q.chunk(2, dim=-1)
    s1 = torch.einsum("bthd,hnd->bthn", q1, layer.keys[:, 0])
    s2 = torch.einsum("bthd,hnd->bthn", q2, layer.keys[:, 1])
    full = (s1[..., :, None] + s2[..., None, :]).flatten(-2)  # slot = i * n_keys + j
    best, slots = full.topk(4, dim=-1)
    assert torch.equal(indices, slots)
    torch.testing.assert_close(weights, best.softmax(-1))


def test_only_the_slots_read_get_a_gradient():
    torch.manual_seed(0)
    layer = ProductKeyMemory(16, n_keys=8, top_k=2, key_dim=8, value_dim=16)
    layer(torch.randn(1, 3, 16)).sum().backward()
    touched = layer.values.weight.grad.abs().sum(-1).nonzero().flatten()
    assert set(touched.tolist()) == set(layer.last_indices.flatten().tolist())
    assert len(touched) <= 3 * 2 < layer.n_slots


def test_the_chosen_blocks_hold_the_memory():
    torch.manual_seed(0)
    cfg = MemoryLayerConfig(d_model=32, n_layer=3, memory_layers=[0, 2], n_keys=8, top_k=2,
                            key_dim=8)
    model = MemoryLayerGPT(cfg, DataSpec("tokens", "lm", vocab_size=40, seq_len=16))
    assert [isinstance(b.mlp, ProductKeyMemory) for b in model.blocks] == [True, False, True]
    assert model.memory_modules() == [model.blocks[0].mlp, model.blocks[2].mlp]
    h = model(torch.randint(0, 40, (2, 16)))
    assert h.shape == (2, 16, 32) and model.blocks[2].mlp.last_indices.shape == (2, 16, 1, 2)


@pytest.mark.parametrize("bad, message", [
    ("model.memory_layers=[2]", r"model.memory_layers has 2: blocks go from 0 to 1"),
    ("model.memory_layers=[]", "model.memory_layers must name at least one block"),
    ("model.memory_layers=[1,1]", "names a block twice"),
    ("model.memory_layers=[-1]", r"model.memory_layers\[0\]"),
    ("model.n_keys=1", "model.n_keys"),
    ("model.top_k=0", "model.top_k"),
    ("model.top_k=64", "model.top_k=64 must be at most model.n_keys=32"),
    ("model.key_dim=7", "model.key_dim=7 must be even"),
])
def test_bad_options_are_refused_in_one_line(bad, message):
    with pytest.raises(UserError, match=message) as err:
        config.load(None, ["model.name=memory_layer", bad])
    assert "\n" not in str(err.value)


def test_a_window_sees_only_its_own_segment():
    torch.manual_seed(0)
    cfg = MemoryLayerConfig(d_model=32, n_layer=2, n_keys=8, top_k=2, key_dim=8, seg_len=8)
    model = MemoryLayerGPT(cfg, DataSpec("tokens", "lm", vocab_size=40, seq_len=20)).eval()
    x = torch.randint(0, 40, (2, 20))
    h = model(x)
    assert h.shape == (2, 20, 32) and model.blocks[1].mlp.last_indices.shape == (2, 20, 1, 2)
    for start in (0, 8, 16):  # each window (the last one ragged) equals that window run alone
        seg = x[:, start:start + 8]
        torch.testing.assert_close(h[:, start:start + 8], model(seg))
