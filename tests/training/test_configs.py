"""Every shipped training config (configs/train/*.json) loads over the recipes of its stage: a
field name misspelt or a value out of range fails here, not minutes into a run on a GPU."""

from pathlib import Path

import pytest

from vist2.training.config import STAGES, load_overrides, recipe

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.json"))


def _stages(path: Path) -> list[str]:
    """The stages a config is for, from its name (a name with none of them fits every stage)."""
    named = [stage for stage in STAGES if stage in path.stem.split("-")]
    return named or list(STAGES)


def test_the_configs_are_found():
    assert len(CONFIGS) > 10


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads_over_its_stage_recipes(path):
    overrides = load_overrides(path)
    for stage in _stages(path):
        for name in ("paper", "tiny"):
            config = recipe(stage, name).with_overrides(overrides)
            for field, value in overrides.items():
                got = getattr(config, field)
                if isinstance(value, dict):  # learning_rates may name only the modules it changes
                    assert {k: got[k] for k in value} == value, (stage, name, field)
                elif field != "curriculum":  # (parsed into levels, checked by TrainConfig)
                    expected = tuple(value) if isinstance(value, list) else value
                    assert got == expected, (stage, name, field)
