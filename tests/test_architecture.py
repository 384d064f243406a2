"""The package layout's arrows point one way: every import of retain's own code, at module
level or inside a function, goes to the same layer or a lower one, and the harness reaches
plug-ins (strategies, scenarios, models) only through the registry, by name."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "strategies", "scenarios")

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    ("harness.errors", "harness"),  # harness/__init__.py is empty
    ("harness.api",),
    # harness.plugins imports plug-ins for the config, which names them, so it sits beside it
    ("harness.registry", "harness.config", "harness.ranges", "harness.plugins"),
    ("harness.runtime",),
    ("harness.core",),
    ("harness.experiment",),
    ("harness.sweeps", "harness.analysis"),
    ("harness.cli", "harness.__main__"),
]
# Plug-ins build on the contracts and the runtime; they never reach the experiment machinery.
PLUGINS = ("harness.models", "strategies", "scenarios")
PLUGIN_MAY_IMPORT = ("harness.errors", "harness.api", "harness.registry", "harness.plugins",
                     "harness.runtime", "harness.core.network", *PLUGINS)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> set[str]:
    """Every retain module ``path`` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def owner(name: str, groups) -> str | None:
    """The longest prefix in ``groups`` that ``name`` lives under."""
    matches = [g for g in groups if name == g or name.startswith(g + ".")]
    return max(matches, key=len) if matches else None


def layer_of(name: str) -> int | None:
    flat = {prefix: i for i, layer in enumerate(LAYERS) for prefix in layer}
    prefix = owner(name, flat)
    return None if prefix is None else flat[prefix]


def test_every_harness_import_points_down_or_sideways():
    known = modules()
    wrong = []
    for name, path in known.items():
        if owner(name, PLUGINS):
            continue
        here = layer_of(name)
        for target in imports(path) & set(known):
            if owner(target, PLUGINS):
                wrong.append(f"{name} imports the plug-in {target} (use the registry)")
            elif layer_of(target) is not None and layer_of(target) > here:
                wrong.append(f"{name} (layer {here}) imports {target} (layer "
                             f"{layer_of(target)})")
    assert not wrong, "\n".join(wrong)


def test_the_contracts_import_nothing_of_retain_but_errors():
    known = modules()
    for name, path in known.items():
        if owner(name, ("harness.api",)):
            outside = {t for t in imports(path) & set(known)
                       if not owner(t, ("harness.api", "harness.errors"))}
            assert not outside, f"{name} imports {sorted(outside)}"


def test_plugins_import_only_the_contracts_runtime_and_each_other():
    known = modules()
    wrong = []
    for name, path in known.items():
        if not owner(name, PLUGINS):
            continue
        for target in imports(path) & set(known):
            if not owner(target, PLUGIN_MAY_IMPORT):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_packages():
    """Packages (harness's subpackages, strategies, scenarios) form a DAG."""
    known = modules()
    groups = sorted({".".join(n.split(".")[:2]) if n.startswith("harness.") else n.split(".")[0]
                     for n in known})
    edges: dict[str, set[str]] = {g: set() for g in groups}
    for name, path in known.items():
        source = owner(name, groups)
        for target in imports(path) & set(known):
            dest = owner(target, groups)
            if dest is not None and dest != source:
                edges[source].add(dest)
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(node):])} "
                                 f"-> {node}")
        if node in seen:
            return
        stack.append(node)
        for nxt in sorted(edges[node]):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for group in groups:
        visit(group)


def test_the_checker_sees_function_level_and_type_only_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from harness.core.system import ContinualSystem\n"
                      "def f():\n    import strategies.ewc\n")
    assert imports(source) == {"harness.core.system", "harness.core.system.ContinualSystem",
                               "strategies.ewc"}
