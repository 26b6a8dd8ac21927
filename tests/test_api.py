"""The Python API (``import rolekd``) is the CLI's own functions, returning result objects; registries for every
named thing (datasets, agents, the KD method ``none``)."""

from __future__ import annotations

import json

import pytest
import torch

import rolekd
from rolekd.config import ConfigError, load_config
from rolekd.pipeline.commands import resolve_config

TINY = ["teacher.train.epochs=2", "teacher.model_args.width=8", "student.train.epochs=1", "distill.method=soft"]


def test_train_distill_and_evaluate_return_what_the_files_say(tmp_path):
    teacher = rolekd.train("demo", out=tmp_path / "t", overrides=TINY)
    lines = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert teacher.accuracy == lines[-1]["val_acc"] and len(teacher.history) == 2
    assert teacher.checkpoint == tmp_path / "t" / "last.pt" and teacher.checkpoint.is_file()
    # evaluating last.pt on the same test split gives the last epoch's accuracy again
    assert rolekd.evaluate(teacher.checkpoint, "demo").accuracy == pytest.approx(teacher.accuracy, abs=1e-6)

    notes: list[str] = []
    student = rolekd.distill("demo", teacher.checkpoint, out=tmp_path / "s", overrides=TINY, say=notes.append)
    assert student.role == "student" and len(student.history) == 1
    assert any("distilling" in n and "soft" in n for n in notes)  # say= receives the CLI's lines
    saved = torch.load(student.checkpoint, weights_only=True)
    assert saved["meta"]["warm_started"] is True  # same architecture: the paper's warm start


def test_a_config_may_be_a_name_a_dict_or_a_typed_config(tmp_path):
    cfg = load_config("demo", ["teacher.train.epochs=2"])
    same = resolve_config(cfg.model_dump(mode="json"))
    assert same == cfg
    assert resolve_config(cfg, ["teacher.train.epochs=3"]).teacher.train.epochs == 3
    with pytest.raises(ConfigError, match="epochz"):
        resolve_config("demo", ["teacher.train.epochz=3"])


def test_an_unknown_attribute_of_the_package_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        rolekd.trian  # noqa: B018


def test_unknown_datasets_are_refused_when_the_config_is_read_and_agents_before_data_loads():
    from rolekd.pipeline.preflight import validate_names

    with pytest.raises(ConfigError, match=r"data.dataset.*unknown dataset 'cifar1O'.*cifar10"):
        load_config("demo", ["data.dataset=cifar1O"])
    cfg = load_config("demo", ["student.agents=[backward, hrad]"])  # agents register above the config's floor
    with pytest.raises(ValueError, match=r"^student.agents: unknown augmentation agent 'hrad'; expected one of: "
                       r"backward, hard"):
        validate_names(cfg)


def test_a_registered_dataset_and_agent_are_named_like_the_built_in_ones(tmp_path):
    from rolekd.agents import AgentSpec, available_agents, build_agents, register_agent
    from rolekd.augment.baseline import BaselineAugmenter
    from rolekd.data import DatasetSpec, available_datasets, dataset_spec, load_dataset, register_dataset

    digits = dataset_spec("digits")
    register_dataset("digits_again_test", DatasetSpec(digits.load, "digits, registered again", 4))
    register_agent("flip_test", AgentSpec(lambda cfg: BaselineAugmenter(0, True, 0), "a flip agent"))
    assert "digits_again_test" in available_datasets() and "flip_test" in available_agents()
    cfg = load_config("demo", ["data.dataset=digits_again_test", "student.agents=[flip_test]"])
    assert cfg.data.resolved_schedule_cutout == 4  # the dataset's own PBA cutout
    assert len(load_dataset("digits_again_test").train) == len(load_dataset("digits").train)
    (agent,) = build_agents(cfg.student.agents, cfg)
    assert isinstance(agent, BaselineAugmenter)
    from rolekd.pipeline.run import plan_rows

    assert any(r.label.endswith("+ a flip agent") for r in plan_rows(cfg))


def test_none_is_a_registered_kd_method_that_distils_nothing():
    from rolekd.kd import available_methods, distills

    assert available_methods()[0] == "none" and not distills("none") and distills("iikd")
    with pytest.raises(ValueError, match="distill.method: unknown distill method 'hinton'"):
        distills("hinton")
