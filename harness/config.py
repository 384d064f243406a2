"""Typed run configuration: dataclass defaults, then a YAML experiment file, then overrides.

That is the only precedence there is::

    defaults (the dataclasses below and each component's config)
      < experiment YAML (``retain run configs/experiments/x.yaml``)
      < command line ``key=value`` (or ``--key=value``, the form a W&B sweep agent passes)

Component sections are chosen by name (``model.name``, ``scenario.name``, ``strategy.name``);
the chosen component's config dataclass then becomes the schema of its section, so an unknown
key or a value of the wrong type fails here, before any work starts, with a ``UserError``
naming the key and the valid choices. ``strategy=replay`` is shorthand for
``strategy.name=[replay]``; several strategies compose (``strategy=[replay,distill]``) and each
one's parameters live under ``strategy.<name>.*``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import ranges
from harness.errors import UserError, did_you_mean

COMPONENTS = ("model", "scenario", "strategy")


@dataclass
class TrainerConfig:
    max_epochs: int = field(default=1, metadata={"help": "epochs per experience", "min": 1})
    max_steps: int = field(default=-1, metadata={
        "help": "cap on steps per experience (-1: none)", "min": 1, "or": (-1,)})
    batch_size: int = field(default=32, metadata={"help": "training mini-batch size", "min": 1})
    eval_batch_size: int = field(default=128, metadata={"help": "evaluation batch size",
                                                        "min": 1})
    optimizer: str = field(default="adamw", metadata={
        "help": "optimizer", "choices": ("adamw", "adam", "sgd")})
    lr: float = field(default=3e-3, metadata={"help": "learning rate (the peak of a schedule)",
                                              "above": 0})
    schedule: str = field(default="constant", metadata={
        "help": "learning rate over each task: constant; cosine (warm-up at the stream's start, "
                "cosine decay within every task); rewarm (warm-up and decay again every task)",
        "choices": ("constant", "cosine", "rewarm")})
    warmup_steps: int = field(default=0, metadata={
        "help": "linear warm-up steps (first task; every task with rewarm)", "min": 0})
    warmup_fraction: float = field(default=0.0, metadata={
        "help": "warm-up as a fraction of the task's steps (instead of warmup_steps)",
        "min": 0, "max": 1})
    min_lr_ratio: float = field(default=0.1, metadata={
        "help": "cosine and rewarm decay to lr * min_lr_ratio at each task's last step",
        "min": 0, "max": 1})
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum", "min": 0, "below": 1})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay", "min": 0})
    grad_clip: float = field(default=0.0, metadata={"help": "clip gradient norm (0: off)",
                                                    "min": 0})
    accumulate_grad_batches: int = field(default=1, metadata={"help": "gradient accumulation",
                                                              "min": 1})
    accelerator: str = field(default="auto", metadata={
        "help": "device type", "choices": ("auto", "cpu", "gpu", "cuda", "mps")})
    devices: int = field(default=1, metadata={"help": "processes / GPUs per machine", "min": 1})
    num_nodes: int = field(default=1, metadata={"help": "machines (torchrun / SLURM)", "min": 1})
    strategy: str = field(default="auto", metadata={
        "help": "Lightning strategy", "choices": ("auto", "ddp", "ddp_spawn")})
    engine: str = field(default="auto", metadata={
        "help": "auto: retain's lean loop for one process on CPU or one CUDA GPU in 32 or "
                "bf16-mixed; Lightning's Trainer otherwise",
        "choices": ("auto", "lean", "lightning")})
    ddp_timeout_s: int = field(default=1800, metadata={
        "help": "DDP: seconds a collective waits for a stuck rank before the run fails", "min": 1})
    precision: str = field(default="32-true", metadata={
        "help": "numeric precision",
        "choices": ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")})
    deterministic: bool = field(default=True, metadata={"help": "deterministic algorithms"})
    log_every_n_steps: int = field(default=10, metadata={"help": "training log interval",
                                                         "min": 1})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    callbacks: list[str] = field(default_factory=list, metadata={
        "help": "Lightning callbacks as module:Class, built without arguments (Trainer engine)"})

    def check(self) -> None:
        engine_for(self)  # trainer.engine=lean refuses what only Lightning's Trainer runs
        if self.warmup_steps and self.warmup_fraction:
            raise UserError("trainer.warmup_steps and trainer.warmup_fraction are both set: "
                            "give one of them (the other 0)")


@dataclass
class WandbConfig:
    project: str = field(default="retain", metadata={"help": "W&B project"})
    entity: str | None = field(default=None, metadata={"help": "W&B entity (team or user)"})
    mode: str | None = field(default=None, metadata={
        "help": "default: online only when logged in",
        "choices": (None, "online", "offline", "disabled")})
    group: str | None = field(default=None, metadata={
        "help": "W&B group (default: the sweep's name in a sweep, else the strategy)"})
    tags: list[str] = field(default_factory=list, metadata={"help": "W&B tags"})
    sweep: str | None = field(default=None, metadata={
        "help": "the sweep this run belongs to (set by retain sweep): W&B group, tag, job type"})


@dataclass
class CheckpointConfig:
    every_n_steps: int = field(default=0, metadata={
        "help": "also checkpoint inside a task every n optimizer steps (0: after each task only)",
        "min": 0})
    keep: int = field(default=2, metadata={
        "help": "checkpoint files kept: last.ckpt, prev.ckpt, prev2.ckpt, ... (0: none, for "
                "throw-away runs that need no resume)", "min": 0, "max": 100})


@dataclass
class EvalConfig:
    every_n_steps: int | None = field(default=None, metadata={
        "help": "also evaluate every n optimizer steps (and at each task's last step) on a fixed "
                "subsample of every test task: curves and stability-gap metrics (null: off)",
        "min": 1})
    subsample: int | None = field(default=None, metadata={
        "help": "examples (sequences for LM) per test task scored during training, drawn once "
                "from the run's seed (null: the whole test set)", "min": 1})


@dataclass
class RunConfig:
    name: str | None = field(default=None, metadata={"help": "run name (default: generated)"})
    out_dir: str = field(default="runs", metadata={"help": "directory that holds run folders"})
    seed: int = field(default=0, metadata={"help": "global random seed", "min": 0,
                                           "max": 2**32 - 1})
    logger: str = field(default="wandb", metadata={"help": "experiment tracker",
                                                   "choices": ("wandb", "none")})
    eval_init: bool = field(
        default=True, metadata={"help": "evaluate the untrained model (forward transfer)"}
    )
    plugins: list[str] = field(default_factory=list, metadata={
        "help": "modules or .py files that register components, imported first"})
    model: Any = None
    scenario: Any = None
    strategy: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


DEFAULT_NAMES = {"model": "gpt", "scenario": "text-domains", "strategy": ["naive"]}


def load(experiment: str | None = None, overrides: list[str] = ()):
    """Resolve a RunConfig from an optional experiment YAML and dotted overrides."""
    from omegaconf import OmegaConf

    layers = [_normalise(_read_yaml(experiment), experiment)] if experiment else []
    layers.append(_normalise(_parse_overrides(overrides), "the command line"))
    _load_plugins(layers, Path(experiment).parent if experiment else None)
    names = _component_names(layers)
    schema = _structured_schema(names["model"], names["scenario"], tuple(names["strategy"]))
    for layer in layers:
        _check_keys(layer, schema)
    try:
        merged = OmegaConf.merge(schema, *layers)
        cfg = OmegaConf.to_object(merged)
    except Exception as err:  # omegaconf's ValidationError and friends
        raise UserError(_describe(err)) from None
    ranges.check(cfg)
    return cfg


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def to_yaml(cfg) -> str:
    """config.yaml's text. OmegaConf's dumper quotes strings its loader would read as numbers
    (``name: '1e3'``), so ``load`` of it gives the same config (and hash) back. Its dumper is
    used directly: ``OmegaConf.to_yaml`` gives the same text, but builds a DictConfig first."""
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    return yaml.dump(to_dict(cfg), Dumper=get_omega_conf_dumper(), sort_keys=False,
                     default_flow_style=False, allow_unicode=True)


# Where and how a run is kept or placed, not what it computes: the config hash (resume, sweep
# skipping) and `retain compare`'s grouping both leave these out. trainer.batch_size is the
# global batch, so a run resumes on another number of processes or machines.
NON_RESULT_KEYS = ("name", "out_dir", "logger", "wandb", "checkpoint", "trainer.progress",
                   "plugins",
                   "scenario.cache", "scenario.cache_dir", "trainer.devices",
                   "trainer.num_nodes", "trainer.strategy", "trainer.ddp_timeout_s",
                   "trainer.engine", "trainer.callbacks")


def config_hash(cfg) -> str:
    """Stable hash of what determines a run's results (not its name, folder or logging)."""
    d = to_dict(cfg)
    for key in NON_RESULT_KEYS:
        *parents, last = key.split(".")
        section = d
        for part in parents:
            section = section.get(part, {})
        section.pop(last, None)
    if d.get("eval", {}).get("every_n_steps") is None:  # off: hashes as before it existed
        d.pop("eval", None)
    trainer = d.get("trainer", {})
    if trainer.get("schedule") == "constant" and not (trainer.get("warmup_steps")
                                                      or trainer.get("warmup_fraction")):
        for key in ("schedule", "warmup_steps", "warmup_fraction", "min_lr_ratio"):
            trainer.pop(key, None)  # no schedule: hashes as before schedules existed
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def strategy_names(cfg) -> list[str]:
    return list(cfg.strategy.name)


