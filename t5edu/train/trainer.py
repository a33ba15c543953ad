"""The training loop: accumulation, mixed precision, clipping, evaluation, checkpoints, DDP/FSDP.

Works with any encoder-decoder whose forward follows HF's signature, `model(input_ids=,
attention_mask=, labels=, ...) -> .loss, .logits`, with `.loss` the mean cross-entropy over label
tokens that are not -100 (HF's and t5edu's T5). Chapter 11 builds it up piece by piece and trains
a T5 with it; chapter 13 runs it on two processes.

Token accounting. A step's loss is the mean over *all* label tokens of the global batch, however
it is split into micro-batches and processes: each micro-batch's mean loss is multiplied by its
token count and divided by the global token count (an all-reduced integer) before backward. So
accumulating k micro-batches, or running on k processes, gives the large batch's gradient, not an
average of per-micro-batch means that over-weights short targets (tested to 1e-6).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from t5edu.device import auto_precision, get_device
from t5edu.train.activation_checkpointing import apply_activation_checkpointing
from t5edu.train.checkpoint import (
    CheckpointError,
    check_checkpoint_config,
    load_model_weights,
    load_trainer_state,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    verify_checkpoint,
)
from t5edu.train.distributed import (
    STRATEGIES,
    DistInfo,
    all_gather_object,
    all_reduce_sum,
    barrier,
    gradient_sync,
    is_fsdp,
    reshard,
    unwrap,
    wrap_model,
)
from t5edu.train.evaluation import exact_match, generate_texts, rouge_l
from t5edu.train.metrics_log import MetricsLogger
from t5edu.train.optim import OPTIMIZERS, build_optimizer
from t5edu.train.run_dir import run_dir_lock
from t5edu.train.sampler import ResumableSampler
from t5edu.train.schedules import SCHEDULES, build_scheduler

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "labels",
    "decoder_input_ids",
    "decoder_attention_mask",
)
IGNORE_INDEX = -100  # label value that the loss skips (HF convention): padding of targets
MIN_LOSS_SCALE = 1.0  # fp16 loss-scale floor (DeepSpeed's default min_loss_scale)


@dataclass
class TrainConfig:
    """Everything that shapes a training run; saved in every checkpoint."""

    steps: int = 600  # optimizer steps
    batch_size: int = 32  # examples per optimizer step, over all processes and micro-batches
    micro_batch_size: int = 0  # examples per forward per process; 0 = batch_size / world size
    optimizer: str = "adamw_scale"  # one of OPTIMIZERS
    lr: float = 2e-2  # peak learning rate (nanoT5: 2e-2 with adamw_scale)
    weight_decay: float = 0.0  # decoupled, matrices only
    schedule: str = "cosine"  # one of SCHEDULES
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping (norm still logged)
    precision: str = "auto"  # auto = bf16 on a bf16-capable GPU, else fp32; fp16 adds a scaler
    activation_checkpointing: bool = False  # recompute each block in backward
    compile: bool = False  # torch.compile the model
    strategy: str = "none"  # "none", "ddp" or "fsdp" (launch with torchrun for ddp/fsdp)
    seed: int = 0
    log_every: int = 10  # steps per JSONL/progress-bar record (loss averaged over them)
    eval_every: int = 100  # steps between evaluations (also at step 0 and at the end); 0 = never
    save_every: int = (
        0  # steps between checkpoints (also at the end when out_dir is set); 0 = end only
    )
    keep_checkpoints: int = 2
    out_dir: str | None = None  # checkpoints/ and metrics.jsonl go here; None = nothing written
    max_input_length: int | None = None  # longer inputs raise; None = model.config.n_positions
    max_target_length: int | None = None  # same for labels
    max_new_tokens: int = 32  # generation length in evaluation
    num_samples: int = 3  # sample generations logged per task at each evaluation
    progress: bool = True  # tqdm bar on the main process
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU is deterministic anyway)
    max_consecutive_skips: int = 32  # fp16: overflowing steps in a row before the run stops

    def validate(self, world_size: int = 1) -> None:
        """Raise `ConfigError` (a ValueError) naming the first field with a bad value.

        Every field is checked here, before any work: a bad value found only at the first save
        (after training) or as a ZeroDivisionError in the loop would cost the whole run.
        """
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("precision", PRECISIONS),
            ("strategy", STRATEGIES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"must be one of {allowed}", getattr(self, name))
        for name, low in (
            ("steps", 1), ("batch_size", 1), ("micro_batch_size", 0), ("warmup_steps", 0),
            ("log_every", 1), ("eval_every", 0), ("save_every", 0), ("keep_checkpoints", 1),
            ("max_new_tokens", 1), ("num_samples", 0), ("max_consecutive_skips", 1), ("seed", 0),
        ):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(name, f"must be an integer >= {low}", value)
        for name, low, high, open_low in (
            ("lr", 0.0, math.inf, True),  # nan and inf fail every comparison below
            ("weight_decay", 0.0, math.inf, False),
            ("min_lr_ratio", 0.0, 1.0, False),
            ("grad_clip", 0.0, math.inf, False),
        ):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value > low if open_low else value >= low)
            if not ok or value > high:
                span = f"> {low:g}" if open_low else f">= {low:g}"
                span += f" and <= {high:g}" if high < math.inf else ""
                raise ConfigError(name, f"must be a finite number {span}", value)
        if self.out_dir is not None and str(self.out_dir).strip() == "":
            raise ConfigError("out_dir", "must be a directory, or None to write nothing", "")
        micro = self.micro_batch_size or self.batch_size // world_size
        if micro < 1 or self.batch_size % (micro * world_size):
            raise ConfigError(
                "batch_size",
                f"must be a positive multiple of micro_batch_size={micro} x "
                f"world_size={world_size}",
                self.batch_size,
            )


class ConfigError(ValueError):
    """A `TrainConfig` field holds a bad value; `.field` names it (the CLI turns it into a flag)."""

    def __init__(self, field: str, expected: str, got):
        self.field, self.expected, self.got = field, expected, got
        super().__init__(f"{field} {expected}; got {got!r}")


class NonFiniteError(RuntimeError):
    """The loss, the gradient or the weights became NaN/inf: the run stops (nothing is saved)."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` becomes `t5edu.device.auto_precision(device)` (bf16 with bf16 tensor cores, fp16
    with loss scaling on older GPUs such as the T4, else fp32); other values pass through."""
    return auto_precision(device) if precision == "auto" else precision


@dataclass
class StepOutput:
    """What one optimizer step reports (all global over processes)."""

    loss: float  # mean cross-entropy per label token
    grad_norm: float  # global L2 norm of the gradient before clipping
    lr: float  # learning rate used by this step (first parameter group)
    tokens: int  # input + label tokens processed (padding excluded)
    skipped: bool = False  # fp16 only: the scaler found inf/NaN gradients and skipped the step


@dataclass
class Trainer:
    """Train `model` on `train_data` with the settings of `config`.

    Args:
        model: an HF-style encoder-decoder (see the module docstring), already on any device;
            the trainer moves it to `info.device`.
        config: a `TrainConfig`.
        train_data: indexable examples, either finite (`len` defined: shuffled epochs) or an
            endless stream such as `t5edu.data.Mixture` (read in order). An example has
            `input_ids` and `labels` (attributes, like `t5edu.data.Example`, or keys).
        collate_fn: list of examples -> batch of `(batch, len)` int64 tensors with at least
            `input_ids`, `attention_mask`, `labels` (padding -100): a dict, or an object with
            `as_dict()` such as `t5edu.data.collate`'s `Batch`.
        val_data: examples for the validation loss, or `{task: examples}` for one loss per task
            (plus their token-weighted mean, `val_loss`); or None.
        generation_data: `{task: examples}` whose examples also carry the reference text
            (`target_text`, or `target`), scored by exact match and ROUGE-L of greedy
            generations decoded by `decode(ids) -> str`; or None.
        info: this process's place in a `torchrun` job (`init_distributed()`); default: one
            process on the best available device.

    Raises:
        ValueError: for an empty `train_data`, inconsistent batch sizes or unknown option names
            (see `TrainConfig.validate`), and, during training, for an example longer than
            `max_input_length`/`max_target_length`.
    """

    model: nn.Module
    config: TrainConfig
    train_data: Sequence
    collate_fn: Callable[[list], Mapping[str, torch.Tensor]]
    val_data: Sequence | Mapping[str, Sequence] | None = None
    generation_data: Mapping[str, Sequence] | None = None
    decode: Callable[[list[int]], str] | None = None
    info: DistInfo | None = None
    history: list[dict] = field(default_factory=list, init=False)
    step_losses: list[float] = field(default_factory=list, init=False)

    def __post_init__(self):
        cfg = self.config
        if self.info is None:
            device = get_device()
            self.info = DistInfo(device=device)
        world = self.info.world_size
        num_examples = _length(self.train_data)
        if num_examples == 0:
            raise ValueError("train_data is empty: there is nothing to train on")
        cfg.validate(world)
        if cfg.strategy != "none" and world == 1:
            raise ValueError(
                f"strategy={cfg.strategy!r} needs several processes; launch with torchrun "
                "--nproc_per_node N (or use strategy='none')"
            )
        if self.generation_data and self.decode is None:
            raise ValueError("generation_data needs decode=(ids -> text) to score generations")
        self.device = self.info.device
        self.micro_batch_size = cfg.micro_batch_size or cfg.batch_size // world
        self.accumulation = cfg.batch_size // (self.micro_batch_size * world)
        self.precision = resolve_precision(cfg.precision, self.device)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        n_pos = getattr(getattr(self.model, "config", None), "n_positions", None)
        self.max_input_length = cfg.max_input_length or n_pos
        self.max_target_length = cfg.max_target_length or n_pos

        torch.manual_seed(cfg.seed + self.info.rank)  # dropout differs between processes
        self.model_class = type(self.model)
        self.model.to(self.device)
        if cfg.activation_checkpointing:
            apply_activation_checkpointing(self.model)
        self.engine = wrap_model(self.model, cfg.strategy, self.info)
        if cfg.compile:
            self.engine = torch.compile(self.engine)
        self.optimizer = build_optimizer(self.model, cfg.optimizer, cfg.lr, cfg.weight_decay)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.sampler = ResumableSampler(num_examples, cfg.batch_size, cfg.seed)
        self.step = 0
        self.consecutive_skips = 0  # fp16 steps skipped in a row (bounded by the config)
        self._window: list[StepOutput] = []  # steps since the last train record
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        self._logger: MetricsLogger | None = None
        self._use_cache_kw = _accepts(unwrap(self.engine).forward, "use_cache")

    # ----------------------------------------------------------------------------- batches
    def make_batch(self, indices: Sequence[int], data: Sequence, split: str = "train") -> dict:
        """Collate `data[i] for i in indices` into model inputs on the trainer's device.

        Raises:
            ValueError: naming the example, if one is longer than `max_input_length` /
                `max_target_length`.
        """
        examples = [data[i] for i in indices]
        for i, ex in zip(indices, examples, strict=True):
            for key, limit, arg in (
                ("input_ids", self.max_input_length, "max_input_length"),
                ("labels", self.max_target_length, "max_target_length"),
            ):
                n = len(_field(ex, key) or ())
                if limit is not None and n > limit:
                    raise ValueError(
                        f"{split} example {i}: {key} has {n} tokens, more than the model allows "
                        f"({arg}={limit}); shorten or split it in the data pipeline"
                    )
        batch = self.collate_fn(examples)
        batch = batch.as_dict() if hasattr(batch, "as_dict") else dict(batch)
        return {k: v.to(self.device) for k, v in batch.items() if k in MODEL_INPUTS}

    def _autocast(self):
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _forward(self, module: nn.Module, batch: dict):
        kwargs = dict(batch)
        if self._use_cache_kw:
            kwargs["use_cache"] = False  # no KV cache in training (and none under checkpointing)
        with self._autocast():
            return module(**kwargs)

    @staticmethod
    def _label_tokens(batch: dict) -> torch.Tensor:
        return (batch["labels"] != IGNORE_INDEX).sum()

    # ----------------------------------------------------------------------------- training
    def forward_backward(self, micro_batches: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate the global-batch gradient of `micro_batches` (this process's share).

        Returns `(loss_sum, label_tokens)`, both summed over every process: the step's loss is
        their ratio. Gradients are left in `.grad` (scaled by the fp16 loss scale, if any).
        """
        counts = [self._label_tokens(b) for b in micro_batches]
        total = all_reduce_sum(torch.stack(counts).sum().double()).clamp_min(1)
        world = self.info.world_size
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, (batch, n) in enumerate(zip(micro_batches, counts, strict=True)):
            last = i == len(micro_batches) - 1
            with gradient_sync(self.engine, enabled=last):
                out = self._forward(self.engine, batch)
                # mean -> sum over this micro-batch's tokens; an all-padding batch contributes 0
                # (its mean is NaN) but still runs backward so DDP/FSDP stay in step.
                part = out.loss.float() * n if n > 0 else out.logits.float().sum() * 0.0
                # DDP/FSDP average gradients over processes; x world undoes that average.
                self.scaler.scale(part * (world / total.float())).backward()
            loss_sum += part.detach().double()
        return all_reduce_sum(loss_sum), total

    def train_step(self) -> StepOutput:
        """Draw the next global batch, accumulate its gradient, clip, update, schedule."""
        self.engine.train()
        indices = self.sampler.next_batch()
        share = len(indices) // self.info.world_size
        mine = indices[self.info.rank * share : (self.info.rank + 1) * share]
        mb = self.micro_batch_size
        micro = [
            self.make_batch(mine[i : i + mb], self.train_data, "train") for i in range(0, share, mb)
        ]
        lr = self.optimizer.param_groups[0]["lr"]
        loss_sum, total = self.forward_backward(micro)
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: DTensor
        loss = loss_sum / total
        # An inf/NaN anywhere in the gradient makes its norm inf/NaN: one check covers it all.
        finite = bool(torch.isfinite(norm) & torch.isfinite(loss))
        fp16 = self.scaler.is_enabled()
        if not finite and not fp16:  # stop *before* the update: the weights stay good
            raise NonFiniteError(
                f"step {self.step + 1}: loss {loss.item():.4g}, gradient norm {norm.item():.4g} "
                f"at lr {lr:g}: not finite, so the run stops before this update (try a lower lr)"
            )
        if finite:
            self.scaler.step(self.optimizer)
        self.scaler.update()  # fp16: halves the scale after an overflow, else may grow it
        if fp16 and self.scaler.get_scale() < MIN_LOSS_SCALE:
            # GradScaler has no floor: ~144 overflows in a row make 1/scale overflow, ~166 make
            # the scale 0, and every later step then unscales to inf. Stop at a floor instead.
            self.scaler.update(MIN_LOSS_SCALE)
        # Whether the step was skipped is what we decided, not "the scale went down" (which
        # is never true at the floor, nor at a scale of 0).
        skipped = not finite
        self.consecutive_skips = self.consecutive_skips + 1 if skipped else 0
        if skipped:
            if self.consecutive_skips >= self.config.max_consecutive_skips:
                raise NonFiniteError(
                    f"step {self.step + 1}: {self.consecutive_skips} fp16 steps in a row "
                    f"overflowed (loss scale now {self.scaler.get_scale():g}, the floor is "
                    f"{MIN_LOSS_SCALE:g}): the gradients are not finite at any scale; the run "
                    "stops (try bf16 or fp32, or a lower lr)"
                )
        else:  # as HF's Trainer: the schedule advances with the updates actually made
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = sum(
            (b["attention_mask"].sum() if "attention_mask" in b else b["input_ids"].numel())
            + self._label_tokens(b)
            for b in micro
        )
        return StepOutput(
            loss=loss.item(),
            grad_norm=norm.item(),
            lr=lr,
            tokens=int(all_reduce_sum(torch.as_tensor(tokens, device=self.device))),
            skipped=skipped,
        )

    def train(self, resume: str | os.PathLike | None = None) -> list[dict]:
        """Run until `config.steps`, evaluating, logging and checkpointing; returns `history`.

        `resume`: a checkpoint directory, or a run's `checkpoints/` directory (its `latest`),
        to continue from; the continued run's losses equal an uninterrupted run's.

        Raises:
            RunDirBusy: another process is writing to `out_dir`.
            NonFiniteError: the loss or gradient became NaN/inf (fp32/bf16: at once; fp16:
                after `max_consecutive_skips` skipped steps in a row), or a weight did before a
                save. Nothing non-finite is ever saved, so the last checkpoint stays good.
        """
        cfg, main = self.config, self.info.is_main
        # One writer per run directory (see run_dir.py): a second trainer is refused here.
        lock = run_dir_lock(self.out_dir) if self.out_dir is not None and main else None
        with lock or contextlib.nullcontext():
            if resume is not None:
                self.load(resume)
            if self.out_dir is not None and main and self._logger is None:
                self._logger = MetricsLogger(
                    # after a resume (here or an earlier `load`) keep the records up to this step
                    self.out_dir / "metrics.jsonl",
                    resume_step=self.step if self.step > 0 else None,
                )
            if self.step == 0 and cfg.eval_every:
                self._record(self.evaluate())
            self._loop()
        return self.history

    def _loop(self) -> None:
        from tqdm.auto import tqdm

        cfg = self.config
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not (cfg.progress and self.info.is_main),
            desc="training",
            unit="step",
            dynamic_ncols=True,
        )
        t_window = time.perf_counter()
        while self.step < cfg.steps:
            out = self.train_step()
            self.step += 1
            self.step_losses.append(out.loss)
            self._window.append(out)
            bar.update(1)
            done = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or done:
                # After a resume the window holds the steps before the checkpoint too (saved
                # with it), so every record averages the same log_every steps as without one.
                window, elapsed = self._window, time.perf_counter() - t_window
                record = {
                    "kind": "train",
                    "step": self.step,
                    "loss": sum(o.loss for o in window) / len(window),
                    "lr": window[-1].lr,
                    "grad_norm": window[-1].grad_norm,
                    "tokens_per_s": sum(o.tokens for o in window) / max(elapsed, 1e-9),
                    "skipped_steps": sum(o.skipped for o in window),
                }
                self._record(record)
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    lr=f"{record['lr']:.2e}",
                    tok_s=f"{record['tokens_per_s']:.0f}",
                )
                self._window, t_window = [], time.perf_counter()
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or done):
                self._record(self.evaluate())
                t_window = time.perf_counter()  # evaluation time is not training throughput
            if self.out_dir is not None and (
                done or (cfg.save_every and self.step % cfg.save_every == 0)
            ):
                self.save()
                t_window = time.perf_counter()
        bar.close()

    def _record(self, record: dict) -> None:
        self.history.append(record)
        if self._logger is not None:
            self._logger.log(record)

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def validation_loss(self, data: Sequence) -> tuple[float, int]:
        """Mean cross-entropy per label token over `data` (split across processes), and the
        number of label tokens it averaged over."""
        module = unwrap(self.engine)
        module.eval()
        world, rank, mb = self.info.world_size, self.info.rank, self.micro_batch_size
        n = len(data)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        # Same number of forwards on every process (FSDP all-gathers inside each one); a process
        # that runs out of data repeats its first batch with weight 0.
        for j in range(math.ceil(n / (mb * world))):
            idx = list(range((j * world + rank) * mb, min((j * world + rank + 1) * mb, n)))
            weight = 1.0 if idx else 0.0
            batch = self.make_batch(idx or list(range(min(mb, n))), data, "validation")
            out = self._forward(module, batch)
            tokens = self._label_tokens(batch)
            if tokens > 0:
                loss_sum += weight * out.loss.double() * tokens
                count += weight * tokens
        module.train()
        reshard(module)
        count = all_reduce_sum(count)
        return (all_reduce_sum(loss_sum) / count.clamp_min(1)).item(), int(count)

    def evaluate(self) -> dict:
        """Validation loss (per task, and overall), and per generation task exact match,
        ROUGE-L and a few sample generations."""
        result: dict = {"kind": "eval", "step": self.step}
        val = self.val_data
        if isinstance(val, Mapping):
            total_loss, total_tokens = 0.0, 0
            for task, data in val.items():
                loss, tokens = self.validation_loss(data)
                result[f"{task}/val_loss"] = loss
                total_loss, total_tokens = total_loss + loss * tokens, total_tokens + tokens
            result["val_loss"] = total_loss / max(total_tokens, 1)
        elif val is not None and len(val) > 0:
            result["val_loss"] = self.validation_loss(val)[0]
        for task, examples in (self.generation_data or {}).items():
            module = unwrap(self.engine)
            if is_fsdp(module):
                # generate() calls the encoder, decoder and head directly, never the root's
                # forward, so FSDP's root hook would not gather the embedding and head: do it.
                module.unshard()
            with self._autocast():
                preds = generate_texts(
                    module,
                    [_field(ex, "input_ids") for ex in examples],
                    self.decode,
                    device=self.device,
                    max_new_tokens=self.config.max_new_tokens,
                    batch_size=max(self.micro_batch_size, 8),
                )
            refs = [_field(ex, "target_text") or _field(ex, "target") for ex in examples]
            reshard(module)
            result[f"{task}/exact_match"] = exact_match(preds, refs)
            result[f"{task}/rougeL"] = rouge_l(preds, refs)
            result[f"{task}/samples"] = [
                {"input": self.decode(list(_field(ex, "input_ids"))), "target": r, "prediction": p}
                for ex, r, p in list(zip(examples, refs, preds, strict=True))[
                    : self.config.num_samples
                ]
            ]
        return result

    # ----------------------------------------------------------------------------- checkpoints
    def _full_model_state(self) -> dict | None:
        """FSDP2 only: the full (unsharded) state dict, on rank 0 (None on the others)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        sd = get_model_state_dict(self.model, options=opts)
        return sd if self.info.is_main else None

    def _optimizer_state(self) -> dict:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        # Keyed by parameter name, unsharded: the same file resumes any strategy/world size.
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.model, self.optimizer, options=opts)

    def save(self) -> Path | None:
        """Checkpoint into `out_dir/checkpoints/` (collective: call on every process)."""
        if self.out_dir is None:
            raise ValueError("save() needs config.out_dir")
        self.check_finite_weights()
        state = {
            "optimizer": self._optimizer_state(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": all_gather_object(rng_state()),
            "sampler": self.sampler.state_dict(),
            "train_config": dataclasses.asdict(self.config),
            "world_size": self.info.world_size,
            # the partial log window and the fp16 skip streak: a resumed run logs the same
            "log_window": [dataclasses.asdict(o) for o in self._window],
            "consecutive_skips": self.consecutive_skips,
        }
        full = self._full_model_state() if is_fsdp(self.model) else None
        path = None
        if self.info.is_main:
            model = self.model
            if full is not None:  # an unsharded copy on the CPU just for writing the file
                model = self.model_class(self.model.config)
                model.load_state_dict(full)
            with run_dir_lock(self.out_dir):
                path = save_checkpoint(
                    self.out_dir / "checkpoints",
                    self.step,
                    unwrap(model),
                    state,
                    self.config.keep_checkpoints,
                )
        barrier()
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore model, optimizer, scheduler, scaler, RNG and data position from a checkpoint.

        Raises:
            CheckpointError: missing, incomplete or corrupted files, another model config, or a
                different optimizer; ValueError: another batch size, seed or data size.
        """
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        path = resolve_checkpoint(path)
        verify_checkpoint(path)
        check_checkpoint_config(path, unwrap(self.model))
        state = load_trainer_state(path)
        missing = {"train_config", "optimizer", "scheduler", "sampler", "rng"} - set(state)
        if missing:
            raise CheckpointError(
                f"checkpoint {path} holds model weights but no trainer state ({sorted(missing)} "
                "missing): load it with load_model_weights to fine-tune from it instead"
            )
        saved_cfg = state["train_config"]
        if saved_cfg["optimizer"] != self.config.optimizer:
            raise CheckpointError(
                f"checkpoint {path} was trained with optimizer={saved_cfg['optimizer']!r}; "
                f"this run uses optimizer={self.config.optimizer!r}"
            )
        self.sampler.load_state_dict(state["sampler"])
        if is_fsdp(self.model):
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            plain = self.model_class(self.model.config)
            load_model_weights(path, plain)  # strict: every key and shape checked here
            # One entry per tensor: the embedding's aliases (encoder/decoder.embed_tokens, a
            # tied lm_head) would reach FSDP as plain tensors next to their sharded original.
            full = dict(plain.state_dict(keep_vars=True))
            seen, unique = set(), {}
            for key, value in full.items():
                if id(value) not in seen:
                    seen.add(id(value))
                    unique[key] = value.detach()
            opts = StateDictOptions(full_state_dict=True, strict=False)
            set_model_state_dict(self.model, unique, options=opts)
        else:
            load_model_weights(path, unwrap(self.model))
        set_optimizer_state_dict(
            self.model,
            self.optimizer,
            state["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
        sched = state["scheduler"]
        # The schedule's shape comes from *this* config (one may resume to train longer).
        sched["lr_lambdas"] = [dict(vars(fn)) for fn in self.scheduler.lr_lambdas]
        self.scheduler.load_state_dict(sched)
        for group, base, fn in zip(
            self.optimizer.param_groups,
            self.scheduler.base_lrs,
            self.scheduler.lr_lambdas,
            strict=True,
        ):
            group["lr"] = base * fn(self.scheduler.last_epoch)
        self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        set_rng_state(rngs[self.info.rank % len(rngs)])
        self.step = int(state["step"])
        self._window = [StepOutput(**o) for o in state.get("log_window", [])]
        self.consecutive_skips = int(state.get("consecutive_skips", 0))

    def check_finite_weights(self) -> None:
        """Raise `NonFiniteError` naming the first parameter that holds NaN/inf (all processes
        check their own shard; one all-reduce decides)."""
        bad = [
            n
            for n, p in self.model.named_parameters()
            if not torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()
        ]
        count = all_reduce_sum(torch.tensor(float(len(bad)), device=self.device))
        if count > 0:
            raise NonFiniteError(
                f"step {self.step}: parameter {bad[0] if bad else '(on another process)'} holds "
                "NaN/inf; not saved, the previous checkpoint is the last good one"
            )


def _length(data) -> int | None:
    """`len(data)`, or None for an endless indexable stream (no `__len__`)."""
    try:
        return len(data)
    except TypeError:
        return None


def _field(example, key: str):
    """`example[key]` for a mapping, `example.key` for an object; None when absent."""
    if isinstance(example, Mapping):
        return example.get(key)
    return getattr(example, key, None)


def _accepts(fn, name: str) -> bool:
    """Whether `fn` has a parameter called `name` (not merely **kwargs)."""
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
