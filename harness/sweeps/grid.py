"""Read a W&B-format sweep file and expand it into the runs it stands for.

The same YAML file must run locally (``retain sweep``) and on W&B agents (``wandb sweep`` +
``wandb agent``), so expansion copies W&B's own semantics (github.com/wandb/sweeps):

* parameters are visited in *sorted name order* (``HyperParameterSet.from_config`` sorts), so a
  grid is the cartesian product in that order, the last name varying fastest;
* ``grid`` accepts ``value``, ``values``, ``int_uniform`` (min..max inclusive) and ``q_uniform``
  (``numpy.arange(min, max, q)``, max excluded, as W&B does); any other distribution is an error;
  duplicate grid points are dropped, as W&B's hash-based de-duplication does;
* ``random`` draws every parameter independently; W&B would run forever, so locally ``run_cap``
  (or ``--count``) is required and draws come from ``numpy.random.default_rng(seed)``.

A distribution is inferred the way W&B infers it when ``distribution`` is absent: ``values`` →
categorical (``probabilities`` → weighted), integer ``min``/``max`` → int_uniform, other numbers
→ uniform, ``value`` → constant. Nested keys are plain dotted names
(``strategy.replay.mem_size``); W&B's nested ``parameters:`` blocks would reach ``retain run``
as a dict string, so they are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError, did_you_mean

# Top-level keys W&B's schema allows, plus retain's ``experiment`` (the base experiment file)
# and ``plugins`` (plug-ins every run imports).
TOP_LEVEL_KEYS = {
    "method", "parameters", "metric", "run_cap", "program", "command", "name", "description",
    "project", "entity", "early_terminate", "controller", "apiVersion", "kind", "experiment",
    "plugins",
}
METHODS = ("grid", "random")
MAX_RUNS = 100_000  # more than this is a mistake (a q of 1e-6), not a sweep to start
GRID_KINDS = ("constant", "categorical", "int_uniform", "q_uniform")
# distribution -> the keys it needs besides ``distribution`` (defaults as in W&B's schema)
DISTRIBUTIONS: dict[str, dict[str, Any]] = {
    "constant": {"value": None},
    "categorical": {"values": None},
    "categorical_w_probabilities": {"values": None, "probabilities": None},
    "int_uniform": {"min": None, "max": None},
    "uniform": {"min": None, "max": None},
    "q_uniform": {"min": None, "max": None, "q": 1.0},
    "log_uniform": {"min": None, "max": None},
    "log_uniform_values": {"min": None, "max": None},
    "inv_log_uniform": {"min": None, "max": None},
    "inv_log_uniform_values": {"min": None, "max": None},
    "q_log_uniform": {"min": None, "max": None, "q": 1.0},
    "q_log_uniform_values": {"min": None, "max": None, "q": 1.0},
    "normal": {"mu": 0.0, "sigma": 1.0},
    "q_normal": {"mu": 0.0, "sigma": 1.0, "q": 1.0},
    "log_normal": {"mu": 0.0, "sigma": 1.0},
    "q_log_normal": {"mu": 0.0, "sigma": 1.0, "q": 1.0},
    "beta": {"a": 1.0, "b": 1.0},
    "q_beta": {"a": 1.0, "b": 1.0, "q": 1.0},
}


@dataclass
class Param:
    """One swept parameter with its distribution filled in (W&B defaults applied)."""

    name: str
    kind: str
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sweep:
    """A parsed sweep file. ``experiment`` is resolved relative to the working directory first,
    then to the sweep file, so ``configs/...`` paths work from the repository root."""

    path: Path
    name: str
    method: str
    params: list[Param]
    metric: dict[str, Any] | None
    run_cap: int | None
    experiment: Path | None
    raw: dict[str, Any]
    fixed: list[str] = field(default_factory=list)  # key=value items of the W&B command


def load_sweep(path: str | Path) -> Sweep:
    """Parse and validate a sweep file; every problem is a ``UserError`` naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a sweep file is a mapping with 'method' and 'parameters'")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            hint = did_you_mean(key, TOP_LEVEL_KEYS)
            raise UserError(f"{path}: unknown top-level key '{key}'{hint}")
    method = raw.get("method")
    if method not in METHODS:
        hint = " (bayes needs W&B's controller: use wandb sweep + wandb agent)"
        hint = hint if method == "bayes" else ""
        raise UserError(f"{path}: method must be {' or '.join(METHODS)}, not {method!r}{hint}")
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, dict) or not params_raw:
        raise UserError(f"{path}: 'parameters' must be a non-empty mapping")
    params = [parse_param(name, spec, path) for name, spec in sorted(params_raw.items())]
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not _is_int(run_cap) or run_cap < 1):
        raise UserError(f"{path}: run_cap must be a positive integer, not {run_cap!r}")
    metric = raw.get("metric")
    if metric is not None and (not isinstance(metric, dict) or "name" not in metric):
        raise UserError(f"{path}: metric must be a mapping with 'name' (and 'goal')")
    experiment, fixed = command_extras(raw.get("command"), path)
    if raw.get("experiment") is not None:
        if experiment is not None and Path(str(raw["experiment"])) != Path(experiment):
            raise UserError(f"{path}: 'experiment: {raw['experiment']}' differs from the "
                            f"experiment file in 'command' ({experiment}); W&B agents run the "
                            "command, so make them agree")
        experiment = str(raw["experiment"])
    if raw.get("plugins") is not None:
        fixed = with_plugins(raw["plugins"], fixed, raw.get("command") is not None, path)
    return Sweep(path, str(raw.get("name") or path.stem), method, params, metric, run_cap,
                 _experiment_path(experiment, path), raw, fixed)


