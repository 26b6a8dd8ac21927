"""The search end to end on Ray: a tiny population (4 trials x 6 epochs, interval 2, 2 CPUs)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

import pytest
import ray

from conftest import write_cifar
from rolekd.augment.policy import Policy
from rolekd.augment.schedule import Schedule
from rolekd.config import config_from_dict
from rolekd.pipeline.networks import network_meta
from rolekd.quant import build_network
from rolekd.pipeline.search_stage import search_command
from rolekd.pba import read_history, reconstruct
from rolekd.training import save_checkpoint

EPOCHS = 6


@pytest.fixture
def ray_cleanup():
    yield
    ray.shutdown()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Generated CIFAR-10 files whose classes are learnable (a colour per class under noise): on pure
    noise every trial sits at chance with identical accuracies, and PBT's exploits churn on ties."""
    write_cifar(tmp_path / "data", "cifar10", n_train=400, n_test=20)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    rng = np.random.default_rng(0)
    colours = 128 + rng.integers(-24, 25, size=(10, 3))  # close together: not learnt in a few steps
    for path in folder.glob("*_batch*"):
        batch = pickle.loads(path.read_bytes())
        planes = colours[batch["labels"]].repeat(1024, axis=1)  # R, G, B planes of 32x32
        noisy = planes + rng.normal(0, 70, size=planes.shape)
        batch["data"] = noisy.clip(0, 255).astype(np.uint8)
        path.write_bytes(pickle.dumps(batch, protocol=2))
    return tmp_path / "data"


def tiny_config(interval: int = 2, quantile: float = 0.25, **distill):
    tiny = {"model": "cnn", "model_args": {"width": 4},
            "train": {"epochs": 1, "batch_size": 50, "lr": 0.05, "lr_schedule": "cosine"}}
    return config_from_dict({
        "device": "cpu",
        "data": {"dataset": "cifar10", "reduced_train": 200, "reduced_val": 100, "eval_batch_size": 100},
        "teacher": tiny,
        "student": {**tiny, "w_bits": 4, "a_bits": 4, "train": {**tiny["train"], "optimizer": "adam", "lr": 1e-3}},
        "distill": distill or {"method": "none"},
        "search": {"population": 4, "epochs": EPOCHS, "perturbation_interval": interval, "quantile": quantile,
                   "max_concurrent": 2},
    })


