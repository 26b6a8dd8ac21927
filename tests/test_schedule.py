"""Schedules: JSON format, validation errors, PBA replay (stretch), PBA logs, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rolekd.augment import PBA_ORDER, Policy, Schedule, ScheduleError
from rolekd.augment.plot import plot_command, plot_schedules, preview_command, preview_grid, schedule_curves
from test_augment_ops import make_images
from test_policy import PBA_LINE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pol(seed: int) -> Policy:
    return Policy.random(torch.Generator().manual_seed(seed))


@pytest.fixture
def schedule() -> Schedule:
    return Schedule.from_segments([(12, Policy.zeros()), (3, pol(1)), (60, pol(2)), (125, pol(3))])


# ------------------------------------------------------------------ construction and views


def test_segments_and_per_epoch_view(schedule: Schedule) -> None:
    assert schedule.epochs == len(schedule) == 200
    assert schedule.policy_for_epoch(0) == Policy.zeros()
    assert schedule.policy_for_epoch(11) == Policy.zeros()
    assert schedule.policy_for_epoch(12) == pol(1)
    assert schedule.policy_for_epoch(199) == pol(3)
    assert len(schedule.policies) == 200
    with pytest.raises(IndexError):
        schedule.policy_for_epoch(200)
    assert Schedule.from_policies(schedule.policies) == schedule


def test_from_segments_drops_empty_and_rejects_negative() -> None:
    s = Schedule.from_segments([(0, pol(1)), (5, pol(2)), (0, pol(3))])
    assert s.segments == ((5, pol(2)),)
    with pytest.raises(ScheduleError, match="segment 1"):
        Schedule.from_segments([(5, pol(2)), (-1, pol(3))])


# ------------------------------------------------------------------ JSON


def test_json_round_trip(tmp_path: Path, schedule: Schedule) -> None:
    path = schedule.save(tmp_path / "sub" / "schedule.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "rolekd.schedule" and doc["version"] == 1 and doc["epochs"] == 200
    assert doc["segments"][1]["epochs"] == 3
    assert {e["op"] for e in doc["segments"][1]["policy"]} == set(PBA_ORDER)
    assert Schedule.load(path) == schedule
    assert [p.name for p in path.parent.iterdir()] == ["schedule.json"]  # no temp file left behind
    schedule.stretch(10).save(path)  # overwrite in place
    assert Schedule.load(path).epochs == 10


def test_per_epoch_policies_form_loads(tmp_path: Path, schedule: Schedule) -> None:
    doc = {"format": "rolekd.schedule", "version": 1, "epochs": 200,
           "policies": [p.to_dicts() for p in schedule.policies]}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    assert Schedule.load(tmp_path / "s.json").policies == schedule.policies


def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["segments"][2]["policy"][7].update(prob=11),
         "segment 2: policy entry 7 (Posterize): probability 11 is outside 0..10"),
        (lambda d: d["segments"][1]["policy"][4].update(op="SamplePairing"),
         "segment 1: policy entry 4: unknown op 'SamplePairing'"),
        (lambda d: d.update(epochs=199), "segments cover 200 epochs but \"epochs\" says 199"),
        (lambda d: d["segments"][0].update(epochs=0), "segment 0: epoch count 0 must be a positive integer"),
        (lambda d: d.update(version=2), "unsupported version 2"),
        (lambda d: d.update(format="pba"), "not a rolekd schedule (its format is 'pba', expected 'rolekd.schedule')"),
        (lambda d: d["segments"][3]["policy"].pop(), "segment 3: policy has 29 entries"),
    ],
)
def test_invalid_files_give_one_line_errors(tmp_path: Path, schedule: Schedule, edit, message: str) -> None:
    doc = schedule.to_dict()
    edit(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(ScheduleError) as err:
        Schedule.load(path)
    text = str(err.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text
    assert isinstance(err.value, ValueError)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="invalid JSON at line 1"):
        Schedule.load(_write(tmp_path, "{not json"))
    with pytest.raises(ScheduleError, match="cannot read"):
        Schedule.load(tmp_path / "missing.json")
    with pytest.raises(ScheduleError, match="bare|expected a JSON object"):
        Schedule.load(_write(tmp_path, [0] * 60))  # a bare 60-int list is not a schedule


# ------------------------------------------------------------------ stretch (PBA replay)


def test_stretch_integer_multiplier(schedule: Schedule) -> None:
    long = schedule.stretch(1800)
    assert long.epochs == 1800
    assert [n for n, _ in long.segments] == [108, 27, 540, 1125]
    for e in range(0, 1800, 7):
        assert long.policy_for_epoch(e) == schedule.policy_for_epoch(e // 9)
    assert schedule.stretch(1800, "proportional") == long


def test_stretch_non_integer_pads_with_last_policy() -> None:
    s = Schedule.from_segments([(3, pol(1)), (3, pol(2)), (4, pol(3))])
    out = s.stretch(15)  # x1.5: int(4.5) + int(4.5) + int(6) = 14, one epoch of padding
    assert [n for n, _ in out.segments] == [4, 4, 7]
    assert out.policy_for_epoch(14) == pol(3)


def test_stretch_shrinks(schedule: Schedule) -> None:
    short = schedule.stretch(10)  # x0.05: 12->0, 3->0, 60->3, 125->6, +1 padding of the last
    assert short.epochs == 10
    assert [n for n, _ in short.segments] == [3, 7]
    assert short.policies == [pol(2)] * 3 + [pol(3)] * 7
    prop = schedule.stretch(10, "proportional")
    assert prop.policies == [schedule.policy_for_epoch(e * 20) for e in range(10)]
    assert schedule.stretch(1).epochs == 1
    with pytest.raises(ScheduleError):
        schedule.stretch(0)


# ------------------------------------------------------------------ PBA logs (parse_log)


def _line(target: str, clone: str, t_iter: int, c_iter: int, old: list[int], new: list[int], as_json: bool) -> str:
    if as_json:
        return json.dumps([target, clone, t_iter, c_iter, {"hp_policy": old, "lr": 0.1}, {"hp_policy": new, "lr": 0.1}])
    return repr([target, clone, t_iter, c_iter, old, new])


def _ints(seed: int) -> list[int]:
    return pol(seed).to_pba_list()


@pytest.mark.parametrize("as_json", [True, False])
def test_from_pba_log_follows_parse_log(as_json: bool) -> None:
    zero = [0] * 60
    lines = [
        _line("3", "5", 5, 6, _ints(9), _ints(8), as_json),  # dropped: lineage breaks after it
        _line("2", "1", 11, 12, zero, _ints(1), as_json),
        _line("4", "2", 20, 21, _ints(1), _ints(2), as_json),
        _line("7", "4", 29, 30, _ints(2), _ints(3), as_json),
        "",
    ]
    s = Schedule.from_pba_log(lines, 50)
    assert [n for n, _ in s.segments] == [12, 9, 9, 20]
    assert [p.to_pba_list() for _, p in s.segments] == [zero, _ints(1), _ints(2), _ints(3)]
    assert s.epochs == 50


def test_from_pba_log_shipped_lines() -> None:
    """The first two lines of PBA's schedules/rcifar10_16_wrn.txt: 12 all-zero epochs first."""
    second = [3, 0, 3, 8, 3, 2, 0, 6, 3, 0, 0, 3, 0, 0, 0, 3, 0, 3, 2, 4, 5, 3, 0, 0, 2, 1, 0, 0, 6, 0,
              2, 0, 2, 8, 5, 4, 2, 3, 0, 5, 3, 3, 0, 2, 1, 5, 3, 0, 5, 0, 3, 3, 0, 1, 0, 0, 1, 0, 1, 3]
    first = [0, 3, 3, 7, 1, 9, 2, 0, 2, 0, 0, 2, 0, 0, 0, 0, 3, 0, 0, 2, 0, 2, 0, 0, 0, 0, 1, 0, 3, 1,
             0, 0, 1, 0, 3, 0, 2, 0, 0, 6, 0, 0, 0, 3, 0, 2, 0, 0, 6, 0, 3, 4, 0, 0, 0, 0, 3, 1, 0, 3]
    lines = [f"['9', '8', 11, 12, {[0] * 60}, {first}]\n", f"['7', '9', 35, 34, {first}, {second}]\n"]
    s = Schedule.from_pba_log(lines, 200)
    assert [n for n, _ in s.segments] == [12, 22, 166]
    assert s.policy_for_epoch(11) == Policy.zeros()
    assert s.policy_for_epoch(12).to_pba_list() == first
    assert dict((e.op, e.prob) for e in s.policy_for_epoch(12).entries[:15])["TranslateX"] == 3


