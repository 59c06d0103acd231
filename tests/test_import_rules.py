"""The floors of the house, enforced: every import of every module of pipelines/ lm/ embeddings/ cluster/.

Rules (README, *Architecture*):

* ``lmpipe.pipelines.core`` (floor 0) imports nothing of lmpipe but itself;
* ``lmpipe.cluster`` imports nothing of lmpipe but itself;
* ``lmpipe.lm`` and ``lmpipe.embeddings`` (floor 1) import only core, cluster, lm and embeddings: never the
  run layer (``lmpipe.pipelines.<anything else>``);
* no import cycle between modules anywhere.

Imports are read with ``ast``, not by importing: module-level and function-level (lazy) imports alike,
``import x`` and ``from x import y`` (``y`` a submodule or a name), relative imports resolved against the
importing module's package, and ``importlib.import_module("...")`` with a literal name.  A failure names
``file:line`` of each arrow that breaks a rule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Folder -> import name, as ``[tool.setuptools.package-dir]`` maps them (``pipelines/api`` is ``lmpipe``).
FOLDERS = {
    "pipelines/api": "lmpipe",
    "pipelines": "lmpipe.pipelines",
    "lm": "lmpipe.lm",
    "embeddings": "lmpipe.embeddings",
    "cluster": "lmpipe.cluster",
}
CORE = "lmpipe.pipelines.core"
#: The floors, most specific first: a module belongs to the first that contains it.
FLOORS = (CORE, "lmpipe.cluster", "lmpipe.lm", "lmpipe.embeddings", "lmpipe.pipelines", "lmpipe")


@dataclass(frozen=True)
class Arrow:
    """``source`` imports ``target`` at ``file:line``."""

    source: str
    target: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} -> {self.target}"


def module_name(path: Path) -> str:
    """``pipelines/core/schemas.py`` -> ``lmpipe.pipelines.core.schemas`` (the longest mapped folder wins)."""
    rel = path.relative_to(ROOT).with_suffix("")
    for folder in sorted(FOLDERS, key=len, reverse=True):
        parts = Path(folder).parts
        if rel.parts[: len(parts)] == parts:
            rest = list(rel.parts[len(parts) :])
            if rest and rest[-1] == "__init__":
                rest.pop()
            return ".".join([FOLDERS[folder], *rest])
    raise ValueError(f"{path} is in no mapped folder")


def project_modules() -> dict[str, Path]:
    """Every module of the four folders (bench/ and tests/ are floor 3 and are not walked)."""
    out: dict[str, Path] = {}
    for top in ("pipelines", "lm", "embeddings", "cluster"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if ".venv" in path.parts or "build" in path.parts:
                continue
            out[module_name(path)] = path
    return out


def _resolve_from(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module a ``from .. import`` names (``level`` dots, relative to ``module``)."""
    if level == 0:
        return name or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, name] if name else base)


def arrows(modules: dict[str, Path]) -> list[Arrow]:
    """Every import of a project module by a project module, wherever it sits in the file."""
    out: list[Arrow] = []
    for source, path in modules.items():
        file = str(path.relative_to(ROOT))
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=file)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_from(source, is_package, node.level, node.module)
                # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                targets = [node.args[0].value]
            for target in dict.fromkeys(targets):
                if target == "lmpipe" or target.startswith("lmpipe."):
                    out.append(Arrow(source, target, file, node.lineno))
    return out


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def floor_of(module: str) -> str:
    return next(f for f in FLOORS if _within(module, f))


def broken_rules(all_arrows: list[Arrow]) -> list[str]:
    """One line per arrow that breaks a floor rule."""
    bad: list[str] = []
    for a in all_arrows:
        if _within(a.source, CORE) and not _within(a.target, CORE):
            bad.append(f"{a}  (core imports nothing of lmpipe but core)")
        elif _within(a.source, "lmpipe.cluster") and not _within(a.target, "lmpipe.cluster"):
            bad.append(f"{a}  (cluster imports nothing of lmpipe but cluster)")
        elif (_within(a.source, "lmpipe.lm") or _within(a.source, "lmpipe.embeddings")) and not any(
            _within(a.target, p) for p in (CORE, "lmpipe.cluster", "lmpipe.lm", "lmpipe.embeddings")
        ):
            bad.append(f"{a}  (lm/ and embeddings/ import only core, cluster, lm, embeddings)")
    return bad


def find_cycles(all_arrows: list[Arrow], modules: dict[str, Path]) -> list[list[Arrow]]:
    """One cycle (as its arrows) per strongly connected component of more than one module (Tarjan)."""
    edges: dict[str, dict[str, Arrow]] = {m: {} for m in modules}
    for a in all_arrows:
        if a.target in modules and a.target != a.source:
            edges[a.source].setdefault(a.target, a)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth = longest import chain, a few dozen
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(modules):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        members = set(component)
        start = min(component)
        # Breadth-first from start back to start inside the component: the shortest cycle through it.
        paths: dict[str, list[Arrow]] = {start: []}
        frontier = [start]
        found: list[Arrow] | None = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w, arrow in sorted(edges[v].items()):
                    if w == start:
                        found = [*paths[v], arrow]
                        break
                    if w in members and w not in paths:
                        paths[w] = [*paths[v], arrow]
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        assert found is not None
        cycles.append(found)
    return cycles


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Arrow]]:
    modules = project_modules()
    return modules, arrows(modules)


