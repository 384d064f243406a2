"""Memorizing Transformer (Wu et al., 2022) with optional kNN-LM output (Khandelwal et al., 2020).

A decoder whose attention window is one segment (``seg_len``). One upper block (``knn_layer``)
also attends to the top-k (key, value) pairs retrieved from two memories:

* the document memory: keys and values of the earlier segments of the same input row in this
  call (what makes long-range recall within a document possible);
* the long-term store (``knn_memory.KVStore``): every key and value written in earlier calls,
  across batches and tasks, of fixed ``capacity`` with an eviction policy. It is not a
  parameter and takes no gradient; it is kept in buffers, so checkpoints carry its contents.

Local and memory attention are mixed by a learned per-head gate. Queries and keys are
L2-normalised (as in the paper), so keys written long ago by older weights stay comparable.
Unlike the paper, the document memory keeps its gradient within a call: the layer learns what
to write, which matters when a small model is trained from scratch in a few hundred steps.

With ``lambda_knn > 0`` a second store holds (key, next token) pairs and ``lm_logits``
returns log((1 - lambda) p_LM + lambda p_kNN), the kNN-LM mixture: facts seen during an old
task can be recalled after the weights have moved on. That needs keys an old context still
maps to after later tasks trained the network, so by default they are fixed context keys
(``knn_context.py``: a random projection of the last ``knn_lm_window`` tokens, never trained),
and each distinct pair is written once (``knn_lm_unique``), so repeated text does not crowd old
tasks out of the store. ``knn_lm_keys=hidden`` uses the input of block ``knn_lm_layer`` (0 =
the token embedding), as in the paper: learned keys drift as later tasks train, so an old
task's entries are no longer found (docs/memory.md, "kNN memory across tasks").

Entries written by a call become searchable when the next call starts, so a batch never
retrieves its own next tokens. ``memory_stats()`` reports entries, bytes and retrieval time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import DataSpec, SequenceModel
from harness.errors import UserError
from harness.models.knn_context import ContextKeys
from harness.models.knn_memory import EVICTIONS, INDEXES, KVStore
from harness.models.layers import Block, SegmentConfig, init_weights, rope
from harness.registry import register_model

WRITES = ("train", "eval", "both", "none")
LM_KEYS = ("context", "hidden")


@dataclass
class KNNConfig(SegmentConfig):
    name: str = "knn"
    knn_layer: int = field(default=-1, metadata={
        "help": "block reading memory (-1 = last; -n_layer <= knn_layer < n_layer)"})
    top_k: int = field(default=16, metadata={"help": "entries retrieved per query", "min": 1})
    capacity: int = field(default=16384, metadata={"help": "store entries (0 = no store)",
                                                   "min": 0})
    eviction: str = field(default="reservoir", metadata={
        "help": "store eviction policy (reservoir keeps a uniform sample of every task; fifo "
                "only the latest writes)", "choices": EVICTIONS})
    write: str = field(default="train", metadata={"help": "store writes in", "choices": WRITES})
    index: str = field(default="exact", metadata={
        "help": "exact: torch top-k; faiss: a FAISS flat index (faiss-cpu); faiss-ivf: "
                "approximate, ~sqrt(entries) per search from 4096 entries", "choices": INDEXES})
    persist: bool = field(
        default=True, metadata={"help": "keep the store on reset_memory() (across tasks)"}
    )
    lambda_knn: float = field(default=0.0, metadata={"help": "kNN-LM mixture weight (0 = off)",
                                                     "min": 0, "below": 1})
    tie_weights: bool = field(default=True, metadata={"help": "tie LM head to the embedding"})
    knn_lm_layer: int = field(default=1, metadata={
        "help": "kNN-LM keys with knn_lm_keys=hidden: the input of this block (0 = token "
                "embeddings; at most n_layer)",
        "min": 0})
    knn_lm_keys: str = field(default="context", metadata={
        "help": "kNN-LM keys: context, a fixed random projection of the last knn_lm_window "
                "tokens (never trained, so old tasks' keys are found again); hidden, the input "
                "of block knn_lm_layer (learned; drifts as later tasks train)",
        "choices": LM_KEYS})
    knn_lm_window: int = field(default=32, metadata={
        "help": "tokens a context key reads (knn_lm_keys=context)", "min": 1, "max": 4096})
    knn_lm_unique: bool = field(default=True, metadata={
        "help": "write a (key, next token) pair to the kNN-LM store only if it is not held yet"})
    knn_temperature: float = field(default=0.02, metadata={
        "help": "kNN-LM softmax temperature over cosine similarities (a context key one token "
                "in 32 away scores ~0.03 lower: at 0.02 a weight ~4.5x smaller)", "above": 0})
    seed: int = field(default=0, metadata={"help": "seed of random/reservoir eviction and of "
                                           "the context keys' tables",
                                           "min": 0, "max": 2**32 - 1})

    def check(self) -> None:
        super().check()
        if not -self.n_layer <= self.knn_layer < self.n_layer:
            raise UserError(f"model.knn_layer={self.knn_layer} must be a block: from "
                            f"-{self.n_layer} to {self.n_layer - 1} (model.n_layer={self.n_layer})")
        if 0 < self.capacity < self.top_k:
            raise UserError(f"model.capacity={self.capacity} holds fewer entries than "
                            f"model.top_k={self.top_k} retrieves: choose a capacity of 0 (no "
                            f"store) or at least {self.top_k}")
        if self.knn_lm_layer > self.n_layer:
            raise UserError(f"model.knn_lm_layer={self.knn_lm_layer} must be at most "
                            f"model.n_layer={self.n_layer}")


class KNNAttention(nn.Module):
    """Causal local attention, gated per head with attention over retrieved memories.

    Keys and values have a single head shared by all query heads (multi-query), so one store
    entry per position serves every head.
    """

    def __init__(self, d_model: int, n_head: int, top_k: int):
        super().__init__()
        if d_model % n_head:
            raise UserError(f"d_model={d_model} must be divisible by n_head={n_head}")
        self.n_head, self.head_dim, self.top_k = n_head, d_model // n_head, top_k
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * self.head_dim, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(20.0)))  # cosine -> logit scale
        self.gate = nn.Parameter(torch.zeros(n_head))  # sigmoid(0) = half memory, half local

    def forward(self, x: Tensor, doc_k: Tensor | None, doc_v: Tensor | None,
                store: KVStore | None) -> tuple[Tensor, Tensor, Tensor]:
        B, S, _ = x.shape
        q = F.normalize(self.q(x).unflatten(-1, (self.n_head, -1)).transpose(1, 2), dim=-1)
        k, v = self.kv(x).chunk(2, dim=-1)
        k = F.normalize(k, dim=-1)  # (B, S, Dh)
        q = q * self.log_scale.exp()
        kh, vh = (t.expand(-1, self.n_head, -1, -1) for t in (rope(k[:, None], 0), v[:, None]))
        y = F.scaled_dot_product_attention(rope(q, 0), kh, vh, is_causal=True, scale=1.0)
        mem = self.retrieve(q, doc_k, doc_v, store)
        if mem is not None:
            g = torch.sigmoid(self.gate).view(1, -1, 1, 1)
            y = g * mem + (1 - g) * y
        return self.proj(y.transpose(1, 2).flatten(2)), k, v

    def retrieve(self, q: Tensor, doc_k: Tensor | None, doc_v: Tensor | None,
                 store: KVStore | None) -> Tensor | None:
        """Attention over the top-k entries of the document memory and of the store."""
        B, H, S, _ = q.shape
        scores, values = [], []
        if doc_k is not None:  # (B, N, Dh): earlier segments of the same rows
            s = torch.einsum("bhsd,bnd->bhsn", q, doc_k.to(q.dtype))
            top = s.topk(min(self.top_k, doc_k.shape[1]), dim=-1)
            rows = torch.arange(B, device=q.device)[:, None, None, None]
            scores.append(top.values)
            values.append(doc_v[rows, top.indices])
        if store is not None and int(store.count):
            idx = store.search(q.flatten(0, 2), self.top_k).view(B, H, S, -1)
            keys = store.keys[idx].to(q.dtype)  # scores recomputed in torch: q gets a gradient
            scores.append((q.unsqueeze(-2) * keys).sum(-1))
            values.append(store.values[idx])
        if not scores:
            return None
        weights = torch.cat(scores, dim=-1).float().softmax(dim=-1)
        values = torch.cat([v.to(weights.dtype) for v in values], dim=-2)
        return (weights.unsqueeze(-1) * values).sum(-2).to(q.dtype)


class KNNBlock(Block):
    """A pre-norm block whose attention also reads memory; returns its keys and values."""

    def __init__(self, d_model: int, n_head: int, dropout: float, top_k: int):
        super().__init__(d_model, n_head, dropout)
        self.attn = KNNAttention(d_model, n_head, top_k)

    def forward(self, x, doc_k, doc_v, store):
        a, k, v = self.attn(self.ln1(x), doc_k, doc_v, store)
        x = x + a
        return x + self.mlp(self.ln2(x)), k, v


@register_model("knn", config=KNNConfig)
class KNN(SequenceModel):
    """Memorizing Transformer: kNN attention into a persistent external key-value memory."""

    def __init__(self, cfg: KNNConfig, spec: DataSpec):
        super().__init__()
        if spec.seq_len and cfg.seg_len > spec.seq_len:  # one segment: memory never read
            raise UserError(f"model.seg_len={cfg.seg_len} is longer than the scenario's "
                            f"sequences ({spec.seq_len} tokens): the memory would never be "
                            f"read; choose model.seg_len from 1 to {spec.seq_len}")
        self.cfg, self.hidden_size = cfg, cfg.d_model
        self.knn_index = cfg.knn_layer % cfg.n_layer
        self.embed = nn.Embedding(spec.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            KNNBlock(cfg.d_model, cfg.n_head, cfg.dropout, cfg.top_k) if i == self.knn_index
            else Block(cfg.d_model, cfg.n_head, cfg.dropout) for i in range(cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, spec.vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        self.apply(init_weights)
        # The memory read-out is two maps deep (values, then proj): at GPT-2's 0.02 it starts
        # near zero and training can settle where the output ignores it (as in rmt), so the
        # memory attention keeps PyTorch's default init (std ~ 1/sqrt(d)).
        for layer in self.blocks[self.knn_index].attn.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        store = dict(eviction=cfg.eviction, index=cfg.index, seed=cfg.seed)
        dh = cfg.d_model // cfg.n_head
        self.attn_store = KVStore(cfg.capacity, dh, (dh,), **store) if cfg.capacity else None
        self.lm_store = self.context_keys = None
        if cfg.capacity and cfg.lambda_knn > 0:
            self.lm_store = KVStore(cfg.capacity, cfg.d_model, (), torch.long,
                                    unique=cfg.knn_lm_unique, **store)
            if cfg.knn_lm_keys == "context":
                self.context_keys = ContextKeys(spec.vocab_size, cfg.d_model, cfg.knn_lm_window,
                                                cfg.seed)
        self._lm_query: tuple[Tensor, Tensor] | None = None  # (hidden, kNN-LM keys) of last call

    def stores(self) -> list[KVStore]:
        return [s for s in (self.attn_store, self.lm_store) if s is not None]

    def forward(self, x: Tensor) -> Tensor:
        for store in self.stores():
            store.commit()  # the previous call's entries become searchable now
        doc_k = doc_v = None
        outs, lm_keys = [], []
        for seg in x.split(self.cfg.seg_len, dim=1):
            h = self.drop(self.embed(seg))
            for i, block in enumerate(self.blocks):
                if i == self.cfg.knn_lm_layer:
                    lm_keys.append(h)
                if i == self.knn_index:
                    h, k, v = block(h, doc_k, doc_v, self.attn_store)
                else:
                    h = block(h)
            doc_k = k if doc_k is None else torch.cat([doc_k, k], dim=1)
            doc_v = v if doc_v is None else torch.cat([doc_v, v], dim=1)
            if self.cfg.knn_lm_layer == len(self.blocks):
                lm_keys.append(h)
            outs.append(self.ln_f(h))
        h = torch.cat(outs, dim=1)
        if self.lm_store is not None:
            # Fixed context keys, or the states entering block ``knn_lm_layer``: not the last
            # layer's, which drift most when a later task is trained (they collapse towards
            # its outputs), so an old task's keys would no longer be found from them.
            if self.context_keys is not None:
                lm_keys = self.context_keys(x)
            else:
                lm_keys = F.normalize(torch.cat(lm_keys, dim=1).float(), dim=-1)
            self._lm_query = (h, lm_keys)
            if x.shape[1] > 1 and self.writing():
                self.lm_store.write(lm_keys[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        if self.attn_store is not None and self.writing():
            self.attn_store.write(doc_k.flatten(0, 1), doc_v.flatten(0, 1))
        return h

    def writing(self) -> bool:
        return self.cfg.write in ("both", "train" if self.training else "eval")

    def lm_logits(self, hidden: Tensor) -> Tensor:
        logits = self.head(hidden)
        store = self.lm_store
        if store is None or not int(store.count):
            return logits
        if self._lm_query is None or hidden is not self._lm_query[0]:
            raise RuntimeError("knn: lm_logits needs the hidden states of the latest forward "
                               "call (the kNN-LM searches with that call's lower-layer states)")
        # kNN-LM: a softmax over the neighbours' similarities, spread onto their next tokens.
        q = self._lm_query[1].flatten(0, -2)
        idx = store.search(q, self.cfg.top_k)
        sims = (q.unsqueeze(1) * store.keys[idx]).sum(-1) / self.cfg.knn_temperature
        p_knn = torch.zeros(len(q), logits.shape[-1], device=q.device)
        p_knn.scatter_add_(1, store.values[idx], sims.softmax(-1))
        lam = self.cfg.lambda_knn
        log_lm = logits.float().log_softmax(-1).flatten(0, -2)
        log_knn = p_knn.clamp_min(torch.finfo(p_knn.dtype).tiny).log()  # finite gradients
        mixed = torch.logaddexp(log_lm + math.log1p(-lam), log_knn + math.log(lam))
        return mixed.view_as(logits)  # log-probabilities: valid logits for cross-entropy

    def reset_memory(self) -> None:
        if not self.cfg.persist:
            for store in self.stores():
                store.clear()

    def memory_stats(self) -> dict:
        """Entries, bytes and cumulative retrieval time of the long-term memory."""
        stats = {"entries": 0, "bytes": 0, "retrieval_s": 0.0, "searches": 0}
        for store in self.stores():
            store.commit()
            for key, value in store.stats().items():
                if key != "capacity":
                    stats[key] += value
        if self.lm_store is not None:
            stats["lm_entries"] = int(self.lm_store.count)
        return stats