def command_extras(command: Any, path: Path) -> tuple[str | None, list[str]]:
    """What a W&B ``command:`` adds to ``retain run`` besides ``${args}``: an experiment file
    and fixed ``key=value`` overrides. The local runner passes the same, so both ways of
    running a sweep file run the same configurations."""
    if command is None:
        return None, []
    if not isinstance(command, list):
        raise UserError(f"{path}: 'command' must be a list, as in W&B")
    items = [str(c) for c in command]
    if "run" not in items or ("${args}" not in items and "${args_no_hyphens}" not in items):
        raise UserError(f"{path}: 'command' must run `retain run ... ${{args}}` so W&B agents "
                        "pass the swept values")
    experiment, fixed = None, []
    for item in items[items.index("run") + 1:]:
        if item.startswith("${"):
            continue
        if "=" in item:
            fixed.append(item.removeprefix("--"))
        elif item.endswith((".yaml", ".yml")):
            experiment = item
        else:
            raise UserError(f"{path}: cannot run command item '{item}' locally")
    return experiment, fixed


def with_plugins(value: Any, fixed: list[str], has_command: bool, path: Path) -> list[str]:
    """The fixed overrides with the sweep's ``plugins:`` (files looked up in the working
    directory, then next to the sweep file). W&B agents run ``command:``, so a command must
    pass the same plug-ins."""
    from harness import plugins

    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, list):
        raise UserError(f"{path}: plugins must be a list of modules or .py files")
    resolved = [plugins.resolve(str(spec), path.parent) for spec in specs]
    given = [item for item in fixed if item.partition("=")[0] == "plugins"]
    if has_command and [_plugin_list(item, path) for item in given] != [resolved]:
        raise UserError(f"{path}: 'plugins: {specs}' is not passed by 'command' (W&B agents "
                        f"run the command): add plugins=[{','.join(map(str, specs))}] before "
                        "${args}")
    return [*(item for item in fixed if item not in given),
            f"plugins=[{','.join(format_value(spec) for spec in resolved)}]"]


def _plugin_list(item: str, path: Path) -> list[str]:
    """The resolved plug-ins of a ``plugins=...`` command item."""
    from omegaconf import OmegaConf

    from harness import plugins

    value = OmegaConf.to_container(OmegaConf.from_dotlist([item]))["plugins"]
    return [plugins.resolve(str(spec), path.parent)
            for spec in ([value] if isinstance(value, str) else value)]


