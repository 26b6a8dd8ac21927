"""Several independent stage-β searches (`pipeline.search_seeds`), published student schedules
(`pipeline.student_schedules`) and student rows with and without PBA's cutout (`pipeline.extra_cutouts`)."""

from __future__ import annotations

import json
import statistics

import pytest
import ray
from pydantic import ValidationError

from rolekd.augment.baseline import BaselineAugmenter
from rolekd.augment.schedule import Schedule, ScheduleError
from rolekd.config import load_config
from rolekd.pipeline.report import between_searches, comparison_pairs
from rolekd.pipeline.run import Pipeline, Row, plan_rows, run_pipeline
from rolekd.pipeline.schedule_plan import plan_schedules
from rolekd.pipeline.stages import build_augmenters
from rolekd.pipeline.stats import t_quantile

from test_pipeline import TINY, quiet

STUDY = ["pipeline.search_seeds=[3,5,8]", "pipeline.student_schedules=[pba-rcifar10]", "pipeline.extra_cutouts=[0]",
         "pipeline.baselines=[student_kd,student_kd_teacher_schedule]"]


def cifar(*extra: str):
    return load_config("cpu/cifar10_resnet8_w2a2", list(extra))


def test_one_stage_beta_row_per_search_each_in_its_own_folder():
    rows = {r.key: r for r in plan_rows(cifar(*STUDY))}
    searched = [rows[f"student_beta_search{s}"] for s in (3, 5, 8)]
    assert [r.schedule for r in searched] == ["A_S[3]", "A_S[5]", "A_S[8]"]
    assert len({r.folder for r in rows.values()}) == len(rows)  # no two rows share a folder
    assert "student_beta" not in rows  # the single search's row is replaced, not kept beside
    plans = {p.ref: p for p in plan_schedules(cifar(*STUDY))}
    assert [plans[f"A_S[{s}]"].search_seed for s in (3, 5, 8)] == [3, 5, 8]
    assert all(rows[f"student_beta_search{s}"].folder.startswith(plans[f"A_S[{s}]"].folder) for s in (3, 5, 8))


def test_without_search_seeds_the_layout_is_the_single_searchs():
    rows = {r.key: r for r in plan_rows(cifar())}
    assert rows["student_beta"].schedule == "A_S" and rows["student_beta"].folder == "stage_beta/student"
    assert {p.ref: p.folder for p in plan_schedules(cifar())} == {"A_T": "stage_alpha", "A_S": "stage_beta"}


def test_published_schedules_are_kd_student_rows_not_searched():
    rows = {r.key: r for r in plan_rows(cifar(*STUDY))}
    row = rows["student_kd_pba-rcifar10"]
    assert (row.role, row.kd, row.schedule) == ("student", True, "pba-rcifar10")
    plan = {p.ref: p for p in plan_schedules(cifar(*STUDY))}["pba-rcifar10"]
    assert not plan.searched and plan.search_seed is None


def test_extra_cutouts_repeat_every_scheduled_student_row_and_only_those():
    plain = plan_rows(cifar(*STUDY[:2], "pipeline.baselines=[student_kd,student_kd_teacher_schedule]"))
    rows = plan_rows(cifar(*STUDY))
    scheduled = [r for r in plain if r.role == "student" and r.schedule]
    assert len(rows) == len(plain) + len(scheduled)
    for r in scheduled:
        twin = next(x for x in rows if x.key == f"{r.key}_cutout0")
        assert (twin.cutout, twin.schedule, twin.kd) == (0, r.schedule, r.kd) and twin.folder != r.folder
    # data.schedule_cutout (16 on CIFAR-10) listed again adds nothing
    assert len(plan_rows(cifar(*STUDY[:2], "pipeline.extra_cutouts=[16]",
                               "pipeline.baselines=[student_kd,student_kd_teacher_schedule]"))) == len(plain)


def test_a_rows_cutout_reaches_its_augmenter():
    cfg = cifar().training()
    cutouts = lambda **kw: [a.cutout for a in build_augmenters(cfg, **kw) if isinstance(a, BaselineAugmenter)]
    policy = Schedule.load("pba-rcifar10")
    assert cutouts(schedule=policy) == [16]  # data.schedule_cutout after a schedule
    assert cutouts(schedule=policy, cutout=0) == [0]
    assert cutouts() == [0]  # the baselines: data.cutout


def test_every_a_s_row_is_paired_with_the_kd_baseline_and_with_a_t_of_its_cutout():
    pairs = {(a, b) for a, b, *_ in comparison_pairs(plan_rows(cifar(*STUDY)))}
    for s in (3, 5, 8):
        assert (f"student_beta_search{s}", "student_kd") in pairs
        assert (f"student_beta_search{s}", "student_kd_teacher_schedule") in pairs
        assert (f"student_beta_search{s}_cutout0", "student_kd_teacher_schedule_cutout0") in pairs
        assert (f"student_beta_search{s}_cutout0", "student_kd_teacher_schedule") not in pairs
    assert ("student_kd_pba-rcifar10", "student_kd") in pairs


@pytest.mark.parametrize("bad, expected", [
    ("pipeline.search_seeds=[1,1]", "distinct"), ("pipeline.extra_cutouts=[-4]", ">= 0"),
    ("pipeline.search_seeds=[]", "at least 1"),
])
def test_bad_study_settings_are_one_line_errors(bad, expected):
    with pytest.raises((ValidationError, ValueError), match=expected):
        cifar(bad)