# -- layers -------------------------------------------------------------------------------


def _read_yaml(path: str) -> dict:
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.is_file():
        raise UserError(f"experiment file not found: {path}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(p))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot parse {path}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def _parse_overrides(overrides) -> dict:
    from omegaconf import OmegaConf

    items = []
    for raw in overrides:
        item = raw[2:] if raw.startswith("--") else raw
        key, sep, _ = item.partition("=")
        if not sep or not key.strip() or key != key.strip():
            raise UserError(f"override '{raw}' is not of the form key=value")
        if key in COMPONENTS and not item[len(key) + 1:].lstrip().startswith("{"):
            # `strategy=replay strategy.replay.mem_size=5`: a later dotted key must not
            # replace the shorthand with a mapping that has no name
            item = f"{key}.name={item[len(key) + 1:]}"
        items.append(item)
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(items))
    except Exception as err:
        raise UserError(f"cannot parse overrides: {_describe(err)}") from None


def _normalise(layer: dict, source: str) -> dict:
    """Expand component shorthands: ``strategy: replay`` -> ``strategy: {name: [replay]}``."""
    _refuse_interpolation(layer, source)
    layer = dict(layer)
    for comp in COMPONENTS:
        value = layer.get(comp)
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, (str, list)):
            layer[comp] = {"name": value}
        else:
            raise UserError(f"{comp} in {source} must be a name or a mapping, not {value!r}")
    strat = layer.get("strategy")
    if isinstance(strat, dict) and isinstance(strat.get("name"), str):
        strat["name"] = [n.strip() for n in strat["name"].split("+")]  # "replay+distill"
    return layer


