"""DER: the memory stores the network's logits; the two terms match them and the labels."""

import torch
from strategy_checks import context, resume_matches, tiny_net, toy_tasks

from harness.api import Batch
from strategies.der import DER, DERConfig


def test_memory_stores_the_logits_of_the_network_at_the_end_of_the_experience():
    net, tasks = tiny_net(), toy_tasks(2)
    der = DER(DERConfig(mem_size=20, batch_size_mem=8))
    der.after_task(context(net, tasks, 0))
    stored = der.buffer.fields["logits"]
    assert stored.shape == (20, 4) and stored.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(stored, net(der.buffer.fields["x"], None).logits)
    assert der.memory_bytes() == 20 * (8 * 4 + 8 * 4 + 4 * 4)  # x; y, t, task, key; logits


def test_terms_are_named_and_logit_matching_is_zero_until_the_network_moves():
    net, tasks = tiny_net(), toy_tasks(2)
    der = DER(DERConfig(mem_size=20, alpha=0.3, beta=0.5, batch_size_mem=8))
    assert der.loss_terms(context(net, tasks, 0), None, None) == {}
    der.after_task(context(net, tasks, 0))
    ctx = context(net, tasks, 1)
    der.before_task(ctx)
    batch = Batch(tasks[1].x[:4], tasks[1].y[:4], tasks[1].t[:4])
    terms = der.loss_terms(ctx, batch, None)
    assert set(terms) == {"der_logits", "der_labels"}
    assert terms["der_logits"].item() == 0.0 and terms["der_labels"].item() > 0
    with torch.no_grad():
        net.classifier.bias += 1.0
    assert der.loss_terms(ctx, batch, None)["der_logits"].item() > 0
    plain = DER(DERConfig(mem_size=20, beta=0.0, batch_size_mem=8))
    plain.after_task(context(net, tasks, 0))
    plain.before_task(ctx)
    assert set(plain.loss_terms(ctx, batch, None)) == {"der_logits"}


def test_half_precision_logits_halve_their_cost():
    net, tasks = tiny_net(), toy_tasks(1)
    half, full = (DER(DERConfig(mem_size=10, logits_dtype=d)) for d in ("float16", "float32"))
    for der in (half, full):
        der.after_task(context(net, tasks, 0))
    assert half.buffer.fields["logits"].dtype == torch.float16
    logit_bytes = full.buffer.fields["logits"].nbytes
    assert full.memory_bytes() - half.memory_bytes() == logit_bytes // 2


def test_resume_between_and_inside_tasks_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    resume_matches(tmp_path, monkeypatch, "strategy.name=[der]", "strategy.der.mem_size=60")
