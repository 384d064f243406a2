"""Training FLOPs: a sample step counted by hand, each strategy's extra passes included, the
after-task work (EWC's Fisher) counted, and the counting changes nothing it observes."""

from __future__ import annotations

import pytest
from conftest import quick

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
