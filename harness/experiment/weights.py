"""What of the network a checkpoint holds: everything, or only what training changes.

Why: a LoRA run on a 135M-parameter base trains well under 1% of its weights; writing the
frozen rest into every checkpoint cost 0.5-1.6 GB a file. When some parameters are frozen
(``requires_grad=False``) from the start, a checkpoint holds the trainable parameters and the
buffers, plus a fingerprint (SHA-256) of the frozen parameters; a resume rebuilds the model
from its source, checks that its frozen weights have that fingerprint, and loads the rest.

A frozen weight must stay as the model was built: a strategy that writes into one (merging an
adapter into the base, say) keeps what it wrote in its own ``state_dict``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from harness.errors import UserError


class NetWeights:
    """The network's frozen parameters at the start of the run, and what a checkpoint saves."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.frozen = {name for name, value in net.state_dict(keep_vars=True).items()
                       if isinstance(value, nn.Parameter) and not value.requires_grad}
        self.fingerprint = fingerprint(net, self.frozen) if self.frozen else None

    def base(self) -> dict | None:
        """What the checkpoint records of the frozen weights (None: it holds all of them)."""
        if self.fingerprint is None:
            return None
        return {"fingerprint": self.fingerprint, "tensors": len(self.frozen)}

    def state_dict(self) -> dict:
        """The network's state without the weights frozen now and at the start."""
        if not self.frozen:
            return self.net.state_dict()
        state = self.net.state_dict(keep_vars=True)
        return {name: value.detach() if torch.is_tensor(value) else value
                for name, value in state.items()
                if not (name in self.frozen and not value.requires_grad)}

    def load_state_dict(self, state: dict, base: dict | None, path: Path) -> None:
        """Load a checkpoint's network state, checking the frozen weights it leaves out."""
        stored = None if base is None else base.get("fingerprint")
        if stored != self.fingerprint:
            raise UserError(self._mismatch(stored, path))
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        missing = [name for name in missing if name not in self.frozen]
        if missing or unexpected:
            what = "; ".join(f"{kind} key(s): {', '.join(keys[:3])}" for kind, keys in (
                ("Missing", missing), ("Unexpected", unexpected)) if keys)
            raise UserError(f"cannot resume from {path}: its network does not match this "
                            f"version of retain's model ({what}); start a new run (another "
                            "name=)")

    def _mismatch(self, stored: str | None, path: Path) -> str:
        if stored is None:
            return (f"cannot resume from {path}: it holds every weight, but this model freezes "
                    f"{len(self.frozen)} of them (another adapter setting?); start it over "
                    "with --restart")
        if self.fingerprint is None:
            return (f"cannot resume from {path}: it holds only trainable weights, but this "
                    "model freezes none; start it over with --restart")
        return (f"cannot resume from {path}: the frozen base weights differ from the ones it "
                f"was trained on (fingerprint {stored[:12]}, now {self.fingerprint[:12]}): "
                "model.source changed; restore it, or start over with --restart")


def fingerprint(net: nn.Module, names: set[str]) -> str:
    """SHA-256 over the named tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    state = net.state_dict()
    for name in sorted(names):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        if tensor.numel():
            h.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()
