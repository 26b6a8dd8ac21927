"""Trainer factories for search tests: the product's own trial (``make_trial_trainer``) on a tiny config, and
variants that are slow or crash for one trial. Ray pickles them by value (the test registers this module)."""

from __future__ import annotations

import time
from typing import Any

import torch

from rolekd.config import config_from_dict
from rolekd.pba import TrialParts
from rolekd.pipeline.search_stage import make_trial_trainer, search_args
from rolekd.pipeline.setup import prepare


def tiny_args(epochs: int = 4, **search: Any) -> tuple[dict[str, Any], Any]:
    """(factory args, search config) of a teacher search on the embedded digits, a 4-wide CNN."""
    cfg = config_from_dict({
        "device": "cpu",
        "data": {"dataset": "digits", "reduced_train": 256, "reduced_val": 300, "eval_batch_size": 300},
        "teacher": {"model": "cnn", "model_args": {"width": 4},
                    "train": {"epochs": epochs, "batch_size": 64, "lr": 0.05, "lr_schedule": "cosine"}},
        "search": {"population": 4, "epochs": epochs, "perturbation_interval": 1, "quantile": 0.5,
                   "cpus_per_trial": 0.5, **search},
    })
    prep = prepare(cfg, device=torch.device("cpu"))
    return search_args(cfg, "teacher", prep, None), cfg.search


def slow_trial(args: dict[str, Any], seed: int) -> TrialParts:
    """The tiny trial, but the trial whose seed is ``args['slow_seed']`` sleeps before every epoch."""
    parts = make_trial_trainer(args, seed)
    if seed == args["slow_seed"]:
        train_epoch = parts.trainer.train_epoch

        def slowly(*a: Any, **k: Any) -> dict[str, float]:
            time.sleep(args["sleep_s"])
            return train_epoch(*a, **k)

        parts.trainer.train_epoch = slowly
    return parts


def crashing_trial(args: dict[str, Any], seed: int) -> TrialParts:
    """The tiny trial, but the trial whose seed is ``args['bad_seed']`` raises in every epoch."""
    parts = make_trial_trainer(args, seed)
    if seed == args["bad_seed"]:
        def crash(*a: Any, **k: Any) -> dict[str, float]:
            raise RuntimeError("this trial always crashes")

        parts.trainer.train_epoch = crash
    return parts
