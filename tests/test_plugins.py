"""Components from outside the repository: ``plugins=[...]`` (command line, experiment YAML,
sweep file, W&B's ``--plugins=`` form), ``retain.plugins`` entry points, and what the registry
fills in or refuses. ``tests/data/plugin_example.py`` registers one model, one strategy and one
scenario; tests/test_conformance.py checks them like the built-in components."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import quick

from harness import config, plugins
from harness.cli import main
from harness.errors import UserError
from harness.registry import MODELS, SCENARIOS, STRATEGIES, Registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "data" / "plugin_example.py"
BLOBS = ["scenario.name=example-blobs", "model.name=mlp", "model.hidden=[16]",
         "strategy=[example_anchor]", "trainer.accelerator=cpu"]


def example_copy(path: Path, prefix: str) -> Path:
    """A copy of the example plug-in whose components are named ``<prefix>-...``: one process
    can register a name once only."""
    text = EXAMPLE.read_text().replace('"example-', f'"{prefix}-').replace('"example_',
                                                                             f'"{prefix}_')
    return write(path, text)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def error_line(capsys, argv: list[str]) -> str:
    """The one stderr line of a command that must fail with exit code 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("retain: error: ")
    return err[0]


def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline", WANDB_SILENT="true")


# -- plugins=[...] in a config --------------------------------------------------------------


def test_a_plugin_file_is_imported_before_the_schema_and_recorded_as_an_absolute_path(tmp_path):
    local = example_copy(tmp_path / "mine" / "example.py", "mine")
    cfg = config.load(None, quick("scenario.name=mine-blobs", "model.name=mlp",
                                  "strategy=mine_anchor", "plugins=[mine/example.py]",
                                  "strategy.mine_anchor.weight=0.5"))
    assert cfg.plugins == [str(local.resolve())]
    assert cfg.strategy.mine_anchor.weight == 0.5
    assert SCENARIOS.get("mine-blobs").cls.__module__ == plugins.module_name(str(local))
    # the run's config.yaml names the file absolutely: a resume from elsewhere finds it
    again = config.load(_saved(tmp_path, cfg), [])
    assert again == cfg


def _saved(tmp_path: Path, cfg) -> str:
    path = tmp_path / "saved" / "config.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(config.to_yaml(cfg))
    return str(path)


def test_plugins_do_not_enter_the_config_hash(tmp_path):
    """Like git_commit, plugins name where code lives; the components they register are in
    the config by name, with all their options, so moving the file keeps the run's identity."""
    here = config.load(None, quick(*BLOBS, f"plugins=[{EXAMPLE}]"))
    there = dataclasses.replace(here, plugins=[str(tmp_path / "elsewhere" / "example.py")])
    assert config.config_hash(here) == config.config_hash(there)
    assert config.config_hash(here) != config.config_hash(dataclasses.replace(here, seed=1))


def test_yaml_plugins_resolve_next_to_the_yaml_file_and_the_command_line_replaces_them(tmp_path):
    example_copy(tmp_path / "exp" / "plug.py", "yaml")
    exp = write(tmp_path / "exp" / "blobs.yaml", """\
        plugins: [plug.py]
        scenario: yaml-blobs
        model: {name: mlp}
        """)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    cfg = config.load(str(exp), ["logger=none"])
    assert cfg.plugins == [str((tmp_path / "exp" / "plug.py").resolve())]
    assert cfg.scenario.name == "yaml-blobs"
    replaced = config.load(str(exp), ["logger=none", "plugins=[]", "scenario.name=split-digits"])
    assert replaced.plugins == []


def test_the_wandb_agent_form_and_a_single_name_are_accepted():
    listed = config.load(None, quick(*BLOBS, f"--plugins=['{EXAMPLE}']"))
    single = config.load(None, quick(*BLOBS, f"plugins={EXAMPLE}"))
    assert listed.plugins == single.plugins == [str(EXAMPLE)]


def test_a_module_plugin_is_imported_by_name(tmp_path, monkeypatch):
    write(tmp_path / "my_pkg" / "__init__.py", "")
    example_copy(tmp_path / "my_pkg" / "blobs_again.py", "pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config.load(None, quick("plugins=[my_pkg.blobs_again]", "scenario.name=pkg-blobs",
                                  "model.name=mlp", "strategy=pkg_anchor"))
    assert cfg.plugins == ["my_pkg.blobs_again"]
    assert STRATEGIES.origin("pkg_anchor") == "my_pkg.blobs_again"


