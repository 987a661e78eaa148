"""One training loop for every stage.

Stages differ only in data (`datasets.py`), layout and config (`config.py`); this loop has no
`if stage == ...`. What is notable:

- Freezing is data: `TrainConfig.learning_rates` gives each top-level module of `VIST2Model` a
  learning rate; 0 sets `requires_grad=False` and keeps the module out of the optimizer.
- Devices and distribution are accelerate's (`Accelerator`): DDP, FSDP and DeepSpeed come from
  `accelerate launch --config_file configs/accelerate/...`; there is no distribution code here.
- The loss of a step is the mean over *every labelled token of the global batch*: the labelled
  tokens of all micro-batches on all processes are counted before the first backward, and each
  micro-batch's token-loss sum is divided by that count. So 1 process x 4 micro-batches,
  2 processes x 2 and 4 x 1 compute the same gradient (up to float rounding), whatever the
  sequence lengths.
- A device out-of-memory in a step stops the run with one `TrainingOutOfMemoryError` naming the
  step, the micro-batch's shape and the settings to lower; nothing of that step is written.
- Before the optimizer step, a NaN/inf loss or gradient norm stops the run on every process with
  a clear `Vist2Error`; nothing is written, so the last checkpoint is the last good state.
- Attention mask: the dense boolean rule-2 mask on CPU; on GPU a flex-attention `BlockMask` built
  from the same per-slot arrays (`vist2.layout.make_mask_mod`), so long OLM sequences need no
  O(L²) mask. bf16 autocast on GPU (weights and optimizer state stay fp32).
- Resume restores model, optimizer, scheduler, RNG (accelerate) and the trainer state: step,
  data position (the next global sample number is step x batch_size) and the bad-record log.

Run directory (`RUN_DIR`):

    train_config.json   the resolved TrainConfig          run.json      stage, model, data
    metrics.jsonl       one line per step                  bad_data.jsonl  skipped records
    checkpoints/step-N  resumable state (checkpoint.py)    model/        the trained model
    summary.json        how the run ended

`RUN_DIR/model` is a normal vist2 model directory (`vist2.loading.load_model`); the next stage
takes it, or the run directory itself, as `--model`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vist2.errors import ConfigError, Vist2Error
from vist2.layout import IGNORE_INDEX, make_mask_mod
from vist2.loading import MODEL_DIR, load_model, resolve_model_dir
from vist2.training.checkpoint import CheckpointManager, fsync_tree, replace_dir
from vist2.training.config import MODULES, OPERATIONAL_FIELDS, TrainConfig
from vist2.training.datasets import SampleRange, build_dataset, collate_examples
from vist2.training.metrics import METRICS_FILE, MetricsLog, Progress, read_metrics
from vist2.training.problems import DataProblem, ProblemLog
from vist2.training.schedule import warmup_cosine_scheduler
from vist2.training.visual_variance import capture_visual_tokens, variance_penalty

if TYPE_CHECKING:
    from accelerate import Accelerator

FLEX_BLOCK = 128  # flex attention's block size: flex batches are padded to a multiple of it
MODEL_INPUTS = ("input_ids", "visual_mask", "pages", "position_ids", "attention_mask", "labels")


class NonFiniteLossError(Vist2Error):
    """The loss or the gradient norm became NaN or infinite."""


class TrainingOutOfMemoryError(Vist2Error):
    """The device ran out of memory in a training step."""


def out_of_memory_message(
    step: int, shape: tuple[int, int], config: TrainConfig, latest: Path | None
) -> str:
    """What ran out of memory where, the settings that lower the need, and where to resume."""
    sequences, slots = shape
    lower = [
        f"micro_batch_size (now {config.micro_batch_size}; batch_size {config.batch_size} stays "
        "the same through gradient accumulation)",
        f"max_length (now {config.max_length}; a new run, since it changes the data)",
    ]
    if not config.gradient_checkpointing:
        lower.append("gradient_checkpointing (now off; set it true)")
    if config.loss_impl == "plain":
        lower.append("loss_impl (now plain; 'auto' never holds the full-vocabulary logits)")
    where = (
        f"the last checkpoint {latest} is intact; resume from it with --resume "
        "(micro_batch_size and gradient_checkpointing may change on resume)"
        if latest is not None
        else "no checkpoint was written yet (none yet); start again with the lower settings"
    )
    return (
        f"step {step}: out of device memory in a micro-batch of {sequences} sequence(s) x {slots} "
        f"slots. Lower in --config: {'; '.join(lower)}. Nothing of this step was saved: {where}"
    )


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path  # RUN_DIR/model: load with vist2.loading.load_model
    steps: int
    final_loss: float | None
    bad_records: int


class TrainerState:
    """What a checkpoint holds beyond accelerate's part: progress, data position, bad records."""

    def __init__(self, problems: ProblemLog) -> None:
        self.step = 0  # optimizer steps done; the next sample is step x batch_size
        self.labelled_tokens = 0
        self.slots = 0
        self.elapsed_s = 0.0
        self.problems = problems

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "labelled_tokens": self.labelled_tokens,
            "slots": self.slots,
            "elapsed_s": self.elapsed_s,
            "problems": self.problems.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.labelled_tokens = state["labelled_tokens"]
        self.slots = state["slots"]
        self.elapsed_s = state["elapsed_s"]
        self.problems.load_state_dict(state["problems"])


