"""The three splits of issue 26.1: the images every row trains on, the search's validation images (held out from
every row with ``data.search_val: held_out``), and the test split, which no search reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_cifar
from rolekd.config import PACKAGED_CONFIGS, ConfigError, load_config
from rolekd.data import SplitError, load_dataset
from rolekd.pipeline.setup import prepare

N_TRAIN, N_TEST = 1000, 200  # random images: every one is unique, so a split is known by its contents
CPU = torch.device("cpu")


@pytest.fixture
def unique_dir(tmp_path: Path) -> Path:
    write_cifar(tmp_path, "cifar10", n_train=N_TRAIN, n_test=N_TEST)
    return tmp_path


def cfg_for(*sets: str):
    return load_config("demo", ["data.dataset=cifar10", "data.eval_batch_size=100", "teacher.model_args.width=4",
                                "data.reduced_train=200", "data.reduced_val=300", *sets])


def contents(images: torch.Tensor | np.ndarray) -> set[bytes]:
    array = images.cpu().numpy() if isinstance(images, torch.Tensor) else images
    return {row.tobytes() for row in array.reshape(len(array), -1)}


@pytest.mark.parametrize("subset", [None, 400])
def test_held_out_rows_search_and_test_are_disjoint(unique_dir, subset):
    sets = ["data.search_val=held_out"] + ([f"data.train_subset={subset}"] if subset else [])
    cfg = cfg_for(*sets)
    prep = prepare(cfg, str(unique_dir), device=CPU)
    rows, held, test = contents(prep.full.train.images), contents(prep.search_val.images), contents(prep.full.test.images)
    assert (len(rows), len(held), len(test)) == (subset or N_TRAIN - 300, 300, N_TEST)
    assert not rows & held and not rows & test and not held & test
    everything = contents(load_dataset("cifar10", str(unique_dir)).train.images)
    if subset is None:
        assert rows | held == everything  # without a subset the rows train on every image not held out
    else:
        assert rows | held < everything
    reduced = prep.reduced(cfg)
    assert len(reduced.train) == 200 and contents(reduced.train.images) <= rows  # the search trains on rows' images
    assert torch.equal(reduced.test.images, prep.search_val.images)  # and ranks on the held-out split
    assert torch.equal(reduced.test.labels, prep.search_val.labels)


def test_rows_protocol_ranks_on_the_rows_other_images_as_pba(unique_dir):
    cfg = cfg_for()  # data.search_val: rows, the default
    prep = prepare(cfg, str(unique_dir), device=CPU)
    assert prep.search_val is None and len(prep.full.train) == N_TRAIN
    reduced = prep.reduced(cfg)
    rows, test = contents(prep.full.train.images), contents(prep.full.test.images)
    train, val = contents(reduced.train.images), contents(reduced.test.images)
    assert (len(train), len(val)) == (200, 300)
    assert train <= rows and val <= rows and not train & val and not (train | val) & test


def test_held_out_split_is_fixed_by_split_seed_and_class_balanced(unique_dir):
    first = prepare(cfg_for("data.search_val=held_out"), str(unique_dir), device=CPU)
    again = prepare(cfg_for("data.search_val=held_out"), str(unique_dir), device=CPU)
    other = prepare(cfg_for("data.search_val=held_out", "data.split_seed=1"), str(unique_dir), device=CPU)
    assert torch.equal(first.search_val.images, again.search_val.images)
    assert torch.equal(first.full.train.images, again.full.train.images)
    assert contents(first.search_val.images) != contents(other.search_val.images)
    assert torch.bincount(first.search_val.labels, minlength=10).tolist() == [30] * 10
    assert torch.bincount(first.full.train.labels, minlength=10).tolist() == [70] * 10


def test_a_train_subset_does_not_move_when_the_search_split_changes(unique_dir):
    """Rows drawn first: their images are the same for search_val rows / held_out and any held-out size, so row
    accuracies stay comparable across searches."""
    subsets = [prepare(cfg_for("data.train_subset=400", *sets), str(unique_dir), device=CPU).full.train.images
               for sets in (["data.reduced_val=100"], ["data.search_val=held_out"],
                            ["data.search_val=held_out", "data.reduced_val=500"])]
    assert all(torch.equal(subsets[0], s) for s in subsets[1:])
    searched = [prepare(cfg, str(unique_dir), device=CPU).reduced(cfg).train.images
                for cfg in (cfg_for("data.train_subset=400", "data.reduced_val=100"),
                            cfg_for("data.train_subset=400", "data.search_val=held_out"))]
    assert torch.equal(*searched)  # and the search trains on the same images of them


@pytest.mark.parametrize("sets, message", [
    (["data.reduced_val=1000"], "data.reduced_val (held out) = 1000 is larger than the 1000 training images less 1 "
                                "per class for the rows; expected at most 990"),
    (["data.reduced_val=995"], "data.reduced_val (held out) = 995 is larger than the 1000 training images less 1 "
                               "per class for the rows; expected at most 990"),
    (["data.train_subset=400", "data.reduced_val=700"], "data.reduced_val (held out) = 700 is larger than the 600 "
                                                        "training images outside data.train_subset; expected at most 600"),
    (["data.train_subset=401", "data.reduced_val=595"], "class 2 has 59 training images outside data.train_subset, "
     "fewer than the 60 that a class-balanced data.reduced_val (held out) = 595 needs; expected data.reduced_val "
     "(held out) at most 590"),
    (["data.reduced_train=800"], "data.reduced_train = 800 is larger than the 700 training images the rows train "
                                 "on; expected at most 700"),
])
def test_a_split_that_cannot_be_carved_is_one_line_naming_the_numbers(unique_dir, sets, message):
    cfg = cfg_for("data.search_val=held_out", *sets)
    with pytest.raises(SplitError) as err:
        prepare(cfg, str(unique_dir), device=CPU).reduced(cfg)
    assert str(err.value) == message


def test_a_search_trial_ranks_on_the_held_out_split_and_never_gets_a_test_image(unique_dir):
    from rolekd.pipeline.search_stage import make_trial_trainer, search_args

    cfg = cfg_for("data.search_val=held_out")
    prep = prepare(cfg, str(unique_dir), device=CPU)
    args = search_args(cfg, "teacher", prep, None)
    shared = [a for a in _arrays(args) if a.ndim == 4]
    assert len(shared) == 2 and not any(contents(a) & contents(prep.full.test.images) for a in shared)
    trainer = make_trial_trainer(args, 0, device=CPU).trainer
    assert torch.equal(trainer.eval_set.images, prep.search_val.images)
    assert torch.equal(trainer.eval_set.labels, prep.search_val.labels)
    assert contents(trainer.train_set.images) <= contents(prep.full.train.images)


def _arrays(obj) -> list[np.ndarray]:
    """Every numpy array inside the plain data a trial receives."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in _arrays(v)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in _arrays(v)]
    return []