def test_a_plugin_file_gets_a_stable_module_name_that_pickles(tmp_path):
    plugins.load([str(EXAMPLE)])
    name = plugins.module_name(str(EXAMPLE))
    code = ("from harness import plugins; import sys; "
            f"plugins.load([{str(EXAMPLE)!r}]); print(plugins.module_name({str(EXAMPLE)!r}))")
    other = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                           text=True, timeout=120)
    assert other.stdout.strip() == name  # what another DDP rank computes
    cls = STRATEGIES.get("example_anchor").cls
    assert cls.__module__ == name
    strategy = pickle.loads(pickle.dumps(cls(STRATEGIES.get("example_anchor").config())))
    assert type(strategy) is cls


# -- what the registry fills in or refuses --------------------------------------------------


def test_the_registry_adds_a_missing_name_field_and_the_config_pickles():
    registry = Registry("model", "harness.models", named=True)

    @dataclasses.dataclass
    class Plain:
        width: int = 4

    @registry.register("plain-model", config=Plain)
    class PlainModel:
        """A model."""

    cfg = registry.get("plain-model").config()
    assert cfg.name == "plain-model" and cfg.width == 4 and isinstance(cfg, Plain)
    assert [f.name for f in dataclasses.fields(cfg)] == ["name", "width"]  # as built-ins have it
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_the_registry_says_what_a_config_lacks_or_gets_wrong():
    registry = Registry("model", "harness.models", named=True)

    @dataclasses.dataclass
    class NoDefault:
        width: int

    with pytest.raises(UserError, match=r"config field\(s\) width of NoDefault need a default"):
        registry.register("m1", config=NoDefault)

    @dataclasses.dataclass
    class WrongName:
        name: str = "mlp"

    with pytest.raises(UserError, match="WrongName.name defaults to 'mlp'; make it 'm2'"):
        registry.register("m2", config=WrongName)
    with pytest.raises(UserError, match="must be a Python identifier"):
        Registry("strategy", "strategies").register("my-strategy", config=NoDefault)


def test_a_name_registered_twice_is_one_line_naming_both(capsys, tmp_path):
    write(tmp_path / "clash.py", """\
        from dataclasses import dataclass
        from harness.api import Strategy
        from harness.registry import register_strategy

        @dataclass
        class ReplayConfig:
            mem_size: int = 5

        @register_strategy("replay", config=ReplayConfig)
        class MyReplay(Strategy):
            '''Another replay.'''
        """)
    line = error_line(capsys, ["run", "plugins=[clash.py]", "logger=none"])
    assert "plugin '" in line and "clash.py': strategy 'replay' is registered twice" in line
    assert "strategies.replay" in line
    assert STRATEGIES.get("replay").cls.__module__ == "strategies.replay"


