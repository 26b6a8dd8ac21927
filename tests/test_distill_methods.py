"""KD methods: each loss's defining property, on tiny models and random tensors."""

from __future__ import annotations

import copy

import pytest
import torch

from rolekd.augment.base import Batch
from rolekd.kd import Outputs, available_methods, build_objective
from rolekd.kd.iikd import IIKD
from rolekd.kd.kdsvd import KDSVD
from rolekd.kd.mhgd import MHGD
from rolekd.kd.rkd import RKD, distance_potential
from rolekd.kd.soft import soft_kl
from rolekd.kd.svd import _TopEigh, align, top_right_singular_vectors
from rolekd.models import build_model
from rolekd.training.objective import StepContext

KD_METHODS = [m for m in available_methods() if m != "none"]


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    teacher = build_model("resnet8", 10, width=8)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        teacher(torch.randn(32, 3, 16, 16))
    return teacher


def _batch(n: int = 16) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g))


def _kd_total(objective, student, batch) -> float:
    out = objective(student, batch, StepContext(0, 10))
    return sum(float(v.detach()) for k, v in out.losses.items() if k.startswith("kd_"))


@pytest.mark.parametrize("method", KD_METHODS)
def test_copy_of_teacher_scores_zero_and_a_perturbed_one_does_not(method):
    teacher, batch = _teacher(), _batch()
    student = copy.deepcopy(teacher)
    objective = build_objective({"method": method}, teacher, student)
    if method != "dml":  # a DML peer runs in the student's mode; a frozen teacher in eval mode
        student.eval()
    objective.check(batch)
    objective.initialize([batch.images] * 2)
    assert abs(_kd_total(objective, student, batch)) < 1e-6
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1 * p.std().nan_to_num() * torch.randn_like(p))
    assert _kd_total(objective, student, batch) > 1e-5


def test_soft_kd_gradient_scale_does_not_shrink_with_temperature():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(64, 10, generator=g), torch.randn(64, 10, generator=g)

    def grad_norm(temperature: float) -> float:
        s = student.clone().requires_grad_(True)
        soft_kl(s, teacher, temperature).backward()
        return float(s.grad.norm())

    temps = [2.0, 4.0, 8.0]
    norms = [grad_norm(t) for t in temps]
    assert max(norms) / min(norms) < 1.5
    # the same check without the T^2 factor: the gradient would fall ~16x from T=2 to T=8
    bare = [n / t**2 for n, t in zip(norms, temps)]
    assert max(bare) / min(bare) > 8


def test_rkd_is_invariant_to_scaling_either_embedding():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(12, 10, generator=g), torch.randn(12, 10, generator=g)
    rkd = RKD(embedding="logits")
    target = torch.zeros(12, dtype=torch.long)
    base = rkd(Outputs(s), Outputs(t), target)
    scaled = rkd(Outputs(3.0 * s), Outputs(0.25 * t), target)
    assert set(base) == {"rkd_distance", "rkd_angle"}
    for name in base:
        assert torch.allclose(base[name], scaled[name], rtol=1e-4, atol=1e-6), name
    assert float(base["rkd_distance"]) > 0


def test_top_eigh_gradient_matches_autograd_and_stays_finite_on_dead_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 20, dtype=torch.float64, generator=g)
    gram = x @ x.mT
    probe = torch.randn(3, 6, 2, dtype=torch.float64, generator=g)

    def loss(vals, vecs):  # sign-invariant in the eigenvectors
        return ((vecs * probe).sum(1) ** 2).sum() + vals.sum()

    a = gram.clone().requires_grad_(True)
    loss(*_TopEigh.apply(a, 2)).backward()
    b = gram.clone().requires_grad_(True)
    vals, vecs = torch.linalg.eigh(b)
    loss(vals[..., -2:].flip(-1), vecs[..., -2:].flip(-1)).backward()
    assert torch.allclose((a.grad + a.grad.mT) / 2, (b.grad + b.grad.mT) / 2, atol=1e-8)

    dead = torch.relu(torch.randn(4, 16, 3, 3, generator=g))
    dead[:, 5:] = 0  # dead ReLU channels: exactly repeated zero eigenvalues
    dead.requires_grad_(True)
    v, _ = top_right_singular_vectors(dead, 4)
    (v[..., 0] * torch.randn(4, 16, generator=g)).sum().backward()
    assert torch.isfinite(dead.grad).all()


