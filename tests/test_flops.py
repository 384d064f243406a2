"""Training FLOPs: a sample step counted by hand, each strategy's extra passes included, the
after-task work (EWC's Fisher) counted, and the counting changes nothing it observes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import quick
from strategy_checks import context, tiny_net, toy_tasks

from harness import config
from harness.experiment.run import run

# Split-Digits, MLP 64-256 with a 256-10 head; 3 steps a task, batch 32
DIGITS = ["scenario.name=split-digits", "scenario.n_experiences=2", "model.name=mlp",
          "model.hidden=[256]", "trainer.max_steps=3", "trainer.batch_size=32",
          "eval_init=false"]
# Per example: forward 2*64*256 + 2*256*10; backward the weight gradients of both layers and
# the input gradient of the head's (the digits need none): 2*64*256 + 2 * 2*256*10.
PER_EXAMPLE = 2 * 64 * 256 * 2 + 2 * 256 * 10 * 3

pytestmark = pytest.mark.usefixtures("one_thread")


def tasks(strategy: str, *extra: str) -> list[dict]:
    cfg = config.load(None, quick(*DIGITS, f"strategy={strategy}", *extra,
                                  f"name={strategy}"))
    return run(cfg)["per_task"]


def test_a_step_is_counted_by_hand_and_strategies_pay_for_their_extra_passes():
    naive, replay, agem, ewc = (tasks("naive"), tasks("replay"), tasks("agem"), tasks("ewc"))
    assert [t["step_flops"] for t in naive] == [32 * PER_EXAMPLE] * 2
    assert naive[1]["train_flops"] == 3 * 32 * PER_EXAMPLE and naive[1]["after_task_flops"] == 0
    # task 1: replay adds a memory batch of 32 to each batch of 32
    assert replay[0]["step_flops"] == 32 * PER_EXAMPLE
    assert replay[1]["step_flops"] == 64 * PER_EXAMPLE
    # A-GEM adds a forward and backward over its memory sample (64 of 40 kept: all 40)
    assert agem[1]["step_flops"] == (32 + 40) * PER_EXAMPLE
    # EWC's penalty is element-wise (not counted); its Fisher after each task is
    assert ewc[1]["step_flops"] == 32 * PER_EXAMPLE and ewc[0]["after_task_flops"] > 0
    assert ewc[0]["train_flops"] == 3 * 32 * PER_EXAMPLE + ewc[0]["after_task_flops"]


def test_lwf_counts_its_cached_teacher_once_a_task_not_once_a_step():
    """LwF runs the teacher over the whole task on its first step and reads the cache after:
    counted as part of the sample step, it would be multiplied by the task's steps."""
    from harness.core.build import build

    lwf = tasks("distill", "trainer.max_epochs=2")  # more epochs than processes: cached
    _, scenario, _ = build(config.load(None, quick(*DIGITS)))
    forward = 2 * 64 * 256 + 2 * 256 * 10  # per example, no gradients
    assert lwf[1]["step_flops"] == 32 * PER_EXAMPLE  # the step reads the cache
    assert lwf[1]["task_once_flops"] == len(scenario.train_data(1)) * forward
    assert lwf[1]["train_flops"] == 3 * 32 * PER_EXAMPLE + lwf[1]["task_once_flops"]
    assert "task_once_flops" not in lwf[0]  # no teacher yet


def test_a_step_that_fails_while_counted_leaves_no_counter_behind(monkeypatch):
    """The counter's module hooks are global: a run whose sample step fails (here a NaN loss
    at step 1) must remove them, or every later forward in the process runs under them."""
    from torch.nn.modules import module
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    from harness.core.network import Network
    from harness.errors import UserError

    monkeypatch.setattr(Network, "loss", lambda self, batch, out: out.logits.sum() * float("nan"))
    before = (len(module._global_forward_pre_hooks), len(module._global_forward_hooks))
    with pytest.raises(UserError, match="non-finite"):
        tasks("naive")
    assert (len(module._global_forward_pre_hooks), len(module._global_forward_hooks)) == before
    assert _get_current_dispatch_mode() is None  # the counting mode itself is gone too


def after_task_flops(strategy_name: str, net, ctx, sampled: bool) -> tuple[int, dict, int]:
    """A fresh strategy's after_task on ``net``, counted whole (as before ``alike``) or one
    pass per shape: (its FLOPs, its state, the shapes counted once)."""
    from harness.core.flops import count_flops
    from harness.registry import STRATEGIES

    entry = STRATEGIES.get(strategy_name)
    strategy = entry.cls(entry.config(**({"mem_size": 40} if strategy_name == "der" else {})))
    out: dict = {}
    with count_flops(out, "flops", torch.device("cpu")) as counter:
        strategy.after_task(dataclasses.replace(ctx, flops=counter) if sampled else ctx)
    return out["flops"], strategy.state_dict(), len(counter.per_key)


NETS = {  # a batch of 16 and 40 examples: two full batches and a ragged one of 8
    "mlp": lambda: tiny_net(),
    "gpt": lambda: token_net("gpt", n_layer=2, n_head=2, d_model=16),
    "xl (carries memory)": lambda: token_net("xl", n_layer=1, n_head=2, d_model=16, seg_len=4,
                                             mem_len=4),
}


def token_net(name: str, **sizes):
    from harness.api import DataSpec
    from harness.core.network import Network
    from harness.registry import MODELS

    spec = DataSpec("tokens", "lm", vocab_size=12, seq_len=8)
    entry = MODELS.get(name)
    torch.manual_seed(0)
    return Network(entry.cls(entry.config(**sizes), spec), spec)


def token_tasks(n: int = 40) -> list:
    from harness.api import TaskData

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 12, (n, 8), generator=g)
    return [TaskData(x, x.roll(-1, 1), torch.zeros(n, dtype=torch.long))]


@pytest.mark.parametrize("strategy", ["ewc", "der"])
@pytest.mark.parametrize("model", list(NETS))
def test_repeated_after_task_passes_counted_once_per_shape_add_up_to_the_whole_count(
        strategy, model):
    """EWC's Fisher and DER's logits run one pass per mini-batch: counting the first pass of
    each shape and adding it for the others gives the count of every pass counted, and the
    same state; a model that carries memory from pass to pass is counted pass by pass."""
    net = NETS[model]()
    tasks = toy_tasks(1, n=40) if model == "mlp" else token_tasks(40)
    ctx = dataclasses.replace(context(net, tasks, 0, batch_size=16), eval_batch_size=16)
    whole, state, _ = after_task_flops(strategy, net, ctx, sampled=False)
    sampled, state_sampled, shapes = after_task_flops(strategy, net, ctx, sampled=True)
    assert whole > 0 and sampled == whole
    assert shapes == (0 if "memory" in model else 2)  # the full batches' shape, the ragged one
    assert_same(state_sampled, state)


def assert_same(a, b) -> None:
    """Two strategy states hold the same values (tensors bit for bit)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b
