"""SmolLM2 + LoRA: retain's training step against a hand-written transformers + peft loop, and
full fine-tuning against LoRA.

Same process, same data (random ids from SmolLM2's vocabulary), same optimizer (AdamW, fused,
as retain builds it): (a) a plain loop over a model loaded with ``AutoModelForCausalLM`` and
wrapped with ``peft.get_peft_model`` (forward, cross-entropy, backward, step), (b) retain's
fit of the ContinualSystem with the naive strategy on the lean engine
(``bench.overhead.retain_epoch``). They alternate and the medians are compared: the ratio
plain / retain is the share of the plain loop's speed retain keeps (target >= 0.95).
Then full fine-tuning and LoRA each run in a child process, so each peak RSS is its own.

    python -m bench.pretrained            # or: python -m bench pretrained
    python -m bench.pretrained --steps 4 --batch-size 4 --seq-len 64 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from bench.common import print_table
from bench.overhead import Workload, retain_epoch, settle, steady, step_end

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def source() -> str:
    from harness.models.pretrained import SmolLM2, SmolLM2Config

    path, gguf = SmolLM2.locate(SmolLM2Config())
    if gguf:
        raise SystemExit("bench.pretrained needs the converted SmolLM2 copy in retain's cache")
    return path


def retain_workload(adapter: str, n_seq: int, seq_len: int, lr: float) -> Workload:
    from harness.api import DataSpec, TaskData
    from harness.config import TrainerConfig
    from harness.core.network import Network
    from harness.models.pretrained import SmolLM2, SmolLM2Config

    torch.manual_seed(0)
    spec = DataSpec(kind="tokens", task="lm", vocab_size=49152, seq_len=seq_len)
    model = SmolLM2(SmolLM2Config(adapter=adapter, lora_targets=TARGETS), spec)
    net = Network(model, spec)
    tokens = torch.randint(0, spec.vocab_size, (n_seq, seq_len + 1),
                           generator=torch.Generator().manual_seed(1))
    data = TaskData(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(),
                    torch.zeros(n_seq, dtype=torch.long))
    cfg = TrainerConfig(max_epochs=1, progress=False, lr=lr)
    return Workload("smollm2", net, data, cfg, "tokens", seq_len,
                    f"SmolLM2-135M {adapter}, {n_seq}x{seq_len} tokens")


def plain_model(adapter: str):
    """SmolLM2 loaded and wrapped by hand, as a transformers + peft user would."""
    import peft
    import transformers

    lm = transformers.AutoModelForCausalLM.from_pretrained(source(), dtype=torch.float32)
    lm.config.use_cache = False
    if adapter == "lora":
        lm = peft.get_peft_model(lm, peft.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    return lm


def plain_epoch(lm, data, batch_size: int, lr: float) -> tuple[float, int]:
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, fused=True)
    order, times = torch.randperm(len(data)), []
    for i in range(0, len(data), batch_size):
        idx = order[i : i + batch_size]
        logits = lm(input_ids=data.x[idx]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), data.y[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(step_end(data.x.device, first=not times))
    settle(times, data.x.device)
    return steady(times), len(times)


def compare(args) -> list[dict]:
    work = retain_workload("lora", args.batch_size * args.steps, args.seq_len, args.lr)
    lm = plain_model("lora")
    plain, retain = [], []
    plain_epoch(lm, work.data, args.batch_size, args.lr)  # warm-up
    for _ in range(args.repeats):  # interleaved: load on the machine hits both alike
        seconds, steps = plain_epoch(lm, work.data, args.batch_size, args.lr)
        plain.append(seconds)
        retain.append(retain_epoch(work, args.batch_size, "lean")[0])
    p, r = statistics.median(plain), statistics.median(retain)
    tokens = len(work.data) * args.seq_len
    rows = [{"figure": "hand-written transformers + peft loop",
             "value": f"{tokens / p:,.1f} tokens/s, {p / steps:.2f} s/step"},
            {"figure": "retain, lean engine", "value": f"{tokens / r:,.1f} tokens/s, "
                                                       f"{r / steps:.2f} s/step"},
            {"figure": "ratio retain / plain (target >= 0.95)", "value": f"{p / r:.3f}"}]
    print_table(f"SmolLM2 + LoRA step ({work.describe}, batch {args.batch_size}, "
                f"{torch.get_num_threads()} threads, median of {args.repeats})", rows)
    return rows


def one_mode(adapter: str, args) -> dict:
    """Tokens/s of retain's training steps for one adapter setting, and this process's peak."""
    work = retain_workload(adapter, args.batch_size * args.steps, args.seq_len, args.lr)
    trainable = sum(p.numel() for p in work.net.parameters() if p.requires_grad)
    start = time.perf_counter()
    seconds, _ = retain_epoch(work, args.batch_size, "lean")
    wall = time.perf_counter() - start
    return {"mode": "full fine-tuning" if adapter == "none" else "LoRA r=8 (q,k,v,o)",
            "trainable": f"{trainable / 1e6:.2f} M",
            "tokens/s": f"{len(work.data) * args.seq_len / seconds:,.1f}",
            "epoch wall s": f"{wall:.1f}",
            "peak RSS MB": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f}"}


def modes(args) -> list[dict]:
    rows = []
    for adapter in ("none", "lora"):
        cmd = [sys.executable, "-m", "bench.pretrained", "--one", adapter,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print_table(f"Full fine-tuning vs LoRA (batch {args.batch_size} x {args.seq_len} tokens, "
                f"{args.steps} steps, each in its own process)", rows)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per timed epoch")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--one", choices=["none", "lora"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one_mode(args.one, args)))
        return []
    return compare(args) + modes(args)


if __name__ == "__main__":
    main()
