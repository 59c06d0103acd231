"""Sample text from a run's trained recurrent LM (``lmpipe generate``).

The prompt is normalised and tokenized exactly as the corpus was (the run's resolved ``spec.yaml``, its
``vocab.tsv`` and, for sentencepiece, ``tokenizer.model``); unknown prompt tokens become ``<unk>``.  The model
reads ``</s>`` (its ``<s>``) then the prompt, and samples ``max_tokens`` tokens from
``softmax(logits / temperature)`` (temperature 0 = greedy), never ``<s>``.  ``</s>`` is printed as a line
break; word tokens are joined with spaces, character and sentencepiece pieces are concatenated with ``▁`` as a
space.

    >>> generate(Path("runs/ptb-lm"), model="lstm", prompt="the company", max_tokens=20, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import torch
import yaml

from lmpipe.lm.train import load_model
from lmpipe.pipelines.core.errors import MissingError
from lmpipe.pipelines.schemas import BOS_ID, EOS_ID
from lmpipe.pipelines.tokenizers import SPACE_MARK
from lmpipe.pipelines.vocab import Vocab


def _prompt_ids(run_dir: Path, spec, vocab: Vocab, prompt: str) -> list[int]:
    from lmpipe.pipelines.tokenizers import make_tokenizer

    text = prompt.lower() if spec.normalize.lowercase else prompt
    if spec.normalize.nfkc:
        import unicodedata

        text = unicodedata.normalize("NFKC", text)
    proto = None
    if spec.tokenizer.kind == "sentencepiece":
        proto = (run_dir / "tokenize" / "tokenizer.model").read_bytes()
    tokenizer = make_tokenizer(spec.tokenizer, proto)
    if spec.tokenizer.kind == "sentencepiece":
        return [int(i) for i in tokenizer.ids(pa.array([text])).to_pylist()[0]]
    tokens = tokenizer.tokens(pa.array([text])).to_pylist()[0]
    return [int(i) for i in vocab.lookup(pa.array(tokens, pa.string())).to_pylist()] if tokens else []


def render(tokens: list[str], ids: list[int], kind: str) -> str:
    """Token ids back to text: ``</s>`` is a newline; words spaced, pieces concatenated."""
    out: list[str] = []
    for i in ids:
        if i == EOS_ID:
            out.append("\n")
        elif kind in ("char", "sentencepiece"):
            out.append(tokens[i].replace(SPACE_MARK, " "))
        else:
            out.append(("" if not out or out[-1] == "\n" else " ") + tokens[i])
    return "".join(out)


@torch.no_grad()
def generate(
    run_dir: Path, *, model: str | None = None, prompt: str = "", max_tokens: int = 50,
    temperature: float = 1.0, seed: int = 0,
) -> str:  # fmt: skip
    """The prompt followed by ``max_tokens`` sampled tokens, as text."""
    from lmpipe.pipelines.spec import SpecError, parse_spec

    run_dir = Path(run_dir)
    if max_tokens < 0:
        raise SpecError(f"--max-tokens: bad value {max_tokens}; allowed: 0 or more")
    if temperature < 0:
        raise SpecError(f"--temperature: bad value {temperature}; allowed: 0 (greedy) or more")
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
    tokens = vocab.tokens.to_pylist()
    net = load_model(model_dir, vocab.counts)
    ids = _prompt_ids(run_dir, spec, vocab, prompt)
    generator = torch.Generator().manual_seed(seed)
    hidden = net.init_hidden(1)
    log_probs, hidden = net.next_log_probs(torch.tensor([[EOS_ID, *ids]]).t(), hidden)
    last = log_probs[-1, 0]
    out: list[int] = []
    for _ in range(max_tokens):
        last = last.clone()
        last[BOS_ID] = -torch.inf
        if temperature == 0:
            nxt = int(last.argmax())
        else:
            nxt = int(torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=generator))
        out.append(nxt)
        log_probs, hidden = net.next_log_probs(torch.tensor([[nxt]]), hidden)
        last = log_probs[-1, 0]
    return render(tokens, ids + out, spec.tokenizer.kind)
