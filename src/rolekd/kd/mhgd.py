"""Multi-head graph distillation (Lee & Song 2019).

Each tap is compressed to its top right-singular vector (:mod:`.svd`). For consecutive taps, a
multi-head attention network relates every sample's vector at tap l to every sample's vector at
tap l-1: the ``(heads, N, N)`` attention maps are the teacher's "graph" of the batch. The student's
graph, built by the same network from its own vectors, matches the teacher's with
``KL(softmax(tanh G_S) || softmax(tanh G_T))`` (the authors' direction), SUMMED over heads, rows
(the batch) and consecutive-tap pairs, with no division by the batch size: role-kd's (and Lee &
Song's) ``kld_loss = reduce_sum(softmax(X) * (log_softmax(X) - log_softmax(Y)))`` over
heads x B x B, added over tap pairs. The scale matters because the KD gradient is clipped per
tensor to the task gradient's norm (:mod:`.clip`): it decides how much of the clip budget this term
takes. Each row's KL is a mean-like quantity (a softmax over the B columns), so the loss grows
linearly with the batch size, as in the original (128 there); at that batch its gradient is 10-100x
the task gradient before clipping and takes nearly all of II-KD's clip budget (benchmarks/README.md).

The attention network is trained only in an initialisation phase on teacher features
(:meth:`MHGD.fit_step`): an estimator must rebuild the tap-l vectors from the tap-(l-1) vectors
mixed by the attention maps (cosine loss, random head dropping), so the maps have to encode how
the teacher moves from one tap to the next. Lee & Song's code runs 40 such epochs and then freezes
the network (BatchNorm in inference mode) while the student distils; so it is not part of
``extra_parameters``. role-kd never ran the phase and distilled through random projections.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import KDMethod, Outputs, channels, require, require_matching_taps
from .svd import TapPair, compress_taps, teacher_vectors


class _GraphHead(nn.Module):
    """Attention between taps l-1 (receiver) and l (sender), plus the estimator that trains it."""

    def __init__(self, d_prev: int, d_cur: int, heads: int) -> None:
        super().__init__()
        self.heads, self.width = heads, (d_prev + d_cur) // 2
        self.sender = nn.Sequential(nn.Linear(d_cur, self.width * heads), nn.BatchNorm1d(self.width * heads))
        self.receiver = nn.Sequential(nn.Linear(d_prev, self.width * heads), nn.BatchNorm1d(self.width * heads))
        self.embed = nn.Sequential(nn.Linear(d_prev, self.width), nn.BatchNorm1d(self.width), nn.ReLU())
        self.estimate = nn.Linear(self.width * heads, d_cur)

    def graph(self, prev: Tensor, cur: Tensor) -> Tensor:
        """``(heads, N, N)`` logits: row i attends from sample i at tap l to samples at tap l-1."""
        n = len(cur)
        send = self.sender(cur).view(n, self.width, self.heads).permute(2, 0, 1)
        receive = self.receiver(prev).view(n, self.width, self.heads).permute(2, 1, 0)
        return send @ receive

    def estimator_loss(self, prev: Tensor, cur: Tensor) -> Tensor:
        """Rebuild ``cur`` from ``prev`` mixed by the attention maps; each sample drops a random
        half of the heads (noise above its mean over heads) so that no single head carries it."""
        attention = self.graph(prev, cur).softmax(dim=-1)
        noise = torch.randn(self.heads, len(cur), 1, device=cur.device)
        attention = attention * (noise > noise.mean(dim=0, keepdim=True))
        mixed = (attention @ self.embed(prev)).permute(1, 0, 2).reshape(len(cur), -1)
        return (1 - (F.normalize(self.estimate(mixed), dim=1) * cur).sum(dim=1)).mean()


class MHGD(KDMethod):
    name = "mhgd"
    taps = "all"
    needs_init = True
    default_clip = True  # Lee & Song's optimiser clips the KD gradient as KD-SVD does (reference §B6)

    def __init__(self, heads: int = 4, fit_lr: float = 0.1) -> None:
        super().__init__()
        require(int(heads) == heads and heads >= 1, f"mhgd: heads must be a positive integer, got {heads}")
        require(fit_lr > 0, f"mhgd: fit_lr must be > 0, got {fit_lr}")
        self.num_heads, self.fit_lr = int(heads), float(fit_lr)
        self.dims: list[int] | None = None
        self.fit_steps = 0
        self.untrained = False  # distil through the random attention network on purpose (role-kd's setting)
        self.graphs = nn.ModuleList()
        self._optimizer: torch.optim.Optimizer | None = None

    @property
    def initialized(self) -> bool:
        return self.fit_steps > 0 or self.untrained

    def skip_initialization(self) -> None:
        """Distil through the randomly initialised attention network: role-kd never trained it
        (``distill.init_epochs: 0``); Lee & Song train it first."""
        self.untrained = True

    def build(self, dims: list[int]) -> None:
        """Create the attention network for taps with these channel counts (once; then they must match)."""
        if self.dims is not None:
            require(dims == self.dims, f"mhgd was built for tap channels {self.dims}, got {dims}")
            return
        require(len(dims) >= 2, f"mhgd relates consecutive taps: it needs >= 2, got {len(dims)}")
        self.dims = list(dims)
        self.graphs.extend(_GraphHead(p, c, self.num_heads) for p, c in zip(dims, dims[1:]))
        self.graphs.requires_grad_(False)

    def check(self, student: Outputs, teacher: Outputs) -> None:
        require_matching_taps(self.name, student, teacher, minimum=2)
        self.build(channels(teacher.features))

    def fit_step(self, teacher: Outputs) -> float:
        """One SGD step of the attention network (Lee & Song: Nesterov momentum 0.9, lr 0.1, wd 5e-4)."""
        vectors = teacher_vectors(teacher.features)
        self._prepare(channels(teacher.features), vectors[0].device)
        if self._optimizer is None:
            self._optimizer = torch.optim.SGD(
                self.graphs.parameters(), lr=self.fit_lr, momentum=0.9, nesterov=True, weight_decay=5e-4
            )
        self.graphs.train().requires_grad_(True)
        try:
            loss = torch.stack([g.estimator_loss(p, c) for g, p, c in zip(self.graphs, vectors, vectors[1:])]).sum()
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
        finally:
            self.graphs.eval().requires_grad_(False)
        self.fit_steps += 1
        return float(loss.detach())

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> dict[str, Tensor]:
        return {"mhgd": self.graph_loss(compress_taps(student.features, teacher.features))}

    def graph_loss(self, pairs: list[TapPair]) -> Tensor:
        require(
            self.initialized,
            "mhgd's attention network is untrained: call Distiller.initialize(teacher batches) before distilling",
        )
        self._prepare([int(p.teacher.shape[1]) for p in pairs], pairs[0].student.device)
        self.graphs.eval()
        losses = []
        for g, prev, cur in zip(self.graphs, pairs, pairs[1:]):
            with torch.no_grad():
                log_t = torch.tanh(g.graph(prev.teacher, cur.teacher)).log_softmax(dim=-1)
            log_s = torch.tanh(g.graph(prev.student, cur.student)).log_softmax(dim=-1)
            losses.append((log_s.exp() * (log_s - log_t)).sum())
        return torch.stack(losses).sum()  # summed over heads x rows x tap pairs (the original's reduction)

    def _prepare(self, dims: list[int], device: torch.device) -> None:
        self.build(dims)
        if next(self.graphs.parameters()).device != device:
            self.graphs.to(device)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"dims": self.dims, "fit_steps": self.fit_steps, "untrained": self.untrained,
                "weights": dict(self.graphs.state_dict())}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        keys = {"dims", "fit_steps", "weights"}  # "untrained" too since role-kd's setting became selectable
        require(set(state) in (keys, keys | {"untrained"}), f"mhgd checkpoint state has keys {sorted(state)}")
        if state["dims"] is not None:
            self.build(list(state["dims"]))
            self.graphs.load_state_dict(state["weights"])
        self.fit_steps = int(state["fit_steps"])
        self.untrained = bool(state.get("untrained", False))
