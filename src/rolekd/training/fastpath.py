"""The fast path's switches, resolved once per device: bf16 autocast is on by default on CUDA only (bf16
convolutions are slower on the CPU); channels_last is on by default on both (on the project's CPU rolekd's own
steps ran 1.10-1.57x faster in it, ``benchmarks/channels_last.py``); ``torch.compile`` stays opt-in because its
compile time dominates short runs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import TrainConfig


@dataclass(frozen=True)
class FastPath:
    amp: bool
    channels_last: bool
    compile: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def resolve_fast_path(cfg: TrainConfig | None, device: torch.device) -> FastPath:
    """``None`` in the config means the default: amp with CUDA, channels_last everywhere; an explicit ``true`` for
    amp still needs CUDA. Without a config (a bare Trainer's caller decides nothing) every switch is off."""
    cuda = device.type == "cuda"
    if cfg is None:
        return FastPath(False, False, False)
    amp = cuda if cfg.amp is None else (cfg.amp and cuda)
    channels_last = True if cfg.channels_last is None else cfg.channels_last
    return FastPath(amp, channels_last, cfg.compile)