def test_from_pba_log_errors() -> None:
    with pytest.raises(ScheduleError, match="PBA log line 1: clone iteration 60 is past the 50 epochs"):
        Schedule.from_pba_log([_line("2", "1", 59, 60, [0] * 60, _ints(1), True)], 50)
    bad = [0] * 60
    bad[14] = 11
    with pytest.raises(ScheduleError, match=r"line 1: new_config: policy entry 7 \(Posterize\): probability 11"):
        Schedule.from_pba_log([_line("2", "1", 1, 2, [0] * 60, bad, True)], 50)
    with pytest.raises(ScheduleError, match="line 1: neither JSON nor a Python literal"):
        Schedule.from_pba_log(["[oops"], 50)


# ------------------------------------------------------------------ plots


def test_schedule_curves_normalised(schedule: Schedule) -> None:
    probs, mags = schedule_curves(schedule)
    assert probs.shape == mags.shape == (200, 15)
    assert np.allclose(probs[:12], 0)
    assert probs.sum(1).max() == pytest.approx(1.0) and mags.sum(1).max() == pytest.approx(1.0)
    assert (probs >= 0).all()


def test_plot_schedules_and_plot_command(tmp_path: Path, schedule: Schedule) -> None:
    a = schedule.save(tmp_path / "A_T.json")
    b = Schedule.constant(Policy.from_pba_list(PBA_LINE), 30).save(tmp_path / "A_S.json")
    written = plot_command([str(a), str(b)], None)
    assert written == str(tmp_path / "A_T_vs_A_S.png") and Path(written).read_bytes()[:8] == PNG_MAGIC
    single = plot_schedules({"teacher": schedule}, tmp_path / "one.png")
    assert single.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError):
        plot_command([str(a)] * 3, None)


def test_preview_grid_and_command(tmp_path: Path, schedule: Schedule) -> None:
    images = make_images(6, seed=7)
    out = preview_grid(images, 255 - images, tmp_path / "g.png", titles=[f"t{i}" for i in range(6)])
    assert out.read_bytes()[:8] == PNG_MAGIC
    p1 = preview_command(None, "Rotate", 9, images, str(tmp_path / "rot.png"), seed=0)
    p2 = preview_command(str(schedule.save(tmp_path / "s.json")), None, 0, images, str(tmp_path / "s.png"), seed=0)
    p3 = preview_command(None, None, 0, images[:1], str(tmp_path / "r.png"), seed=3)
    for p in (p1, p2, p3):
        assert Path(p).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="unknown op"):
        preview_command(None, "Blur", 3, images, str(tmp_path / "x.png"), seed=0)
