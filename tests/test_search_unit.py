"""The search's pure parts, without Ray: PBA's explore and lineage reconstruction."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rolekd.augment.policy import Policy
from rolekd.pba import ExploitEvent, LineageError, append_event, explore, read_history, reconstruct
from rolekd.pba.explore import PolicyExplorer
from rolekd.pba.trainable import policy_ints, trial_seed

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


def test_explorer_changes_only_the_policy_and_stamps_the_decision():
    config = {"policy": [0] * 60, "other": 1}
    out = PolicyExplorer(0.2, seed=3)(config)
    assert out["other"] == 1 and len(out["policy"]) == 60 and out["explored_at"] > 0
    assert config["policy"] == [0] * 60  # the source's config is left alone
    Policy.from_pba_list(out["policy"])  # a valid policy


def test_policy_config_forms_and_trial_seeds():
    p = Policy.single("Rotate", 7, 3)
    assert policy_ints(p.to_dicts()) == policy_ints(p.to_pba_list()) == p.to_pba_list()
    assert trial_seed("a1b2c_00003") == 3
    assert trial_seed("custom") == trial_seed("custom")


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


@pytest.mark.parametrize("population, cpus_per_trial, max_concurrent, fits", [
    (4, 0.5, None, True),    # 2 CPUs / 0.5 = 4 slots
    (8, 0.5, None, False),
    (4, 0.5, 2, False),      # max_concurrent caps the embedded Ray's CPUs
    (2, 1.0, None, True),
])
def test_population_fits_at_once_on_an_embedded_ray(monkeypatch, population, cpus_per_trial, max_concurrent, fits):
    from rolekd.config import SearchConfig
    from rolekd.pba import run

    monkeypatch.setattr(run.os, "cpu_count", lambda: 2)
    cfg = SearchConfig(population=population, cpus_per_trial=cpus_per_trial, max_concurrent=max_concurrent)
    assert run._fits_at_once(cfg, None, use_gpu=False) is fits
    assert run._fits_at_once(cfg, "ray://head:10001", use_gpu=False) is False
    assert (run._population_warning(cfg, None, use_gpu=False) is None) is fits


@pytest.mark.parametrize("cpus, gpus, use_gpu, fits", [(8, 0, False, True), (2, 0, False, False), (8, 1, True, True),
                                                      (8, 0.5, True, False)])
def test_in_a_ray_this_process_runs_the_population_fits_at_once_if_its_total_holds_it(monkeypatch, cpus, gpus,
                                                                                       use_gpu, fits):
    from rolekd.config import SearchConfig
    from rolekd.pba import run

    monkeypatch.setattr(run.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(run.ray, "cluster_resources", lambda: {"CPU": cpus, "GPU": gpus})
    cfg = SearchConfig(population=4, cpus_per_trial=1.0, gpus_per_trial=0.25)  # e.g. rolekd run's local Ray
    assert run._fits_at_once(cfg, None, use_gpu=use_gpu) is fits


@pytest.mark.parametrize("time_share, expected", [(True, "PAUSE"), (False, "CONTINUE")])
def test_pbt_pauses_to_time_share_only_when_the_population_does_not_fit(monkeypatch, time_share, expected):
    from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

    from rolekd.pba.run import _PopulationBasedTraining

    monkeypatch.setattr(PopulationBasedTraining, "on_trial_result", lambda self, *a: TrialScheduler.PAUSE)
    pbt = _PopulationBasedTraining(metric="val_acc", mode="max", custom_explore_fn=dict, time_share=time_share)
    assert pbt.on_trial_result(None, None, {}) == getattr(TrialScheduler, expected)
    monkeypatch.setattr(PopulationBasedTraining, "on_trial_result", lambda self, *a: TrialScheduler.NOOP)
    assert pbt.on_trial_result(None, None, {}) == TrialScheduler.NOOP  # an exploited trial stays paused


def test_pbt_never_clones_the_same_checkpoint_into_a_trial_twice(monkeypatch):
    from types import SimpleNamespace

    from ray.tune.schedulers import PopulationBasedTraining

    from rolekd.pba.run import _PopulationBasedTraining

    class Trial:  # hashable, like Ray's
        def __init__(self, trial_id):
            self.trial_id = trial_id

    calls = []
    monkeypatch.setattr(PopulationBasedTraining, "_checkpoint_or_exploit",
                        lambda self, trial, ctl, upper, lower: calls.append((list(upper), trial in lower)))
    pbt = _PopulationBasedTraining(metric="val_acc", mode="max", custom_explore_fn=dict)
    target, slow, fast = (Trial(f"t{i}") for i in range(3))
    pbt._trial_state = {t: SimpleNamespace(last_perturbation_time=5) for t in (target, slow, fast)}

    pbt._checkpoint_or_exploit(target, None, [slow], [target])
    assert calls[-1] == ([slow], True)  # first time: Ray exploits slow's checkpoint at time 5
    pbt._checkpoint_or_exploit(target, None, [slow], [target])
    assert calls[-1][1] is False  # slow has not saved since: the target continues instead of rewinding again
    pbt._trial_state[slow].last_perturbation_time = 6
    pbt._checkpoint_or_exploit(target, None, [slow], [target])
    assert calls[-1] == ([slow], True)  # a newer checkpoint may be cloned
    pbt._trial_state[fast].last_perturbation_time = 8
    pbt._checkpoint_or_exploit(target, None, [slow, fast], [target])
    assert calls[-1] == ([fast], True)  # the only checkpoint not cloned yet
    pbt._checkpoint_or_exploit(slow, None, [fast], [target])
    assert calls[-1] == ([fast], False)  # trials outside the bottom quantile are Ray's business


def test_progress_line_tells_finished_from_interrupted_trials(tmp_path):
    from types import SimpleNamespace

    from rolekd.pba.callbacks import HistoryRecorder, SearchProgress

    progress = SearchProgress("search teacher", 3, 4, HistoryRecorder(tmp_path / "h.jsonl"))
    trials = [SimpleNamespace(trial_id=f"t{i}", status=s) for i, s in enumerate(["TERMINATED", "TERMINATED", "RUNNING"])]
    for trial, epoch in zip(trials, (4, 2, 3)):
        progress.on_trial_result(0, trials, trial, {"epoch": epoch, "val_acc": 0.5})
    line = progress.line(trials)
    assert "1 running 1 done 1 stopped" in line and "epoch 2-4/4" in line