def test_kdsvd_ignores_the_sign_of_every_singular_vector():
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 8, 8, 8), (6, 16, 4, 4), (6, 32, 2, 2)]
    student = [torch.relu(torch.randn(s, generator=g)) for s in shapes]
    teacher = [torch.relu(torch.randn(s, generator=g)) for s in shapes]
    raw_s = [top_right_singular_vectors(f, 4)[0] for f in student]
    raw_t = [top_right_singular_vectors(f, 1)[0] for f in teacher]

    def flip(v):
        return v * (torch.randint(0, 2, (v.shape[0], 1, v.shape[2]), generator=g) * 2 - 1)

    pairs = [align(s, t) for s, t in zip(raw_s, raw_t)]
    flipped = [align(flip(s), flip(t)) for s, t in zip(raw_s, raw_t)]
    for p, q in zip(pairs, flipped):
        assert torch.allclose(p.student, q.student) and torch.allclose(p.teacher, q.teacher)
    loss = KDSVD.relation_loss(pairs)
    assert float(loss) > 0 and torch.allclose(loss, KDSVD.relation_loss(flipped))


def test_mhgd_initialisation_lowers_its_own_loss_and_is_required():
    teacher = _teacher()
    student = build_model("resnet8", 10, width=8)
    objective = build_objective({"method": "mhgd"}, teacher, student)
    batch = _batch()
    with pytest.raises(ValueError, match="untrained"):
        objective(student, batch, StepContext(0, 10))
    assert objective.needs_initialization
    torch.manual_seed(0)
    batches = [_batch(16).images + 0.1 * torch.randn(16, 3, 16, 16) for _ in range(4)]
    losses = objective.initialize(batches * 6)
    assert len(losses) == 24 and not objective.needs_initialization
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first
    # the network is frozen for distillation: not trained by the student's optimiser
    assert list(objective.extra_parameters()) == []
    assert not any(p.requires_grad for p in objective.method.parameters())


def test_iikd_is_the_sum_of_rkd_mhgd_and_kdsvd():
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 8, 8, 8), (8, 16, 4, 4), (8, 32, 2, 2)]

    def outputs():
        return Outputs(torch.randn(8, 10, generator=g), [torch.relu(torch.randn(s, generator=g)) for s in shapes])

    student, teacher = outputs(), outputs()
    target = torch.zeros(8, dtype=torch.long)
    iikd = IIKD()
    defaults = (iikd.rkd.distance_weight, iikd.rkd.angle_weight, iikd.mhgd.num_heads)
    assert defaults == (RKD().distance_weight, RKD().angle_weight, 4)
    iikd.check(student, teacher)
    iikd.fit_step(teacher)
    terms = iikd(student, teacher, target)
    parts = {k: v for part in (iikd.rkd, iikd.mhgd, iikd.kdsvd) for k, v in part(student, teacher, target).items()}
    assert set(terms) == set(parts) == {"rkd_distance", "rkd_angle", "mhgd", "kdsvd"}
    for name in terms:
        assert torch.allclose(terms[name], parts[name], rtol=1e-5, atol=1e-7), name


def _duplicated(out: Outputs) -> Outputs:
    """The same samples twice: a batch of 2N made of N samples."""
    return Outputs(torch.cat([out.logits, out.logits]), [torch.cat([f, f]) for f in out.features])


def _feature_outputs(n: int, g: torch.Generator) -> Outputs:
    shapes = [(n, 8, 8, 8), (n, 16, 4, 4), (n, 32, 2, 2)]
    return Outputs(torch.randn(n, 10, generator=g), [torch.relu(torch.randn(s, generator=g)) for s in shapes])


def test_kdsvd_sums_over_the_batch_as_the_original():
    # role-kd: reduce_sum((S_rbf - T_rbf)^2) over batch x channel pairs, no division by the batch size
    g = torch.Generator().manual_seed(0)
    student, teacher = _feature_outputs(6, g), _feature_outputs(6, g)
    target = torch.zeros(6, dtype=torch.long)
    once = KDSVD()(student, teacher, target)["kdsvd"]
    twice = KDSVD()(_duplicated(student), _duplicated(teacher), torch.cat([target, target]))["kdsvd"]
    assert float(once) > 0
    assert torch.allclose(twice, 2 * once, rtol=1e-5), (float(twice), float(once))