def _experiment_path(value: Any, sweep_path: Path) -> Path | None:
    if value is None:
        return None
    for candidate in (Path(str(value)), sweep_path.parent / str(value)):
        if candidate.is_file():
            return candidate
    raise UserError(f"{sweep_path}: experiment file not found: {value}")


def parse_param(name: str, spec: Any, path: Path | str = "sweep") -> Param:
    """Infer and check one parameter's distribution, the way W&B's schema does."""
    where = f"{path}: parameter '{name}'"
    if not isinstance(spec, dict):
        raise UserError(f"{where} must be a mapping such as {{values: [...]}} or {{value: x}}")
    if "parameters" in spec:
        raise UserError(f"{where}: nested 'parameters' blocks are not supported; "
                        f"use a dotted name such as '{name}.<key>'")
    kind = spec.get("distribution") or _infer_kind(spec)
    if kind is None:
        raise UserError(f"{where}: give 'value', 'values', or 'min'/'max' (or a 'distribution')")
    if kind not in DISTRIBUTIONS:
        hint = did_you_mean(str(kind), DISTRIBUTIONS)
        raise UserError(f"{where}: unknown distribution '{kind}'{hint}")
    allowed = DISTRIBUTIONS[kind]
    extra = set(spec) - set(allowed) - {"distribution"}
    if extra:
        keys = ", ".join(sorted(extra))
        raise UserError(f"{where}: key(s) {keys} do not belong to distribution '{kind}'")
    filled = {k: spec.get(k, default) for k, default in allowed.items()}
    missing = [k for k, v in filled.items() if v is None and k != "value" and k not in spec]
    if missing:
        raise UserError(f"{where}: distribution '{kind}' needs {', '.join(missing)}")
    _check_values(where, kind, filled)
    return Param(name, kind, filled)


def _infer_kind(spec: dict) -> str | None:
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    if "min" in spec and "max" in spec:
        return "int_uniform" if _is_int(spec["min"]) and _is_int(spec["max"]) else "uniform"
    if "value" in spec:
        return "constant"
    return None


