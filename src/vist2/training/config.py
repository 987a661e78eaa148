"""Training configs: one typed `TrainConfig` per run, stage recipes as data.

Notable:
- A recipe is a base config with fields changed (`recipe("ocr", "tiny")`), never a branch in the
  loop. The `paper` recipes carry the paper's Table 8 defaults (DESIGN.md): AdamW, weight decay
  1e-4, 1 % warm-up, cosine; lr 5e-4 for stages 1-3 and 1e-5 for instruction tuning; max length
  1024 / 4096 / 8192 / 8192; global batch 96 / 64 / 64 / 64.
- Which modules train is data: `learning_rates` maps each top-level module of `VIST2Model`
  (`vision_model`, `aligner`, `language_model`) to its learning rate, and 0 freezes it
  (`requires_grad=False`, left out of the optimizer).
- `batch_size` is the *global* batch (sequences per optimizer step); the gradient-accumulation
  count is derived from it, `micro_batch_size` and the number of processes, so one config trains
  the same model on 1 process or 8.
- Every check names the field: "TrainConfig.batch_size must be >= 1, got 0".
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vist2.errors import ConfigError
from vist2.loss import LOSS_IMPLS

STAGES = ("caption", "ocr", "olm", "sft", "text")
MODULES = ("vision_model", "aligner", "language_model")
MIXED_PRECISION = ("auto", "no", "bf16")
ATTENTION = ("auto", "dense", "flex")

# Fields that may change between a run and its resumption: they do not change what is trained.
OPERATIONAL_FIELDS = frozenset(
    {
        "num_workers",
        "save_every",
        "keep_last",
        "log_every",
        "progress",
        "max_bad_records",
        "tensorboard",
        "loss_impl",  # every implementation computes the same loss (vist2.loss)
        # the same global batch, data order and loss, in smaller pieces or with recomputation:
        # what an out-of-memory message asks to lower before --resume
        "micro_batch_size",
        "gradient_checkpointing",
        # how many CPU threads do the same arithmetic (a CPU run resumed on another machine)
        "cpu_threads",
    }
)


@dataclass(frozen=True)
class CurriculumLevel:
    """One level of the multi-turn OCR curriculum: pages per sample (and, optionally, text
    tokens per page) while training is `until` (a fraction of the total steps) or less through."""

    until: float
    """End of the level as a fraction of max_steps, in (0, 1]; the last level must reach 1."""
    min_pages: int
    """Fewest pages of a sample at this level."""
    max_pages: int
    """Most pages of a sample at this level."""
    min_page_tokens: int | None = None
    """Fewest text tokens on a page at this level (None = a full page: ocr_page_tokens or K)."""
    max_page_tokens: int | None = None
    """Most text tokens on a page at this level (None = a full page). Pages with few words are
    easy to read (large glyphs, nothing to find): a small model learns to read on them first."""


# Paper §3.2: easy (1 page), medium (2-4), hard (more than 4). The split over steps is ours.
DEFAULT_CURRICULUM = (
    CurriculumLevel(until=0.2, min_pages=1, max_pages=1),
    CurriculumLevel(until=0.6, min_pages=2, max_pages=4),
    CurriculumLevel(until=1.0, min_pages=5, max_pages=8),
)


@dataclass
class TrainConfig:
    """Everything that defines one training run of one stage."""

    stage: str
    """Which stage: caption, ocr, olm or sft (decides the data and the sequence layout), or text:
    not a VIST2 stage but its baseline, the LLM alone as a plain causal LM on the same spans."""
    learning_rates: dict[str, float]
    """Peak learning rate per module: vision_model, aligner, language_model. 0 = frozen."""
    max_length: int
    """Most layout slots (text + visual tokens) in one sequence."""
    batch_size: int
    """Global batch: sequences per optimizer step, over all processes and accumulation steps."""
    micro_batch_size: int = 1
    """Sequences per forward pass on one process."""
    max_steps: int | None = None
    """Optimizer steps; None = one epoch of the data (the paper's setting)."""
    weight_decay: float = 1e-4
    """AdamW weight decay, applied to matrices (not to biases and norm weights)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    warmup_fraction: float = 0.01
    """Linear warm-up over this fraction of max_steps, then cosine decay."""
    min_lr_ratio: float = 0.0
    """The cosine decays to peak lr x min_lr_ratio."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""
    seed: int = 0
    """Seed of data order, curriculum draws, synthetic data and dropout."""
    num_workers: int = 2
    """DataLoader worker processes that tokenize, chunk and render (0 = in the main process)."""
    mixed_precision: str = "auto"
    """auto (bf16 on GPU, fp32 on CPU), no, or bf16 (autocast; weights stay fp32)."""
    attention: str = "auto"
    """dense (boolean rule-2 mask), flex (BlockMask, GPU only) or auto (flex on GPU, else dense)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (long OLM sequences on small GPUs)."""
    loss_impl: str = "auto"
    """Next-token loss (vist2.loss): chunked (checkpointed chunks of the LM head, any device),
    fused (liger-kernel, CUDA), plain (all logits at once) or auto (fused where it runs, else
    chunked)."""
    cpu: bool = False
    """Train on CPU even where a GPU is present."""
    cpu_threads: int | None = None
    """torch threads for CPU ops (None = torch's default). 1 is fastest for tiny models."""
    save_every: int = 500
    """Write a checkpoint every this many steps (and always at the end); 0 = only at the end."""
    keep_last: int = 2
    """Checkpoints kept; older ones are deleted once a newer one is complete."""
    log_every: int = 1
    """Write a metrics line every this many steps."""
    progress: bool = True
    """Show a progress bar (main process only)."""
    tensorboard: bool = False
    """Also log metrics to TensorBoard (needs the tensorboard package)."""
    max_bad_records: int = 100
    """Bad data records (empty files, undecodable lines, malformed JSONL, broken images) skipped
    before the run stops; one more stops it."""
    curriculum: tuple[CurriculumLevel, ...] = DEFAULT_CURRICULUM
    """OCR only: pages per sample over training (easy / medium / hard)."""
    visual_variance_weight: float = 0.0
    """Anti-collapse term (vist2.training.visual_variance): weight of a hinge that keeps the
    visual tokens different from page to page while a from-scratch vision encoder learns to
    read. 0 = off (the paper's loss). Needs 2+ pages per micro-batch to act."""
    visual_variance_target: float = 0.5
    """The per-feature std over pages (of unit-RMS visual tokens) below which the term acts."""
    ocr_page_tokens: int | None = None
    """OCR only: text tokens shown on one page (None = the model's K)."""
    ocr_shuffle_fraction: float = 0.0
    """OCR only: fraction of pages whose words (characters, for text without spaces such as
    Chinese) are shuffled before rendering, so they can be read but not guessed from context."""
    ocr_input_noise: float = 0.0
    """OCR samples and the OLM stage's read-backs (`olm_ocr_fraction`): fraction of a page's text
    tokens replaced, as inputs, by a token drawn from the same sample's text (the labels stay the
    page's text), so the LLM learns to go on reading the page after a wrong token instead of
    following its own mistake: greedy read-back otherwise derails at the first one
    (docs/model/vist2-small.md, item 17). OLM sequences themselves are never changed."""
    ocr_text_fraction: float = 0.0
    """OCR only: fraction of samples that are plain text instead of pages (`ocr_text_tokens` of
    one document, loss on every token, as `--stage text`), so the LLM keeps modelling language
    while it learns to read: an OCR round that trains the LLM on page text alone wears its
    writing down (docs/model/vist2-small.md, run 33). A micro-batch of text alone leaves the
    vision side out of its backward, which DDP is told to expect when the vision side trains."""
    ocr_text_tokens: int | None = None
    """OCR only: tokens in one plain-text sample of `ocr_text_fraction` (None = max_length). A
    sample of max_length text tokens costs several one-page samples; shorter ones keep the mix
    cheap."""
    olm_ocr_fraction: float = 0.0
    """OLM only: fraction of samples that are a stage-2 read-back of one page of the span instead
    of an OLM sequence, so the LLM keeps reading its pages while it learns to write from them
    (without it, a weak reader unlearns reading: the pages barely help the OLM loss)."""
    olm_recall_fraction: float = 0.0
    """OLM only: fraction of samples (of those not read back) that get a fact with a five-digit
    key on one of their pages and its question and answer later (`vist2.training.recall`), so
    the LLM learns to look a detail up on an earlier page: what `vist2 eval needle` asks."""
    synthetic_size: int = 100_000
    """Caption only: samples in one epoch of the built-in synthetic shapes set."""

    def __post_init__(self) -> None:
        levels = []
        for i, level in enumerate(self.curriculum):
            if isinstance(level, dict):
                try:
                    level = CurriculumLevel(**level)
                except TypeError as err:
                    raise ConfigError(f"TrainConfig.curriculum[{i}]: {err}") from None
            if not isinstance(level, CurriculumLevel):
                raise ConfigError(
                    f"TrainConfig.curriculum[{i}] must be an object like "
                    f'{{"until": 0.1, "min_pages": 1, "max_pages": 1}}, got {level!r}'
                )
            levels.append(level)
        self.curriculum = tuple(levels)
        self.adam_betas = tuple(self.adam_betas)
        if not isinstance(self.learning_rates, dict):
            self._fail("learning_rates", 'must map modules to rates, e.g. {"aligner": 0.001}')
        self.learning_rates = dict(self.learning_rates)
        self.check()

    def check(self) -> None:
        """Raise `ConfigError` naming the first field that cannot work."""
        self._check_choices()
        self._check_learning_rates()
        self._check_counts()
        self._check_numbers()
        self._check_curriculum()

    def _fail(self, name: str, what: str) -> None:
        raise ConfigError(f"TrainConfig.{name} {what}, got {getattr(self, name)!r}")

    def _check_learning_rates(self) -> None:
        lrs = self.learning_rates
        unknown = sorted(set(lrs) - set(MODULES))
        if unknown:
            raise ConfigError(
                f"TrainConfig.learning_rates has unknown module(s) {unknown}; modules: {list(MODULES)}"
            )
        missing = [m for m in MODULES if m not in lrs]
        if missing:
            raise ConfigError(
                f"TrainConfig.learning_rates lacks {missing}; give every module a rate (0 = frozen)"
            )
        for name, lr in lrs.items():
            if (
                isinstance(lr, bool)
                or not isinstance(lr, int | float)
                or not math.isfinite(lr)
                or lr < 0
            ):
                raise ConfigError(
                    f"TrainConfig.learning_rates[{name!r}] must be a finite number >= 0, got {lr!r}"
                )
        if not any(lr > 0 for lr in lrs.values()):
            self._fail("learning_rates", "must train at least one module (a rate > 0)")

    def _check_counts(self) -> None:
        for name in ("max_length", "batch_size", "micro_batch_size", "synthetic_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self._fail(name, "must be an integer >= 1")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(
                f"TrainConfig.batch_size ({self.batch_size}) must be a multiple of "
                f"micro_batch_size ({self.micro_batch_size})"
            )
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            self._fail("max_steps", "must be an integer >= 1 or None")
        for name in (
            "num_workers",
            "save_every",
            "keep_last",
            "log_every",
            "max_bad_records",
            "seed",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                self._fail(name, "must be an integer >= 0")
        if self.keep_last < 1:
            self._fail("keep_last", "must be >= 1")
        if self.log_every < 1:
            self._fail("log_every", "must be >= 1")
        if self.ocr_page_tokens is not None and (
            not isinstance(self.ocr_page_tokens, int) or self.ocr_page_tokens < 1
        ):
            self._fail("ocr_page_tokens", "must be an integer >= 1 or None")
        if self.ocr_text_tokens is not None and (
            not isinstance(self.ocr_text_tokens, int)
            or isinstance(self.ocr_text_tokens, bool)
            or not 2 <= self.ocr_text_tokens <= self.max_length
        ):
            self._fail("ocr_text_tokens", "must be an integer in [2, max_length] or None")
        if self.cpu_threads is not None and (
            not isinstance(self.cpu_threads, int) or self.cpu_threads < 1
        ):
            self._fail("cpu_threads", "must be an integer >= 1 or None")

    def _check_numbers(self) -> None:
        for name, low, high in (
            ("weight_decay", 0.0, math.inf),
            ("warmup_fraction", 0.0, 1.0),
            ("min_lr_ratio", 0.0, 1.0),
            ("grad_clip", 0.0, math.inf),
            ("adam_eps", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (low <= value <= high)
            ):
                self._fail(name, f"must be a number in [{low}, {high}]")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            self._fail("adam_betas", "must be two numbers in [0, 1)")
        for name in (
            "ocr_shuffle_fraction",
            "ocr_input_noise",
            "ocr_text_fraction",
            "olm_ocr_fraction",
            "olm_recall_fraction",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                self._fail(name, "must be a number in [0, 1]")
        lm_rate = self.learning_rates["language_model"]
        if self.stage == "ocr" and self.ocr_text_fraction > 0 and lm_rate <= 0:
            self._fail(
                "ocr_text_fraction",
                "mixes in plain text, which trains only the LLM: give "
                "learning_rates.language_model a rate > 0, or set ocr_text_fraction to 0",
            )
        for name in ("visual_variance_weight", "visual_variance_target"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                self._fail(name, "must be a number >= 0")

    def _check_choices(self) -> None:
        if self.stage not in STAGES:
            self._fail("stage", f"must be one of {STAGES}")
        if self.mixed_precision not in MIXED_PRECISION:
            self._fail("mixed_precision", f"must be one of {MIXED_PRECISION}")
        if self.attention not in ATTENTION:
            self._fail("attention", f"must be one of {ATTENTION}")
        if self.loss_impl not in LOSS_IMPLS:
            self._fail("loss_impl", f"must be one of {LOSS_IMPLS}")

    def _check_curriculum(self) -> None:
        levels = self.curriculum
        if not levels:
            raise ConfigError("TrainConfig.curriculum needs at least one level")
        previous = 0.0
        for i, level in enumerate(levels):
            where = f"TrainConfig.curriculum[{i}]"
            if not (previous < level.until <= 1.0):
                raise ConfigError(
                    f"{where}.until must rise through (0, 1], got {level.until} after {previous}"
                )
            if not (1 <= level.min_pages <= level.max_pages):
                raise ConfigError(
                    f"{where} needs 1 <= min_pages <= max_pages, got {level.min_pages}..{level.max_pages}"
                )
            lo, hi = level.min_page_tokens, level.max_page_tokens
            if (lo is None) != (hi is None) or (lo is not None and not 1 <= lo <= hi):
                raise ConfigError(
                    f"{where} needs both or neither of min_page_tokens and max_page_tokens, "
                    f"with 1 <= min_page_tokens <= max_page_tokens; got {lo}..{hi}"
                )
            previous = level.until
        if levels[-1].until != 1.0:
            raise ConfigError(
                f"TrainConfig.curriculum[-1].until must be 1.0, got {levels[-1].until}"
            )

    # -- files ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; `TrainConfig.from_dict(to_dict())` gives an equal config."""
        data = dataclasses.asdict(self)
        data["adam_betas"] = list(self.adam_betas)
        data["curriculum"] = [dataclasses.asdict(level) for level in self.curriculum]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a TrainConfig needs a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"TrainConfig has no field(s) {unknown}; known fields: {sorted(known)}"
            )
        try:
            return cls(**data)
        except TypeError as err:  # e.g. a curriculum level with a wrong key
            raise ConfigError(f"TrainConfig: {err}") from None

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A new config with `overrides` applied; `learning_rates` is merged key by key."""
        data = self.to_dict()
        overrides = dict(overrides)
        if isinstance(overrides.get("learning_rates"), dict):
            data["learning_rates"] = {**data["learning_rates"], **overrides.pop("learning_rates")}
        unknown = sorted(set(overrides) - set(data))
        if unknown:
            raise ConfigError(
                f"TrainConfig has no field(s) {unknown}; known fields: {sorted(data)}"
            )
        data.update(overrides)
        return TrainConfig.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def load_overrides(path: str | Path) -> dict[str, Any]:
    """The JSON object in `path` (TrainConfig fields), or a `ConfigError` that says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"config file {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: needs a JSON object of TrainConfig fields")
    return data


def parse_set(items: list[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`--set FIELD=VALUE` pairs applied over `base` (the `--config` overrides, not changed): VALUE
    is read as JSON (`8`, `1e-4`, `null`, `true`, `{"aligner": 0.001}`), or else kept as a string
    (`bf16`); a `learning_rates` object is merged key by key into base's."""
    overrides = dict(base or {})
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: write FIELD=VALUE, e.g. --set micro_batch_size=4")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip()[:1] in ("{", "[", '"'):  # meant as JSON: the shell ate its quotes?
                raise ConfigError(
                    f"--set {name}: {text!r} is not valid JSON ({err}); quote the whole pair, "
                    f"e.g. --set '{name}={{\"aligner\": 0.001}}'"
                ) from None
            value = text
        if name == "learning_rates" and isinstance(value, dict):
            value = {**(overrides.get(name) or {}), **value}
        overrides[name] = value
    return overrides


# -- recipes --------------------------------------------------------------------------------------


def _paper(stage: str) -> TrainConfig:
    """The paper's Table 8 defaults for `stage` (0.6B batch sizes)."""
    lr = 1e-5 if stage == "sft" else 5e-4
    trained = {
        "caption": ("aligner",),
        "ocr": ("vision_model", "aligner"),
        "olm": ("language_model",),
        "sft": ("language_model",),
        "text": ("language_model",),
    }[stage]
    return TrainConfig(
        stage=stage,
        learning_rates={m: (lr if m in trained else 0.0) for m in MODULES},
        max_length={"caption": 1024, "ocr": 4096, "olm": 8192, "sft": 8192, "text": 8192}[stage],
        batch_size={"caption": 96, "ocr": 64, "olm": 64, "sft": 64, "text": 64}[stage],
        micro_batch_size={"caption": 8, "ocr": 2, "olm": 1, "sft": 1, "text": 1}[stage],
    )


def _tiny(stage: str) -> TrainConfig:
    """The paper recipe shrunk for the `tiny` preset on CPU (about a minute a stage on 2 cores).

    Same modules trained as the paper; higher learning rates so that a tiny model visibly learns
    in a few hundred steps; short sequences, small batches, one torch thread (fastest at this
    size). Note: stages 1-2 freeze the LLM as the paper does, which assumes a *pretrained* LLM;
    on a random-init tiny model their loss hardly moves unless the LLM trains too
    (configs/train/tiny-unfreeze-llm.json).
    """
    base = _paper(stage)
    lr = {"caption": 5e-3, "ocr": 2e-3, "olm": 3e-3, "sft": 1e-3, "text": 3e-3}[stage]
    return base.with_overrides(
        {
            "learning_rates": {m: (lr if base.learning_rates[m] > 0 else 0.0) for m in MODULES},
            "max_length": {"caption": 64, "ocr": 512, "olm": 256, "sft": 512, "text": 256}[stage],
            "batch_size": 8,
            "micro_batch_size": 8,
            "max_steps": {"caption": 300, "ocr": 300, "olm": 300, "sft": 200, "text": 300}[stage],
            "warmup_fraction": 0.05,
            "min_lr_ratio": 0.1,
            "num_workers": 1,
            "cpu_threads": 1,
            "save_every": 100,
            "synthetic_size": 20_000,
        }
    )


RECIPES = {"paper": _paper, "tiny": _tiny}


def recipe(stage: str, name: str = "paper") -> TrainConfig:
    """The `name` recipe ("paper" or "tiny") of `stage`."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)}")
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name](stage)


__all__ = [
    "DEFAULT_CURRICULUM",
    "MODULES",
    "OPERATIONAL_FIELDS",
    "RECIPES",
    "STAGES",
    "CurriculumLevel",
    "TrainConfig",
    "load_overrides",
    "parse_set",
    "recipe",
]
