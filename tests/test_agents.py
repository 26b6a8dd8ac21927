"""The agents: backward-pass samples and HARD's learned spatial transformations.

Small networks on 16x16 images throughout; the models are used directly (no KD objective), so these
tests depend on the agents, the augment interface, the models and quantisation only.
"""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from rolekd.agents import (
    BackwardPassAgent, HardAgent, SpatialAugmentor, agent_preview, build_agents, restore_from_checkpoint,
)
from rolekd.agents.backward import input_bounds, kl_per_sample
from rolekd.augment.base import AugmentContext, Batch
from rolekd.config import BackwardAgentConfig, HardAgentConfig, TrainConfig, config_from_dict
from rolekd.data import ImageSet, Normalizer, load_digits_dataset
from rolekd.models import build_model
from rolekd.quant import quantize_model
from rolekd.training import Objective, StepOutput, Trainer, fit, hard_label_ce

SIZE = 16
NORM = Normalizer((0.3, 0.3, 0.3), (0.35, 0.35, 0.35))


def nets(seed=0):
    torch.manual_seed(seed)
    teacher = build_model("cnn", 10, width=8)
    student = build_model("cnn", 10, width=4)  # BatchNorm in both: the side-effect test needs buffers
    return teacher, student


def ctx_for(teacher, student, seed=0, normalize=NORM):
    gen = torch.Generator().manual_seed(seed)
    return AugmentContext(0, 1, gen, models={"teacher": teacher, "student": student}, normalize=normalize)


def pixel_batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return Batch(images, torch.randint(0, 10, (n,), generator=g))


def input_batch(n=32, seed=0):
    b = pixel_batch(n, seed)
    return b.with_images(NORM(b.images))


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset(SIZE), Normalizer((0.0,) * 3, (1.0,) * 3)


@pytest.fixture(scope="module")
def trained(digits):
    """A CNN teacher trained on centred digits and an MLP student distilled from it (KL at T=4 + CE):
    they agree on centred images, which is where HARD has to find the disagreement."""
    ds, norm = digits
    torch.manual_seed(0)
    teacher = build_model("cnn", 10, width=8)
    student = build_model("mlp", 10, image_size=SIZE, hidden=64)
    x, y = norm(ds.train.images), ds.train.labels
    g = torch.Generator().manual_seed(0)

    def train(model, loss):
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(4):
            for idx in torch.randperm(len(y), generator=g).split(64):
                opt.zero_grad()
                loss(model(x[idx]), idx).backward()
                opt.step()
        return model.eval()

    train(teacher, lambda logits, idx: F.cross_entropy(logits, y[idx])).requires_grad_(False)
    def kd(logits, idx):
        return F.cross_entropy(logits, y[idx]) + kl_per_sample(teacher(x[idx]), logits, 4.0).mean()

    train(student, kd)
    return teacher, student


# ---- backward-pass agent ---------------------------------------------------------------------------


@pytest.mark.parametrize("divergence", ["kl", "mse"])
@pytest.mark.parametrize("step_type", ["raw", "sign", "l2"])
def test_one_ascent_step_raises_the_divergence(divergence, step_type):
    teacher, student = nets()
    teacher.eval(), student.eval()
    step = {"raw": 50.0, "sign": 0.02, "l2": 0.5}[step_type]  # raw: random nets have tiny input gradients
    agent = BackwardPassAgent(BackwardAgentConfig(steps=1, step_size=step, step_type=step_type, divergence=divergence))
    x = input_batch().images
    lo, hi = input_bounds(ctx_for(teacher, student), 3, x.device)
    with torch.no_grad():
        before = agent.divergence_of(x, teacher, student)
        after = agent.divergence_of(agent.ascend(x, teacher, student, lo, hi), teacher, student)
    assert after.sum() > before.sum() * 1.01
    assert (after > before).float().mean() > 0.9


