"""The anti-collapse term: zero for varied visual tokens, positive and pushing apart for
identical ones, and the trainer applies it (and only where it is switched on)."""

from __future__ import annotations

import torch
from train_helpers import make_model_dir, single_thread, tiny_train_config, write_corpus  # noqa: F401

from vist2.training.metrics import read_metrics
from vist2.training.trainer import train
from vist2.training.visual_variance import capture_visual_tokens, variance_penalty


def test_penalty_is_zero_for_varied_tokens_and_positive_for_a_collapse():
    varied = torch.randn(32, 4, 16)  # [N, β, D]: unit-RMS features with std ~1 over pages
    assert float(variance_penalty(varied, 0.5)) == 0.0
    same = torch.randn(1, 4, 16).expand(32, 4, 16).clone().requires_grad_(True)
    penalty = variance_penalty(same, 0.5)
    assert abs(penalty.item() - 0.5) < 1e-3  # std 0 everywhere: the full hinge
    penalty.backward()
    assert same.grad is not None
    # shrinking collapsed tokens does not hide the collapse (they are scaled to unit RMS first)
    assert abs(float(variance_penalty(same.detach() * 1e-3, 0.5)) - 0.5) < 1e-3


def test_one_page_gives_zero_with_a_graph():
    one = torch.randn(1, 4, 16, requires_grad=True)
    penalty = variance_penalty(one, 0.5)
    assert penalty.item() == 0.0 and penalty.requires_grad


def test_capture_sees_each_forward_and_then_lets_go():
    layer = torch.nn.Linear(3, 3)
    with capture_visual_tokens(layer) as seen:
        layer(torch.zeros(2, 3))
    layer(torch.zeros(2, 3))
    assert len(seen) == 1 and seen[0].shape == (2, 3)


def test_the_trainer_adds_the_term_to_the_objective(tmp_path):
    model_dir = make_model_dir(tmp_path / "model")
    corpus = str(write_corpus(tmp_path / "corpus"))
    losses = {}
    for weight in (0.0, 5.0):
        run = tmp_path / f"run-{weight}"
        cfg = tiny_train_config(
            "ocr", max_steps=2, micro_batch_size=4, visual_variance_weight=weight
        )
        train(cfg, model_dir, corpus, run)
        losses[weight] = [r["loss"] for r in read_metrics(run / "metrics.jsonl")]
    # step 1 sees the same weights and data: the logged (token) loss is the same; the term
    # changed the gradient, so step 2 differs
    assert losses[0.0][0] == losses[5.0][0]
    assert losses[0.0][1] != losses[5.0][1]
