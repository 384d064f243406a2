"""Components from outside the repository: plug-in modules, plug-in files, installed packages.

A plug-in is Python code whose import registers components with ``harness.registry``'s
decorators (``@register_model``, ``@register_strategy``, ``@register_scenario``). It reaches
retain by one of two routes:

* ``plugins=[my_pkg.my_module, path/to/file.py]`` in a config (command line, experiment YAML,
  sweep file). ``harness.config.load`` imports them before it builds the config schema, so the
  names they register are valid in the same config. A file is imported under a module name
  made from its absolute path (``retain_plugin_<stem>_<hash>``): every DDP rank, which re-runs
  the same command, and every pickle agree on where its classes live. config.yaml records the
  absolute path, so a resume from another folder finds it.
* an installed package's ``retain.plugins`` entry points (``[project.entry-points."retain.plugins"]
  my_components = "my_pkg.retain_components"``), imported the first time a registry is read,
  so ``retain --help`` pays nothing for them.

Each plug-in is imported once per process. A plug-in that does not import is one ``UserError``
naming it and the first line of its error.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path

from harness.errors import UserError

ENTRY_POINT_GROUP = "retain.plugins"

_loaded: dict[str, str] = {}  # module name -> the plug-in as the user named it
_entry_points_loaded = False


def is_file(spec: str) -> bool:
    """A plug-in given as a file path (``x.py``, ``dir/x``) rather than a module name."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def resolve(spec: str, base: Path | None = None, what: str = "plugin") -> str:
    """The plug-in as config.yaml records it: a module name as given, a file as an absolute
    path. A relative path is looked up in the working directory, then in ``base`` (the folder
    of the YAML file that names it). ``what`` names it in errors."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"a {what} must be a module name or a .py file, not {spec!r}")
    spec = spec.strip()
    if not is_file(spec):
        if not all(part.isidentifier() for part in spec.split(".")):
            raise UserError(f"{what} '{spec}' is neither a module name (my_pkg.my_module) nor "
                            "a .py file")
        return spec
    path = Path(spec).expanduser()
    candidates = [path] if path.is_absolute() or base is None else [path, base / path]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        where = " (looked in the working directory and next to the file naming it)" \
            if len(candidates) > 1 else ""
        raise UserError(f"{what} file not found: {spec}{where}")
    if found.is_dir():
        raise UserError(f"{what} {spec} is a folder; name a .py file or a module")
    if found.suffix != ".py":
        raise UserError(f"{what} {spec} is not a .py file")
    return str(found.resolve())


def load(specs: list[str], what: str = "plugin") -> None:
    """Import every plug-in in ``specs`` (resolved by ``resolve``), each once per process."""
    for spec in specs:
        module = module_name(spec) if is_file(spec) else spec
        if module in _loaded or (not is_file(spec) and spec in sys.modules):
            _loaded.setdefault(module, spec)
            continue
        _loaded[module] = spec  # before the import: its registrations name the plug-in
        try:
            _import(spec, module, what)
        except BaseException:
            del _loaded[module]
            raise


def module_name(path: str) -> str:
    """The stable module name of a plug-in file: its stem and a hash of its absolute path."""
    stem = re.sub(r"\W", "_", Path(path).stem)
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:10]
    return f"retain_plugin_{stem}_{digest}"


def origin(module: str) -> str | None:
    """The plug-in (as the user named it) that a component's module came from, if any."""
    return _loaded.get(module)


def load_entry_points() -> None:
    """Import the ``retain.plugins`` entry points of installed packages, once per process.
    An entry point names a module (imported) or ``module:function`` (imported and called)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        label = f"entry point '{ep.name} = {ep.value}'" + (
            f" of package {dist.name}" if dist is not None else "")
        if ep.module in sys.modules and not ep.attr:
            continue
        loaded = _guarded(label, ep.load)
        if ep.attr and callable(loaded):
            _guarded(label, loaded)
        _loaded.setdefault(ep.module, f"{ep.name} ({ENTRY_POINT_GROUP})")


def import_object(spec: str, what: str, base: Path | None = None):
    """The object ``module:name`` or ``path/to/file.py:name`` names (e.g. a factory)."""
    module_spec, sep, attr = spec.rpartition(":")
    if not sep or not module_spec or not attr.isidentifier():
        raise UserError(f"{what} must be module:function or path/to/file.py:function, "
                        f"not '{spec}'")
    resolved = resolve(module_spec, base, what)
    load([resolved], what)
    module = sys.modules[module_name(resolved) if is_file(resolved) else resolved]
    if not hasattr(module, attr):
        raise UserError(f"{what}: {module_spec} has no '{attr}'")
    return getattr(module, attr)


def _import(spec: str, module: str, what: str) -> None:
    label = f"{what} '{spec}'"
    if not is_file(spec):
        _guarded(label, importlib.import_module, spec, missing=spec)
        return
    loader_spec = importlib.util.spec_from_file_location(module, spec)
    code = importlib.util.module_from_spec(loader_spec)
    sys.modules[module] = code  # before running it: dataclasses and pickle look it up there
    try:
        _guarded(label, loader_spec.loader.exec_module, code)
    except BaseException:
        del sys.modules[module]
        raise


def _guarded(label: str, fn, *args, missing: str = ""):
    """``fn(*args)``; any error becomes one line naming the plug-in. ``missing``: the module
    being imported, to hint at the path form when it is not found."""
    try:
        return fn(*args)
    except UserError as err:
        raise UserError(f"{label}: {err}") from None
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name and \
                f"{missing}.".startswith(f"{err.name}."):
            hint = " (is it installed or on PYTHONPATH? a file is named by its path: " \
                   "plugins=[path/to/file.py])"
        raise UserError(f"{label} does not import: {type(err).__name__}: {first}{hint}") \
            from None