def test_ascent_goes_through_a_quantised_students_straight_through_path():
    teacher, _ = nets()
    torch.manual_seed(1)
    student = build_model("mlp", 10, image_size=SIZE, hidden=64)
    quantize_model(student, 2, 2)  # rounding has zero gradient almost everywhere: only the STE passes one
    teacher.eval(), student.eval()
    agent = BackwardPassAgent(BackwardAgentConfig(steps=1, step_size=0.02, divergence="mse"))
    x = input_batch().images.requires_grad_(True)
    (g_student,) = torch.autograd.grad(student(x).pow(2).sum(), x)
    assert g_student.abs().sum() > 0
    lo, hi = input_bounds(ctx_for(teacher, student), 3, x.device)
    with torch.no_grad():
        x0 = x.detach()
        assert agent.divergence_of(agent.ascend(x0, teacher, student, lo, hi), teacher, student).sum() > \
            agent.divergence_of(x0, teacher, student).sum()


def test_sign_steps_respect_the_epsilon_ball_and_the_pixel_range():
    teacher, student = nets()
    eps = 0.3
    agent = BackwardPassAgent(BackwardAgentConfig(steps=5, step_size=0.2, step_type="sign", epsilon=eps))
    b = pixel_batch()
    b.images[:, :, :4] = 0  # pixels already at the ends of the range
    b.images[:, :, -4:] = 255
    x = NORM(b.images)
    ctx = ctx_for(teacher, student)
    out = agent.generate(x, ctx)
    lo, hi = input_bounds(ctx, 3, x.device)
    assert (out - x).abs().max() <= eps + 1e-5
    assert (out - x).abs().max() >= eps - 1e-5  # the projection was active
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()
    assert torch.isclose(out, lo.expand_as(out)).any() and torch.isclose(out, hi.expand_as(out)).any()
    pixels = NORM.denormalize(out)
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3


def test_backward_agent_appends_soft_labelled_samples():
    teacher, student = nets()
    b = input_batch(n=10)
    b.hard_mask = torch.tensor([True] * 9 + [False])
    out = BackwardPassAgent(BackwardAgentConfig(fraction=0.5))(b, ctx_for(teacher, student))
    assert len(out) == 15 and out.images.dtype == b.images.dtype
    assert out.hard_mask.tolist() == [True] * 9 + [False] * 6
    assert torch.equal(out.images[:10], b.images)


def test_agents_need_the_teacher_in_the_context():
    _, student = nets()
    ctx = AugmentContext(0, 1, torch.Generator(), models={"student": student}, normalize=NORM)
    with pytest.raises(ValueError, match="needs the teacher"):
        BackwardPassAgent()(input_batch(), ctx)


# ---- side effects ----------------------------------------------------------------------------------


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
    }


def assert_unchanged(model, snap):
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap["state"][k]), k
    for p, g in zip(model.parameters(), snap["grads"]):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert [m.training for m in model.modules()] == snap["modes"]


@pytest.mark.parametrize("agent", ["backward", "hard"])
def test_generation_leaves_both_models_untouched(agent):
    teacher, student = nets()
    student.train()
    student.stage2.eval()  # a mixed state must come back exactly
    teacher.train()
    for model in (teacher, student):  # existing gradients must survive, not be zeroed or accumulated into
        model(input_batch(4).images).sum().backward()
    snaps = [snapshot(teacher), snapshot(student)]
    if agent == "backward":
        a = BackwardPassAgent(BackwardAgentConfig(steps=3, step_type="raw"))
    else:
        a = HardAgent(SpatialAugmentor(HardAgentConfig(mode="affine")), HardAgentConfig(lr=0.1))
    before = [p.clone() for p in getattr(getattr(a, "augmentor", None), "parameters", lambda: [])()]
    out = a(input_batch(), ctx_for(teacher, student))
    assert len(out) == 48
    assert_unchanged(teacher, snaps[0])
    assert_unchanged(student, snaps[1])
    if agent == "hard":  # the student was in train mode: the augmentor did take its step
        assert any(not torch.equal(p, q) for p, q in zip(a.augmentor.parameters(), before))


# ---- the spatial augmentor -------------------------------------------------------------------------


