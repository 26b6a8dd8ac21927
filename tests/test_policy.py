"""PBA policies: encoding, validation, and the vectorised per-sample application."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from rolekd.agents.policy import PolicyAugmenter
from rolekd.augment import (
    OP_NAMES,
    OPS,
    PBA_ORDER,
    AugmentContext,
    Augmenter,
    Batch,
    Policy,
    PolicyEntry,
    PolicyError,
    Schedule,
    apply_plan,
    apply_policy,
    load_policy,
    sample_plan,
    save_policy,
)
import numpy as np
from PIL import Image

from rolekd.augment.pil_reference import FILL, pil_op
from test_augment_ops import make_images

# Chi-square critical values at p = 0.001 (df = 2 and df = 5): a correct sampler fails 1 in 1000.
CHI2_CRIT = {2: 13.82, 5: 20.52}

# A line of PBA's shipped schedule (rcifar10_16_wrn.txt, the policy used from epoch 195): 60 ints.
PBA_LINE = [
    0, 6, 6, 6, 10, 0, 3, 4, 5, 8, 0, 9, 7, 3, 0, 6, 0, 2, 10, 5, 10, 2, 10, 6, 10, 9, 0, 8, 10, 7,
    2, 7, 8, 6, 6, 7, 10, 3, 9, 4, 0, 8, 0, 1, 5, 0, 8, 7, 3, 3, 2, 3, 0, 8, 3, 3, 5, 2, 7, 6,
]  # fmt: skip


def chi_square(observed: list[int], probs: list[float]) -> float:
    total = sum(observed)
    return sum((o - total * p) ** 2 / (total * p) for o, p in zip(observed, probs))


# ------------------------------------------------------------------ encoding and validation


def test_pba_order_is_py2_order_and_covers_all_ops() -> None:
    assert PBA_ORDER[:4] == ("Rotate", "TranslateX", "TranslateY", "Brightness")
    assert PBA_ORDER[-3:] == ("AutoContrast", "Cutout", "Contrast")
    assert sorted(PBA_ORDER) == sorted(OP_NAMES)


def test_decode_shipped_pba_policy() -> None:
    pol = Policy.from_pba_list(PBA_LINE)
    assert pol.to_pba_list() == PBA_LINE
    first = {e.op: (e.prob, e.mag) for e in pol.entries[:15]}
    # index 2k / 2k+1 of the first half = op PBA_ORDER[k]
    assert first["TranslateX"] == (6, 6)
    assert first["Equalize"] == (10, 6)
    assert first["AutoContrast"] == (10, 9)
    assert first["Contrast"] == (10, 7)
    assert pol.entries[15] == PolicyEntry("Rotate", 2, 7)  # start of the second half
    assert pol.prob_sum == pytest.approx(14.9)


def test_dict_round_trip_and_any_entry_order() -> None:
    pol = Policy.random(torch.Generator().manual_seed(0))
    items = pol.to_dicts()
    assert Policy.from_dicts(items) == pol
    assert all(set(d) == {"op", "prob", "mag"} and d["op"] in OP_NAMES for d in items)
    shuffled = items[15:] + items[:15]  # halves swapped: same policy up to which copy is "first"
    again = Policy.from_dicts(shuffled)
    assert sorted(again.to_pba_list()) == sorted(pol.to_pba_list())


def test_policy_file_round_trip(tmp_path) -> None:
    pol = Policy.random(torch.Generator().manual_seed(1))
    path = save_policy(pol, tmp_path / "p.json")
    assert load_policy(path) == pol
    (tmp_path / "pba.json").write_text(str(PBA_LINE))
    assert load_policy(tmp_path / "pba.json") == Policy.from_pba_list(PBA_LINE)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[7].update(prob=11), "policy entry 7 (Posterize): probability 11 is outside 0..10"),
        (lambda d: d[3].update(mag=10), "policy entry 3 (Brightness): magnitude 10 is outside 0..9"),
        (lambda d: d[4].update(op="Blur"), "policy entry 4: unknown op 'Blur'"),
        (lambda d: d[4].update(op="Rotate"), "policy entry 15 (Rotate): op appears a third time"),
        (lambda d: d.pop(), "policy has 29 entries, expected 30"),
        (lambda d: d[0].update(prob=True), "policy entry 0 (Rotate): probability True is outside 0..10"),
    ],
)
def test_validation_errors_name_the_entry(mutate, message: str) -> None:
    items = Policy.zeros().to_dicts()
    mutate(items)
    with pytest.raises(PolicyError) as err:
        Policy.from_dicts(items)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_pba_list_validation() -> None:
    with pytest.raises(PolicyError, match="60"):
        Policy.from_pba_list([0] * 59)
    bad = [0] * 60
    bad[14] = 11  # entry 7 = Posterize, probability
    with pytest.raises(PolicyError, match=r"policy entry 7 \(Posterize\): probability 11"):
        Policy.from_pba_list(bad)


# ------------------------------------------------------------------ application semantics


def test_count_distribution_matches_pba() -> None:
    """Counts in {0, 1, 2} with probabilities {0.2, 0.3, 0.5}: chi-square on 200k samples."""
    gen = torch.Generator().manual_seed(0)
    plan = sample_plan(Policy.random(gen), 200_000, 32, 32, gen)
    observed = torch.bincount(plan.counts, minlength=3).tolist()
    assert len(observed) == 3
    assert chi_square(observed, [0.2, 0.3, 0.5]) < CHI2_CRIT[2]
    assert bool((plan.num_applied <= plan.counts).all())


def test_all_ten_policy_applies_exactly_count_ops() -> None:
    entries = [PolicyEntry(PBA_ORDER[i % 15], 10, 3) for i in range(30)]
    gen = torch.Generator().manual_seed(1)
    plan = sample_plan(Policy(tuple(entries)), 5000, 32, 32, gen)
    assert torch.equal(plan.num_applied, plan.counts)
    # two different entries per sample (one pass, no repeats)
    two = plan.counts == 2
    assert bool((plan.entries[two, 0] != plan.entries[two, 1]).all())
    # uniform shuffle: every entry is first about equally often (30 cells, ~130 each)
    firsts = torch.bincount(plan.entries[plan.counts > 0, 0], minlength=30).float()
    assert firsts.min() > 0.6 * firsts.mean() and firsts.max() < 1.4 * firsts.mean()


def test_all_zero_policy_is_identity() -> None:
    images = make_images(16)
    out, plan = apply_policy(images, Policy.zeros(), torch.Generator().manual_seed(0), FILL, return_plan=True)
    assert torch.equal(out, images)
    assert bool((plan.ops == -1).all())


@pytest.mark.parametrize("op", ["Invert", "Rotate", "Equalize"])
def test_probability_ten_fires_on_every_sample_with_count(op: str) -> None:
    images = make_images(64, seed=4)
    gen = torch.Generator().manual_seed(2)
    pol = Policy.single(op, prob=10, mag=5)
    out, plan = apply_policy(images, pol, gen, FILL, return_plan=True)
    fired = plan.counts > 0
    assert bool(fired.any()) and bool((~fired).any())
    assert bool((plan.ops[fired, 0] == OP_NAMES.index(op)).all())
    assert bool((plan.ops[:, 1] == -1).all())  # the only other copy has probability 0
    assert bool((plan.ops[~fired] == -1).all())
    assert torch.equal(out[~fired], images[~fired])
    expected = OPS[op](images[fired], 5, signs=plan.signs[fired, 0], fill=FILL)
    assert torch.equal(out[fired], expected)
    assert set(plan.signs[fired, 0].tolist()) == {-1, 1}  # geometric ops: a random sign per sample


def _pba_reference_walk(policy: Policy, rng: random.Random) -> tuple[str, ...]:
    """PBA's apply_policy decisions for one image, in plain Python (as augmentation_transforms_hp)."""
    count = rng.choices([0, 1, 2, 3], weights=[0.2, 0.3, 0.5, 0.0])[0]
    fired: list[str] = []
    if count:
        entries = list(policy.entries)
        rng.shuffle(entries)
        for e in entries:
            if rng.random() < e.prob / 10:
                fired.append(e.op)
                count -= 1
                if count == 0:
                    break
    return tuple(fired)


