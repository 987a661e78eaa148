"""vist2.loss: the chunked (and auto) next-token loss equals the plain one, loss and gradients."""

import pytest
import torch
from test_model import BETA, STAGES

from vist2.errors import ConfigError
from vist2.layout import build_layout, collate_layouts
from vist2.loss import chunked_loss_sum, next_token_loss_sum, plain_loss_sum, resolve_impl


def _grads(module, *tensors):
    return [p.grad.clone() for p in module.parameters() if p.grad is not None] + [
        t.grad.clone() for t in tensors
    ]


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_equals_plain_loss_and_gradients(chunk_size, bias):
    torch.manual_seed(0)
    head = torch.nn.Linear(24, 300, bias=bias, dtype=torch.float64)
    hidden = torch.randn(50, 24, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 300, (50,))

    plain = plain_loss_sum(hidden, head, labels)
    plain.backward()
    expected = _grads(head, hidden)
    head.zero_grad()
    hidden.grad = None

    chunked = chunked_loss_sum(hidden, head, labels, chunk_size=chunk_size)
    chunked.backward()
    torch.testing.assert_close(chunked, plain)
    for got, want in zip(_grads(head, hidden), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_model_loss_and_gradients_match_the_plain_path(tiny_model):
    """The whole model (tied head, OLM layout): default (auto = chunked on CPU) vs plain."""
    layouts = [build_layout(s, BETA) for s in STAGES["olm"]]
    batch = collate_layouts(layouts)
    pages = torch.rand(sum(lay.num_pages for lay in layouts), 64, 64) * 2 - 1
    inputs = {k: batch[k] for k in ("input_ids", "visual_mask", "position_ids", "labels")}
    inputs.update(attention_mask=batch["attention_mask"], pages=pages)

    results = {}
    for impl in ("plain", "auto"):
        tiny_model.zero_grad()
        out = tiny_model(**inputs, loss_impl=impl)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
        results[impl] = (out.loss.detach(), grads)
    (loss_a, grads_a), (loss_b, grads_b) = results["plain"], results["auto"]
    torch.testing.assert_close(loss_b, loss_a)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=1e-6, rtol=1e-5, msg=name)


def test_no_grad_runs_without_checkpointing():
    head = torch.nn.Linear(8, 40)
    hidden, labels = torch.randn(9, 8), torch.randint(0, 40, (9,))
    with torch.no_grad():
        got = next_token_loss_sum(hidden, head, labels, impl="chunked", chunk_size=4)
    torch.testing.assert_close(got, plain_loss_sum(hidden, head, labels))


def test_impl_choice():
    cpu = torch.device("cpu")
    assert resolve_impl("auto", cpu) == "chunked"
    assert resolve_impl("plain", cpu) == "plain"
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        resolve_impl("fused", cpu)
    with pytest.raises(ConfigError, match="must be one of"):
        resolve_impl("triton", cpu)


def test_labelled_logits_come_back_without_autograd(tiny_model):
    layouts = [build_layout(s, BETA) for s in STAGES["ocr"]]
    batch = collate_layouts(layouts)
    pages = torch.rand(sum(lay.num_pages for lay in layouts), 64, 64) * 2 - 1
    inputs = {k: batch[k] for k in ("input_ids", "visual_mask", "position_ids", "labels")}
    inputs.update(attention_mask=batch["attention_mask"], pages=pages)
    with torch.no_grad():
        evaluated = tiny_model(**inputs)
    trained = tiny_model(**inputs)
    assert evaluated.logits.shape == (evaluated.num_labelled, 2048)
    assert trained.logits is None and trained.loss.requires_grad
    torch.testing.assert_close(evaluated.loss, trained.loss.detach())
