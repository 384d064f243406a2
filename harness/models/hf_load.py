"""Loading Hugging Face checkpoints offline, with one-line errors for what a user can get wrong.

A ``model.source`` is a local folder (config, weights and tokenizer, as ``save_pretrained``
writes them), or a Hub name when online. Each failure a user can cause (no such folder, a folder
that holds no causal LM, one without a tokenizer) is a ``UserError`` raised while the model is
built, which is before any run directory exists.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from harness.errors import UserError
from harness.runtime.progress import say

INSTALL = "pip install 'retain[pretrained]'"
CAUSAL_EXAMPLES = "llama, mistral, qwen2, gpt2, gpt_neox, phi3"


def transformers_module():
    try:
        import transformers
    except ImportError as err:
        raise UserError(f"pretrained models need transformers: {INSTALL}") from err
    transformers.utils.logging.disable_progress_bar()  # one bar per shard clutters run logs
    return transformers


def package_dir(module: str, package: str) -> Path:
    # find_spec locates the files without importing the package (and its heavy dependencies).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the bundled weights need the {package} package: {INSTALL} "
                        f"(or set model.source to a Hub name when online)")
    return Path(spec.submodule_search_locations[0])


def load(loader, source, **kwargs):
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as err:  # not a directory, and the Hub cannot be reached or has no such name
        raise UserError(f"cannot load '{source}': {err}".splitlines()[0]) from err


def check_folder(source: str) -> None:
    """A source that reads as a path must be an existing folder (else it is a Hub name)."""
    looks_local = source.startswith(("/", "./", "../", "~")) or Path(source).exists()
    if looks_local and not Path(source).expanduser().is_dir():
        raise UserError(f"model.source={source}: no such folder; give a folder written by "
                        "save_pretrained (config.json, weights, tokenizer) or a Hub name")


@functools.lru_cache(maxsize=8)
def causal_config(source: str, gguf_file: str | None = None):
    """The source's model config, refused unless AutoModelForCausalLM builds a decoder from it."""
    tf = transformers_module()
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        config = tf.AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"model.source={source} holds no model config ({_first(err)})") from None
    from transformers.models.auto import modeling_auto as auto

    kind = getattr(config, "model_type", "?")
    encoder = kind in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(
        config, "is_decoder", False)  # BERT-like: loadable as a causal LM, but bidirectional
    if kind not in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or encoder or getattr(
            config, "is_encoder_decoder", False):
        raise UserError(f"model.source={source} is a '{kind}' model, not a causal language "
                        f"model; give a decoder-only LM (e.g. {CAUSAL_EXAMPLES})")
    return config


@functools.lru_cache(maxsize=8)
def tokenizer(source: str, gguf_file: str | None = None):
    """The source's own tokenizer (cached: the scenario and the model both ask for it)."""
    tf = transformers_module()
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        return tf.AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"model.source={source} has no tokenizer transformers can load "
                        f"({_first(err)}); save one beside the weights "
                        "(tokenizer.save_pretrained)") from None


def _first(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def converted_gguf(folder: Path, name: str) -> tuple[str, str | None]:
    """(source, gguf file) to load a GGUF checkpoint from: a save_pretrained copy of it,
    de-quantised to float32, in retain's cache (``$RETAIN_CACHE`` or ~/.cache/retain).

    Why: reading the GGUF file de-quantises every tensor and rebuilds the tokenizer from its
    metadata each time (about a minute on a 2-core CPU); the copy loads memory-mapped in a
    fraction of a second. Where the cache cannot be written, the GGUF file itself is read.
    """
    gguf = Path(folder) / name
    root = Path(os.environ.get("RETAIN_CACHE") or "~/.cache/retain").expanduser()
    entry = root / f"hf-{gguf.stem}-{gguf.stat().st_size}"
    if (entry / "config.json").is_file():
        return str(entry), None
    say(f"converting {name} once into {entry} (float32 safetensors and its tokenizer)")
    tf = transformers_module()
    import torch

    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=root))
    except OSError as err:
        warnings.warn(f"cannot write {root} ({err}); reading {name} itself", stacklevel=2)
        return str(folder), name
    try:
        model = load(tf.AutoModelForCausalLM, str(folder), gguf_file=name, dtype=torch.float32)
        model.hf_quantizer, model.is_quantized = None, False  # de-quantised already
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(tmp)
        tokenizer(str(folder), name).save_pretrained(tmp)
        os.rename(tmp, entry)  # atomic: a reader sees a complete copy or none
    except OSError:
        if not (entry / "config.json").is_file():  # not another process that got there first
            warnings.warn(f"cannot write {entry}; reading {name} itself", stacklevel=2)
            return str(folder), name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(entry), None
