"""Training configs and schedules: Table 8 defaults, field-naming errors, LR curve, curriculum."""

import json
import math

import pytest
import torch

from vist2.errors import ConfigError
from vist2.training.config import (
    DEFAULT_CURRICULUM,
    STAGES,
    CurriculumLevel,
    TrainConfig,
    load_overrides,
    recipe,
)
from vist2.training.curriculum import level_at, pages_for_sample
from vist2.training.schedule import WarmupCosine, warmup_cosine_scheduler


def test_paper_recipes_carry_table8_defaults():
    expected = {  # stage: (lr, trained modules, max length, batch)
        "caption": (5e-4, {"aligner"}, 1024, 96),
        "ocr": (5e-4, {"vision_model", "aligner"}, 4096, 64),
        "olm": (5e-4, {"language_model"}, 8192, 64),
        "sft": (1e-5, {"language_model"}, 8192, 64),
        "text": (5e-4, {"language_model"}, 8192, 64),  # the baseline: stage 3's settings
    }
    for stage in STAGES:
        cfg = recipe(stage)
        lr, trained, max_length, batch = expected[stage]
        assert {m for m, v in cfg.learning_rates.items() if v > 0} == trained
        assert all(v == lr for v in cfg.learning_rates.values() if v > 0)
        assert (cfg.max_length, cfg.batch_size) == (max_length, batch)
        assert (cfg.weight_decay, cfg.warmup_fraction, cfg.max_steps) == (
            1e-4,
            0.01,
            None,
        )  # 1 epoch


def test_tiny_recipe_trains_the_same_modules_as_the_paper():
    for stage in STAGES:
        paper, tiny = recipe(stage), recipe(stage, "tiny")
        assert {m for m, v in paper.learning_rates.items() if v} == {
            m for m, v in tiny.learning_rates.items() if v
        }
        assert tiny.max_steps is not None and tiny.max_length <= paper.max_length


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "TrainConfig.batch_size"),
        ({"batch_size": 10, "micro_batch_size": 4}, "TrainConfig.batch_size"),
        ({"learning_rates": {"llm": 1.0}}, "unknown module"),
        ({"learning_rates": {"aligner": -1.0}}, "learning_rates\\['aligner'\\]"),
        ({"learning_rates": {"aligner": 0.0}}, "at least one module"),
        ({"mixed_precision": "fp8"}, "TrainConfig.mixed_precision"),
        ({"warmup_fraction": 2.0}, "TrainConfig.warmup_fraction"),
        (
            {"curriculum": [{"until": 0.5, "min_pages": 1, "max_pages": 1}]},
            "curriculum\\[-1\\].until",
        ),
        ({"curriculum": [{"until": 1.0, "min_pages": 3, "max_pages": 2}]}, "curriculum\\[0\\]"),
        (
            {"curriculum": [{"until": 1.0, "min_pages": 1, "max_pages": 1, "max_page_tokens": 8}]},
            "min_page_tokens",
        ),
        ({"max_stepz": 3}, "no field"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        recipe("caption").with_overrides(overrides)


def test_learning_rates_merge_and_round_trip(tmp_path):
    cfg = recipe("ocr").with_overrides({"learning_rates": {"language_model": 1e-5}})
    assert cfg.learning_rates == {"vision_model": 5e-4, "aligner": 5e-4, "language_model": 1e-5}
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path = tmp_path / "c.json"
    path.write_text('{"max_steps": 7}')
    assert cfg.with_overrides(load_overrides(path)).max_steps == 7
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_overrides(path)
    path.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_overrides(path)


def test_warmup_then_cosine():
    f = WarmupCosine(total_steps=100, warmup_steps=10, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert f(99) == pytest.approx(0.1, abs=1e-3)
    values = [f(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine_scheduler(opt, total_steps=200, warmup_fraction=0.01)  # 2 warm-up steps
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == [0.5, 1.0, 1.0] and lrs[3] < 1.0  # warm-up, then the decay starts at 1
    again = warmup_cosine_scheduler(
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 200, 0.01
    )
    again.load_state_dict(sched.state_dict())  # a resumed run continues the same curve
    assert again.get_last_lr() == sched.get_last_lr()


def test_curriculum_goes_easy_medium_hard():
    levels = DEFAULT_CURRICULUM
    assert [level_at(s, 10, levels).max_pages for s in range(10)] == [1, 1, 4, 4, 4, 4, 8, 8, 8, 8]
    per_step, total = 4, 10
    pages = [
        pages_for_sample(s, per_step, total, levels, max_pages=99, seed=0)
        for s in range(per_step * total)
    ]
    assert set(pages[:8]) == {1}  # easy: one page
    assert all(2 <= p <= 4 for p in pages[8:24])  # medium
    assert all(p > 4 for p in pages[24:])  # hard
    assert pages == [
        pages_for_sample(s, per_step, total, levels, 99, 0) for s in range(40)
    ]  # deterministic
    assert (
        max(pages_for_sample(s, per_step, total, levels, max_pages=3, seed=0) for s in range(40))
        == 3
    )


def test_curriculum_levels_from_json_become_dataclasses():
    cfg = recipe("ocr").with_overrides(
        {"curriculum": [{"until": 1.0, "min_pages": 2, "max_pages": 3}]}
    )
    assert cfg.curriculum == (CurriculumLevel(1.0, 2, 3),)
    assert math.isclose(cfg.curriculum[-1].until, 1.0)
