"""The generational search's parts without Ray: ranking at one epoch, exploit decisions from the search's own
generator, the search state's round trip, and the trial worker whose result does not depend on where it runs."""

from __future__ import annotations

import json
import random

import pytest
import torch

from rolekd.augment.policy import Policy
from rolekd.pba.generations import (SearchState, SearchStateError, load_state, prune_states, save_state,
                                    write_trial_state)
from rolekd.pba.population import Trial, apply, exploit_and_explore, generation_ends, quantiles, trial_seed
from rolekd.pba.run import _signal_warning, standard_error
from rolekd.pba.trainable import Task, TrialWorker, load_state_bytes

from search_factories import tiny_args
from rolekd.pipeline.search_stage import make_trial_trainer

Z = Policy.zeros().to_pba_list()


def population(accs: list[float], epoch: int = 3) -> list[Trial]:
    return [Trial(f"trial_{i:02d}", i, list(Z), [list(Z)] * epoch, epoch, acc, f"s/{i}.pt")
            for i, acc in enumerate(accs)]


def test_generation_ends_cover_every_epoch_once():
    assert generation_ends(10, 3) == [3, 6, 9, 10]
    assert generation_ends(9, 3) == [3, 6, 9]
    assert generation_ends(2, 5) == [2]


def test_quantiles_cut_as_ray_does_and_break_ties_by_name():
    trials = population([0.5, 0.9, 0.5, 0.1, 0.7, 0.5, 0.3, 0.8])
    bottom, top = quantiles(trials, 0.25)
    assert [t.name for t in bottom] == ["trial_03", "trial_06"] and [t.name for t in top] == ["trial_07", "trial_01"]
    assert [t.name for t in quantiles(population([0.5] * 4), 0.5)[0]] == ["trial_00", "trial_01"]
    assert quantiles(population([0.5, 0.6, 0.7]), 0.5)[0][0].name == "trial_00"  # ceil(1.5) > 3/2: floor to 1
    # the order trials finished in (the list order) does not change the cut
    shuffled = trials[::-1]
    assert [t.name for t in quantiles(shuffled, 0.25)[1]] == ["trial_07", "trial_01"]


def test_exploit_decisions_come_from_the_search_generator_and_refuse_mixed_epochs():
    trials = population([0.1, 0.2, 0.8, 0.9])
    first = exploit_and_explore(trials, 0.5, 0.2, random.Random(7))
    assert first == exploit_and_explore(trials, 0.5, 0.2, random.Random(7))
    assert {d.target for d in first} == {"trial_00", "trial_01"} and {d.source for d in first} <= {"trial_02", "trial_03"}
    assert all(d.new_policy != d.old_policy for d in first)
    others = [exploit_and_explore(trials, 0.5, 0.2, random.Random(s)) for s in range(8)]
    assert any(o != first for o in others)
    trials[0].epoch = 2
    with pytest.raises(ValueError, match="different epochs"):
        exploit_and_explore(trials, 0.5, 0.2, random.Random(0))


def test_a_clone_takes_the_sources_state_past_and_accuracy():
    trials = population([0.1, 0.9])
    trials[1].policies = [[1] * 60] * 3
    (d,) = exploit_and_explore(trials, 0.5, 0.2, random.Random(0))
    by_name = {t.name: t for t in trials}
    apply(d, by_name)
    target = by_name["trial_00"]
    assert target.state == "s/1.pt" and target.policies == [[1] * 60] * 3 and target.val_acc == 0.9
    assert target.policy == d.new_policy
    target.policies[0][0] = 5
    assert by_name["trial_01"].policies[0][0] == 1  # a copy, not the source's list


def test_another_search_seed_changes_every_trial_seed():
    seeds0 = {trial_seed(0, i) for i in range(16)}
    seeds1 = {trial_seed(1, i) for i in range(16)}
    assert len(seeds0) == 16 and not seeds0 & seeds1
    assert trial_seed(0, 3) == trial_seed(0, 3)