def _check_values(where: str, kind: str, spec: dict) -> None:
    values = spec.get("values")
    if "values" in spec and (not isinstance(values, list) or not values):
        raise UserError(f"{where}: 'values' must be a non-empty list")
    if kind == "categorical_w_probabilities":
        probs = spec["probabilities"]
        if not isinstance(probs, list) or len(probs) != len(values) or any(p < 0 for p in probs):
            raise UserError(f"{where}: 'probabilities' must be one non-negative number per value")
    if "min" in spec:
        lo, hi = spec["min"], spec["max"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise UserError(f"{where}: min and max must be numbers")
        if lo >= hi:
            raise UserError(f"{where}: min {lo} is not less than max {hi}")
        if kind == "int_uniform" and not (_is_int(lo) and _is_int(hi)):
            raise UserError(f"{where}: min and max of 'int_uniform' must be integers")
        if kind.endswith("_values") and lo <= 0:
            raise UserError(f"{where}: min must be positive for '{kind}'")
    if "q" in spec and not spec["q"] > 0:
        raise UserError(f"{where}: q must be positive")


def expand(sweep: Sweep, seed: int = 0, count: int | None = None,
           max_runs: int = MAX_RUNS) -> list[dict[str, Any]]:
    """The parameter sets of every run, in W&B's order; ``count`` overrides ``run_cap``."""
    return list(points(sweep, seed, count, max_runs))


def points(sweep: Sweep, seed: int = 0, count: int | None = None,
           max_runs: int = MAX_RUNS) -> Iterator[dict[str, Any]]:
    """``expand``, one run at a time: a grid is never built, only its size is computed, and
    more than ``max_runs`` runs is a UserError before the first one."""
    cap = count if count is not None else sweep.run_cap
    if sweep.method == "grid":
        return grid(sweep.params, cap, max_runs, where=str(sweep.path))
    if cap is None:
        raise UserError(f"{sweep.path}: method random needs run_cap (or --count) to stop")
    _check_size(cap, max_runs, f"{sweep.path}: {cap:,} random runs")
    return sample(sweep.params, cap, seed)


def grid(params: list[Param], cap: int | None = None, max_runs: int = MAX_RUNS,
         where: str = "sweep") -> Iterator[dict[str, Any]]:
    """The first ``cap`` points of the cartesian product over ``params`` (already in W&B's
    sorted order, the last varying fastest), duplicates dropped, computed point by point."""
    lengths = []
    for p in params:
        if p.kind not in GRID_KINDS:
            raise UserError(f"{where}: parameter '{p.name}' has distribution '{p.kind}', which "
                            "grid does not allow (use values, value, int_uniform, q_uniform)")
        lengths.append(_grid_length(p))
    total = math.prod(lengths)
    n = total if cap is None else min(total, cap)
    shape = " x ".join(f"{length:,}" for length in lengths)
    _check_size(n, max_runs, f"{where}: the grid has {total:,} runs ({shape})"
                if n == total else f"{where}: {n:,} runs of the grid")
    # A point's index in each axis never exceeds what its first n points use.
    strides = [math.prod(lengths[i + 1:]) for i in range(len(lengths))]
    axes = [_grid_values(p, min(length, (n - 1) // stride + 1) if n else 0)
            for p, length, stride in zip(params, lengths, strides)]
    names = [p.name for p in params]
    return ({name: axis[i // stride % length]
             for name, axis, stride, length in zip(names, axes, strides, lengths)}
            for i in range(n))


def _check_size(n: int, max_runs: int, what: str) -> None:
    if n > max_runs:
        raise UserError(f"{what}, more than --max-runs {max_runs:,}; run the first N with "
                        "--count N, or raise --max-runs")


def _grid_length(p: Param) -> int:
    """How many distinct values ``p`` gives a grid, without listing them."""
    s = p.spec
    if p.kind == "constant":
        return 1
    if p.kind == "categorical":
        return len(_distinct(s["values"]))
    if p.kind == "int_uniform":
        return s["max"] - s["min"] + 1
    return max(0, math.ceil((s["max"] - s["min"]) / s["q"]))  # numpy.arange's length


def _grid_values(p: Param, needed: int) -> Sequence[Any]:
    """The first ``needed`` grid values of ``p``: a list, or a range (never built)."""
    s = p.spec
    if p.kind == "constant":
        return [s["value"]]
    if p.kind == "categorical":
        return _distinct(s["values"])
    if p.kind == "int_uniform":
        return range(s["min"], s["max"] + 1)
    import numpy as np  # q_uniform: W&B uses numpy.arange, so the max is excluded

    # numpy.arange's values depend on min and q, not on max: a nearer max gives its first
    # values without the rest.
    stop = min(s["max"], s["min"] + (needed + 1) * s["q"])
    return [_plain(v) for v in np.arange(s["min"], stop, s["q"])[:needed].tolist()]


def _distinct(values: list) -> list:
    """``values`` without repeats, in order: the grid's duplicates are these combined, as
    W&B's hash-based de-duplication of whole points drops them."""
    seen, out = set(), []
    for v in values:
        key = json.dumps(v, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def sample(params: list[Param], n: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` independent draws of every parameter; identical draws are kept once (re-running
    an identical config with the same seed would only repeat a result)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    seen = set()
    for _ in range(n):
        run = {p.name: _plain(draw(p, rng)) for p in params}
        key = json.dumps(run, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            yield run


def draw(p: Param, rng) -> Any:
    """One value from ``p``'s distribution, with W&B's parameterisation of each."""
    s, kind = p.spec, p.kind
    if kind == "constant":
        return s["value"]
    if kind in ("categorical", "categorical_w_probabilities"):
        probs = s.get("probabilities")
        if probs is not None:
            total = float(sum(probs))
            probs = [x / total for x in probs]
        return s["values"][int(rng.choice(len(s["values"]), p=probs))]
    if kind == "int_uniform":
        return int(rng.integers(s["min"], s["max"] + 1))
    base = kind.removeprefix("q_")
    x = _continuous(base, s, rng)
    if kind.startswith("q_"):
        q = s["q"]
        x = round(x / q) * q
        return int(x) if isinstance(q, int) else float(x)
    return x


def _continuous(kind: str, s: dict, rng) -> float:
    if kind == "uniform":
        return float(rng.uniform(s["min"], s["max"]))
    if kind == "log_uniform":  # min/max are natural-log bounds in W&B
        return math.exp(rng.uniform(s["min"], s["max"]))
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(s["min"]), math.log(s["max"])))
    if kind == "inv_log_uniform":
        return math.exp(-rng.uniform(s["min"], s["max"]))
    if kind == "inv_log_uniform_values":
        return math.exp(-rng.uniform(math.log(1 / s["max"]), math.log(1 / s["min"])))
    if kind == "normal":
        return float(rng.normal(s["mu"], s["sigma"]))
    if kind == "log_normal":
        return math.exp(rng.normal(s["mu"], s["sigma"]))
    if kind == "beta":
        return float(rng.beta(s["a"], s["b"]))
    raise UserError(f"distribution '{kind}' cannot be sampled")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars, so values format and serialise like YAML ones."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v


@dataclass
class RunSpec:
    """One planned run: its parameters, the ``key=value`` overrides handed to ``retain run``,
    and a name that is stable across invocations so a re-run can find its finished results."""

    name: str
    params: dict[str, Any]
    overrides: list[str]
    key: str  # hash of the overrides and the base experiment's text


def plan(sweep: Sweep, extra: list[str] = (), seed: int = 0, count: int | None = None,
         max_runs: int = MAX_RUNS) -> list[RunSpec]:
    """Expand ``sweep`` and name every run. ``extra`` overrides apply to every run after the
    swept ones (``retain sweep file.yaml trainer.max_epochs=1``) and are part of the hash."""
    return list(iter_plan(sweep, extra, seed, count, max_runs))


def iter_plan(sweep: Sweep, extra: list[str] = (), seed: int = 0, count: int | None = None,
              max_runs: int = MAX_RUNS) -> Iterator[RunSpec]:
    """``plan``, one run at a time (``--dry-run`` prints them as they come); the sweep's
    problems, its size among them, are UserErrors before the first run."""
    for item in extra:
        if "=" not in item:
            raise UserError(f"override '{item}' is not key=value")
    experiment_text = sweep.experiment.read_text() if sweep.experiment else ""
    labelled = [p.name for p in sweep.params if p.kind != "constant"]

    def spec(params: dict[str, Any]) -> RunSpec:
        overrides = [*sweep.fixed, *(f"{k}={format_value(v)}" for k, v in params.items()),
                     *extra]
        # plug-ins name where code lives, not what a run computes: moving them renames nothing
        key = run_key([o for o in overrides if not o.startswith("plugins=")], experiment_text)
        label = "-".join(_slug(k, params[k]) for k in labelled)[:48].strip("-")
        return RunSpec(f"{label}-{key[:8]}" if label else key[:12], params, overrides, key)

    return map(spec, points(sweep, seed=seed, count=count, max_runs=max_runs))


def run_key(overrides: list[str], experiment_text: str) -> str:
    """Stable hash: sorted overrides + the experiment file's content (not its path or mtime)."""
    import hashlib

    blob = json.dumps({"overrides": sorted(overrides), "experiment": experiment_text})
    return hashlib.sha256(blob.encode()).hexdigest()


def format_value(v: Any) -> str:
    """A Python value as the right-hand side of an OmegaConf dotlist override."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{format_value(k)}: {format_value(x)}" for k, x in v.items()) + "}"
    s = str(v)
    plain = s and s.strip() == s and not any(c in s for c in ",[]{}'\"=:#")
    if plain and s.lower() not in ("true", "false", "null", "none", "yes", "no", "on", "off"):
        try:
            float(s)
        except ValueError:
            return s
    return json.dumps(s)  # double-quoted: OmegaConf keeps it a string


def _slug(key: str, value: Any) -> str:
    """A short readable label: a dict value (a whole section) shows its leaf values only."""
    import re

    leaves = _leaves(value)
    text = "_".join(re.sub(r"[^A-Za-z0-9.]+", "_", format_value(x)).strip("_") for x in leaves)
    return f"s{text[:20]}" if key.rsplit(".", 1)[-1] == "seed" else text[:24]


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _leaves(v)]
    return [value]
