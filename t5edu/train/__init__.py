"""`t5edu.train`: the trainer of chapter 11 and its parts; `python -m t5edu.train` runs it."""

from t5edu.train.activation_checkpointing import (
    apply_activation_checkpointing,
    find_blocks,
    saved_activation_bytes,
)
from t5edu.train.checkpoint import (
    CheckpointError,
    load_model_weights,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from t5edu.train.distributed import DistInfo, init_distributed, wrap_model
from t5edu.train.evaluation import exact_match, generate_texts, rouge_l
from t5edu.train.metrics_log import MetricsLogger, read_metrics
from t5edu.train.optim import Adafactor, AdamWScale, build_optimizer
from t5edu.train.sampler import ResumableSampler
from t5edu.train.schedules import (
    ConstantSchedule,
    CosineSchedule,
    InverseSqrtSchedule,
    build_scheduler,
    make_schedule,
)
from t5edu.train.trainer import TrainConfig, Trainer

__all__ = [
    "Adafactor",
    "AdamWScale",
    "CheckpointError",
    "ConstantSchedule",
    "CosineSchedule",
    "DistInfo",
    "InverseSqrtSchedule",
    "MetricsLogger",
    "ResumableSampler",
    "TrainConfig",
    "Trainer",
    "apply_activation_checkpointing",
    "build_optimizer",
    "build_scheduler",
    "exact_match",
    "find_blocks",
    "generate_texts",
    "init_distributed",
    "load_model_weights",
    "make_schedule",
    "read_metrics",
    "resolve_checkpoint",
    "rouge_l",
    "save_checkpoint",
    "saved_activation_bytes",
    "verify_checkpoint",
    "wrap_model",
]
