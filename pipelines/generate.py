"""Sample text from a run's trained recurrent LM (``lmpipe generate``).

The prompt is normalised and tokenized exactly as the corpus was: the run's resolved ``spec.yaml`` names the
settings, ``core.text`` is the normaliser ingest used, and the run's ``vocab.tsv`` (and, for sentencepiece,
``tokenizer.model``) gives the ids; unknown prompt tokens become ``<unk>``.  Sampling and rendering are
``lm.generate``'s.

    >>> generate(Path("runs/ptb-lm"), model="lstm", prompt="the company", max_tokens=20, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from lmpipe.lm.generate import render, sample
from lmpipe.lm.train import load_model
from lmpipe.pipelines.core.errors import MissingError
from lmpipe.pipelines.core.text import normalize_line
from lmpipe.pipelines.core.vocab import Vocab
from lmpipe.pipelines.runlock import RunLock
from lmpipe.pipelines.spec import RunSpec, SpecError, parse_spec
from lmpipe.pipelines.tokenizers import make_tokenizer


def prompt_ids(run_dir: Path, spec: RunSpec, vocab: Vocab, prompt: str) -> list[int]:
    """The ids the run's tokenize stage would have given ``prompt`` as a corpus line."""
    text = normalize_line(prompt, nfkc=spec.normalize.nfkc, lowercase=spec.normalize.lowercase)
    proto = None
    if spec.tokenizer.kind == "sentencepiece":
        proto = (run_dir / "tokenize" / "tokenizer.model").read_bytes()
    tokenizer = make_tokenizer(spec.tokenizer, proto)
    if spec.tokenizer.kind == "sentencepiece":
        return [int(i) for i in tokenizer.ids(pa.array([text])).to_pylist()[0]]
    tokens = tokenizer.tokens(pa.array([text])).to_pylist()[0]
    return [int(i) for i in vocab.lookup(pa.array(tokens, pa.string())).to_pylist()] if tokens else []


def generate(
    run_dir: Path, *, model: str | None = None, prompt: str = "", max_tokens: int = 50,
    temperature: float = 1.0, seed: int = 0,
) -> str:  # fmt: skip
    """The prompt followed by ``max_tokens`` sampled tokens, as text."""
    run_dir = Path(run_dir)
    if max_tokens < 0:
        raise SpecError(f"--max-tokens: bad value {max_tokens}; allowed: 0 or more")
    if temperature < 0:
        raise SpecError(f"--temperature: bad value {temperature}; allowed: 0 (greedy) or more")
    with RunLock(run_dir, shared=True):  # the run's files read together, not while a run replaces them
        spec, vocab, net, ids = _load(run_dir, model, prompt)
    out = sample(net, ids, max_tokens=max_tokens, temperature=temperature, seed=seed)
    return render(vocab.tokens.to_pylist(), ids + out, spec.tokenizer.kind)


def _load(run_dir: Path, model: str | None, prompt: str) -> tuple[RunSpec, Vocab, Any, list[int]]:
    """The run's spec, vocabulary and model, and the prompt's ids."""
    spec_path = run_dir / "spec.yaml"
    if not spec_path.is_file():
        raise MissingError(
            f"{spec_path}: not a run directory (no spec.yaml); run `lmpipe run SPEC` first"
        )
    spec = parse_spec(yaml.safe_load(spec_path.read_text(encoding="utf-8")), source=str(spec_path))
    name = spec.lm.model(model).name
    model_dir = run_dir / "lm" / name
    if not (model_dir / "model.pt").is_file():
        raise MissingError(f"{model_dir}: no trained model {name!r}; run the lm stage (`--stages lm`)")
    vocab = Vocab.load(run_dir / "tokenize" / "vocab.tsv")
    net = load_model(model_dir, vocab.counts)
    return spec, vocab, net, prompt_ids(run_dir, spec, vocab, prompt)
