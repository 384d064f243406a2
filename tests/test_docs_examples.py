"""Every snippet of docs/extending.md and of the README runs as written: files are written
where the page says, commands run (shrunk to a couple of steps per task), shown error output
is what retain prints.

Markers before a fenced block: ``<!-- file: PATH -->`` writes the block to PATH (a
``pyproject.toml`` is then installed the way pip would make it visible: a dist-info folder with
its entry points on the path); ``<!-- run -->`` runs each ``retain ...`` line of a bash block,
or a Python block; ``<!-- output of: COMMAND -->`` runs COMMAND, which must fail with exactly
the block as its one error line.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from harness import plugins
from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
SNIPPET = re.compile(r"<!-- (file|run|output of)(?:: ([^\n]*?))? -->\n```(\w*)\n(.*?)```", re.S)
QUICK = ["logger=none", "trainer.progress=false", "trainer.max_steps=2",
         "trainer.accelerator=cpu"]


def commands(block: str) -> list[list[str]]:
    """The ``retain ...`` commands of a bash block (backslash continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line)[1:] for line in joined.splitlines() if line.startswith("retain ")]


def with_quick(argv: list[str]) -> list[str]:
    return [*argv, *QUICK] if argv[0] in ("run", "sweep") else argv


def install(pyproject: Path, monkeypatch) -> None:
    """What ``pip install -e`` makes visible to importlib.metadata: a dist-info folder."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(pyproject.read_text())["project"]
    info = pyproject.parent / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    points = project["entry-points"][plugins.ENTRY_POINT_GROUP]
    (info / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\n" + "".join(
        f"{name} = {value}\n" for name, value in points.items()))
    monkeypatch.syspath_prepend(str(pyproject.parent))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)


def run_snippets(page: Path, tmp_path, capsys, monkeypatch) -> int:
    """Runs the marked snippets of ``page`` in order; returns how many there were."""
    snippets = SNIPPET.findall(page.read_text())
    for kind, arg, lang, body in snippets:
        if kind == "file":
            path = tmp_path / arg
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            if path.name == "pyproject.toml":
                install(path, monkeypatch)
        elif kind == "run" and lang == "python":
            exec(compile(body, str(page), "exec"), {})
        elif kind == "run":
            for argv in commands(body):
                assert main(with_quick(argv)) == 0, (argv, capsys.readouterr().err[-2000:])
        else:
            capsys.readouterr()
            assert main(with_quick(shlex.split(arg)[1:])) == 2
            assert capsys.readouterr().err.strip() == body.strip()
    return len(snippets)


def complete_runs(tmp_path) -> list[str]:
    return sorted(p.parent.name for p in (tmp_path / "runs").glob("*/results.json"))


def test_every_snippet_of_the_extending_page_runs(tmp_path, capsys, monkeypatch):
    assert run_snippets(PAGE, tmp_path, capsys, monkeypatch) == 16
    runs = complete_runs(tmp_path)
    assert len(runs) == 6, runs  # anchor, bag, the YAML, confidence, tensors, avalanche
    swept = [json.loads(p.read_text())["config"]["strategy"]["anchor"]["weight"]
             for p in (tmp_path / "runs" / "sweeps" / "anchor_weight").glob("*/results.json")]
    assert sorted(swept) == [0.1, 1.0]  # the sweep's runs loaded the plug-in it names


def test_the_readmes_own_data_examples_run(tmp_path, capsys, monkeypatch):
    assert run_snippets(ROOT / "README.md", tmp_path, capsys, monkeypatch) == 3
    runs = complete_runs(tmp_path)
    assert [r.split("-")[0] for r in runs] == ["avalanche", "tensors"], runs