def test_identity_initialised_augmentor_returns_the_input():
    x = input_batch().images
    aug = SpatialAugmentor(HardAgentConfig(mode="affine"))
    assert torch.allclose(aug(x), x, atol=1e-5)  # the distribution's centre: exactly the identity
    narrow = SpatialAugmentor(HardAgentConfig(mode="affine", init_std=1e-6))
    assert torch.allclose(narrow(x, torch.Generator().manual_seed(0)), x, atol=1e-3)
    theta = aug.theta(aug.sample_params(3, None))
    assert torch.equal(theta, torch.eye(2, 3).expand(3, 2, 3))


def blob(n, centre=(7.5, 7.5), sigma=1.5):
    ys, xs = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    img = torch.exp(-((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) / (2 * sigma**2))
    return img.expand(n, 1, SIZE, SIZE).clone()


def moments(img):
    ys, xs = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    w = img[:, 0]
    mass = w.sum((1, 2))
    my, mx = (w * ys).sum((1, 2)) / mass, (w * xs).sum((1, 2)) / mass
    cov = torch.stack([
        (w * (ys - my.view(-1, 1, 1)) ** 2).sum((1, 2)), (w * (xs - mx.view(-1, 1, 1)) ** 2).sum((1, 2)),
        (w * (ys - my.view(-1, 1, 1)) * (xs - mx.view(-1, 1, 1))).sum((1, 2)),
    ], 1) / mass.view(-1, 1)
    return mass, torch.stack([my, mx], 1), cov


def test_translation_mode_produces_pure_translations():
    aug = SpatialAugmentor(HardAgentConfig(mode="translation", max_translation=0.2, init_std=1.0))
    params = aug.sample_params(16, torch.Generator().manual_seed(0))
    theta = aug.theta(params)
    assert torch.equal(theta[:, :, :2], torch.eye(2).expand(16, 2, 2))
    assert params.abs().max() <= 0.4 and params.abs().max() > 0.1  # bounded by 2 * 0.2 grid units, not tiny
    img = blob(16)
    out = aug(img, torch.Generator().manual_seed(0))
    mass0, c0, cov0 = moments(img)
    mass, c, cov = moments(out)
    # content moves by -t (grid units: half a side each), keeps its mass, shape and orientation
    expected = c0 - params.flip(1) * SIZE / 2
    assert torch.allclose(c, expected, atol=0.05)
    assert torch.allclose(mass, mass0, rtol=0.01)
    # bilinear resampling widens a blob slightly, never skews it
    assert torch.allclose(cov[:, 2], cov0[:, 2], atol=0.02)
    assert torch.allclose(cov[:, :2], cov0[:, :2], atol=0.3)


def test_affine_mode_stays_within_its_bounds():
    aug = SpatialAugmentor(HardAgentConfig(mode="affine", max_translation=0.1, max_rotation=20, max_scale=0.1,
                                           max_shear=0.2, init_std=3.0))
    p = aug.sample_params(256, torch.Generator().manual_seed(0))
    bounds = torch.tensor([0.2, 0.2, math.radians(20), 0.1, 0.2, 0.2])
    assert (p.abs() <= bounds).all() and (p.abs().amax(0) > 0.9 * bounds).all()


# ---- the HARD agent -------------------------------------------------------------------------------


def mean_disagreement(agent, teacher, student, x, seed=123):
    with torch.no_grad():
        return agent.losses(x, teacher, student, torch.Generator().manual_seed(seed))["disagreement"].item()


@pytest.mark.slow
def test_hard_updates_raise_the_disagreement_on_held_out_batches(trained, digits):
    teacher, student = trained
    ds, norm = digits
    agent = HardAgent(SpatialAugmentor(HardAgentConfig(mode="translation", max_translation=0.25)),
                      HardAgentConfig(consistency=0.0, lr=0.05))
    held_out = norm(ds.test.images[:200])
    before = mean_disagreement(agent, teacher, student, held_out)
    x, g = norm(ds.train.images), torch.Generator().manual_seed(0)
    for idx in torch.randperm(len(x), generator=g)[: 30 * 32].split(32):
        agent.update(x[idx], teacher, student, g)
    after = mean_disagreement(agent, teacher, student, held_out)
    assert after > 2 * before, (before, after)


@pytest.mark.slow
def test_huge_consistency_keeps_the_teachers_top1(trained, digits):
    teacher, student = trained
    ds, norm = digits
    x = norm(ds.test.images[:128])

    def fresh(consistency=1.0):
        augmentor = SpatialAugmentor(HardAgentConfig(mode="affine", max_translation=0.3, max_rotation=60, init_std=0.5))
        return HardAgent(augmentor, HardAgentConfig(consistency=consistency, lr=0.2))

    with torch.no_grad():
        probs = F.softmax(teacher(x), 1)
    top2 = probs.topk(2, 1).values
    clear = top2[:, 0] - top2[:, 1] > 0.2  # not borderline: a sub-pixel change cannot flip these

    def agreement(agent, subset=slice(None)):
        with torch.no_grad():
            aug = agent.augmentor(x, torch.Generator().manual_seed(7))
            return (teacher(aug).argmax(1) == probs.argmax(1))[subset].float().mean().item()

    def trained_agent(consistency):
        agent = fresh(consistency)
        train, g = norm(ds.train.images), torch.Generator().manual_seed(0)
        for idx in torch.randperm(len(train), generator=g).split(32)[:-1]:  # one pass, 44 updates
            agent.update(train[idx], teacher, student, g)
        return agent

    assert agreement(fresh()) < 0.8  # the initial transformations do change the teacher's mind
    assert agreement(trained_agent(0.0)) < 0.8  # and without the term they keep doing so
    kept = trained_agent(1e4)
    assert clear.float().mean() > 0.9
    assert agreement(kept, clear) == 1.0 and agreement(kept) >= 0.98


@pytest.mark.parametrize("kind", ["backward", "hard"])
def test_a_seed_reproduces_the_generated_batch(kind):
    def run(seed):
        teacher, student = nets()
        student.train()
        agent = (BackwardPassAgent(BackwardAgentConfig(steps=2)) if kind == "backward"
                 else HardAgent(SpatialAugmentor(HardAgentConfig(mode="affine")), HardAgentConfig(lr=0.1)))
        ctx = ctx_for(teacher, student, seed)
        return [agent(input_batch(), ctx) for _ in range(2)]

    a, b, c = run(0), run(0), run(1)
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
    assert not torch.equal(a[1].images, c[1].images)


def test_hard_state_round_trips_through_state_dict():
    teacher, student = nets()
    student.train()
    agent = HardAgent(SpatialAugmentor(HardAgentConfig(mode="affine")), HardAgentConfig(lr=0.1, update_every=2))
    ctx = ctx_for(teacher, student)
    for _ in range(3):
        agent(input_batch(), ctx)
    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    buf.seek(0)
    restored = HardAgent(SpatialAugmentor(HardAgentConfig(mode="affine")), HardAgentConfig(lr=0.1, update_every=2))
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert restored.calls == 3
    for p, q in zip(agent.augmentor.parameters(), restored.augmentor.parameters()):
        assert torch.equal(p, q)
    # the same next steps: the optimiser's moments came along
    outs = [a(input_batch(seed=5), ctx_for(teacher, student, seed=9)) for a in (agent, restored)]
    assert torch.equal(outs[0].images, outs[1].images)
    for p, q in zip(agent.augmentor.parameters(), restored.augmentor.parameters()):
        assert torch.equal(p, q)


def test_update_every_sets_the_augmentor_to_student_ratio():
    teacher, student = nets()
    student.train()
    agent = HardAgent(SpatialAugmentor(HardAgentConfig(mode="translation")), HardAgentConfig(lr=0.1, update_every=3))
    ctx = ctx_for(teacher, student)
    seen = []
    for _ in range(7):
        before = agent.augmentor.mean.clone()
        agent(input_batch(), ctx)
        seen.append(not torch.equal(before, agent.augmentor.mean))
    assert seen == [True, False, False, True, False, False, True]
    student.eval()  # not a training step (e.g. a preview): no update
    before = agent.augmentor.mean.clone()
    agent(input_batch(), ctx), agent(input_batch(), ctx)
    assert torch.equal(before, agent.augmentor.mean) and agent.calls == 7


# ---- config, training loop, preview --------------------------------------------------------------


def test_build_agents_from_config():
    cfg = config_from_dict({
        "student": {"agents": ["hard", "backward"]},
        "agents": {"backward": {"steps": 3, "step_type": "l2", "fraction": 0.25},
                   "hard": {"mode": "translation", "max_translation": 0.125, "consistency": 2.0, "update_every": 4}},
    })
    hard, backward = build_agents(cfg.student.agents, cfg)
    assert isinstance(hard, HardAgent) and isinstance(backward, BackwardPassAgent)
    assert (backward.steps, backward.step_type, backward.fraction) == (3, "l2", 0.25)
    assert hard.augmentor.mode == "translation" and hard.consistency == 2.0 and hard.update_every == 4
    assert torch.allclose(hard.augmentor.bounds, torch.tensor([0.25, 0.25]))
    assert build_agents([], cfg) == []
    bad = config_from_dict({"agents": {"hard": {"augmentor": "vae"}}})
    with pytest.raises(ValueError, match="unknown augmentor 'vae'"):
        build_agents(["hard"], bad)


class SoftAndHard(Objective):
    """KD over every sample, CE over hard-labelled ones: what the distillers do, without them."""

    def __init__(self, teacher):
        super().__init__()
        object.__setattr__(self, "teacher", teacher)

    def forward(self, model, batch, ctx):
        logits = model(batch.images)
        with torch.no_grad():
            target = F.softmax(self.teacher(batch.images), 1)
        kd = F.kl_div(F.log_softmax(logits, 1), target, reduction="batchmean")
        return StepOutput({"ce": hard_label_ce(logits, batch), "kd": kd}, logits)


def make_trainer(teacher, seed=0):
    torch.manual_seed(seed)
    student = build_model("mlp", 4, image_size=SIZE, hidden=32)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    data = ImageSet(images, torch.randint(0, 4, (64,), generator=g))
    agent = HardAgent(SpatialAugmentor(HardAgentConfig(mode="affine")), HardAgentConfig(lr=0.05))
    cfg = TrainConfig(epochs=3, batch_size=16, optimizer="adam", lr=1e-3)
    return Trainer(student, data, data, SoftAndHard(teacher), [agent, BackwardPassAgent()], cfg, NORM, seed=seed,
                   context_models={"teacher": teacher}), agent


@pytest.mark.slow
def test_agents_in_the_training_loop_resume_exactly(tmp_path):
    torch.manual_seed(0)
    teacher = build_model("cnn", 4, width=4).eval().requires_grad_(False)
    full, full_agent = make_trainer(teacher)
    fit(full, tmp_path / "a")

    killed, _ = make_trainer(teacher)

    def die(kind, info):
        if kind == "epoch" and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(killed, tmp_path / "b", callback=die)
    resumed, resumed_agent = make_trainer(teacher)
    fit(resumed, tmp_path / "b", resume=True)
    assert resumed_agent.calls == full_agent.calls == 12
    for p, q in zip(full_agent.augmentor.parameters(), resumed_agent.augmentor.parameters()):
        assert torch.equal(p, q)
    # what augment-preview does with a student's last.pt: the learned augmentor comes back
    previewed = HardAgent(SpatialAugmentor(HardAgentConfig(mode="affine")))
    assert restore_from_checkpoint(previewed, torch.load(tmp_path / "b" / "last.pt", weights_only=True))
    assert torch.equal(previewed.augmentor.log_std, full_agent.augmentor.log_std)
    assert not restore_from_checkpoint(previewed, torch.load(tmp_path / "b" / "best.pt", weights_only=True))
    assert not restore_from_checkpoint(BackwardPassAgent(), {"augmenters": [{}]})
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["backward", "hard"])
def test_agent_preview_writes_a_png(tmp_path, kind):
    from PIL import Image

    teacher, student = nets()
    student.train()
    agent = (BackwardPassAgent() if kind == "backward"
             else HardAgent(SpatialAugmentor(HardAgentConfig(mode="affine", init_std=0.5))))
    calls = getattr(agent, "calls", 0)
    path = agent_preview(agent, pixel_batch(10), ctx_for(teacher, student), tmp_path / "p" / "preview.png",
                         classes=[f"c{i}" for i in range(10)])
    img = Image.open(path)
    assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 300
    assert student.training and getattr(agent, "calls", 0) == calls  # no augmentor step in a preview
