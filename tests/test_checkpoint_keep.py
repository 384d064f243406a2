"""checkpoint.keep: how many checkpoint files a run keeps (0: none, for throw-away sweeps)."""

from __future__ import annotations

import pytest
from conftest import quick

from harness import config
from harness.experiment import checkpoint
from harness.experiment.run import run

DIGITS = ["scenario.name=split-digits", "scenario.n_experiences=5", "model.name=mlp",
          "model.hidden=[16]", "trainer.max_steps=2", "trainer.accelerator=cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("keep, files", [(0, []), (1, ["last.ckpt"]),
                                         (3, ["last.ckpt", "prev.ckpt", "prev2.ckpt"])])
def test_a_run_keeps_that_many_checkpoints_newest_first(keep, files, tmp_path):
    run(config.load(None, quick(*DIGITS, f"checkpoint.keep={keep}", f"out_dir={tmp_path}",
                                "name=k")))
    folder = tmp_path / "k" / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.ckpt")) == sorted(files)
    positions = [checkpoint.load(folder / name)["position"] for name in files]
    assert positions == [5, 4, 3][:keep]  # one a task, after the untrained evaluation's
    if keep:
        assert checkpoint.load_latest(folder)[1].name == "last.ckpt"


def test_the_oldest_kept_checkpoint_is_found_when_the_newer_ones_are_damaged(tmp_path):
    run(config.load(None, quick(*DIGITS, "checkpoint.keep=3", f"out_dir={tmp_path}", "name=k")))
    folder = tmp_path / "k" / "checkpoints"
    for name in ("last.ckpt", "prev.ckpt"):
        (folder / name).write_bytes(b"damaged")
    ckpt, path = checkpoint.load_latest(folder)
    assert path.name == "prev2.ckpt" and ckpt.position == 3
