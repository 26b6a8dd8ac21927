"""The report's seed statistics, against numbers computed by hand."""

from __future__ import annotations

import pytest

from rolekd.pipeline.report import comparisons
from rolekd.pipeline.stats import paired_difference, spread, t_quantile


def test_t_quantiles_are_the_tabulated_ones():
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(9) == pytest.approx(2.2622, abs=1e-4)


def test_paired_difference_by_hand():
    # deltas 0.01, 0.02, 0.01: mean 0.013333, sd 0.0057735, se 0.0033333, t(0.975, 2) = 4.302653
    d = paired_difference([0.70, 0.72, 0.71], [0.69, 0.70, 0.70], "A_S better", "A_S worse")
    assert d["mean"] == pytest.approx(0.0133333, abs=1e-6)
    assert d["low"] == pytest.approx(0.0133333 - 0.0143422, abs=1e-6)
    assert d["high"] == pytest.approx(0.0133333 + 0.0143422, abs=1e-6)
    assert d["verdict"] == "no difference shown"  # the interval reaches below zero
    # deltas 0.02, 0.021, 0.019: mean 0.02, sd 0.001, half-width 4.302653 * 0.001 / sqrt(3) = 0.0024842
    d = paired_difference([0.72, 0.721, 0.719], [0.70, 0.70, 0.70], "A_S better", "A_S worse")
    assert (d["low"], d["high"]) == (pytest.approx(0.0175158, abs=1e-6), pytest.approx(0.0224842, abs=1e-6))
    assert d["verdict"] == "A_S better"
    assert paired_difference([0.70, 0.699, 0.701], [0.72, 0.72, 0.72], "b", "A_S worse")["verdict"] == "A_S worse"


def test_one_seed_gives_no_interval_and_no_verdict():
    d = paired_difference([0.75], [0.70], "better", "worse")
    assert d["mean"] == pytest.approx(0.05) and d["low"] is None and d["high"] is None
    assert d["verdict"].startswith("no difference shown") and "one seed" in d["verdict"]
    with pytest.raises(ValueError, match="paired"):
        paired_difference([0.7, 0.8], [0.7], "b", "w")


def test_spread_by_hand():
    s = spread([0.60, 0.62, 0.64])
    assert (s["mean"], s["min"], s["max"], s["n"]) == (pytest.approx(0.62), 0.60, 0.64, 3)
    assert s["std"] == pytest.approx(0.02)
    assert spread([0.5])["std"] == 0.0


def test_comparisons_pair_the_role_wise_row_with_its_baselines_seed_by_seed():
    def row(key, accs):
        return {"key": key, "label": key, "last_per_seed": accs}

    results = [row("student_beta", [0.72, 0.721, 0.719]), row("student_kd", [0.70, 0.70, 0.70]),
               row("student_kd_teacher_schedule", [0.73, 0.74, 0.72]), row("teacher_vanilla", [0.8, 0.8, 0.8])]
    from rolekd.pipeline.run import PAPER_ROWS

    diffs = {(d["row"], d["reference"]): d for d in comparisons(results, PAPER_ROWS)}
    assert set(diffs) == {("student_beta", "student_kd"), ("student_beta", "student_kd_teacher_schedule"),
                          ("student_kd_teacher_schedule", "student_kd")}  # teacher_alpha has no result: no pair
    assert diffs["student_kd_teacher_schedule", "student_kd"]["verdict"] == "A_T better than the KD baseline"
    assert diffs["student_beta", "student_kd"]["verdict"] == "A_S better than the KD baseline"
    # vs A_T: deltas -0.01, -0.019, -0.001: mean -0.01, sd 0.009, half-width 4.302653 * 0.009 / sqrt(3) = 0.022357
    vs_at = diffs["student_beta", "student_kd_teacher_schedule"]
    assert vs_at["mean"] == pytest.approx(-0.01, abs=1e-9)
    assert vs_at["high"] == pytest.approx(-0.01 + 0.0223572, abs=1e-6)
    assert vs_at["verdict"] == "no difference shown"


def test_a_row_evaluated_every_few_epochs_reports_its_last_and_best_evaluated_epochs(tmp_path):
    import json

    from rolekd.pipeline.folders import seed_folder
    from rolekd.pipeline.report import collect_row
    from rolekd.pipeline.run import PAPER_ROWS

    row = next(r for r in PAPER_ROWS if r.key == "student_kd")
    folder = seed_folder(tmp_path / row.folder, 0)
    folder.mkdir(parents=True)
    lines = [{"epoch": 1, "train_acc": 0.9}, {"epoch": 2, "train_acc": 0.95, "val_acc": 0.6},
             {"epoch": 3, "train_acc": 0.99}, {"epoch": 4, "train_acc": 0.99, "val_acc": 0.55}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    r = collect_row(tmp_path, row, [0])
    assert r["last_per_seed"] == [0.55] and r["best_per_seed"] == [0.6]  # never an unevaluated epoch's train acc
    assert r["curves"][0] == ([2, 4], [0.6, 0.55])