@pytest.mark.parametrize("body, expected", [
    ("raise RuntimeError('no GPU here')\n", "does not import: RuntimeError: no GPU here"),
    ("def broken(:\n", "does not import: SyntaxError: "),
    ("import not_a_module_anywhere\n",
     "does not import: ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
])
def test_a_plugin_that_does_not_import_is_one_line_naming_it(capsys, tmp_path, body, expected):
    write(tmp_path / "bad.py", body)
    line = error_line(capsys, ["run", "plugins=[bad.py]", "logger=none"])
    assert f"plugin '{tmp_path / 'bad.py'}' {expected}" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("spec, expected", [
    ("missing.py", "plugin file not found: missing.py"),
    ("not_installed_pkg.mod", "plugin 'not_installed_pkg.mod' does not import: "
     "ModuleNotFoundError: No module named 'not_installed_pkg' (is it installed or on "
     "PYTHONPATH? a file is named by its path"),
    ("a folder/", "is a folder"),
    ("2bad", "neither a module name"),
])
def test_a_missing_plugin_is_one_line(capsys, tmp_path, spec, expected):
    (tmp_path / "a folder").mkdir()
    line = error_line(capsys, ["run", f"plugins=[{spec}]", "logger=none"])
    assert expected in line


def test_a_run_refuses_a_model_on_the_wrong_data_in_one_line(capsys, tmp_path):
    """The example model never checks its DataSpec: the task loop refuses it before the model
    is built and before the run directory exists."""
    line = error_line(capsys, ["run", f"plugins=[{EXAMPLE}]", "model.name=example-cummean",
                               "scenario.name=example-blobs", "logger=none"])
    assert line == ("retain: error: model example-cummean reads token sequences, but scenario "
                    "example-blobs gives feature vectors for classification; models that fit: "
                    "mlp")
    assert not (tmp_path / "runs").exists()


# -- retain list, retain run, resume from elsewhere, DDP ----------------------------------


def test_retain_list_shows_plugin_components_and_their_origin(capsys):
    assert main(["list", f"plugins=[{EXAMPLE}]"]) == 0
    out = capsys.readouterr().out
    for name in ("example-cummean", "example_anchor", "example-blobs"):
        line = next(x for x in out.splitlines() if x.strip().startswith(name))
        assert f"(plug-in {EXAMPLE})" in line
    assert main(["list", "strategy", "example_anchor", f"plugins=[{EXAMPLE}]"]) == 0
    out = capsys.readouterr().out
    assert "strategy.example_anchor.weight" in out and "0.1" in out
    assert error_line(capsys, ["list", "seed=3"]).endswith(
        "retain list takes plugins=[...] only, not 'seed=3'")


def test_a_run_with_plugins_resumes_from_another_folder(tmp_path):
    """A fresh process, started elsewhere, continues a crashed plug-in run from config.yaml."""
    work = tmp_path / "project"
    example_copy(work / "plugins" / "example.py", "example")
    argv = [sys.executable, "-m", "harness", "run", "plugins=[plugins/example.py]", *quick(
        "model.name=example-cummean", "scenario.name=mqar", "scenario.n_experiences=2",
        "scenario.seq_len=16", "scenario.n_pairs=2", "scenario.n_train=64", "scenario.n_val=0",
        "scenario.n_test=16", "strategy=[example_anchor,replay]", "name=r",
        "checkpoint.every_n_steps=1", "trainer.accelerator=cpu")]
    env = dict(child_env(), RETAIN_FAULT="step:3", RETAIN_FAULT_MODE="raise",
               RETAIN_CACHE=str(tmp_path / "cache"))
    crashed = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                             timeout=300)
    assert crashed.returncode != 0 and "SimulatedCrash" in crashed.stderr
    saved = (work / "runs" / "r" / "config.yaml").read_text()
    assert f"- {(work / 'plugins' / 'example.py').resolve()}" in saved
    env.pop("RETAIN_FAULT")
    resumed = subprocess.run([sys.executable, "-m", "harness", "run", "--resume",
                              str(work / "runs" / "r")], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((work / "runs" / "r" / "results.json").read_text())
    assert results["resumes"] and results["model"] == "example-cummean"
    assert results["strategy"] == "example_anchor+replay"


@pytest.mark.slow
def test_ddp_ranks_load_the_same_plugins(tmp_path):
    """Lightning's launcher re-runs the command on rank 1, which must import the plug-in
    itself; two gloo processes then give the one-process result."""
    example_copy(tmp_path / "example.py", "example")
    common = quick(*BLOBS, "eval_init=false", "trainer.max_epochs=2")
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "plugins=[example.py]",
                           *common, "name=ddp", "trainer.devices=2", "trainer.strategy=ddp"],
                          cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from harness.experiment.run import run

    two = json.loads((tmp_path / "runs" / "ddp" / "results.json").read_text())
    one = run(config.load(None, [f"plugins=[{EXAMPLE}]", *common, "name=one"]))
    assert two["config"]["trainer"]["devices"] == 2
    for got, want in zip(two["matrices"]["accuracy"], one["matrices"]["accuracy"]):
        assert max(abs(a - b) for a, b in zip(got, want)) <= 0.03


# -- entry points ---------------------------------------------------------------------------


def _distribution(root: Path, module: str, value: str, body: str) -> None:
    """An installed package as importlib.metadata sees one: a dist-info folder on sys.path."""
    write(root / f"{module}.py", body)
    info = root / f"{module}_pkg-1.0.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {module}-pkg\nVersion: 1.0\n")
    write(info / "entry_points.txt", f"[retain.plugins]\n{module} = {value}\n")