def _refuse_interpolation(value, source: str, key: str = "") -> None:
    """OmegaConf would resolve ``${oc.env:SECRET}`` into config.yaml and W&B: refuse it."""
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_interpolation(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for v in value:
            _refuse_interpolation(v, source, key)
    elif isinstance(value, str) and "${" in value:
        raise UserError(f"'{key}' in {source} contains '${{': interpolations are not allowed "
                        "in retain configs")


def load_plugins(overrides: list[str]) -> None:
    """Import the plug-ins named by ``plugins=[...]`` overrides (``retain list`` takes them)."""
    _load_plugins([_parse_overrides(overrides)], None)


def _load_plugins(layers: list[dict], yaml_dir: Path | None) -> None:
    """Import the plug-ins the config names before its schema is built, so that the names
    they register are valid in it. The last layer that sets ``plugins`` decides (like any
    other key); each layer's list is rewritten as config.yaml records it (files absolute)."""
    from harness import plugins

    chosen = None
    for layer, base in zip(layers, [yaml_dir] * (len(layers) - 1) + [None]):
        if "plugins" not in layer:
            continue
        value = layer["plugins"]
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list):
            raise UserError(f"plugins must be a list of modules or .py files, not {value!r}")
        layer["plugins"] = chosen = [plugins.resolve(spec, base) for spec in value]
    plugins.load(chosen or [])


def _component_names(layers: list[dict]) -> dict:
    names = dict(DEFAULT_NAMES)
    for layer in layers:
        for comp in COMPONENTS:
            section = layer.get(comp)
            if isinstance(section, dict) and "name" in section:
                names[comp] = section["name"]
    for comp in ("model", "scenario"):
        if not isinstance(names[comp], str):
            raise UserError(f"{comp}.name must be one name, not {names[comp]!r}")
    if not isinstance(names["strategy"], list) or not names["strategy"]:
        raise UserError("strategy must name at least one strategy")
    if not all(isinstance(n, str) for n in names["strategy"]):
        raise UserError(f"strategy names must be names, not {names['strategy']!r}")
    if len(set(names["strategy"])) != len(names["strategy"]):
        raise UserError(f"strategy lists a name twice: {names['strategy']}")
    return names


@functools.lru_cache(maxsize=64)
def _structured_schema(model: str, scenario: str, strategies: tuple[str, ...]):
    """The OmegaConf schema for one choice of components, built once per process (merging
    copies it, so it is never changed): a sweep loads hundreds of configs."""
    from omegaconf import OmegaConf

    return OmegaConf.structured(_schema({"model": model, "scenario": scenario,
                                         "strategy": list(strategies)}))


def _schema(names: dict) -> RunConfig:
    from harness.registry import MODELS, SCENARIOS, STRATEGIES

    model = MODELS.get(names["model"]).config()
    scenario = SCENARIOS.get(names["scenario"]).config()
    fields = [("name", list[str], field(default_factory=lambda: list(names["strategy"])))]
    for strat in names["strategy"]:
        cfg_cls = STRATEGIES.get(strat).config
        fields.append((strat, cfg_cls, field(default_factory=cfg_cls)))
    section = dataclasses.make_dataclass("StrategyConfig", fields)
    return RunConfig(model=model, scenario=scenario, strategy=section())