def test_mhgd_sums_over_the_batch_as_the_original():
    # role-kd's kld_loss: reduce_sum over heads x B x B. A duplicated column halves each softmax entry
    # of its row and leaves the row's KL unchanged; a duplicated row adds its KL once more.
    g = torch.Generator().manual_seed(0)
    student, teacher = _feature_outputs(6, g), _feature_outputs(6, g)
    target = torch.zeros(6, dtype=torch.long)
    torch.manual_seed(0)  # the attention network's initialisation and fit_step's head dropping
    mhgd = MHGD()
    mhgd.check(student, teacher)
    mhgd.fit_step(teacher)
    once = mhgd(student, teacher, target)["mhgd"]
    assert not mhgd.graphs.training  # BatchNorm in inference mode: a graph row depends on its sample only
    twice = mhgd(_duplicated(student), _duplicated(teacher), torch.cat([target, target]))["mhgd"]
    assert float(once) > 0
    # (float32 log-softmax over 2N columns instead of N rounds differently: ~1e-5 relative)
    assert torch.allclose(twice, 2 * once, rtol=1e-4), (float(twice), float(once))


def test_iikd_sums_its_svd_terms_and_averages_rkd_over_the_batch():
    g = torch.Generator().manual_seed(0)
    n = 6
    teacher, other = _feature_outputs(n, g), _feature_outputs(n, g)
    # the last tap (RKD's pooled embedding) close to the teacher's, so that every RKD difference is in
    # the Huber loss's quadratic part; the others independent, so that MHGD's KL is not a tiny
    # difference of float32 log-probabilities
    last = teacher.features[-1] + 0.05 * torch.randn(teacher.features[-1].shape, generator=g)
    student = Outputs(other.logits, [*other.features[:-1], last])
    s, t = (x.features[-1].mean(dim=(2, 3)) for x in (student, teacher))
    assert (distance_potential(s) - distance_potential(t)).abs().max() < 1
    target = torch.zeros(n, dtype=torch.long)
    torch.manual_seed(0)
    iikd = IIKD()
    iikd.check(student, teacher)
    iikd.fit_step(teacher)
    once = iikd(student, teacher, target)
    twice = iikd(_duplicated(student), _duplicated(teacher), torch.cat([target, target]))
    for name in ("mhgd", "kdsvd"):
        assert torch.allclose(twice[name], 2 * once[name], rtol=1e-4), name
    # RKD is a Huber *mean* (role-kd's too): the angle term is unchanged by duplication. The distance
    # potential divides by the mean distance over distinct pairs, which the duplicates' zero distances
    # lower by 2(N-1)/(2N-1); in the quadratic part of the Huber loss that scales the mean by its
    # inverse square, and by nothing like the 2x of a sum.
    assert torch.allclose(twice["rkd_angle"], once["rkd_angle"], rtol=1e-5)
    normaliser = ((2 * n - 1) / (2 * (n - 1))) ** 2
    assert torch.allclose(twice["rkd_distance"], normaliser * once["rkd_distance"], rtol=1e-3)


def test_iikd_options_are_its_parts_own_under_their_prefix_with_the_parts_defaults():
    from rolekd.kd.mhgd import MHGD
    from rolekd.kd.rkd import RKD

    expected = {**{f"rkd_{k}": v for k, v in RKD.option_defaults().items()},
                **{f"mhgd_{k}": v for k, v in MHGD.option_defaults().items()}}
    assert IIKD.option_defaults() == expected and "rkd_distance_weight" in expected
    iikd = IIKD(rkd_angle_weight=7.0, mhgd_heads=2)
    assert iikd.rkd.angle_weight == 7.0 and iikd.mhgd.num_heads == 2
    assert iikd.rkd.distance_weight == RKD().distance_weight and iikd.mhgd.fit_lr == MHGD().fit_lr
    with pytest.raises(ValueError, match="unknown option.*rkd_angel_weight.*accepted: rkd_embedding"):
        IIKD(rkd_angel_weight=1.0)


def test_the_keys_a_distill_mapping_takes_are_the_config_sections_fields():
    """kd/registry.py derives them from config.py's classes: a field added there is accepted here."""
    from rolekd.config import DistillConfig, MethodSettings
    from rolekd.kd import resolve_settings

    every_key = DistillConfig(method="soft", per_method={"soft": {"lam": 0.5}}).model_dump()
    assert set(every_key) == set(DistillConfig.model_fields) and resolve_settings(every_key).lam == 0.5
    with pytest.raises(ValueError, match="accepted: " + ", ".join(DistillConfig.model_fields) + "$"):
        resolve_settings({"method": "soft", "lamda": 0.5})
    with pytest.raises(ValueError, match="accepted: " + ", ".join(MethodSettings.model_fields) + "$"):
        resolve_settings({"method": "soft", "per_method": {"soft": {"lam_decay": 0.5}}})