def trial_rows(out: Path) -> dict[str, list[dict]]:
    """Each trial's progress.jsonl lines (one per epoch), by trial name."""
    rows = {}
    for path in (out / "trials").glob("*/progress.jsonl"):
        rows[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


@pytest.mark.slow
def test_teacher_search_exploits_and_writes_a_valid_schedule(tmp_path, data_dir, ray_cleanup):
    out = tmp_path / "search"
    result = search_command(tiny_config(interval=1, quantile=0.5), "teacher", out_dir=out, data_dir=str(data_dir),
                            progress=False)
    assert not ray.is_initialized()  # the embedded Ray is shut down again

    schedule = Schedule.load(out / "schedule.json")  # validates the file
    assert len(schedule.policies) == EPOCHS and schedule == result.schedule
    history = read_history(out / "history.jsonl")
    assert len(history) >= 1
    for e in history:  # a clone continues from another trial's state at the same epoch, explored
        assert e.source != e.target and 1 <= e.source_epoch == e.epoch < EPOCHS
        assert e.new_policy != e.old_policy
    assert len(history) == 2 * (EPOCHS - 1)  # the bottom half of 4, at every generation but the last
    # The schedule kept in the trial's checkpoints equals the lineage rebuilt from the history.
    assert reconstruct(history, result.best_trial, EPOCHS, Policy.zeros()) == schedule
    summary = json.loads((out / "search_summary.json").read_text())
    assert summary["lineage_matches_history"] and summary["exploits"] == len(history)
    assert summary["best_val_acc"] == max(summary["final_val_acc"].values()) == result.best_acc
    assert len(summary["final_val_acc"]) == 4 and summary["failed_trials"] == []
    rows = trial_rows(out)
    assert len(rows) == 4 and all([row["epoch"] for row in r] == list(range(1, EPOCHS + 1)) for r in rows.values())
    assert all("val_acc" in row and "train_ce" in row for r in rows.values() for row in r)
    assert all(list((out / "trials" / name).glob("events.out.tfevents.*")) for name in rows)  # TensorBoard


@pytest.mark.slow
def test_student_search_distils_from_the_teacher(tmp_path, data_dir, ray_cleanup):
    cfg = tiny_config(method="soft", lam=1.0)
    teacher = tmp_path / "teacher.pt"
    meta = network_meta(cfg.teacher, 10, (3, 32, 32), "teacher")
    save_checkpoint(teacher, {"model": build_network(meta).state_dict(), "meta": meta, "epoch": 0})
    out = tmp_path / "search"
    result = search_command(cfg, "student", teacher_path=teacher, out_dir=out, data_dir=str(data_dir), progress=False)
    assert len(result.schedule.policies) == EPOCHS
    rows = [row for r in trial_rows(out).values() for row in r]
    kd_terms = [k for k in rows[0] if k.startswith("train_kd_")]
    assert kd_terms, f"no KD term logged: {sorted(rows[0])}"
    assert all(row[k] > 0 for row in rows for k in kd_terms)
    summary = json.loads((out / "search_summary.json").read_text())
    assert summary["failed_trials"] == [] and summary["exploits"] > 0
    # interval 2: validation only where the search ranks (epochs 2, 4) and at the end (6)
    assert sorted({row["epoch"] for row in rows if "val_acc" in row}) == [2, 4, 6]


def test_bad_teacher_is_a_one_line_error_before_ray_starts(tmp_path, data_dir, ray_cleanup):
    cfg = tiny_config(method="soft")
    with pytest.raises(ValueError, match="needs --teacher"):
        search_command(cfg, "student", out_dir=tmp_path / "a", data_dir=str(data_dir))
    with pytest.raises(ValueError, match="not found"):
        search_command(cfg, "student", teacher_path=tmp_path / "missing.pt", out_dir=tmp_path / "a", data_dir=str(data_dir))
    meta = network_meta(cfg.teacher, 7, (3, 32, 32), "teacher")
    save_checkpoint(tmp_path / "t7.pt", {"model": build_network(meta).state_dict(), "meta": meta})
    with pytest.raises(ValueError, match="predicts 7 classes") as err:
        search_command(cfg, "student", teacher_path=tmp_path / "t7.pt", out_dir=tmp_path / "a", data_dir=str(data_dir))
    assert "\n" not in str(err.value)
    assert not ray.is_initialized() and not (tmp_path / "a").exists()


# ---- the generational search's guarantees, with the product's trial on the embedded digits ----------------------

import search_factories  # noqa: E402
from search_factories import crashing_trial, slow_trial, tiny_args  # noqa: E402

from rolekd.pba import run_search  # noqa: E402
from rolekd.pba.population import trial_seed  # noqa: E402

ray.cloudpickle.register_pickle_by_value(search_factories)  # Ray's workers need not import the tests folder


def _search(out: Path, factory=None, seed: int = 0, epochs: int = 4, extra: dict | None = None, **search):
    args, search_cfg = tiny_args(epochs=epochs, **search)
    args.update(extra or {})
    from rolekd.pipeline.search_stage import make_trial_trainer

    return run_search(factory or make_trial_trainer, args, search_cfg, out, epochs=epochs, seed=seed, progress=False)


def _without_times(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_the_same_seed_gives_the_same_search_in_turns_or_at_once_and_another_seed_another(tmp_path, ray_cleanup):
    # b takes turns (2 trials at a time) where a trains all 4 at once: the same search all the same
    runs = {"a": _search(tmp_path / "a", seed=0), "b": _search(tmp_path / "b", seed=0, max_concurrent=2),
            "c": _search(tmp_path / "c", seed=1)}
    a, b, c = (tmp_path / n for n in "abc")
    assert (a / "schedule.json").read_bytes() == (b / "schedule.json").read_bytes()
    assert _without_times(a / "history.jsonl") == _without_times(b / "history.jsonl") != []
    finals = {n: json.loads((tmp_path / n / "search_summary.json").read_text())["final_val_acc"] for n in "abc"}
    assert finals["a"] == finals["b"]
    assert runs["a"].schedule == runs["b"].schedule
    assert runs["c"].schedule != runs["a"].schedule and finals["c"] != finals["a"]


@pytest.mark.slow
def test_a_slow_trial_holds_its_generation_back_and_is_never_compared_with_trials_ahead(tmp_path, ray_cleanup):
    out = tmp_path / "search"
    _search(out, slow_trial, extra={"slow_seed": trial_seed(0, 1), "sleep_s": 1.5})
    history = read_history(out / "history.jsonl")
    assert history and all(e.source_epoch == e.epoch for e in history)
    summary = json.loads((out / "search_summary.json").read_text())
    assert summary["failed_trials"] == [] and len(summary["final_val_acc"]) == 4
    assert summary["barrier_wait_fraction"] > 0.1  # the others waited for the slow one at every barrier


@pytest.mark.slow
def test_a_trial_that_always_crashes_leaves_the_population_and_the_search_goes_on(tmp_path, ray_cleanup, capsys):
    out = tmp_path / "search"
    args, search_cfg = tiny_args(epochs=3)
    args["bad_seed"] = trial_seed(0, 2)
    result = run_search(crashing_trial, args, search_cfg, out, epochs=3, seed=0, progress=True)
    summary = json.loads((out / "search_summary.json").read_text())
    assert summary["failed_trials"] == ["trial_02"] and "always crashes" in summary["failures"]["trial_02"]
    assert sorted(summary["final_val_acc"]) == ["trial_00", "trial_01", "trial_03"]
    assert result.best_trial != "trial_02" and len(result.schedule.policies) == 3
    err = capsys.readouterr().err
    assert "trial_02 failed 3 times and leaves the population" in err
    assert (out / "trials" / "trial_02" / "error.txt").read_text().count("--- failure") == 3
