"""The distribution as a user gets it: ``pip install lmpipe`` gives the one import package ``lmpipe``.

The wheel is built from a clean copy of the checkout (no stale ``build/``), then checked against the
checkout itself, walked here independently of pyproject: every folder with an ``__init__.py`` is a package
of the wheel (``pipelines/api`` is ``lmpipe``, ``<folder>/x`` is ``lmpipe.<folder>.x``), every file a
shipped spec reads is in it, and nothing but ``lmpipe/`` and its ``.dist-info`` sits at its root.  It is
then installed with ``--no-deps`` into a fresh virtualenv outside the checkout (the dependencies come from
this environment's site-packages through a ``.pth`` file) and run from a folder outside the checkout.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from lmpipe.cluster.submit import EXCLUDES
from lmpipe.pipelines.spec import load_spec
from lmpipe.pipelines.submission import local_input_paths

from .conftest import REPO, SPECS

pytestmark = pytest.mark.slow  # a wheel build, a virtualenv and a tokenize run: about a minute
FOLDERS = ("pipelines", "lm", "embeddings", "cluster")
API = REPO / "pipelines" / "api"


def source_version() -> str:
    """``__version__`` as written in pipelines/api/__init__.py (read without importing it)."""
    tree = ast.parse((API / "__init__.py").read_text(encoding="utf-8"))
    (value,) = [
        node.value.value for node in tree.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]
    ]  # fmt: skip
    return value


VERSION = source_version()


def pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def installed_name(path: Path) -> str:
    """Where a checkout file lands in the wheel: pipelines/api/x -> lmpipe/x, <folder>/x -> lmpipe/<folder>/x."""
    rel = path.relative_to(REPO)
    if rel.is_relative_to(API.relative_to(REPO)):
        return Path("lmpipe", rel.relative_to(API.relative_to(REPO))).as_posix()
    assert rel.parts[0] in FOLDERS, rel
    return Path("lmpipe", rel).as_posix()


def checkout_packages() -> list[Path]:
    """Every package folder of the checkout's four folders (pipelines/api included: it is ``lmpipe``)."""
    return sorted(
        init.parent for top in FOLDERS for init in (REPO / top).rglob("__init__.py") if "__pycache__" not in init.parts
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "lmpipe"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*EXCLUDES))
    out = tmp_path_factory.mktemp("wheel")
    requires = pyproject()["build-system"]["requires"]
    offline = ["--no-build-isolation"] if _satisfied(requires) else []  # else pip fetches the backend
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(out), *offline]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    (built,) = out.glob("lmpipe-*.whl")
    return built


def _satisfied(requires: list[str]) -> bool:
    """Whether this environment has the build backend pyproject asks for (here: setuptools>=N)."""
    import setuptools

    for req in requires:
        match = re.fullmatch(r"setuptools>=(\d+)", req.replace(" ", ""))
        assert match, f"build-system.requires: {req!r} (this test knows setuptools>=N only)"
        if int(setuptools.__version__.split(".")[0]) < int(match.group(1)):
            return False
    return True


@pytest.fixture(scope="module")
def names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_the_wheel_holds_every_package_of_the_checkout(wheel, names):
    packages = checkout_packages()
    assert API in packages and REPO / "pipelines" / "stages" in packages and REPO / "lm" / "tagging" in packages
    with zipfile.ZipFile(wheel) as zf:
        for folder in packages:
            for module in folder.glob("*.py"):
                name = installed_name(module)
                assert name in names, f"{module.relative_to(REPO)} is not in the wheel: add its package to pyproject"
                assert zf.read(name) == module.read_bytes(), name
    assert not any(n.startswith("lmpipe/pipelines/api/") for n in names), "pipelines/api is lmpipe itself"


def test_the_wheel_holds_every_file_a_shipped_spec_needs(names):
    specs = sorted(SPECS.glob("*.yaml"))
    assert {s.name for s in specs} >= {"tiny.yaml", "ptb.yaml", "conll2003.yaml"}
    needed = set(specs) | set((REPO / "cluster" / "configs").glob("*.yaml")) | {REPO / "cluster" / "image" / "Dockerfile"}
    for spec in specs:
        needed |= {Path(p) for p in local_input_paths(load_spec(spec)) if Path(p).is_relative_to(REPO)}
    assert SPECS / "tiny" / "train.txt" in needed and SPECS / "tiny" / "test.txt" in needed
    missing = sorted(installed_name(p) for p in needed if installed_name(p) not in names)
    assert missing == [], f"not in the wheel: {missing}"