# -- pieces -----------------------------------------------------------------------------------------


def param_groups(
    model: torch.nn.Module, learning_rates: dict[str, float], weight_decay: float
) -> list[dict]:
    """Freeze modules whose rate is 0; optimizer groups for the rest (no decay on biases/norms).

    Every child module of the model must have a rate, so nothing trains or freezes by accident.
    """
    children = dict(model.named_children())
    unnamed = sorted(set(children) - set(learning_rates))
    if unnamed:
        raise ConfigError(
            f"TrainConfig.learning_rates has no rate for module(s) {unnamed} of the model"
        )
    groups = []
    for name in MODULES:
        module, lr = children[name], learning_rates[name]
        module.requires_grad_(lr > 0)
        if lr == 0:
            continue
        params = list(module.parameters())
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": name})
        if no_decay:
            groups.append(
                {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}.no_decay"}
            )
    return groups


def _mixed_precision(config: TrainConfig) -> str:
    if config.mixed_precision != "auto":
        return config.mixed_precision
    return "bf16" if torch.cuda.is_available() and not config.cpu else "no"


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (AVX-512 / AMX) and Arm flag names


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU multiplies bf16 in hardware, from the flags in /proc/cpuinfo (or the
    text given); None where that cannot be read. Without it (an AVX2-only CPU, say), torch
    emulates bf16 and a CPU step under bf16 autocast runs ~30x slower than in fp32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if not flags:
        return None
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def slow_bf16_warning(device: torch.device, mixed_precision: str) -> str | None:
    """A line telling the user that bf16 on this CPU is emulated, and what to pass instead."""
    if device.type != "cpu" or mixed_precision != "bf16" or cpu_has_native_bf16() is not False:
        return None
    return (
        "warning: mixed precision bf16 on a CPU without bf16 instructions (no avx512_bf16/amx_bf16 "
        "in /proc/cpuinfo): torch emulates it, ~30x slower than fp32; pass --set mixed_precision=no"
    )


