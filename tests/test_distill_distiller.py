"""The distiller around the methods: lambda, clipping, the frozen teacher, hooks, checks, config."""

from __future__ import annotations

import gc
import io

import pytest
import torch

from rolekd.augment.base import Batch
from rolekd.kd import LambdaSchedule, build_objective
from rolekd.kd.clip import clip_to_task, warmup
from rolekd.models import build_model
from rolekd.training.objective import CrossEntropy, StepContext, total_loss


def _models(student_classes: int = 10):
    torch.manual_seed(0)
    teacher = build_model("cnn", 10, width=8)
    with torch.no_grad():
        teacher(torch.randn(32, 3, 16, 16))
    return build_model("cnn", student_classes, width=8), teacher


def _batch(n: int = 16, hard_mask=None) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g), hard_mask)


def _build(method: str, student, teacher, **section):
    return build_objective({"method": method, **section}, teacher, student)


def _grads(objective, student, batch, ctx=StepContext(0, 10)) -> dict[str, list[torch.Tensor]]:
    """Task and KD gradients of the student's parameters, each taken on its own."""
    params = list(student.parameters())
    out = objective(student, batch, ctx)
    task = out.losses["ce"]
    kd = torch.stack([v for k, v in out.losses.items() if k.startswith("kd_")]).sum()
    task_grads = torch.autograd.grad(task, params, retain_graph=True)
    kd_grads = torch.autograd.grad(kd, params, allow_unused=True)  # feature KD never reaches the classifier
    return {"task": list(task_grads), "kd": [torch.zeros_like(p) if g is None else g for p, g in zip(params, kd_grads)]}


def test_lambda_decays_at_the_configured_fractions():
    paper = LambdaSchedule(0.4, decay=0.5, every=0.3)
    assert [paper.value(e, 200) for e in (0, 59, 60, 119, 120, 180, 199)] == [0.4, 0.4, 0.2, 0.2, 0.1, 0.05, 0.05]
    assert [paper.value(e, 10) for e in (0, 2, 3, 6, 9)] == [0.4, 0.4, 0.2, 0.1, 0.05]
    student, teacher = _models()
    objective = _build("soft", student, teacher, lam=1.0, lam_decay=0.5, lam_every=0.5)
    objective.on_epoch_start(5, 10)
    assert objective.lam == 0.5
    out = objective(student, _batch(), StepContext(5, 10))
    assert float(out.logs["lam"]) == 0.5
    for bad in ({"lam_decay": 0.0}, {"lam_decay": 1.5}, {"lam_every": 0.0}, {"lam": -1.0}):
        with pytest.raises(ValueError, match="distill lam"):
            _build("soft", student, teacher, **bad)


def test_lambda_reaches_the_gradient_with_and_without_clipping():
    student, teacher = _models()
    batch = _batch()
    for clip, lam in ((False, 1.0), (True, 1e-2)):  # with clipping: a lambda small enough not to bind
        base = _grads(_build("soft", student, teacher, lam=lam, clip_grad=clip), student, batch)
        objective = _build("soft", student, teacher, lam=2 * lam, clip_grad=clip)
        out = objective(student, batch, StepContext(0, 10))
        student.zero_grad(set_to_none=True)
        objective.backward(out, list(student.parameters()))
        for p, g_task, g_kd in zip(student.parameters(), base["task"], base["kd"]):
            error = float((p.grad - g_task - 2 * g_kd).norm())
            assert error <= 1e-3 * float(2 * g_kd.norm()) + 1e-6 * float(g_task.norm())