def test_the_wheel_root_has_only_lmpipe_and_its_metadata(wheel, names):
    assert {n.split("/")[0] for n in names} == {"lmpipe", f"lmpipe-{VERSION}.dist-info"}
    info = f"lmpipe-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read(f"{info}/top_level.txt").decode().split() == ["lmpipe"]
        meta = zf.read(f"{info}/METADATA").decode()
        assert zf.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        assert "lmpipe = lmpipe.pipelines.cli:entry" in zf.read(f"{info}/entry_points.txt").decode()
    assert f"\nVersion: {VERSION}\n" in meta
    assert "\nLicense-Expression: Apache-2.0\n" in meta and "\nLicense-File: LICENSE\n" in meta
    assert "\nLicense: " not in meta  # the deprecated free-text field is gone


def test_the_license_is_the_apache_2_text():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    sections = re.findall(r"^\s+(\d+)\. ([A-Z][A-Za-z ]+)\.", text, re.M)
    assert [int(n) for n, _ in sections] == list(range(1, 10)), sections
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


def test_one_version_string():
    """Only pipelines/api/__init__.py writes the version; pyproject reads it; image tags follow it."""
    project = pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lmpipe.__version__"}
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tags: list[tuple[str, str]] = []
    for name in files:
        path = REPO / name
        if path.suffix not in (".py", ".yaml", ".md", ".toml", ".cfg", ".txt", "") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path != API / "__init__.py":
            assert not re.search(r"^\s*__version__\s*=", text, re.M), f"{name} writes a second version"
        tags += [(name, t) for t in re.findall(r"/lmpipe:(\d[^\s\"'`]*)", text)]
    assert tags, "the cluster configs name the lmpipe image"
    wrong = [(n, t) for n, t in tags if t not in (f"{VERSION}-cpu", f"{VERSION}-gpu")]
    assert wrong == [], f"image tags not of version {VERSION}: {wrong}"


# ------------------------------------------------------------------------------------------ installed
@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel installed (``--no-deps``); the dependencies are
    this environment's, appended to its path by a ``.pth`` file (after its own site-packages)."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True,
    ).stdout.strip())  # fmt: skip
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    assert sysconfig.get_paths()["purelib"] in ours
    (site / "zz-dependencies.pth").write_text("".join(f"{p}\n" for p in ours), encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return root


def _site(venv: Path) -> Path:
    (site,) = (venv / "lib").glob("python*/site-packages")
    return site


def test_import_lmpipe_from_the_virtualenv(venv, tmp_path):
    probe = (
        "import importlib.util, json, lmpipe, lmpipe.pipelines.cli, lmpipe.lm.kneser_ney, lmpipe.embeddings.sgns, "
        "lmpipe.cluster.submit\n"
        "mods = [lmpipe, lmpipe.pipelines.cli, lmpipe.lm.kneser_ney, lmpipe.embeddings.sgns, lmpipe.cluster.submit]\n"
        "print(json.dumps({'files': [m.__file__ for m in mods], 'version': lmpipe.__version__,\n"
        "  'generic': [n for n in ('pipelines', 'lm', 'embeddings', 'cluster') if importlib.util.find_spec(n)],\n"
        "  'source_root': str(lmpipe.cluster.submit.source_root())}))\n"
    )
    out = subprocess.run([venv / "bin" / "python", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.splitlines()[-1])
    site = _site(venv).resolve()
    for file in found["files"]:
        assert Path(file).resolve().is_relative_to(site / "lmpipe"), f"{file}: not the installed copy"
    assert found["version"] == VERSION and found["generic"] == []
    assert found["source_root"] == "None"  # installed from a wheel: submit ships only the spec
    for argv in ([venv / "bin" / "python", "-m", "lmpipe.pipelines.cli", "--version"], [venv / "bin" / "lmpipe", "--version"]):
        version = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert version.returncode == 0 and version.stdout.strip() == f"lmpipe {VERSION}", version.stdout + version.stderr


def test_the_tiny_spec_runs_from_the_installed_copy(venv, tmp_path):
    spec = _site(venv) / "lmpipe" / "pipelines" / "specs" / "tiny.yaml"
    run = tmp_path / "run"
    out = subprocess.run(
        [venv / "bin" / "lmpipe", "run", str(spec), "--stages", "tokenize", "--run-dir", str(run), "--num-cpus", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    manifest = json.loads((run / "tokenize" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["outputs"]["splits"]["train"]["sentences"] == 600
    resolved = load_spec(run / "spec.yaml")
    assert all(Path(p).is_relative_to(spec.parent / "tiny") for p in resolved.corpus.train), resolved.corpus.train
