"""``model.adapter=osf``: peft's Orthogonal Subspace Fine-tuning on the tiny Llama. Each
wrapped weight's top singular directions are frozen; with SGD (whose step is the projected
gradient itself) the trained factors stay orthogonal to them."""

import pytest
import torch
from conftest import quick

pytest.importorskip("peft")
from lora_tiny import lora_run  # noqa: E402
from resume_helpers import resumes_bit_identically  # noqa: E402

from harness import config  # noqa: E402
from harness.core.build import build  # noqa: E402
from harness.core.system import ContinualSystem  # noqa: E402
from harness.core.task import begin_task  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path / "cache"))


OSF = ["model.adapter=osf", "model.osf_preserved=0.5", "strategy=naive",
       "trainer.optimizer=sgd", "trainer.lr=0.5", "trainer.max_steps=5"]


def osf_layers(net):
    from peft.tuners.osf.layer import OSFLayer

    return [m for m in net.modules() if isinstance(m, OSFLayer)]


def test_osf_trains_only_its_factors_orthogonally_to_the_preserved_directions():
    cfg = config.load(None, quick(*lora_run(*OSF)))
    strategies, scenario, net = build(cfg)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all("osf_svd_params" in n for n in trainable)
    layers = osf_layers(net)
    before = [m.osf_svd_params["default"]["U_low"].detach().clone() for m in layers]
    system = ContinualSystem(net, strategies, cfg.trainer)
    loader = begin_task(system, scenario, cfg.trainer, 0, 0)
    optimizer = system.configure_optimizers()
    for i, batch in zip(range(5), loader):
        optimizer.zero_grad()
        system.training_step(batch, i).backward()
        optimizer.step()
    moved = 0.0
    for layer, u0 in zip(layers, before):
        u = layer.osf_svd_params["default"]["U_low"].detach()
        weight = layer.get_base_layer().weight.detach()  # the base stays as built
        k = layer.effective_rank["default"]
        top = torch.linalg.svd(weight.float(), full_matrices=False).U[:, :k]
        assert (top.T @ (u - u0)).abs().max() < 1e-4  # no step along a preserved direction
        moved += (u - u0).abs().sum().item()
    assert moved > 0


def test_an_osf_run_learns_and_resumes_bit_identically(monkeypatch):
    setting = quick(*lora_run(*OSF), "checkpoint.every_n_steps=1")
    reference = resumes_bit_identically(setting, monkeypatch, crash_at="step:7")  # in task 2
    assert reference["matrices"]["perplexity"][0][0] < reference["baseline"]["perplexity"][0]
