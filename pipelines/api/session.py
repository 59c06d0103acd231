"""The Python API over a run directory, for notebooks and scripts: run a spec, then use what it made.

    >>> import lmpipe
    >>> run = lmpipe.run("pipelines/specs/tiny.yaml", run_dir="runs/tiny", stages=["tokenize", "ngram"])  # doctest: +SKIP
    >>> run.manifest("ngram")["perplexity"]["test"]["perplexity"]                                       # doctest: +SKIP
    >>> run.score(["In the beginning God created the heaven and the earth."], model="kn3")           # doctest: +SKIP

Every method reads the run directory the CLI writes (manifests, ``vocab.tsv``, model files), and
:meth:`Run.score` is ``lmpipe score``'s code path (``pipelines.score.score_files`` on a temporary input), so a
figure from a notebook is the figure from the command line.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def configure_logging(level: int = logging.INFO) -> None:
    """Make lmpipe's progress visible in a notebook: a handler on the ``lmpipe`` logger if it has none and the
    root logger has none either (a script that configured logging keeps its own)."""
    log = logging.getLogger("lmpipe")
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > level:
        log.setLevel(level)


class Run:
    """A run directory: its manifests, artifacts and models."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if not (self.path / "spec.yaml").is_file():
            from lmpipe.pipelines.core.errors import MissingError

            raise MissingError(f"{self.path}: not a run directory (no spec.yaml); run lmpipe.run(SPEC) first")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def _reading(self):
        """The run lock, shared: a load sees one run's files, never a vocabulary of one run and a model of the
        next (a run that starts meanwhile is refused; once loaded, mapped files survive a later replacement)."""
        from lmpipe.pipelines.runlock import RunLock

        return RunLock(self.path, shared=True)

    def manifest(self, stage: str) -> dict[str, Any]:
        """The committed manifest of ``stage`` (a ``MissingError`` naming the stage if it has not run)."""
        from lmpipe.pipelines.core.errors import MissingError
        from lmpipe.pipelines.rundir import read_manifest

        manifest = read_manifest(self.path, stage)
        if manifest is None:
            raise MissingError(f"{self.path}/{stage}: the {stage} stage has not completed in this run")
        return manifest

    def vectors(self, stage: str = "sgns"):
        """The word vectors of an embeddings stage (``embeddings.vectors.Vectors``, memory-mapped)."""
        from lmpipe.embeddings.vectors import Vectors

        with self._reading():
            self.manifest(stage)
            return Vectors.load(self.path / stage / "vectors")

    def ngram(self):
        """The n-gram model as a ``kenlm.Model`` (the KenLM binary, mmapped, when the stage built one)."""
        from lmpipe.lm.perplexity import load_kenlm
        from lmpipe.pipelines.evaluate import model_path

        with self._reading():
            return load_kenlm(model_path(self.path))

    def lm(self, name: str | None = None):
        """``(model, vocab)``: an lm stage model (``torch.nn.Module``, eval mode, CPU) and its ``Vocab``."""
        from lmpipe.lm.train import load_model
        from lmpipe.pipelines.core.errors import MissingError
        from lmpipe.pipelines.core.vocab import Vocab

        with self._reading():
            models = list(self.manifest("lm")["models"])
            name = name or models[0]
            if name not in models:
                raise MissingError(f"{self.path}/lm: no model {name!r}; trained models: {models}")
            vocab = Vocab.load(self.path / "tokenize" / "vocab.tsv")
            return load_model(self.path / "lm" / name, vocab.counts), vocab

    def score(self, texts: Iterable[str], model: str, *, workers: int = 1, device: str = "cpu") -> list[dict[str, Any]]:
        """One record per text (``line``, ``tokens``, ``oov``, ``log10_prob``, ``ppl``), by ``lmpipe score``'s
        code path; the corpus summary of the last call is kept in :attr:`last_summary`."""
        import json

        from lmpipe.pipelines.score import score_files

        with tempfile.TemporaryDirectory(prefix="lmpipe-score-") as tmp:
            src, out = Path(tmp) / "input.txt", Path(tmp) / "scores.jsonl"
            lines = [t.replace("\n", " ") for t in texts]
            src.write_text("".join(f"{t}\n" for t in lines), encoding="utf-8")
            self.last_summary = score_files(self.path, model, [src], out=out, workers=workers, device=device)
            return [json.loads(r) for r in out.read_text(encoding="utf-8").splitlines()]

    def report(self) -> str:
        """The run's cross-model table as Markdown (``report.md``, as the report stage writes it)."""
        from lmpipe.pipelines.report import write_report
        from lmpipe.pipelines.report_rows import collect

        with tempfile.TemporaryDirectory(prefix="lmpipe-report-") as tmp:
            write_report(collect(self.path), Path(tmp))
            return (Path(tmp) / "report.md").read_text(encoding="utf-8")


def run(
    spec_or_path: str | Path | Any, *, run_dir: str | Path | None = None, stages: Sequence[str] | None = None,
    set: Mapping[str, Any] | None = None, force: Sequence[str] = (), address: str | None = None,
    mirror: str | None = None, num_cpus: int | None = None,
) -> Run:  # fmt: skip
    """Run a spec (a YAML path or a parsed ``RunSpec``) as ``lmpipe run`` does; the run directory as a :class:`Run`.
    ``set`` holds ``--set`` overrides by key path, e.g. ``{"ngram.order": 4}`` (values are YAML)."""
    import os

    import yaml

    from lmpipe.pipelines.run import run_pipeline
    from lmpipe.pipelines.spec import RunSpec, load_spec

    configure_logging()
    overrides = [f"{k}={v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in (set or {}).items()]
    if isinstance(spec_or_path, RunSpec):
        if overrides:
            raise TypeError("set=: give overrides with a spec path; a parsed RunSpec is already resolved")
        spec = spec_or_path
    else:
        spec = load_spec(spec_or_path, overrides=overrides)
    target = Path(run_dir) if run_dir is not None else Path("runs") / spec.name
    run_pipeline(
        spec, run_dir=target, stages=list(stages) if stages else None, force=force, address=address,
        mirror=mirror or os.environ.get("LMPIPE_DATA_MIRROR") or None, num_cpus=num_cpus,
    )  # fmt: skip
    return Run(target)
