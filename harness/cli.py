"""The ``retain`` command. Parses arguments and calls plain functions; nothing else.

Only ``run`` imports torch and Lightning, and only after the configuration has been
validated, so ``retain --help``, ``retain list`` and every input error answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UserError

USAGE = """\
retain: continual-learning experiments for memory-augmented language models

usage:
  retain run [EXPERIMENT.yaml] [key=value ...] [--resume RUN_DIR] [--restart]
                                   train on a task stream, print the score matrix
  retain list [model|strategy|scenario] [NAME] [plugins=[...]]
                                   registered components (and a component's options)
  retain sweep SWEEP.yaml [...]    run a W&B-format sweep locally (see retain sweep -h)
  retain compare PATH [...]        aggregate runs: mean ± 95% CI, paired tests vs naive
  retain report PATH -o FILE.html  a self-contained HTML dashboard

configuration precedence: defaults < EXPERIMENT.yaml < key=value overrides
  (--key=value works too, as passed by a W&B sweep agent). Examples:
  retain run strategy=replay strategy.replay.mem_size=500 trainer.max_epochs=2
  retain run strategy=[replay,distill] scenario.name=split-digits model.name=mlp
  retain run configs/experiments/split_digits.yaml seed=3 logger=none
options of a run:  retain run --help
"""

RUN_OPTIONS = ("--resume", "--restart", "--help", "-h")
COMMANDS = {"sweep": "harness.sweeps.runner", "compare": "harness.analysis.compare",
            "report": "harness.analysis.report"}


def main(argv: list[str] | None = None) -> int:
    argv_given = argv  # None: called as the command (`retain`, `python -m harness`)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "run":
            return cmd_run(rest, owns_process=argv_given is None)
        if command == "list":
            return cmd_list(rest)
        if command in COMMANDS:
            import importlib

            return importlib.import_module(COMMANDS[command]).main(rest)
        raise UserError(f"unknown command '{command}'; valid commands: run, list, sweep, "
                        "compare, report")
    except UserError as err:
        print(f"retain: error: {_printable(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("retain: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `retain list | head`: the reader left; that is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        from harness.errors import Interrupted  # no torch: a plain exception module

        if not isinstance(err, Interrupted):
            raise
        print(f"retain: {err}; a checkpoint was saved: run the same command again (or "
              "retain run --resume RUN_DIR) to continue", file=sys.stderr)
        return 128 + err.signum


def _printable(message: str) -> str:
    """One line whatever the user typed: control characters shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def cmd_run(argv: list[str], owns_process: bool = False) -> int:
    parser = _Parser(
        prog="retain run", allow_abbrev=False, add_help=False,
        description="Train on a task stream and print the score matrix.")
    parser.add_argument("experiment", nargs="?", help="experiment YAML (optional)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
    parser.add_argument("--restart", action="store_true", help="start a run over")
    parser.add_argument("-h", "--help", action="store_true")
    known = [a for a in argv if a in RUN_OPTIONS or a.startswith("--resume=")
             or (not a.startswith("-") and "=" not in a)]
    if "--resume" in argv:  # its value follows it
        i = argv.index("--resume")
        if i + 1 < len(argv):
            known.insert(known.index("--resume") + 1, argv[i + 1])
    overrides = [a for a in argv if a not in known]
    opts = parser.parse_args(known)
    if opts.help:
        print(run_help())
        return 0
    from harness import config as config_mod

    experiment, resume_dir = opts.experiment, None
    if opts.resume:
        resume_dir = Path(opts.resume)
        if not (resume_dir / "config.yaml").is_file():
            raise UserError(f"{resume_dir} is not a run directory (no config.yaml)")
        experiment = str(resume_dir / "config.yaml")
    cfg = config_mod.load(experiment, overrides)
    resume = _resumable(cfg, resume_dir)
    if resume is not None and not opts.restart and resume.results_path.exists():
        from harness.experiment.records import load_results

        load_results(resume.results_path)  # a damaged one is an error, as for retain compare
        print(f"run {resume.root} is already complete; see {resume.results_path}")
        return 0
    from harness.experiment.console import print_report

    run = _import_run(freeze_heap=owns_process)
    results = run(cfg, resume, restart=opts.restart)
    if results.get("run_dir"):
        print_report(results)
        env = results.get("env") or {}
        if env.get("exactly_reproducible") is False:
            print(f"note: not exactly reproducible: {env.get('reproducibility_note')}")
    return 0


def _import_run(freeze_heap: bool):
    """``harness.experiment.run.run``. As a command, the imports run with the cyclic garbage
    collector paused and their objects are then frozen (``gc.freeze``): a run imports ~340k
    long-lived objects, which every full collection would re-scan, and imports leave almost no
    cyclic garbage (docs/performance.md). Called from code (tests, notebooks), the caller's
    collector is left alone."""
    if not freeze_heap:
        from harness.experiment.run import run

        return run
    import atexit
    import gc

    gc.disable()
    try:
        import torch._dynamo  # noqa: F401  (the first torch optimizer imports it anyway)

        from harness.experiment.run import run
    finally:
        gc.freeze()
        gc.enable()
    # Unfrozen at exit, so that the interpreter's last collection still finalises them
    # (native extensions such as triton's report every object left alive as a leak).
    atexit.register(gc.unfreeze)
    return run


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UserError: one line, exit code 2."""

    def error(self, message: str):
        raise UserError(f"{message} (one experiment file at most; overrides are key=value)")


def _resumable(cfg, resume_dir: Path | None):
    """The RunDir to continue: the one asked for, or an existing run of the same name."""
    from harness.config import config_hash
    from harness.experiment.results import RunDir, run_path

    if resume_dir is None and cfg.name:
        candidate = RunDir(run_path(cfg.out_dir, cfg.name))
        if candidate.holds_run():
            resume_dir = candidate.root
    if resume_dir is None:
        return None
    run_dir = RunDir(resume_dir)
    recorded = _recorded_hash(run_dir)
    if recorded not in (None, config_hash(cfg)):
        raise UserError(f"{resume_dir} holds a run with a different configuration; choose "
                        "another name or out_dir")
    if _rank_zero():  # other DDP ranks re-run this command and join the run rank zero writes
        run_dir.check_unlocked()
    return run_dir


def _recorded_hash(run_dir) -> str | None:
    """The config hash of the run in ``run_dir``: status.json's, else its config.yaml's;
    None if neither can be read (its checkpoint, which carries one too, is checked later)."""
    from harness.config import config_hash, load

    recorded = run_dir.status().get("config_hash")
    if isinstance(recorded, str):
        return recorded
    try:
        return config_hash(load(str(run_dir.root / "config.yaml")))
    except UserError:
        return None


def _rank_zero() -> bool:
    from harness.runtime.distributed import launch_rank

    return launch_rank() == 0


def cmd_list(argv: list[str]) -> int:
    from harness.config import load_plugins
    from harness.registry import MODELS, SCENARIOS, STRATEGIES

    settings = [a for a in argv if "=" in a]
    for item in settings:
        if item.removeprefix("--").partition("=")[0] != "plugins":
            raise UserError(f"retain list takes plugins=[...] only, not '{item}'")
    if settings:
        load_plugins(settings)
    argv = [a for a in argv if a not in settings]
    registries = {"model": MODELS, "strategy": STRATEGIES, "scenario": SCENARIOS}
    plural = {"model": "models", "strategy": "strategies", "scenario": "scenarios"}
    kinds = {plural[k]: k for k in registries} | {k: k for k in registries}
    if argv and argv[0] not in kinds:
        raise UserError(f"unknown kind '{argv[0]}'; valid kinds: model, strategy, scenario")
    if len(argv) >= 2:
        registry = registries[kinds[argv[0]]]
        entry, origin = registry.get(argv[1]), registry.origin(argv[1])
        print(f"{kinds[argv[0]]} {entry.name}: {entry.summary}"
              + (f" (plug-in {origin})" if origin else ""))
        print(format_fields(entry.config, prefix=_prefix(kinds[argv[0]], entry.name)))
        return 0
    for kind in ([kinds[argv[0]]] if argv else list(registries)):
        print(f"{plural[kind]}:")
        for name, summary in registries[kind].summaries().items():
            origin = registries[kind].origin(name)
            print(f"  {name:<14} {summary}" + (f" (plug-in {origin})" if origin else ""))
    return 0


def _prefix(kind: str, name: str) -> str:
    return f"strategy.{name}." if kind == "strategy" else f"{kind}."


def format_fields(cls, prefix: str = "") -> str:
    """One line per option: key, default, help and, in brackets, the values it takes."""
    import dataclasses

    from harness.ranges import describe

    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        component = not prefix and f.name in ("model", "scenario", "strategy")
        if component or dataclasses.is_dataclass(default):
            continue
        valid = describe(f.metadata)
        help_text = " ".join(filter(None, (f.metadata.get("help", ""), valid and f"[{valid}]")))
        lines.append(f"  {prefix + f.name:<34} {default!s:<12} {help_text}")
    return "\n".join(lines)


def run_help() -> str:
    from harness.config import CheckpointConfig, EvalConfig, RunConfig, TrainerConfig, WandbConfig

    return "\n".join([
        "usage: retain run [EXPERIMENT.yaml] [key=value ...] [--resume RUN_DIR] [--restart]",
        "",
        "Trains on each experience of a scenario in turn, evaluates on every test",
        "experience after each one, prints the score matrix and summary metrics, and",
        "writes the run directory out_dir/name (config, results.json, metrics, checkpoints,",
        "W&B run). name is one folder name (no '/', not '..'); one process at a time",
        "writes a run: a second one with the same name is refused.",
        "Re-running with the same name=... (or --resume RUN_DIR) continues a stopped run",
        "from its last checkpoint, inside a task too; the result is the same as a run that",
        "never stopped. The checkpoint must come from the same configuration.",
        "",
        "  --resume RUN_DIR   continue the run in RUN_DIR (its config.yaml, plus overrides)",
        "  --restart          start the named run over from task 1, discarding its",
        "                     checkpoints, metrics and results: needed when its checkpoints",
        "                     are damaged (retain will not silently start over)",
        "",
        "components (see `retain list`; a component's options: `retain list strategy replay`):",
        "  model.name=gpt  scenario.name=text-domains  strategy=naive | strategy=[replay,distill]",
        "",
        "run options:",
        format_fields(RunConfig),
        "trainer options:",
        format_fields(TrainerConfig, "trainer."),
        "wandb options:",
        format_fields(WandbConfig, "wandb."),
        "checkpoint options (a run checkpoints after every task; Ctrl-C saves one and stops):",
        format_fields(CheckpointConfig, "checkpoint."),
        "evaluation during training options (off by default; see docs/evaluation.md):",
        format_fields(EvalConfig, "eval."),
    ])


if __name__ == "__main__":
    sys.exit(main())