def make_accelerator(config: TrainConfig):
    """The run's `Accelerator`, with gradient accumulation derived from the global batch size."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedDataParallelKwargs, GradientAccumulationPlugin

    processes = PartialState(cpu=config.cpu).num_processes
    per_pass = config.micro_batch_size * processes
    if config.batch_size % per_pass:
        raise ConfigError(
            f"TrainConfig.batch_size ({config.batch_size}) must be a multiple of micro_batch_size x "
            f"processes ({config.micro_batch_size} x {processes} = {per_pass})"
        )
    plugin = GradientAccumulationPlugin(
        num_steps=config.batch_size // per_pass, sync_with_dataloader=False
    )
    # A micro-batch without pages (a short SFT example) leaves the vision encoder and aligner
    # out of the graph; DDP must then be told to expect unused parameters.
    vision_trains = any(config.learning_rates.get(m, 0) > 0 for m in ("vision_model", "aligner"))
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if vision_trains else []
    return Accelerator(
        cpu=config.cpu,
        mixed_precision=_mixed_precision(config),
        gradient_accumulation_plugin=plugin,
        kwargs_handlers=handlers,
    )


def _use_flex(config: TrainConfig, device: torch.device) -> bool:
    if config.attention == "flex" and device.type != "cuda":
        raise ConfigError(
            "TrainConfig.attention = 'flex' needs a GPU (flex attention has no CPU backward); use 'dense'"
        )
    return config.attention == "flex" or (config.attention == "auto" and device.type == "cuda")


def pad_to_multiple(batch: dict, multiple: int) -> dict:
    """Right-pad a collated batch's per-slot tensors to a length that is a multiple of `multiple`.

    For flex attention: few distinct lengths means few compilations. Padded slots are invalid
    (hidden from every query, no label), so the loss does not change. The dense mask is dropped.
    """
    length = batch["input_ids"].shape[1]
    extra = -length % multiple
    fills = {"input_ids": 0, "visual_mask": False, "position_ids": 0, "labels": IGNORE_INDEX,
             "persistent": True, "chunk_id": -1, "valid": False}  # fmt: skip
    out = {k: v for k, v in batch.items() if k != "attention_mask"}
    if extra:
        for key, fill in fills.items():
            pad = torch.full(
                (batch[key].shape[0], extra), fill, dtype=batch[key].dtype, device=batch[key].device
            )
            out[key] = torch.cat([batch[key], pad], dim=1)  # [B, L + extra]
    return out


@functools.cache
def _create_block_mask(device_type: str):
    """torch's `create_block_mask`, compiled on GPU: uncompiled it materialises (B, L, L) tensors,
    which at 8k slots is the O(L²) memory flex attention is there to avoid."""
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask) if device_type == "cuda" else create_block_mask


def block_mask(batch: dict):
    """The rule-2 flex-attention BlockMask of a collated batch (on the batch's device)."""
    persistent, chunk_id, valid = batch["persistent"], batch["chunk_id"], batch["valid"]
    size, length = persistent.shape
    mask_mod = make_mask_mod(persistent, chunk_id, valid)
    create = _create_block_mask(persistent.device.type)
    return create(mask_mod, size, None, length, length, device=persistent.device)


def _check_resume_config(run_dir: Path, config: TrainConfig) -> None:
    saved_path = run_dir / "train_config.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    with contextlib.suppress(ConfigError):  # fields added since the run began: their defaults
        saved = TrainConfig.from_dict(saved).to_dict()
    now = config.to_dict()
    changed = sorted(k for k in now if k not in OPERATIONAL_FIELDS and saved.get(k) != now[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(
            f"--resume with a different config than {saved_path} ({details}); resume with the same "
            f"settings, or start a new run in another --out"
        )


def _worker_message(err: Vist2Error) -> Vist2Error:
    """A Vist2Error from a DataLoader worker carries the worker's traceback; keep its last line."""
    text = str(err)
    if "DataLoader worker" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return type(err)(last.split(": ", 1)[-1] if last.startswith(type(err).__name__) else last)
    return err


def prepare_run_dir(
    accelerator,
    run_dir: Path,
    checkpoints: CheckpointManager,
    config: TrainConfig,
    resume: bool,
    info: dict,
) -> Path | None:
    """Check RUN_DIR against --resume, write its config files; the checkpoint to resume from."""
    if run_dir.exists() and not run_dir.is_dir():
        raise Vist2Error(f"{run_dir} is a file, not a run directory; choose another --out")
    latest = checkpoints.latest()
    if not resume and (latest is not None or (run_dir / "train_config.json").exists()):
        raise Vist2Error(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )
    if resume and latest is not None:
        _check_resume_config(run_dir, config)
    accelerator.wait_for_everyone()  # every process has looked at RUN_DIR before it changes
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "train_config.json")
        info = {"stage": config.stage, **info, "processes": accelerator.num_processes}
        (run_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if latest is None:  # a fresh start: logs of an earlier attempt that never checkpointed go
            for stale in (METRICS_FILE, "bad_data.jsonl"):
                (run_dir / stale).unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    return latest


def save_final_model(accelerator, model, tokenizer, run_dir: Path) -> Path:
    """Write RUN_DIR/model atomically (temp dir, fsync, rename); every process must call this."""
    state_dict = accelerator.get_state_dict(model)
    final = run_dir / MODEL_DIR
    if accelerator.is_main_process:
        tmp = run_dir / f".tmp-{MODEL_DIR}"
        if tmp.exists():
            shutil.rmtree(tmp)
        accelerator.unwrap_model(model).save_pretrained(
            str(tmp), state_dict=state_dict, safe_serialization=True
        )
        tokenizer.save_pretrained(str(tmp))
        fsync_tree(tmp)
        replace_dir(tmp, final)
    accelerator.wait_for_everyone()
    return final


def visual_tokens_of(accelerator, model, config: TrainConfig):
    """A context that captures the aligner's output where the anti-collapse term is on (else a
    no-op yielding an empty list)."""
    unwrapped = accelerator.unwrap_model(model)
    if config.visual_variance_weight <= 0 or not hasattr(unwrapped, "aligner"):
        return contextlib.nullcontext([])
    return capture_visual_tokens(unwrapped.aligner)


def forward_backward(
    accelerator,
    model,
    micro_batches: list[dict],
    config: TrainConfig,
    use_flex: bool,
    labelled: int,
) -> torch.Tensor:
    """Forward and backward of every micro-batch of one step; the step's token-loss sum (fp64).

    Each micro-batch's token-loss sum is divided by `labelled`, the global batch's label count.
    """
    processes = accelerator.num_processes
    accumulation = accelerator.gradient_accumulation_steps
    loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for batch in micro_batches:
        if use_flex:
            batch = pad_to_multiple(batch, FLEX_BLOCK)
            batch["attention_mask"] = block_mask(batch)
        inputs = {k: batch[k] for k in MODEL_INPUTS}
        with accelerator.accumulate(model), visual_tokens_of(accelerator, model, config) as seen:
            out = model(**inputs, loss_impl=config.loss_impl)
            token_loss_sum = out.loss * out.num_labelled  # this micro-batch's label sum
            # accelerate divides by `accumulation` and DDP averages over processes:
            # scale so the gradient is d(sum of all token losses) / d(weights) / labelled.
            objective = token_loss_sum * (processes * accumulation / max(labelled, 1))
            if seen:  # the anti-collapse term, averaged over the step's micro-batches
                penalty = variance_penalty(seen[0], config.visual_variance_target)
                objective = objective + config.visual_variance_weight * penalty * (
                    accumulation / len(micro_batches)
                )
            accelerator.backward(objective)
        loss_sum += token_loss_sum.detach().to(torch.float64)
    return loss_sum


# -- the run: what the loop carries --------------------------------------------------------------


@dataclass
class Run:
    """Everything one run's loop carries, built once by `build_run`."""

    config: TrainConfig
    run_dir: Path
    accelerator: Accelerator
    checkpoints: CheckpointManager
    model: torch.nn.Module  # prepared by accelerate (DDP/FSDP wrapper where distributed)
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    dataset: Any
    loader: torch.utils.data.DataLoader
    problems: ProblemLog
    state: TrainerState
    metrics: MetricsLog | None  # main process only
    use_flex: bool
    total_steps: int
    trainable: list[torch.nn.Parameter]  # taken after prepare: FSDP replaces the parameters


@dataclass
class StepCounts:
    """A step's counts over the global batch (every micro-batch on every process)."""

    labelled: int
    slots: int
    pages: int
    new_problems: int


@dataclass
class StepOutcome:
    """What one optimizer step reports to the logs."""

    loss: float
    grad_norm: float
    lrs: dict[str, float]  # the rates of this step, by param-group name
    counts: StepCounts
    seconds: float


# -- building the run -----------------------------------------------------------------------------


def configure_process(config: TrainConfig) -> None:
    """Process-wide settings: CPU threads, and a single-threaded tokenizer before workers fork."""
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    if config.num_workers:  # the tokenizer runs here before workers fork: keep it single-threaded
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_trainable_model(
    config: TrainConfig, model_dir: Path, device: torch.device
) -> tuple[torch.nn.Module, Any, bool]:
    """Model and tokenizer in train mode, fp32 master weights; whether it uses flex attention."""
    model, tokenizer = load_model(model_dir, dtype=torch.float32)  # autocast does bf16 on GPU
    model.train()
    use_flex = _use_flex(config, device)
    if use_flex:
        model.language_model.set_attn_implementation("flex_attention")
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer, use_flex


def load_dataset(config: TrainConfig, data: str | None, model, tokenizer, problems: ProblemLog):
    """Index the data (bad records counted; tokenized and rendered later in the workers)."""
    try:
        dataset = build_dataset(config.stage, data, model.config, tokenizer, config, problems)
    except Vist2Error as err:
        if not len(problems):
            raise
        raise Vist2Error(
            f"{err} ({len(problems)} bad records; first: {problems.problems[0]})"
        ) from None
    problems.check_budget()
    return dataset


def make_loader(
    config: TrainConfig, dataset, sampler: SampleRange, tokenizer, use_flex: bool
) -> torch.utils.data.DataLoader:
    """The micro-batch DataLoader over `sampler`'s global sample numbers."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.micro_batch_size,
        sampler=sampler,
        collate_fn=functools.partial(collate_examples, pad_id=pad_id, dense_mask=not use_flex),
        num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched
    )


def restore_or_seed(
    accelerator,
    checkpoints: CheckpointManager,
    latest: Path | None,
    sampler: SampleRange,
    state: TrainerState,
    config: TrainConfig,
) -> None:
    """Load checkpoint `latest` (and rewrite its bad-record log), or seed a fresh start."""
    if latest is not None:
        checkpoints.load(accelerator, latest)
        sampler.restart_at(state.step * config.batch_size)
        if accelerator.is_main_process:
            problems = state.problems
            problems.path.write_text(
                "".join(json.dumps(p.to_dict()) + "\n" for p in problems.problems), encoding="utf-8"
            )
    else:
        torch.manual_seed(config.seed)  # dropout and anything else random in the model


def announce(run: Run, latest: Path | None) -> None:
    """Print the run's one-line description (and the bad records met so far)."""
    accelerator, config, state = run.accelerator, run.config, run.state
    n_trainable = sum(p.numel() for p in run.trainable)
    n_total = sum(p.numel() for p in accelerator.unwrap_model(run.model).parameters())
    frozen = [m for m in MODULES if config.learning_rates[m] == 0]
    accelerator.print(
        f"vist2 train {config.stage}: {len(run.dataset)} units/epoch, {run.total_steps} steps x {config.batch_size} "
        f"sequences ({accelerator.num_processes} process(es) x {config.micro_batch_size} x {accelerator.gradient_accumulation_steps} accumulation), "
        f"max_length {config.max_length}; training {n_trainable / 1e6:.2f}M of {n_total / 1e6:.2f}M parameters "
        f"(frozen: {', '.join(frozen) or 'none'}); device {accelerator.device}, "
        f"{'flex BlockMask' if run.use_flex else 'dense mask'}, mixed precision {accelerator.mixed_precision}"
        + (f"; resuming at step {state.step} from {latest}" if state.step else "")
    )
    warning = slow_bf16_warning(accelerator.device, accelerator.mixed_precision)
    if warning:
        accelerator.print(warning)
    if len(run.problems):
        accelerator.print(run.problems.summary())


def build_run(
    config: TrainConfig, model_dir: str | Path, data: str | None, run_dir: str | Path, resume: bool
) -> Run:
    """Set up accelerator, RUN_DIR, model, optimizer, data and logs; resume or seed; announce."""
    run_dir = Path(run_dir)
    model_dir = resolve_model_dir(model_dir)
    configure_process(config)
    accelerator = make_accelerator(config)
    main = accelerator.is_main_process
    checkpoints = CheckpointManager(run_dir / "checkpoints", config.keep_last)
    latest = prepare_run_dir(
        accelerator, run_dir, checkpoints, config, resume, {"model": str(model_dir), "data": data}
    )
    model, tokenizer, use_flex = load_trainable_model(config, model_dir, accelerator.device)
    groups = param_groups(model, config.learning_rates, config.weight_decay)  # freezing
    optimizer = torch.optim.AdamW(groups, betas=config.adam_betas, eps=config.adam_eps)

    problems = ProblemLog(config.max_bad_records, run_dir / "bad_data.jsonl" if main else None)
    dataset = load_dataset(config, data, model, tokenizer, problems)
    total_steps = config.max_steps or math.ceil(len(dataset) / config.batch_size)
    dataset.samples_per_step, dataset.total_steps = config.batch_size, total_steps
    scheduler = warmup_cosine_scheduler(
        optimizer, total_steps, config.warmup_fraction, config.min_lr_ratio
    )
    sampler = SampleRange(0, total_steps * config.batch_size)
    loader = make_loader(config, dataset, sampler, tokenizer, use_flex)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    state = TrainerState(problems)
    accelerator.register_for_checkpointing(scheduler, state)
    resume_from = latest if resume and latest is not None else None
    restore_or_seed(accelerator, checkpoints, resume_from, sampler, state, config)

    metrics = MetricsLog(run_dir, config.tensorboard) if main else None
    if metrics is not None and state.step:
        metrics.truncate_after(state.step)
    trainable = [p for p in model.parameters() if p.requires_grad]
    run = Run(config, run_dir, accelerator, checkpoints, model, tokenizer, optimizer, scheduler,
              dataset, loader, problems, state, metrics, use_flex, total_steps, trainable)  # fmt: skip
    announce(run, latest)
    return run


# -- one step -------------------------------------------------------------------------------------


def next_micro_batches(batches, accumulation: int) -> list[dict]:
    """The step's `accumulation` micro-batches; a worker's Vist2Error re-raised with its own text."""
    try:
        return [next(batches) for _ in range(accumulation)]
    except Vist2Error as err:
        raise _worker_message(err) from None


def count_step(accelerator, micro_batches: list[dict]) -> StepCounts:
    """Count the step's labels, slots, pages and bad records, summed over all processes."""
    local = [
        sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro_batches),
        sum(int(b["valid"].sum()) for b in micro_batches),
        sum(int(b["pages"].shape[0]) for b in micro_batches),
        sum(len(b["problems"]) for b in micro_batches),
    ]
    counts = accelerator.reduce(
        torch.tensor(local, dtype=torch.float64, device=accelerator.device), "sum"
    )
    return StepCounts(*(int(c) for c in counts.tolist()))


@contextlib.contextmanager
def out_of_memory_stops_run(run: Run, step: int, largest: tuple[int, int]):
    """Turn a device out-of-memory inside the block into one `TrainingOutOfMemoryError`."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise TrainingOutOfMemoryError(
            out_of_memory_message(step + 1, largest, run.config, run.checkpoints.latest())
        ) from None


def forward_backward_step(
    run: Run, micro_batches: list[dict], labelled: int, step: int, largest: tuple[int, int]
) -> float:
    """Forward and backward of the step; its global mean token loss, which must be finite."""
    with out_of_memory_stops_run(run, step, largest):
        loss_sum = forward_backward(
            run.accelerator, run.model, micro_batches, run.config, run.use_flex, labelled
        )
    loss = float(run.accelerator.reduce(loss_sum, "sum")) / max(labelled, 1)
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"step {step + 1}: the loss is {loss}; stopped before the optimizer step. "
            f"The last good checkpoint is {run.checkpoints.latest() or '(none yet)'}; resume from it "
            "with --resume, perhaps with a lower learning rate in --config"
        )
    return loss


def clip_gradients(run: Run, step: int, loss: float) -> float:
    """Clip the gradient norm to `grad_clip`; the norm before clipping, which must be finite."""
    norm = run.accelerator.clip_grad_norm_(run.trainable, run.config.grad_clip or math.inf)
    # None under DeepSpeed, which clips inside its own step
    grad_norm = float("nan") if norm is None else float(norm)
    if norm is not None and not math.isfinite(grad_norm):
        raise NonFiniteLossError(
            f"step {step + 1}: the gradient norm is {grad_norm} (loss {loss:.4f}); stopped "
            f"before the optimizer step. The last good checkpoint is {run.checkpoints.latest() or '(none yet)'}"
        )
    return grad_norm


def optimizer_step(run: Run, step: int, largest: tuple[int, int]) -> dict[str, float]:
    """Optimizer and scheduler step, gradients cleared; the learning rates this step used."""
    lrs = {g["name"]: g["lr"] for g in run.optimizer.param_groups}
    with out_of_memory_stops_run(run, step, largest):
        run.optimizer.step()  # the first step allocates AdamW's state
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return lrs


def record_problems(run: Run, micro_batches: list[dict], progress: Progress) -> None:
    """Gather the bad records any process's workers met this step into the log; check the budget."""
    from accelerate.utils import gather_object

    mine = [p.to_dict() for b in micro_batches for p in b["problems"]]
    for problem in run.problems.extend(DataProblem.from_dict(p) for p in gather_object(mine)):
        progress.note(f"vist2: skipped bad record {problem}")
    run.problems.check_budget()


def train_step(run: Run, batches, step: int, progress: Progress) -> StepOutcome:
    """One optimizer step (0-based `step`) over the global batch; advances `run.state`."""
    started = time.perf_counter()
    micro_batches = next_micro_batches(batches, run.accelerator.gradient_accumulation_steps)
    # Count first: every micro-batch's loss is divided by the global batch's label count.
    counts = count_step(run.accelerator, micro_batches)
    largest = max(tuple(b["input_ids"].shape) for b in micro_batches)  # (B, L)
    loss = forward_backward_step(run, micro_batches, counts.labelled, step, largest)
    grad_norm = clip_gradients(run, step, loss)
    lrs = optimizer_step(run, step, largest)
    if counts.new_problems:  # bad records met in the workers of any process
        record_problems(run, micro_batches, progress)

    seconds = time.perf_counter() - started
    run.state.step = step + 1
    run.state.labelled_tokens += counts.labelled
    run.state.slots += counts.slots
    run.state.elapsed_s += seconds
    return StepOutcome(loss, grad_norm, lrs, counts, seconds)


# -- after a step ---------------------------------------------------------------------------------


def step_record(run: Run, outcome: StepOutcome) -> dict:
    """The step's metrics.jsonl line."""
    counts, seconds = outcome.counts, outcome.seconds
    return {
        "step": run.state.step,
        "loss": outcome.loss,
        "lr": next(iter(outcome.lrs.values())),
        **{f"lr/{k}": v for k, v in outcome.lrs.items() if not k.endswith(".no_decay")},
        "grad_norm": outcome.grad_norm,
        "labelled_tokens": counts.labelled,
        "slots": counts.slots,
        "pages": counts.pages,
        "tokens_per_s": counts.slots / max(seconds, 1e-9),
        "step_time_s": seconds,
        "elapsed_s": run.state.elapsed_s,
        "epoch": run.state.step * run.config.batch_size / len(run.dataset),
        "bad_records": len(run.problems),
    }


def log_step(run: Run, outcome: StepOutcome, progress: Progress, last_step: int) -> None:
    """Write the step's metrics every `log_every` steps (and the last); advance the progress bar."""
    step = run.state.step
    if run.metrics is not None and (step % run.config.log_every == 0 or step == last_step):
        run.metrics.log(step_record(run, outcome))
    lr = next(iter(outcome.lrs.values()))
    progress.update(outcome.loss, lr, outcome.counts.slots / max(outcome.seconds, 1e-9))


def maybe_checkpoint(run: Run, loss: float, last_step: int) -> None:
    """Save a checkpoint every `save_every` steps and after the last step of this call."""
    step, save_every = run.state.step, run.config.save_every
    if step == last_step or (save_every and step % save_every == 0):
        run.checkpoints.save(run.accelerator, step, {"loss": loss})


# -- the end --------------------------------------------------------------------------------------


def last_logged_loss(metrics_path: Path) -> float | None:
    """The loss of the last line of metrics.jsonl (None if there is none)."""
    if not metrics_path.is_file():
        return None
    records = read_metrics(metrics_path)
    return records[-1]["loss"] if records else None


def write_summary(run: Run, loss: float | None, model_path: Path) -> None:
    """Write RUN_DIR/summary.json: how the run ended."""
    summary = {
        "stage": run.config.stage,
        "steps": run.state.step,
        "final_loss": loss,
        "labelled_tokens": run.state.labelled_tokens,
        "elapsed_s": run.state.elapsed_s,
        "bad_records": len(run.problems),
        "model": str(model_path),
    }
    (run.run_dir / "summary.json").write_text(
        json.dumps(summary, indent=2) + "\n", encoding="utf-8"
    )


def finish_run(run: Run, loss: float | None) -> TrainResult:
    """Save RUN_DIR/model and summary.json, print how the run ended, end accelerate's run."""
    accelerator = run.accelerator
    if loss is None:  # resumed a finished run: nothing to redo
        loss = last_logged_loss(run.run_dir / METRICS_FILE)
    model_path = save_final_model(accelerator, run.model, run.tokenizer, run.run_dir)
    if accelerator.is_main_process:
        write_summary(run, loss, model_path)
    if len(run.problems):
        accelerator.print(run.problems.summary())
    if run.state.step < run.total_steps:
        accelerator.print(
            f"stopped after step {run.state.step} of {run.total_steps}: continue with --resume"
        )
    accelerator.print(
        f"done: {run.state.step} steps, last loss {loss if loss is None else round(loss, 4)}; model in {model_path}"
    )
    accelerator.end_training()
    return TrainResult(run.run_dir, model_path, run.state.step, loss, len(run.problems))


# -- the loop -------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    model_dir: str | Path,
    data: str | None,
    run_dir: str | Path,
    resume: bool = False,
    on_step_end: Callable[[int], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train `config.stage` from `model_dir` on `data`, writing everything into `run_dir`.

    `resume`: continue from the newest checkpoint in `run_dir` (a fresh start if there is none).
    `on_step_end(step)`: called after every optimizer step (and checkpoint) on every process.
    `stop_after`: stop once the run has made this many of its `max_steps` (the schedule does not
    change), with a checkpoint and RUN_DIR/model; `resume` goes on from there. A long schedule
    can so be trained in pieces (sessions of limited time) and each piece used as a model.
    """
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"stop_after: must be a step number >= 1, got {stop_after}")
    run = build_run(config, model_dir, data, run_dir, resume)
    last_step = run.total_steps if stop_after is None else min(stop_after, run.total_steps)
    main = run.accelerator.is_main_process
    progress = Progress(
        run.total_steps, run.state.step, config.stage, enabled=main and config.progress
    )
    loss: float | None = None
    batches = iter(run.loader)
    try:
        for step in range(run.state.step, last_step):
            outcome = train_step(run, batches, step, progress)
            loss = outcome.loss
            log_step(run, outcome, progress, last_step)
            maybe_checkpoint(run, loss, last_step)
            if on_step_end is not None:
                on_step_end(run.state.step)
    finally:
        progress.close()
        if run.metrics is not None:
            run.metrics.close()
    return finish_run(run, loss)


__all__ = [
    "MODEL_DIR",
    "NonFiniteLossError",
    "TrainingOutOfMemoryError",
    "forward_backward",
    "out_of_memory_message",
    "TrainResult",
    "param_groups",
    "resolve_model_dir",
    "train",
]
