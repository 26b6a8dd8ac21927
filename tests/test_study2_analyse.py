"""docs/results/study2_cifar10/analyse.py on a fabricated run folder: its numbers against hand computations."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from rolekd.augment.policy import PBA_ORDER, Policy
from rolekd.augment.schedule import Schedule
from rolekd.config import dump_config, load_config

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "results" / "study2_cifar10" / "analyse.py"
EPOCHS = 4  # the student's; the teacher's (A_T's search) is twice as long


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("study2_analyse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_metrics(folder: Path, train_acc: float, val_acc: float) -> None:
    folder.mkdir(parents=True)
    lines = [{"epoch": e, "train_acc": train_acc} for e in range(1, EPOCHS)]
    lines.append({"epoch": EPOCHS, "train_acc": train_acc, "val_acc": val_acc})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    cfg = load_config("demo", [f"student.train.epochs={EPOCHS}", f"teacher.train.epochs={2 * EPOCHS}",
                               "pipeline.search_seeds=[0,1]", "pipeline.seeds=[0]", "pipeline.extra_cutouts=[4]",
                               "pipeline.baselines=[student_kd,student_kd_teacher_schedule]"])
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    zeros, rotate = Policy.zeros(), Policy.single("Rotate", 10, 3)
    # A_T, 8 epochs: nothing, then Invert; stretched to 4: 2 epochs of each
    Schedule.from_policies([zeros] * EPOCHS + [Policy.single("Invert", 10)] * EPOCHS).save(
        tmp_path / "stage_alpha" / "schedule.json")
    Schedule.constant(rotate, EPOCHS).save(tmp_path / "stage_beta" / "search_seed0" / "schedule.json")
    rotate_shear = rotate.with_entry(PBA_ORDER.index("ShearX"), 6, 0)
    Schedule.from_policies([zeros, zeros, Policy.single("Rotate", 4), rotate_shear]).save(
        tmp_path / "stage_beta" / "search_seed1" / "schedule.json")
    search = tmp_path / "stage_beta" / "search_seed0" / "search"
    search.mkdir()
    (search / "search_summary.json").write_text(json.dumps({"final_val_acc": {"trial_00": 0.5, "trial_01": 0.7},
                                                            "seed": 0, "lineage_matches_history": True}))
    write_metrics(tmp_path / "baselines" / "student_kd" / "seed0", 0.8, 0.50)
    write_metrics(tmp_path / "stage_beta" / "search_seed0" / "student" / "seed0", 0.6, 0.55)
    write_metrics(tmp_path / "stage_beta" / "search_seed0" / "student_cutout4" / "seed0", 0.4, 0.47)
    return tmp_path


def test_l1_distances_against_hand_computation(run: Path) -> None:
    analyse = load_script()
    a_s0 = Schedule.load(run / "stage_beta" / "search_seed0" / "schedule.json")
    a_s1 = Schedule.load(run / "stage_beta" / "search_seed1" / "schedule.json")
    a_t = Schedule.load(run / "stage_alpha" / "schedule.json")
    # per epoch: Rotate 1.0 vs nothing, twice; Rotate 1.0 vs 0.4; Rotate 1.0 vs Rotate 1.0 + ShearX 0.6
    assert analyse.mean_l1(a_s0, a_s1, EPOCHS) == pytest.approx((1.0 + 1.0 + 0.6 + 0.6) / 4)
    # A_T stretched to 4 epochs: Rotate vs nothing (1.0) twice, Rotate vs Invert (2.0) twice
    assert analyse.mean_l1(a_s0, a_t, EPOCHS) == pytest.approx(1.5)


def test_rendered_sections(run: Path) -> None:
    out = load_script().render(run)
    assert "| A_S[0] | 1.50 | – | 0.80 |" in out  # A_S[0]'s row: against A_T, itself, A_S[1]
    se = math.sqrt(0.6 * 0.4 / 400)  # the demo's data.reduced_val
    std = math.sqrt(0.02)
    assert f"| A_S[0] | 0 | 2 | 50.0 – 70.0 | {100 * std:.2f} | {100 * se:.2f} | {std / se:.2f} | True |" in out
    assert "| A_S[0] | 0 | +5.00 | – | +5.00 | 1 | metrics |" in out  # cutout 0: data.schedule_cutout for digits
    assert "| A_S[0] | 4 | -3.00 | – | -3.00 | 1 | metrics |" in out
    assert "| Student + KD + A_S[0] (stage β, role-wise) | 1 / 1 | 60.0 | 55.00 | 5.0 |" in out
    assert "Not in the run folder (yet), skipped: search summaries stage_alpha/search/search_summary.json, " \
           "stage_beta/search_seed1/search/search_summary.json." in out


def write_progress(search: Path, trial: str, val_by_epoch: dict[int, float]) -> None:
    folder = search / "trials" / trial
    folder.mkdir(parents=True)
    lines = [{"epoch": e, "train_acc": 0.5, "val_acc": v} for e, v in val_by_epoch.items()]
    (folder / "progress.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_each_exploit_is_paired_with_its_source_at_the_next_ranking(run: Path) -> None:
    from rolekd.pba.lineage import ExploitEvent, append_event

    analyse = load_script()
    search = run / "stage_beta" / "search_seed0" / "search"
    zeros, rotate, invert = Policy.zeros(), Policy.single("Rotate", 4), Policy.single("Invert", 10)
    # interval 2 (the demo's perturbation_interval is set below): exploits at epoch 2 and 4, ranked again at 4 and 6
    append_event(search / "history.jsonl", ExploitEvent(1.0, "trial_01", "trial_00", 2, 2, zeros, rotate))
    append_event(search / "history.jsonl", ExploitEvent(2.0, "trial_00", "trial_01", 4, 4, rotate, invert))
    write_progress(search, "trial_00", {2: 0.60, 4: 0.70, 6: 0.66})
    write_progress(search, "trial_01", {2: 0.50, 4: 0.64, 6: 0.69})
    outcomes = analyse.exploit_outcomes(search, 2)
    assert [(o["source_p"], o["explored_p"]) for o in outcomes] == [(0.0, 0.4), (0.4, 1.0)]
    # trial_01 (Rotate) against trial_00 at epoch 4: -0.06; trial_00 (Invert) against trial_01 at epoch 6: -0.03
    assert [o["target_acc"] - o["source_acc"] for o in outcomes] == pytest.approx([-0.06, -0.03])
    cfg = load_config(str(run / "config.yaml"), ["search.perturbation_interval=2"])
    out = "\n".join(analyse.exploit_view(run, cfg))
    half = 12.706 * math.sqrt(0.00045) / math.sqrt(2)  # t(1) quantile × sd of (-0.06, -0.03) / √2
    assert (f"| A_S[0] | 2 | 2 | 0.2 | +0.5 | -4.50 | [{-4.5 - 100 * half:+.2f}, {-4.5 + 100 * half:+.2f}] "
            f"| 2 / 2 |") in out
    assert "skipped: search histories stage_alpha/search/history.jsonl, stage_beta/search_seed1/search/history.jsonl." \
        in out


def test_an_exploit_whose_next_ranking_is_missing_is_counted_not_paired(run: Path) -> None:
    from rolekd.pba.lineage import ExploitEvent, append_event

    analyse = load_script()
    search = run / "stage_beta" / "search_seed0" / "search"
    append_event(search / "history.jsonl",
                 ExploitEvent(1.0, "trial_01", "trial_00", 2, 2, Policy.zeros(), Policy.single("Rotate", 4)))
    write_progress(search, "trial_00", {2: 0.60})
    write_progress(search, "trial_01", {2: 0.50})  # cut off before the ranking at epoch 4
    cfg = load_config(str(run / "config.yaml"), ["search.perturbation_interval=2"])
    assert "| A_S[0] | 1 | 0 | – | – | – | – | – |" in "\n".join(analyse.exploit_view(run, cfg))


def test_the_exploit_plot_draws_one_series_per_search_with_a_history(run: Path, tmp_path: Path) -> None:
    from rolekd.pba.lineage import ExploitEvent, append_event

    analyse = load_script()
    search = run / "stage_beta" / "search_seed0" / "search"
    append_event(search / "history.jsonl",
                 ExploitEvent(1.0, "trial_01", "trial_00", 2, 2, Policy.zeros(), Policy.single("Rotate", 4)))
    write_progress(search, "trial_00", {2: 0.60, 4: 0.70})
    write_progress(search, "trial_01", {2: 0.50, 4: 0.64})
    png = tmp_path / "exploits.png"
    assert analyse.plot_exploits(run, load_config(str(run / "config.yaml")), png) == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
