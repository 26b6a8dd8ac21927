"""The one training loop, its objective interface and checkpoints."""

from .checkpoint import (
    CheckpointError, as_checkpoint, atomic_write_json, atomic_write_text, check_weights, checkpoint_in,
    describe_network, load_checkpoint, load_weights, read_weights_file, save_checkpoint,
)
from .loop import FitResult, NonFiniteLossError, Trainer, evaluate_model, fit, lr_factor, make_optimizer
from .objective import CrossEntropy, Objective, StepContext, StepOutput, hard_label_ce, total_loss

__all__ = [
    "CheckpointError", "CrossEntropy", "FitResult", "NonFiniteLossError", "Objective", "StepContext", "StepOutput",
    "Trainer", "as_checkpoint", "atomic_write_json", "atomic_write_text", "check_weights", "checkpoint_in",
    "describe_network", "evaluate_model", "fit", "hard_label_ce", "load_checkpoint", "load_weights", "lr_factor",
    "make_optimizer", "read_weights_file", "save_checkpoint", "total_loss",
]