def test_search_state_round_trips_with_its_generator(tmp_path):
    rng = random.Random(5)
    rng.random()
    state = SearchState(5, 10, 2, 3, {t.name: t for t in population([0.4, 0.6])}, rng, generation=1,
                        dropped={"trial_09": "RuntimeError: x"}, history_lines=3)
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back.to_json() == state.to_json()
    assert back.rng.random() == rng.random()  # the generator continues where it stopped
    (tmp_path / "search_state.json").write_text("{not json")
    with pytest.raises(SearchStateError, match="not a rolekd search state") as err:
        load_state(tmp_path)
    assert "\n" not in str(err.value)


def test_pruning_keeps_only_the_generation_the_state_names(tmp_path):
    state = SearchState(0, 4, 2, 1, {t.name: t for t in population([0.1, 0.2])}, random.Random(0))
    old = write_trial_state(tmp_path, 1, "trial_00", b"old")
    new = write_trial_state(tmp_path, 2, "trial_00", b"new")
    half = write_trial_state(tmp_path, 3, "trial_00", b"half")  # a generation a kill left unnamed
    for t in state.trials.values():
        t.state = new
    prune_states(tmp_path, state)
    assert (tmp_path / new).read_bytes() == b"new"
    assert not (tmp_path / old).exists() and not (tmp_path / half).exists()


def test_the_signal_warning_names_the_standard_error():
    assert round(100 * standard_error(500), 1) == 2.2
    line = _signal_warning(500)
    assert "500 validation images" in line and "2.2 points" in line and "10000" in line
    assert _signal_warning(10_000) is None and _signal_warning(None) is None


@pytest.fixture(scope="module")
def args():
    return tiny_args(epochs=4)[0]


def _weights(outcome) -> dict[str, torch.Tensor]:
    return load_state_bytes(outcome.state, torch.device("cpu"))["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_trial_continued_from_its_state_equals_one_trained_straight_through(args):
    policy = Policy.single("Rotate", 6, 5).to_pba_list()
    straight = TrialWorker(make_trial_trainer, args, 1).run(Task("a", 11, policy, None, 2))
    worker = TrialWorker(make_trial_trainer, args, 1)
    first = worker.run(Task("a", 11, policy, None, 1, evaluate=False))
    assert "val_acc" not in first.rows[-1]  # evaluated only where the search decides
    second = worker.run(Task("a", 11, policy, first.state, 2))
    assert _same(_weights(straight), _weights(second))
    assert second.rows[-1]["val_acc"] == straight.rows[-1]["val_acc"] and second.rows[-1]["epoch"] == 2


def test_a_trial_gives_the_same_result_on_a_worker_that_ran_another_trial(args):
    start = TrialWorker(make_trial_trainer, args, 1).run(Task("b", 23, Z, None, 1))
    fresh = TrialWorker(make_trial_trainer, args, 1).run(Task("b", 23, Z, start.state, 2))
    used = TrialWorker(make_trial_trainer, args, 1)
    used.run(Task("c", 99, Policy.single("Invert", 10, 0).to_pba_list(), None, 1))  # another trial first
    reused = used.run(Task("b", 23, Z, start.state, 2))
    assert _same(_weights(fresh), _weights(reused)) and fresh.rows == [
        {**r, "images_per_s": fresh.rows[0]["images_per_s"], "epoch_time_s": fresh.rows[0]["epoch_time_s"]}
        for r in reused.rows]
    other_seed = TrialWorker(make_trial_trainer, args, 1).run(Task("b", 24, Z, start.state, 2))
    assert not _same(_weights(fresh), _weights(other_seed))  # the data stream is the trial's own


def test_on_cuda_a_trial_asks_torch_for_deterministic_kernels_and_on_the_cpu_changes_nothing(monkeypatch):
    from rolekd.pba import trainable

    calls = []
    monkeypatch.setattr(trainable.torch, "use_deterministic_algorithms", lambda on, warn_only: calls.append((on, warn_only)))
    monkeypatch.setattr(trainable.torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(trainable.torch.backends.cudnn, "deterministic", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    trainable.make_deterministic(torch.device("cpu"))
    assert calls == [] and trainable.torch.backends.cudnn.benchmark is True
    trainable.make_deterministic(torch.device("cuda", 0))
    assert calls == [(True, True)]
    assert trainable.torch.backends.cudnn.deterministic is True and trainable.torch.backends.cudnn.benchmark is False
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