def test_clipping_bounds_each_kd_gradient_by_the_task_gradient():
    assert warmup(0.0) == 0.5 and 0.95 < warmup(3.0) < 0.96 and warmup(20.0) == 1.0
    assert clip_to_task(None, torch.ones(3), 0.5).tolist() == [1.0, 1.0, 1.0]
    student, teacher = _models()
    batch, ctx = _batch(), StepContext(0, 10)
    objective = _build("kdsvd", student, teacher, lam=1e6)
    assert objective.clip_grad  # KD-SVD's default
    ref = _grads(objective, student, batch, ctx)
    out = objective(student, batch, ctx)
    student.zero_grad(set_to_none=True)
    objective.backward(out, list(student.parameters()))
    sigma, binding = warmup(ctx.progress), 0
    for p, g_task, g_kd in zip(student.parameters(), ref["task"], ref["kd"]):
        limit = float(g_task.norm()) * sigma
        assert float((p.grad - g_task).norm()) <= limit * (1 + 1e-4) + 1e-9
        binding += float(g_kd.norm()) > limit
    assert binding > 0  # the bound was actually exercised


@pytest.mark.parametrize("method", ["soft", "iikd", "dml_frozen"])
def test_frozen_teacher_is_unchanged_by_training_and_kept_out_of_state(method):
    student, teacher = _models()
    options = {"freeze_peer": True} if method == "dml_frozen" else {}
    objective = _build(method.removesuffix("_frozen"), student, teacher, options=options)
    objective.initialize([_batch().images])
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    params = list(student.parameters()) + list(objective.extra_parameters())
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for step in range(3):
        teacher.train()  # a stray mode switch must not let BatchNorm statistics move
        out = objective(student, _batch(), StepContext(0, 10, step, 3))
        optimizer.zero_grad()
        objective.backward(out, params)
        optimizer.step()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in objective.extra_parameters()}
    assert not teacher_ids & {id(p) for p in objective.parameters()}
    assert not any(k.startswith(("peer", "_teacher")) for k in objective.state_dict())
    assert "peer" not in objective.checkpoint_state()


def _state_hash(model: torch.nn.Module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_dml_trains_a_copy_of_the_teacher_in_the_same_step():
    student, teacher = _models()
    handed_in = _state_hash(teacher)
    objective = _build("dml", student, teacher)
    peer = objective.teacher
    assert peer is not teacher  # the teacher other rows receive is shared: DML trains its own copy
    params = list(student.parameters()) + list(objective.extra_parameters())
    assert {id(p) for p in peer.parameters()} <= {id(p) for p in params}
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in params}
    before = [p.detach().clone() for p in peer.parameters()]
    out = objective(student, _batch(), StepContext(0, 10))
    assert {"ce", "peer_ce", "kd_dml", "kd_dml_peer"} == set(out.losses)
    optimizer = torch.optim.SGD(params, lr=0.1)
    optimizer.zero_grad()
    objective.backward(out, params)
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, peer.parameters()))
    assert _state_hash(teacher) == handed_in
    assert "peer" in objective.checkpoint_state()


def test_hooks_are_removed_on_close_and_when_discarded():
    student, teacher = _models()

    def hooks() -> int:
        return sum(len(m._forward_hooks) for net in (student, teacher) for m in net.modules())

    objective = _build("iikd", student, teacher)
    assert hooks() == 6
    objective.close()
    assert hooks() == 0
    objective = _build("kdsvd", student, teacher)
    objective(student, _batch(), StepContext(0, 10))
    assert hooks() == 6
    del objective
    gc.collect()
    assert hooks() == 0


def test_check_rejects_mismatched_networks_in_one_line():
    student, teacher = _models(student_classes=100)
    with pytest.raises(ValueError, match="classes") as err:
        _build("soft", student, teacher).check(_batch())
    assert "\n" not in str(err.value)
    wide = build_model("cnn", 10, width=16)
    with pytest.raises(ValueError, match="channel") as err:
        _build("kdsvd", wide, teacher).check(_batch())
    assert "\n" not in str(err.value)
    deep = build_model("resnet8", 10, width=8)
    with pytest.raises(ValueError, match="taps"):
        _build("mhgd", deep, teacher).check(_batch())
    _build("rkd", deep, teacher).check(_batch())  # RKD relates samples: any embedding width