def test_the_walker_sees_the_imports(graph):
    """Not vacuous: known arrows of every kind are found, with their lines."""
    modules, found = graph
    assert {"lmpipe", "lmpipe.pipelines.core.schemas", "lmpipe.lm.kneser_ney", "lmpipe.cluster.training"} <= set(modules)
    pairs = {(a.source, a.target) for a in found}
    # module-level ``from x import name``
    assert ("lmpipe.lm.kneser_ney", "lmpipe.pipelines.core.keyed") in pairs
    # function-level (lazy) import
    assert ("lmpipe.lm.arpa", "lmpipe.pipelines.core.files") in pairs
    # ``from package import submodule``
    assert ("lmpipe.pipelines.stages.ngram", "lmpipe.lm.kneser_ney") in pairs
    assert len(found) > 100
    line = next(a for a in found if (a.source, a.target) == ("lmpipe.lm.kneser_ney", "lmpipe.pipelines.core.keyed"))
    assert "pipelines.core.keyed" in (ROOT / line.file).read_text(encoding="utf-8").splitlines()[line.line - 1]


def test_relative_imports_resolve(tmp_path):
    assert _resolve_from("lmpipe.lm.tagging.train", False, 1, "data") == "lmpipe.lm.tagging.data"
    assert _resolve_from("lmpipe.lm.tagging.train", False, 2, "models") == "lmpipe.lm.models"
    assert _resolve_from("lmpipe.pipelines.core", True, 1, "schemas") == "lmpipe.pipelines.core.schemas"
    assert _resolve_from("lmpipe.lm.train", False, 0, "lmpipe.cluster") == "lmpipe.cluster"


def test_the_rules_catch_a_broken_arrow():
    """The checks themselves fail on arrows that break each rule, and on a cycle."""
    bad = [
        Arrow("lmpipe.pipelines.core.vocab", "lmpipe.pipelines.spec", "pipelines/core/vocab.py", 3),
        Arrow("lmpipe.cluster.submit", "lmpipe", "cluster/submit.py", 4),
        Arrow("lmpipe.lm.evaluate", "lmpipe.pipelines.rundir", "lm/evaluate.py", 5),
        Arrow("lmpipe.embeddings.cli", "lmpipe.pipelines.ingest", "embeddings/cli.py", 6),
    ]
    ok = [Arrow("lmpipe.lm.train", "lmpipe.cluster.training", "lm/train.py", 7)]
    assert [line.split(":")[0] for line in broken_rules(bad + ok)] == [a.file for a in bad]
    modules = {m: Path(m) for m in ("a", "b", "c", "d")}
    loop = [Arrow("a", "b", "a.py", 1), Arrow("b", "c", "b.py", 2), Arrow("c", "a", "c.py", 3), Arrow("c", "d", "c.py", 4)]
    assert [[str(a) for a in cycle] for cycle in find_cycles(loop, modules)] == [
        ["a.py:1: a -> b", "b.py:2: b -> c", "c.py:3: c -> a"]
    ]


def test_every_arrow_keeps_the_floors(graph):
    _, found = graph
    bad = broken_rules(found)
    assert not bad, "imports that break the floors:\n" + "\n".join(bad)


def _describe(cycles: list[list[Arrow]]) -> str:
    return "\n".join(
        " -> ".join([cycle[0].source, *(a.target for a in cycle)]) + "\n    " + "\n    ".join(map(str, cycle))
        for cycle in cycles
    )


def test_no_import_cycle(graph):
    modules, found = graph
    cycles = find_cycles(found, modules)
    assert not cycles, "import cycles between modules (lazy imports included):\n" + _describe(cycles)


def test_no_cycle_between_floors(graph):
    """Floors, not only modules: ``pipelines/partitions -> lm/ngram_counts`` with ``lm/arpa -> pipelines/partitions``
    is no module cycle, but it is a cycle between the run layer and the models below it."""
    _, found = graph
    # ``from lmpipe import __version__`` reads a constant of pipelines/api/__init__.py, which imports nothing
    # (tests/test_api.py checks it): not an arrow into the Python API's modules (lmpipe.session ...).
    found = [a for a in found if a.target != "lmpipe"]
    lifted = [Arrow(floor_of(a.source), floor_of(a.target), a.file, a.line) for a in found]
    cycles = find_cycles(lifted, dict.fromkeys(FLOORS, Path()))
    assert not cycles, "import cycles between floors:\n" + _describe(cycles)


def test_a_training_worker_never_loads_the_run_layer():
    """What a Ray Train worker imports to read shards and ``vocab.tsv`` and train: no spec parser, no run
    directory code (checked in a fresh interpreter, so nothing this test session imported counts)."""
    code = (
        "import sys\n"
        "import lmpipe.embeddings.train, lmpipe.embeddings.glove_train, lmpipe.lm.train, lmpipe.lm.tagging.train\n"
        "import lmpipe.pipelines.core.vocab, lmpipe.pipelines.core.shards, lmpipe.pipelines.tokenizers\n"
        "print(sorted(m for m in sys.modules if m.startswith('lmpipe.pipelines.') and not m.startswith('lmpipe.pipelines.core')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['lmpipe.pipelines.tokenizers']"
