import json

import pytest
import torch
from torch import nn

from rolekd.augment.baseline import BaselineAugmenter
from rolekd.config import TrainConfig
from rolekd.data import ImageSet, Normalizer
from rolekd.models import build_model
from rolekd.training import (
    CheckpointError, CrossEntropy, NonFiniteLossError, Objective, StepOutput, Trainer, fit, load_checkpoint, lr_factor,
)


def tiny_data(n=64, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 4, (n,), generator=g)
    return ImageSet(x, y)


NORM = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def make_trainer(epochs=4, objective=None, augment=True, seed=0, **cfg):
    torch.manual_seed(seed)
    model = build_model("cnn", 4, width=8)
    data = tiny_data()
    tc = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, **cfg)
    augs = [BaselineAugmenter(2, True, 4)] if augment else []
    return Trainer(model, data, data, objective or CrossEntropy(), augs, tc, NORM, seed=seed)


@pytest.mark.slow
def test_tiny_model_overfits_64_images():
    t = make_trainer(epochs=40, augment=False, lr_schedule="constant", weight_decay=0.0)
    r = fit(t, None)
    assert r.history[0]["train_acc"] < 0.6
    assert r.last["val_acc"] == 1.0


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    full = make_trainer()
    fit(full, tmp_path / "a", meta={"model": "cnn"})

    killed = make_trainer()

    def die(kind, info):
        if kind == "step" and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(killed, tmp_path / "b", meta={"model": "cnn"}, callback=die)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 2

    resumed = make_trainer(seed=0)
    torch.manual_seed(123)  # the resumed process's own RNG state must not matter
    fit(resumed, tmp_path / "b", meta={"model": "cnn"}, resume=True)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    rows_a = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    drop = ("time_s", "epoch_time_s", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_a] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows_b]


def test_existing_run_folder_needs_resume(tmp_path):
    fit(make_trainer(epochs=1), tmp_path)
    with pytest.raises(CheckpointError, match="--resume"):
        fit(make_trainer(epochs=1), tmp_path)


class ExplodesAtEpoch(Objective):
    def __init__(self, epoch):
        super().__init__()
        self.at = epoch
        self.ce = CrossEntropy()

    def forward(self, model, batch, ctx):
        out = self.ce(model, batch, ctx)
        if ctx.epoch >= self.at:
            out.losses["ce"] = out.losses["ce"] * float("nan")
        return out


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path):
    t = make_trainer(epochs=4, objective=ExplodesAtEpoch(2))
    with pytest.raises(NonFiniteLossError) as exc:
        fit(t, tmp_path)
    msg = str(exc.value)
    assert "'ce'" in msg and "epoch 3" in msg and "last.pt" in msg and "\n" not in msg
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_checkpoints_are_plain_and_load_weights_only(tmp_path):
    fit(make_trainer(epochs=2), tmp_path, meta={"model": "cnn", "num_classes": 4})
    for name in ("last.pt", "best.pt"):
        state = torch.load(tmp_path / name, weights_only=True)
        assert state["format"] == "rolekd.checkpoint" and state["meta"]["model"] == "cnn"
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_checkpoint_is_one_line(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="x.pt: not a loadable checkpoint"):
        load_checkpoint(p)


def test_another_rolekd_file_is_named_not_loaded_as_a_checkpoint(tmp_path):
    p = tmp_path / "s.rkd"
    torch.save({"format": "rolekd-packed-v1", "meta": {}, "layers": {}, "state": {}}, p)
    with pytest.raises(CheckpointError, match="s.rkd: a 'rolekd-packed-v1' file, not a training checkpoint"):
        load_checkpoint(p)


def test_step_schedule_decays_at_fractions_and_cosine_reaches_zero():
    cfg = TrainConfig(epochs=10, lr_schedule="step", milestones=[0.3, 0.6, 0.9], gamma=0.1)
    factors = [lr_factor(cfg, e * 5, 5) for e in range(10)]
    assert factors == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001])
    cos = TrainConfig(epochs=10, lr_schedule="cosine")
    assert lr_factor(cos, 0, 5) == 1 and lr_factor(cos, 50, 5) == pytest.approx(0)


def test_eval_counts_every_image_in_eval_mode():
    t = make_trainer(epochs=1)
    data = tiny_data(n=37)
    res = t.evaluate(data, batch_size=10)
    logits = t.model.eval()(NORM(data.images))
    assert res["acc"] == pytest.approx((logits.argmax(1) == data.labels).float().mean().item())


@pytest.mark.parametrize("device, amp, channels_last, expected", [
    ("cpu", None, None, (False, True)),         # defaults: bf16 only with CUDA, channels_last on both
    ("cuda", None, None, (True, True)),
    ("cpu", True, False, (False, False)),       # bf16 autocast never on the CPU; the layout is honoured
    ("cuda", False, False, (False, False)),     # each switch can be turned off
])
def test_fast_path_defaults_follow_the_device(device, amp, channels_last, expected):
    from rolekd.config import TrainConfig
    from rolekd.training.fastpath import resolve_fast_path

    fast = resolve_fast_path(TrainConfig(amp=amp, channels_last=channels_last), torch.device(device))
    assert (fast.amp, fast.channels_last) == expected and not fast.compile
    x = torch.zeros(2, 3, 4, 4)
    assert fast.layout(x).is_contiguous(memory_format=torch.channels_last) == expected[1]


def test_channels_last_training_matches_the_default_layout():
    """The layout switch changes memory format only: same seed, same losses (CPU, float32)."""

    losses = [make_trainer(epochs=1, channels_last=cl).train_epoch()["train_loss"] for cl in (False, True)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_eval_every_evaluates_every_nth_and_the_last_epoch_without_changing_training(tmp_path):
    every = make_trainer(epochs=5)
    r = fit(every, tmp_path / "a", eval_every=2)
    assert [m["epoch"] for m in r.history if "val_acc" in m] == [2, 4, 5]
    always = make_trainer(epochs=5)
    ref = fit(always, None)
    # evaluation never touches the weights or the RNG of training: the same network and the same final accuracy
    for a, b in zip(every.model.state_dict().values(), always.model.state_dict().values()):
        assert torch.equal(a, b)
    assert r.last["val_acc"] == ref.last["val_acc"]
    # the best epoch is an evaluated one, never an unevaluated epoch's train accuracy
    assert r.best_epoch in (2, 4, 5)
    assert r.best_acc == max(m["val_acc"] for m in r.history if "val_acc" in m)