def _check_keys(layer: dict, schema, prefix: str = "") -> None:
    """Reject keys the schema does not have, naming the valid ones at that level."""
    for key, value in layer.items():
        full = f"{prefix}{key}"
        if key not in schema:
            valid = [str(k) for k in schema.keys()]
            hint = ""
            if prefix == "strategy.":
                hint = f" ('{key}' is not among strategy.name={list(schema['name'])})"
            raise UserError(f"unknown config key '{full}'{hint}{did_you_mean(str(key), valid)}")
        child = schema[key]
        section = hasattr(child, "keys") and not _is_open_mapping(schema, key)
        if section and not isinstance(value, dict):
            raise UserError(f"config key '{full}' is a section; set its keys instead "
                            f"(e.g. {full}.{next(iter(child.keys()))}=...)")
        if isinstance(value, dict) and section:
            _check_keys(value, child, prefix=f"{full}.")
        elif isinstance(value, dict) and not _is_open_mapping(schema, key):
            raise UserError(f"config key '{full}' takes a value, not a mapping")


def _is_open_mapping(schema, key) -> bool:
    """A ``dict[str, Any]`` field (any keys, e.g. a factory's keyword arguments), not a
    section with a dataclass's keys."""
    from omegaconf import OmegaConf

    child = schema[key]
    return child is not None and OmegaConf.is_dict(child) and OmegaConf.get_type(child) is dict


LEAN_PRECISIONS = ("32-true", "32", "bf16-mixed")  # what harness.core.loop implements


def processes(cfg: TrainerConfig) -> int:
    """Training processes the config asks for: devices per machine x machines."""
    return cfg.devices * cfg.num_nodes


def engine_for(cfg: TrainerConfig, device_type: str | None = None) -> str:
    """``lean`` or ``lightning``: what ``trainer.engine`` asks for, or what ``auto`` picks.

    The lean loop (``harness.core.loop``) runs one process on the CPU or one CUDA GPU; DDP, MPS
    (asked for, or the ``device_type`` that ``accelerator=auto`` resolved to), an explicit
    ``trainer.strategy``, the other precisions and Lightning callbacks go through Lightning's
    Trainer.
    """
    if cfg.callbacks:
        for spec in cfg.callbacks:
            module, _, name = spec.partition(":")
            if not (module and name and all(p.isidentifier() for p in module.split("."))
                    and name.isidentifier()):
                raise UserError(f"trainer.callbacks: '{spec}' is not of the form "
                                "module:Class (e.g. lightning.pytorch.callbacks:Timer)")
        if cfg.engine == "lean":
            raise UserError("trainer.callbacks are Lightning callbacks, which need Lightning's "
                            "Trainer: use trainer.engine=lightning (or auto), not lean")
        return "lightning"
    launched = int(os.environ.get("WORLD_SIZE", "1"))  # by torchrun / SLURM
    why_not = (
        f"trainer.devices={cfg.devices}, trainer.num_nodes={cfg.num_nodes}"
        if max(processes(cfg), launched) > 1
        else f"trainer.strategy={cfg.strategy}" if cfg.strategy != "auto"
        else f"trainer.precision={cfg.precision}" if cfg.precision not in LEAN_PRECISIONS
        else f"trainer.accelerator={cfg.accelerator} (MPS)"
        if "mps" in (cfg.accelerator, device_type)
        else None)
    if cfg.engine == "lightning" or (cfg.engine == "auto" and why_not):
        return "lightning"
    if why_not:
        raise UserError(f"trainer.engine=lean runs one process on the CPU or one GPU in "
                        f"{' | '.join(LEAN_PRECISIONS)} precision, not with {why_not}; "
                        "use trainer.engine=auto or lightning")
    return "lean"


def _describe(err: Exception) -> str:
    """One line from an OmegaConf error: which key, what value, what type was expected."""
    key = getattr(err, "full_key", None)
    msg = str(getattr(err, "msg", None) or err).strip().splitlines()[0]
    if "Value '" in msg and "could not be converted to" in msg:
        msg = msg.replace("Value ", "value ").replace("could not be converted to", "is not")
        for typ, word in (("Integer", "an integer"), ("Float", "a number"),
                          ("Boolean", "true or false")):
            msg = msg.replace(f"is not {typ}", f"is not {word}")
    if "is not a ListConfig" in msg:
        msg = "expected a list such as [1, 2]"
    return f"invalid value for '{key}': {msg}" if key else msg