def test_soft_labelled_samples_get_kd_but_no_cross_entropy():
    student, teacher = _models()
    mask = torch.arange(16) % 2 == 0
    batch = _batch(hard_mask=mask)
    for method in ("soft", "dkd"):
        out = _build(method, student, teacher)(student, batch, StepContext(0, 10))
        kd = torch.stack([v for k, v in out.losses.items() if k.startswith("kd_")]).sum()
        g_ce = torch.autograd.grad(out.losses["ce"], out.logits, retain_graph=True)[0]
        g_kd = torch.autograd.grad(kd, out.logits)[0]
        assert g_ce[~mask].abs().max() == 0 and g_ce[mask].abs().max() > 0
        assert (g_kd[~mask].abs().sum(dim=1) > 0).all()
    all_soft = _batch(hard_mask=torch.zeros(16, dtype=torch.bool))
    none_hard = _build("soft", student, teacher)(student, all_soft, StepContext(0, 10))
    assert float(none_hard.losses["ce"].detach()) == 0 and float(none_hard.losses["kd_soft"].detach()) > 0


def test_checkpoint_state_round_trips_through_torch_save():
    student, teacher = _models()
    objective = _build("iikd", student, teacher)
    objective.initialize([_batch().images] * 3)
    buffer = io.BytesIO()
    torch.save(objective.checkpoint_state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = _build("iikd", student, teacher)
    restored.load_checkpoint_state(state)
    assert not restored.needs_initialization
    batch = _batch()
    student.eval()
    a = objective(student, batch, StepContext(0, 10)).losses
    b = restored(student, batch, StepContext(0, 10)).losses
    assert all(torch.allclose(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="checkpoint"):
        _build("soft", student, teacher).load_checkpoint_state(state)


# The paper's setting per method (§5.2 and the methods' papers): lambda, KD-gradient clipping, temperature.
METHOD_DEFAULTS = {
    "soft": (1.0, False, 4.0),  # Hinton et al.: T = 4 with the T^2 factor (role-kd: T = 3, no T^2)
    "dml": (1.0, False, 1.0),  # Zhang et al.: plain KL at T = 1
    "dkd": (1.0, False, 4.0),
    "rkd": (1.0, False, None),
    "mhgd": (1.0, True, None),  # the authors' code clips the KD gradient as KD-SVD does
    "kdsvd": (1.0, True, None),
    "iikd": (0.4, True, None),  # §5.2: lambda 0.4 with KD-SVD's clipping
}


@pytest.mark.parametrize("method", sorted(METHOD_DEFAULTS))
def test_unset_section_values_leave_each_method_its_own_default(method):
    from rolekd.config import DistillConfig
    from rolekd.kd import resolve_settings

    settings = resolve_settings(DistillConfig(method=method))
    assert (settings.lam, settings.clip_grad, settings.temperature) == METHOD_DEFAULTS[method]
    # a section value applies only where the user set it ...
    pinned = resolve_settings(DistillConfig(method=method, lam=0.3, temperature=2.0))
    assert pinned.lam == 0.3 and pinned.temperature == (None if METHOD_DEFAULTS[method][2] is None else 2.0)
    # ... and per_method wins for its own method only
    other = "soft" if method != "soft" else "dml"
    section = DistillConfig(method=method, lam=0.3, per_method={method: {"lam": 0.7, "clip_grad": True},
                                                              other: {"lam": 0.1}})
    assert (resolve_settings(section).lam, resolve_settings(section).clip_grad) == (0.7, True)


def test_per_method_settings_are_validated_in_one_line():
    from rolekd.config import DistillConfig
    from rolekd.kd import resolve_settings

    with pytest.raises(ValueError, match="per_method: unknown method.*telepathy") as err:
        resolve_settings(DistillConfig(method="soft", per_method={"telepathy": {"lam": 1.0}}))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown option.*freeze_peer"):
        build_objective(DistillConfig(method="soft", per_method={"soft": {"options": {"freeze_peer": True}}}),
                        *reversed(_models()))


def test_build_objective_validates_its_config_in_one_line():
    student, teacher = _models()
    assert isinstance(build_objective({"method": "none"}, None, student), CrossEntropy)
    cases = [
        ({"method": "hinton"}, "unknown distill method 'hinton'; expected one of: none, dkd, dml, iikd"),
        ({"method": "rkd", "options": {"dist_weight": 1}}, "accepted: embedding, distance_weight, angle_weight"),
        ({"method": "iikd", "options": {"heads": 2}}, "accepted: rkd_embedding, .*mhgd_heads"),
        ({"method": "rkd", "options": {"embedding": "penultimate"}}, "embedding must be one of"),
        ({"method": "soft", "temperature": 2, "options": {"temperature": 3}}, "set twice"),
        ({"method": "none", "options": {"temperature": 3}}, "takes no options"),
        ({"method": "soft", "lambda": 0.4}, "unknown distill setting"),
        ({"lam": 0.4}, "needs a method"),
    ]
    for section, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            build_objective(section, teacher, student)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="needs a teacher"):
        build_objective({"method": "soft"}, None, student)
    soft = _build("soft", student, teacher, temperature=2)
    assert soft.method.temperature == 2 and soft.lam == 1.0 and not soft.clip_grad
    iikd = _build("iikd", student, teacher, temperature=4, options={"rkd_embedding": "logits", "mhgd_heads": 2})
    assert iikd.lam == 0.4 and iikd.clip_grad and iikd.method.rkd.embedding == "logits"


def test_accepts_the_config_section_and_checks_uint8_pixels():
    from rolekd.config import DistillConfig
    from rolekd.data.tensors import Normalizer

    student, teacher = _models()
    section = DistillConfig(method="iikd", options={"mhgd_heads": 2})
    objective = build_objective(section.model_dump(exclude={"init_epochs"}), teacher, student)  # as the pipeline
    assert (section.lam, section.clip_grad) == (None, None)  # unset: the method's own setting applies
    assert (objective.lam, objective.clip_grad, objective.method.mhgd.num_heads) == (0.4, True, 2)
    soft = build_objective(DistillConfig(method="soft").model_dump(exclude={"init_epochs"}), teacher, student)
    assert (soft.lam, soft.clip_grad) == (1.0, False)
    pinned = DistillConfig(method="soft", lam=0.3, clip_grad=True).model_dump(exclude={"init_epochs"})
    assert (build_objective(pinned, teacher, student).lam, build_objective(pinned, teacher, student).clip_grad) == (0.3, True)
    pixels = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    normalize = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    objective.check(pixels, normalize)
    assert len(objective.initialize([pixels] * 2, normalize)) == 2 and not objective.needs_initialization


def test_iikd_loss_is_task_plus_lambda_times_its_terms():
    student, teacher = _models()
    batch, ctx = _batch(), StepContext(0, 10)
    unit = _build("iikd", student, teacher, lam=1.0)
    unit.initialize([batch.images])
    paper = _build("iikd", student, teacher)  # lambda 0.4
    paper.load_checkpoint_state(unit.checkpoint_state())
    a, b = unit(student, batch, ctx), paper(student, batch, ctx)
    assert set(a.losses) == {"ce", "kd_rkd_distance", "kd_rkd_angle", "kd_mhgd", "kd_kdsvd"}
    kd = sum(v for k, v in a.losses.items() if k != "ce")
    assert torch.allclose(total_loss(b), b.losses["ce"] + 0.4 * kd, rtol=1e-5)


def test_a_registered_user_method_is_built_like_the_built_in_ones():
    from rolekd.kd import KDMethod, available_methods, register_method

    @register_method
    class LogitMSE(KDMethod):
        name = "logit_mse_test"

        def __init__(self, scale: float = 1.0) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, student, teacher, target):
            return {"mse": self.scale * (student.logits - teacher.logits).pow(2).mean()}

    assert "logit_mse_test" in available_methods()
    student, teacher = _models()
    objective = _build("logit_mse_test", student, teacher, options={"scale": 2.0}, lam=0.5)
    out = objective(student, _batch(), StepContext(0, 10))
    assert set(out.losses) == {"ce", "kd_mse"}
    with pytest.raises(ValueError, match="already registered"):
        register_method(type("Other", (KDMethod,), {"name": "logit_mse_test"}))