def test_a_run_whose_search_split_cannot_be_carved_fails_before_any_training(tmp_path):
    from rolekd.pipeline.run import run_pipeline

    cfg = load_config("demo", ["data.search_val=held_out", "data.reduced_val=1000", "data.reduced_train=500"])
    with pytest.raises(SplitError, match="data.reduced_train = 500 is larger than the 437 training images"):
        run_pipeline(cfg, tmp_path / "run", say=lambda *a, **k: None)
    assert not (tmp_path / "run" / "stage_alpha" / "teacher").exists()


def test_search_val_is_rows_or_held_out():
    assert load_config("demo").data.search_val == "rows"
    with pytest.raises(ConfigError, match="data.search_val") as err:
        load_config("demo", ["data.search_val=test"])
    assert "\n" not in str(err.value)


def test_paper_configs_keep_pbas_protocol_and_cpu_configs_hold_out():
    """The paper's rows train on all 50,000 images (the searches rank on 36,000 of them, §5.1); the CPU budgets
    train on a subset and rank on images outside it."""
    papers = sorted((PACKAGED_CONFIGS / "paper").glob("*.yaml"))
    assert papers
    for path in papers:
        d = load_config(str(path)).data
        assert (d.search_val, d.train_subset, d.reduced_train, d.reduced_val) == ("rows", None, 4000, 36000), path
    for path in sorted((PACKAGED_CONFIGS / "cpu").glob("*.yaml")):
        d = load_config(str(path)).data
        assert d.search_val == "held_out" and d.train_subset is not None, path


def test_the_report_says_what_rows_and_searches_train_and_rank_on():
    from rolekd.pipeline.report import split_line

    held = split_line(load_config("demo", ["data.search_val=held_out"]).data)
    assert "all training images but the 400 held out" in held and "400 held-out training images no row trains on" in held
    rows = split_line(load_config("demo", ["data.train_subset=500"]).data)
    assert "a class-balanced 500 of the training images" in rows and "the rows train on these too" in rows
