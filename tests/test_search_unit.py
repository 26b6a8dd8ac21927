"""The search's pure parts, without Ray: PBA's explore and lineage reconstruction (the population, its state
and the trial worker are in test_search_population.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rolekd.augment.policy import Policy
from rolekd.pba import ExploitEvent, LineageError, append_event, explore, read_history, reconstruct
from rolekd.pba.trainable import policy_ints

N = 4000  # draws of 60 ints each: frequencies below are good to about +-0.01


def draws(start: list[int], resample_p: float, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [explore(start, rng, resample_p) for _ in range(N)]


def test_explore_stays_in_range_and_clamps_at_both_ends():
    lows, highs = [0] * 60, [10 if i % 2 == 0 else 9 for i in range(60)]
    for start in (lows, highs):
        for out in draws(start, 0.2):
            assert all(0 <= v <= (10 if i % 2 == 0 else 9) for i, v in enumerate(out))
    # Without resampling, a value at 0 stays at 0 when it moves down (1/2) or by 0 (1/8 more).
    at_zero = Counter(out[0] for out in draws(lows, 0.0))
    assert at_zero[0] / N == pytest.approx(0.5 + 0.5 * 0.25, abs=0.015)
    at_max = Counter(out[1] for out in draws(highs, 0.0))  # a magnitude at 9 never exceeds 9
    assert set(at_max) <= {6, 7, 8, 9}
    assert at_max[9] / N == pytest.approx(0.625, abs=0.015)


def test_explore_perturbs_by_up_to_three_in_either_direction():
    start = [5] * 60
    deltas = Counter(v - 5 for out in draws(start, 0.0) for v in out)
    total = sum(deltas.values())
    assert set(deltas) == {-3, -2, -1, 0, 1, 2, 3}
    assert deltas[0] / total == pytest.approx(0.25, abs=0.01)  # amt = 0 either way
    for k in (1, 2, 3):
        assert deltas[k] / total == pytest.approx(0.125, abs=0.01)
        assert deltas[-k] / total == pytest.approx(0.125, abs=0.01)


def test_explore_resamples_uniformly_with_the_given_probability():
    everything = [v for out in draws([0] * 60, 1.0) for v in out]
    probs, mags = Counter(everything[0::2]), Counter(everything[1::2])
    assert set(probs) == set(range(11)) and set(mags) == set(range(10))
    assert max(probs.values()) / min(probs.values()) < 1.15
    # From 0, a jump beyond 3 only comes from resampling: P = 0.2 * P(uniform > 3).
    far = [out[0] > 3 for out in draws([0] * 60, 0.2)]
    assert sum(far) / N == pytest.approx(0.2 * 7 / 11, abs=0.015)
    far_mag = [out[1] > 3 for out in draws([0] * 60, 0.2, seed=1)]
    assert sum(far_mag) / N == pytest.approx(0.2 * 6 / 10, abs=0.015)


def test_policy_config_forms():
    p = Policy.single("Rotate", 7, 3)
    assert policy_ints(p.to_dicts()) == policy_ints(p.to_pba_list()) == p.to_pba_list()


# ---- lineage -----------------------------------------------------------------------------------

Z = Policy.zeros()
P1, P2, P3, P4 = (Policy.single(op, 5, i) for i, op in enumerate(["Rotate", "Color", "Invert", "Cutout"]))


def ev(time: float, target: str, source: str, epoch: int, source_epoch: int, new: Policy, old: Policy = Z) -> ExploitEvent:
    return ExploitEvent(time, target, source, epoch, source_epoch, old, new)


# Population A, B, C, D over 9 epochs, interval 3. A and B are never exploited.
HISTORY = [
    ev(1.0, "C", "A", 3, 3, P1),  # C clones A (never exploited: epochs 0-2 used the initial policy)
    ev(2.0, "D", "C", 6, 6, P2, P1),  # D clones C: C's past (Z, P1) becomes D's
    ev(4.0, "C", "B", 6, 6, P3),  # decided after D's clone: must not rewrite D's past
    ev(3.0, "A", "D", 9, 6, P4, P2),  # listed out of order: reconstruction orders by decision time
]


def test_reconstruct_follows_clones_through_never_exploited_trials():
    assert reconstruct(HISTORY, "D", 9, Z).policies == [Z] * 3 + [P1] * 3 + [P2] * 3
    assert reconstruct(HISTORY, "C", 9, Z).policies == [Z] * 6 + [P3] * 3
    assert reconstruct(HISTORY, "A", 9, Z).policies == [Z] * 3 + [P1] * 3 + [P4] * 3
    assert reconstruct(HISTORY, "B", 9, Z).policies == [Z] * 9


def test_reconstruct_rejects_a_clone_past_the_lineage():
    # B restarted at epoch 6 before C copied B's epoch-3 checkpoint: no such checkpoint can exist.
    with pytest.raises(LineageError, match="epoch 6"):
        reconstruct([ev(1.0, "B", "A", 6, 6, P1), ev(2.0, "C", "B", 3, 3, P2)], "C", 9, Z)


def test_history_round_trips_and_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "history.jsonl"
    for event in HISTORY:
        append_event(path, event)
    with open(path, "a") as f:
        f.write('{"time": 5.0, "target": "B", "sou')  # a crash mid-write
    assert read_history(path) == HISTORY
    assert read_history(tmp_path / "absent.jsonl") == []
    path.write_text('{"time": 1}\n' + path.read_text())
    with pytest.raises(LineageError, match="line 1"):
        read_history(path)
