"""Bengio et al.'s NPLM: gradients, the <s>-padded context that never crosses a sentence start, a distribution
over the vocabulary, and training through the lm stage's loop on a tiny corpus."""

from __future__ import annotations

import pytest
import torch

from lmpipe.lm.gradcheck import gradient_check
from lmpipe.lm.models import ModelConfig, build_network
from lmpipe.lm.nplm import NPLM
from lmpipe.pipelines.core.schemas import BOS_ID, EOS_ID
from lmpipe.pipelines.spec import SpecError, parse_spec

V = 20


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"kind": "nplm", "vocab_size": V, "emb_dim": 4, "hidden": 5, "context": 3, **kw})


@pytest.mark.parametrize("activation, direct", [("tanh", True), ("softsign", False), ("hardtanh", True)])
def test_gradient_check(activation, direct):
    torch.manual_seed(0)
    model = build_network(_cfg(activation=activation, direct=direct)).double().eval()
    assert isinstance(model, NPLM)
    if direct:  # zero-initialised shortcut: give it values so its gradient is not trivially checked at 0
        with torch.no_grad():
            model.direct.weight.uniform_(-0.3, 0.3)
    ids = torch.randint(3, V, (6, 2))
    ids[2, 0] = EOS_ID
    targets = torch.randint(2, V, (6, 2))
    hidden = model.init_hidden(2)
    errors = gradient_check(lambda: -model(ids, hidden, targets)[0].sum(), dict(model.named_parameters()))
    assert max(errors.values()) < 1e-6, errors


def test_context_is_padded_with_bos_and_never_crosses_a_sentence_start():
    model = build_network(_cfg())
    ids = torch.tensor([[5], [6], [EOS_ID], [7], [8], [9]])  # "5 6 </s> 7 8 9"
    hidden = torch.tensor([[11], [EOS_ID], [12]])  # previous window ended "... 11 </s> 12"
    ctx, carried = model.contexts(ids, hidden)
    assert ctx[:, 0].tolist() == [
        [BOS_ID, 12, 5],  # a window reaching back past a </s> sees <s> there, not the previous sentence
        [12, 5, 6],
        [BOS_ID, BOS_ID, BOS_ID],  # after </s>: the next sentence's first word sees only <s>
        [BOS_ID, BOS_ID, 7],
        [BOS_ID, 7, 8],
        [7, 8, 9],
    ]
    assert carried[:, 0].tolist() == [7, 8, 9]
    # the first word's probability does not depend on what came before the sentence
    a = model(torch.tensor([[EOS_ID], [4]]), torch.tensor([[3], [9], [10]]), torch.tensor([[4], [5]]))[0]
    b = model(torch.tensor([[EOS_ID], [4]]), torch.tensor([[15], [16], [17]]), torch.tensor([[4], [5]]))[0]
    assert torch.equal(a, b)


def test_next_token_distribution_sums_to_one():
    model = build_network(_cfg())
    lp, _ = model.next_log_probs(torch.randint(3, V, (4, 3)), model.init_hidden(3))
    assert torch.allclose(lp.exp().sum(-1), torch.ones(4, 3))


def test_weight_decay_spares_biases():
    from lmpipe.lm.train import TrainConfig, make_optimizer

    model = build_network(_cfg())
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], TrainConfig(weight_decay=1e-4))
    decays = {p.dim(): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {2: 1e-4, 1: 0.0}


def test_overfits_a_tiny_corpus():
    """A 5-gram NPLM learns a deterministic cycle to perplexity near 1 (the recurrent models' test)."""
    torch.manual_seed(0)
    model = build_network(_cfg(context=4, hidden=32, emb_dim=8))
    seq = torch.tensor(([5, 6, 7, 8, 9, EOS_ID] * 40)[:-1])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        lp, _ = model(seq[:-1, None], model.init_hidden(1), seq[1:, None])
        (-lp.mean()).backward()
        opt.step()
    lp, _ = model(seq[:-1, None], model.init_hidden(1), seq[1:, None])
    assert float(torch.exp(-lp.detach().mean())) < 1.1


@pytest.mark.parametrize(
    "model, message",
    [
        ({"name": "n", "kind": "nplm", "softmax": "class"}, "full for kind nplm"),
        ({"name": "n", "kind": "nplm", "tie": True}, "false for kind nplm"),
        ({"name": "n", "kind": "nplm", "context": 0}, "context"),
    ],
)
def test_spec_errors(model, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({"name": "x", "corpus": {"train": "t.txt"}, "lm": {"models": [model]}})
