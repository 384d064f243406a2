"""Document-level splits of a text domain into fixed-size, packed language-modelling sets.

Why by document: packing a stream first and splitting windows afterwards would put the two
halves of one document in train and test, and the test perplexity would measure memorisation.
Documents are shuffled once with a split seed that is independent of the run seed (every run
and every strategy is tested on the same text) and dealt to test, then validation, then train,
until each split holds enough tokens for its fixed number of sequences. Fixed sizes keep tasks
comparable: each experience trains on the same number of tokens.
"""

from __future__ import annotations

import numpy as np

from harness.errors import UserError
from scenarios.tokenize import join_documents, pack

SPLITS = ("test", "val", "train")  # dealing order: the small held-out sets fill first


def n_sequences(tokens: int, seq_len: int) -> int:
    return tokens // seq_len


def assign_documents(lengths: list[int], needed: dict[str, int], seed: int,
                     what: str) -> dict[str, np.ndarray]:
    """Indices of the documents of each split; ``needed`` maps split -> tokens it must hold.

    A document of n tokens contributes n + 1 (its EOS). Raises a UserError naming ``what``
    when the documents run out.
    """
    order = np.random.default_rng(seed).permutation(len(lengths))
    out, pos = {}, 0
    for split in SPLITS:
        want, have, start = needed.get(split, 0), 0, pos
        while have < want and pos < len(order):
            have += lengths[order[pos]] + 1
            pos += 1
        if have < want:
            total = sum(lengths) + len(lengths)
            raise UserError(f"{what} has {total:,} tokens in {len(lengths)} documents, too few "
                            f"for the requested split sizes {needed}; lower the scenario's "
                            f"*_tokens sizes")
        out[split] = np.sort(order[start:pos])
    return out


def split_documents(docs: list[str], seq_len: int, tokens: dict[str, int], seed: int,
                    what: str) -> dict[str, np.ndarray]:
    """Document indices of each split, sized in bytes for ``tokens[split] // seq_len`` rows."""
    n_seqs = {s: n_sequences(tokens.get(s, 0), seq_len) for s in SPLITS}
    needed = {s: n * seq_len + 1 if n else 0 for s, n in n_seqs.items()}
    return assign_documents([len(d.encode("utf-8")) for d in docs], needed, seed, what)


def split_and_pack(docs: list[str], seq_len: int, tokens: dict[str, int], seed: int,
                   what: str, join=None) -> dict[str, np.ndarray]:
    """Arrays ``<split>`` (N, seq_len + 1) windows and ``<split>_docs`` document ids.

    With the byte tokenizer (``join=None``) every split has exactly ``tokens // seq_len`` rows.
    With another tokenizer (``join``: documents -> id stream, a BPE or a model's tokenizer)
    ``tokens`` counts bytes of text: a split keeps the windows that hold about that many bytes
    (at the split's own bytes per token), so one long document does not swell the test set.
    """
    parts = split_documents(docs, seq_len, tokens, seed, what)
    arrays = {}
    for split in SPLITS:
        idx = parts[split]
        picked = [docs[i] for i in idx]
        if join is None:
            arrays[split] = pack(join_documents(picked), seq_len,
                                 n_sequences(tokens.get(split, 0), seq_len))
        else:
            ids = join(picked)
            text_bytes = sum(len(d.encode("utf-8")) + 1 for d in picked)
            per_window = seq_len * max(text_bytes, 1) / max(len(ids), 1)
            want = tokens.get(split, 0)
            arrays[split] = pack(ids, seq_len, max(1, round(want / per_window)) if want else 0)
        arrays[f"{split}_docs"] = idx.astype(np.int32)
    return arrays


def equalise(prepared, split: str) -> list[np.ndarray]:
    """Every task's windows of one split cut to the shortest (a tokenizer other than bytes
    compresses each domain differently; with bytes they are equal already)."""
    n = min(len(p.arrays[split]) for p in prepared)
    return [p.arrays[split][:n] for p in prepared]
