"""The dependency floor is true: the lowest transformers pyproject allows installs and runs vist2.

The test installs exactly that version (with its own dependencies) into a temporary directory with
`pip install --target` (PyPI must be reachable, as in CI), then, in a fresh interpreter with that
directory first on the path, imports vist2, builds a tiny random model and generates under the
`global` policy (config, cache and engine all touch transformers).
"""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]

# The venv's transformers (5.25+) brings `kernels`, which the floor does not require; a clean
# install of the floor has none, and transformers 5.4 fails to import beside kernels 0.19
# (hub_kernels: "Either a revision or a version must be specified"). Hidden, as in that install.
CHECK = """
import sys
sys.modules["kernels"] = None
import torch, transformers
from vist2.engine import Engine
from vist2.loading import load_tokenizer, tiny_tokenizer_path
from vist2.model import VIST2Model
from vist2.presets import preset_config

torch.manual_seed(0)
engine = Engine(VIST2Model(preset_config("tiny")).eval(), load_tokenizer(tiny_tokenizer_path()))
result = engine.generate("Call me Ishmael. " * 40, policy="global", max_new_tokens=70,
                         stop_on_eos=False)
assert result.stats.pages >= 2, result.stats  # the prompt's page and one written chunk's page
print(transformers.__version__, len(result.token_ids))
"""


def transformers_floor() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"transformers\b", d))
    found = re.search(r">=\s*([\w.]+)", spec)
    assert found, f"pyproject gives transformers no floor: {spec!r}"
    return found.group(1)


@pytest.mark.slow
def test_vist2_runs_with_the_lowest_allowed_transformers(tmp_path):
    floor = transformers_floor()
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(target), f"transformers=={floor}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, (
        f"pip could not install transformers=={floor}:\n{install.stderr}"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO / "src")])}
    run = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert Version(run.stdout.split()[0]) == Version(floor)  # the floor ran, not the venv's