def test_fired_sequences_match_pba_walk_in_distribution() -> None:
    """Distribution of (first op, second op) equals PBA's per-image walk (chi-square)."""
    pol = Policy.zeros().with_entry(PBA_ORDER.index("Rotate"), 10, 1)
    pol = pol.with_entry(PBA_ORDER.index("Color"), 5, 2)
    pol = pol.with_entry(15 + PBA_ORDER.index("Equalize"), 3, 0)
    n = 40_000
    rng = random.Random(0)
    ref = Counter(_pba_reference_walk(pol, rng) for _ in range(n))
    plan = sample_plan(pol, n, 32, 32, torch.Generator().manual_seed(3))
    ours = Counter(
        tuple(OP_NAMES[o] for o in row if o >= 0) for row in plan.ops.tolist()
    )
    cells = sorted(set(ref) | set(ours), key=str)
    assert len(cells) <= 10
    # two-sample chi-square on the contingency table (ours vs reference), cells with support only
    cells = [c for c in cells if ref[c] + ours[c] >= 20]
    stat = sum((ours[c] - ref[c]) ** 2 / (ours[c] + ref[c]) for c in cells)
    df = len(cells) - 1
    assert stat < {5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88}.get(df, 30.0), (stat, df, ours, ref)


def test_same_seed_same_batch_different_seed_differs() -> None:
    images = make_images(64, seed=5)
    pol = Policy.from_pba_list(PBA_LINE)
    a = apply_policy(images, pol, torch.Generator().manual_seed(7), FILL)
    b = apply_policy(images, pol, torch.Generator().manual_seed(7), FILL)
    c = apply_policy(images, pol, torch.Generator().manual_seed(8), FILL)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_plan_execution_equals_sequential_ops() -> None:
    images = make_images(48, seed=6)
    pol = Policy.from_pba_list(PBA_LINE)
    out, plan = apply_policy(images, pol, torch.Generator().manual_seed(9), FILL, return_plan=True)
    assert torch.equal(apply_plan(images, plan, FILL), out)
    for i in range(0, 48, 5):
        x = images[i : i + 1]
        for k in range(2):
            op = int(plan.ops[i, k])
            if op >= 0:
                x = OPS[OP_NAMES[op]](
                    x, plan.levels[i, k : k + 1], signs=plan.signs[i, k : k + 1],
                    centers=plan.centers[i, k : k + 1], fill=FILL,
                )
        assert torch.equal(out[i : i + 1], x)