def test_entry_points_load_when_a_registry_is_first_read(tmp_path, monkeypatch):
    _distribution(tmp_path, "ep_components", "ep_components",
                  example_copy(tmp_path / "src.py", "ep").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    assert "ep_components" not in sys.modules
    assert "ep-blobs" in SCENARIOS.names() and "ep-cummean" in MODELS.names()
    assert STRATEGIES.origin("ep_anchor") == "ep_components (retain.plugins)"
    cfg = config.load(None, quick("scenario.name=ep-blobs", "model.name=mlp",
                                  "strategy=ep_anchor"))
    assert cfg.plugins == []  # installed components need no plugins= key


def test_a_callable_entry_point_is_called(tmp_path, monkeypatch):
    _distribution(tmp_path, "ep_callable", "ep_callable:register", """\
        def register():
            from dataclasses import dataclass
            from harness.api import Strategy
            from harness.registry import register_strategy

            @dataclass
            class Cfg:
                pass

            @register_strategy("ep_called", config=Cfg)
            class Called(Strategy):
                '''Registered by a function.'''
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    assert "ep_called" in STRATEGIES.names()


def test_an_installed_plugin_may_subclass_a_built_in_model(tmp_path):
    """Entry points load on a registry's first read, not while a built-in registers: a plug-in
    importing harness.models.gpt found it half made when gpt's import came first."""
    _distribution(tmp_path, "ep_gpt", "ep_gpt", """\
        from dataclasses import dataclass
        from harness.models.gpt import GPT, GPTConfig
        from harness.registry import register_model

        @dataclass
        class WideConfig(GPTConfig):
            name: str = "ep-gpt"
            d_model: int = 256

        @register_model("ep-gpt", config=WideConfig)
        class Wide(GPT):
            '''A wider GPT.'''
        """)
    code = ("import harness.models.gpt; from harness.registry import MODELS; "
            "print(MODELS.get('ep-gpt').config().d_model)")
    env = dict(child_env(), PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == "256", proc.stderr[-2000:]


def test_a_broken_entry_point_names_it_and_its_package(capsys, tmp_path, monkeypatch):
    _distribution(tmp_path, "ep_broken", "ep_broken", "raise ImportError('needs CUDA 13')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    line = error_line(capsys, ["list"])
    assert line == ("retain: error: entry point 'ep_broken = ep_broken' of package ep_broken-pkg "
                    "does not import: ImportError: needs CUDA 13")


def test_help_reads_no_registry_and_no_entry_points():
    code = ("import sys; from harness.cli import main; main(['--help']); main(['run', '--help']);"
            " print('LOADED', [m for m in ('harness.registry', 'importlib.metadata', 'omegaconf')"
            " if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                         text=True, timeout=60).stdout
    assert "LOADED []" in out and "plugins" in out  # `retain run --help` lists the key


# -- sweep files ----------------------------------------------------------------------------


SWEEP = """\
    method: grid
    name: plug
    plugins: [{plugin}]
    parameters:
      strategy.sweep_anchor.weight: {{values: [0.0, 1.0]}}
    """


def test_a_sweep_files_plugins_reach_every_run_and_do_not_rename_them(tmp_path):
    from harness.sweeps.grid import load_sweep, plan

    for folder in ("a", "b"):
        example_copy(tmp_path / folder / "plug.py", "sweep")
        write(tmp_path / folder / "s.yaml", SWEEP.format(plugin="plug.py"))
    runs = {f: plan(load_sweep(tmp_path / f / "s.yaml")) for f in ("a", "b")}
    plug = (tmp_path / "a" / "plug.py").resolve()
    assert runs["a"][0].overrides == [f"plugins=[{plug}]", "strategy.sweep_anchor.weight=0.0"]
    assert [r.name for r in runs["a"]] == [r.name for r in runs["b"]]  # moved: same runs


def test_a_sweep_command_must_pass_the_same_plugins_for_wandb_agents(tmp_path):
    from harness.sweeps.grid import load_sweep

    example_copy(tmp_path / "plug.py", "sweep")
    body = SWEEP.format(plugin="plug.py") + "command: [retain, run, ITEM'${args}']\n"
    good = write(tmp_path / "good.yaml", body.replace("ITEM", "'plugins=[plug.py]', "))
    assert load_sweep(good).fixed == [f"plugins=[{(tmp_path / 'plug.py').resolve()}]"]
    for name, item in (("none", ""), ("other", "'plugins=[other_pkg.mod]', ")):
        with pytest.raises(UserError, match=r"is not passed by 'command' \(W&B agents run the "
                                            r"command\): add plugins=\[plug.py\] before"):
            load_sweep(write(tmp_path / f"{name}.yaml", body.replace("ITEM", item)))


def test_the_conformance_suite_checks_your_plugins_too(tmp_path):
    mine = example_copy(tmp_path / "mine.py", "yours")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--collect-only", str(ROOT / "tests" / "test_conformance.py")],
                          cwd=ROOT, env=dict(child_env(), RETAIN_TEST_PLUGINS=str(mine)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    for test in ("test_language_model_sees_no_future_position[yours-cummean]",
                 "test_strategy_resumes_bit_identically_and_its_state_is_plain_data[yours_anchor]",
                 "test_scenario_runs_and_resumes_bit_identically[yours-blobs]"):
        assert test in proc.stdout