def test_a_missing_published_schedule_fails_before_any_training(tmp_path):
    cfg = load_config("demo", TINY + ["pipeline.student_schedules=[no-such-schedule]"])
    with pytest.raises(ScheduleError, match=r"^pipeline.student_schedules: no-such-schedule: cannot read"):
        Pipeline(cfg, tmp_path / "run", say=quiet).run()
    assert not (tmp_path / "run").exists()  # nothing claimed, nothing written


def _result(key: str, accs: list[float]) -> dict:
    from rolekd.pipeline.stats import spread

    return {"key": key, "label": key, "last": spread(accs), "last_per_seed": accs}


def test_between_searches_separates_search_spread_from_seed_spread():
    cfg = cifar("pipeline.search_seeds=[0,1,2]", "pipeline.baselines=[student_kd,student_kd_teacher_schedule]")
    rows = plan_rows(cfg)
    per_search = {0: [0.50, 0.52, 0.51], 1: [0.55, 0.56, 0.57], 2: [0.47, 0.49, 0.48]}
    kd, a_t = [0.50, 0.50, 0.53], [0.52, 0.51, 0.50]
    results = [_result(f"student_beta_search{s}", a) for s, a in per_search.items()]
    results += [_result("student_kd", kd), _result("student_kd_teacher_schedule", a_t)]
    (entry,) = between_searches(results, rows, {p.ref: p for p in plan_schedules(cfg)}, 16)
    assert entry["cutout"] == 16
    means = [statistics.fmean(a) for a in per_search.values()]
    assert entry["means"] == pytest.approx(means)
    assert entry["between_searches_std"] == pytest.approx(statistics.stdev(means))
    assert entry["between_seeds_std"] == pytest.approx(0.01)  # every search's seeds have std 0.01
    versus = {d["reference"]: d for d in entry["versus"]}
    deltas = [m - statistics.fmean(kd) for m in means]  # the search is the unit: one difference per search
    half = t_quantile(2) * statistics.stdev(deltas) / 3 ** 0.5
    d = versus["student_kd"]
    assert d["deltas"] == pytest.approx(deltas)
    assert (d["low"], d["high"]) == pytest.approx((statistics.fmean(deltas) - half, statistics.fmean(deltas) + half))
    assert d["verdict"] == "no difference shown"  # one search far above, one below: luck, not a method
    assert versus["student_kd_teacher_schedule"]["deltas"] == pytest.approx([m - statistics.fmean(a_t) for m in means])


def test_one_search_has_no_between_searches_section():
    cfg = cifar("pipeline.baselines=[student_kd]")
    results = [_result("student_beta", [0.5, 0.6]), _result("student_kd", [0.5, 0.5])]
    assert between_searches(results, plan_rows(cfg), {p.ref: p for p in plan_schedules(cfg)}) == []


def test_a_finished_search_is_not_searched_again(tmp_path):
    cfg = cifar("pipeline.search_seeds=[0,1]")
    pipe = Pipeline(cfg, tmp_path, say=quiet)
    pipe.plans = {p.ref: p for p in plan_schedules(cfg)}
    first, second = pipe.plans["A_S[0]"], pipe.plans["A_S[1]"]
    Schedule.load("pba-rcifar10").save(tmp_path / first.folder / "schedule.json")
    assert not pipe._will_search(first) and pipe._will_search(second)


@pytest.mark.slow
def test_a_run_with_two_searches_and_a_published_schedule(tmp_path):
    """End to end: two independent stage-β searches with their own seeds, each A_S retrained; the published row
    trains with the packaged schedule; the report pairs and spreads them (A_T given, to keep it short)."""
    cfg = load_config("demo", TINY + ["search.population=2", "search.epochs=1", "teacher.train.epochs=1",
                                      "student.train.epochs=1", "pipeline.search_seeds=[0,1]",
                                      "pipeline.student_schedules=[pba-rcifar10]", "pipeline.baselines=[student_kd]",
                                      "pipeline.stage_alpha.schedule=pba-rcifar10", "pipeline.max_parallel=1"])
    try:
        report = run_pipeline(cfg, tmp_path, say=quiet)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    states = [json.loads((tmp_path / f"stage_beta/search_seed{s}/search/search_summary.json").read_text())
              for s in (0, 1)]
    assert [s["seed"] for s in states] == [0, 1]  # each search ran with its own seed
    keys = {r["key"] for r in report["rows"]}
    assert {"student_beta_search0", "student_beta_search1", "student_kd_pba-rcifar10"} <= keys
    assert Schedule.load(tmp_path / "published/pba-rcifar10/schedule.json") == Schedule.load("pba-rcifar10")
    (spread,) = report["between_searches"]
    assert spread["rows"] == ["student_beta_search0", "student_beta_search1"]
    assert [v["reference"] for v in spread["versus"]] == ["student_kd"]
    md = (tmp_path / "report.md").read_text()
    assert "## Independent searches" in md and "| A_S[0], A_S[1] |" in md
    assert "Schedule pba-rcifar10: published (pba-rcifar10), not searched in this run." in md
    finished = json.loads((tmp_path / "baselines/student_kd/seed0/finished.json").read_text())
    assert finished["epochs"] == 1 and finished["last"]["epoch"] == 1  # --resume knows it without its checkpoints