def test_policy_batch_matches_pillow_end_to_end() -> None:
    """Each sample's fired ops, replayed one by one with Pillow, give the batched output.

    Tolerance: >= 99 % of pixels equal (as for the geometric ops); in practice all are.
    """
    images = make_images(64, seed=12)
    pol = Policy.from_pba_list(PBA_LINE)
    out, plan = apply_policy(images, pol, torch.Generator().manual_seed(13), FILL, return_plan=True)
    ref = []
    for i in range(64):
        img = Image.fromarray(images[i].permute(1, 2, 0).numpy())
        for k in range(2):
            op = int(plan.ops[i, k])
            if op >= 0:
                center = tuple(plan.centers[i, k].tolist())
                img = pil_op(img, OP_NAMES[op], int(plan.levels[i, k]), int(plan.signs[i, k]), center)
        ref.append(torch.from_numpy(np.array(img)).permute(2, 0, 1))
    assert bool((plan.num_applied == 2).any())
    assert (out == torch.stack(ref)).float().mean() >= 0.99


@pytest.mark.parametrize("n", [0, 1, 2, 17])
def test_uint8_in_uint8_out_any_batch(n: int) -> None:
    images = make_images(max(n, 1), seed=1)[:n]
    out = apply_policy(images, Policy.from_pba_list(PBA_LINE), torch.Generator().manual_seed(0), FILL)
    assert out.dtype == torch.uint8 and out.shape == images.shape


def test_other_image_size() -> None:
    images = make_images(8, 40, 24, seed=2)
    out = apply_policy(images, Policy.from_pba_list(PBA_LINE), torch.Generator().manual_seed(0), FILL)
    assert out.shape == images.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree_on_a_plan() -> None:
    images = make_images(64, seed=3)
    pol = Policy.from_pba_list(PBA_LINE)
    plan = sample_plan(pol, 64, 32, 32, torch.Generator().manual_seed(0))
    cpu = apply_plan(images, plan, FILL)
    gpu = apply_plan(images.cuda(), plan.to("cuda"), FILL).cpu()
    diff = (cpu.int() - gpu.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.999
    g1 = torch.Generator(device="cuda").manual_seed(4)
    g2 = torch.Generator(device="cuda").manual_seed(4)
    assert torch.equal(apply_policy(images.cuda(), pol, g1, FILL), apply_policy(images.cuda(), pol, g2, FILL))


# ------------------------------------------------------------------ the augmenter


def _ctx(epoch: int, num_epochs: int, seed: int = 0) -> AugmentContext:
    return AugmentContext(epoch=epoch, num_epochs=num_epochs, generator=torch.Generator().manual_seed(seed), fill=FILL)


def test_policy_augmenter_follows_schedule() -> None:
    invert = Policy.single("Invert", 10)
    sched = Schedule.from_segments([(2, Policy.zeros()), (2, invert)])
    aug = PolicyAugmenter(sched)
    assert isinstance(aug, Augmenter) and aug.space == "pixel"
    batch = Batch(make_images(32, seed=8), torch.zeros(32, dtype=torch.long))
    assert torch.equal(aug(batch, _ctx(1, 4)).images, batch.images)
    out = aug(batch, _ctx(3, 4)).images
    changed = (out != batch.images).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 32  # count 0 leaves ~20 % untouched
    assert torch.equal(out[changed], 255 - batch.images[changed])
    # an 8-epoch run replays the 4-epoch schedule stretched x2: epoch 3 is still all-zero
    assert aug.policy_for(3, 8) == Policy.zeros() and aug.policy_for(4, 8) == invert


def test_policy_augmenter_fixed_policy_and_set_policy() -> None:
    aug = PolicyAugmenter(Policy.zeros())
    assert aug.policy_for(5, 10) == Policy.zeros()
    pol = Policy.from_pba_list(PBA_LINE)
    aug.set_policy(pol)
    assert aug.policy_for(0, 10) == pol
    batch = Batch(make_images(8), torch.zeros(8, dtype=torch.long))
    out = aug(batch, _ctx(0, 10))
    assert out.images.shape == batch.images.shape and out.labels is batch.labels
