"""Shared fixtures: one local Ray instance per test session (2 CPUs, as the CI machine has), the dataset
mirror from ``LMPIPE_DATA_MIRROR`` (CI points it at ../shared/data), and small corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "pipelines" / "specs"


def mirror_dir() -> Path | None:
    value = os.environ.get("LMPIPE_DATA_MIRROR")
    return Path(value) if value and Path(value).is_dir() else None


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = mirror_dir()
    if path is None:
        pytest.skip("LMPIPE_DATA_MIRROR is not set to the dataset mirror (e.g. ../shared/data)")
    return path


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A real local Ray instance shared by the session's integration tests.  Its workers inherit
    ``LMPIPE_FAULTS`` (an empty folder: inert until a test writes a schedule there, tests/test_faults.py)."""
    from lmpipe.cluster.connect import connect, shutdown
    from lmpipe.pipelines.core.faults import ENV

    os.environ[ENV] = str(tmp_path_factory.mktemp("faults"))
    info = connect(num_cpus=2)
    yield info
    shutdown()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def kenlm_bin() -> Path:
    """The folder holding KenLM's lmplz/build_binary/query (built by `make kenlm`), or skip."""
    from lmpipe.lm.kenlm_tools import find_kenlm_binary

    try:
        return find_kenlm_binary("lmplz").parent
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
