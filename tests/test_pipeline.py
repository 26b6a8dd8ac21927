"""`rolekd run` end to end on a tiny budget of the embedded demo."""

from __future__ import annotations

import json
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import ray

from rolekd.config import load_config
from rolekd.pipeline.run import Pipeline, RunFolderError, plan_rows, run_pipeline

TINY = [
    "teacher.model_args.width=4", "student.model_args.width=4",
    "teacher.train.epochs=2", "student.train.epochs=2",
    "data.reduced_train=60", "data.reduced_val=60",
    "search.population=4", "search.epochs=2", "search.perturbation_interval=1",
    "distill.method=soft",
]


@pytest.fixture(autouse=True)
def _ray_down():
    yield
    if ray.is_initialized():
        ray.shutdown()


def tiny_cfg(*extra: str):
    return load_config("demo", TINY + list(extra))


def quiet(*_args, **_kw):
    return None


def _table_numbers(md: str) -> dict[str, tuple[float, float]]:
    out = {}
    for line in md.splitlines():
        m = re.match(r"\| (.+?) \| .+? \| ([\d.]+) \| ([\d.]+) \|$", line)
        if m:
            out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    report = run_pipeline(tiny_cfg(), out, say=quiet)
    if ray.is_initialized():
        ray.shutdown()
    return out, report


def test_every_stage_writes_its_files(finished_run):
    out, _ = finished_run
    for path in ("config.yaml", "stage_alpha/schedule.json", "stage_beta/schedule.json",
                 "stage_alpha/teacher/seed0/last.pt", "stage_beta/student/seed0/metrics.jsonl",
                 "baselines/teacher_vanilla/seed0/best.pt", "baselines/student_vanilla/seed0/last.pt",
                 "baselines/student_kd/seed0/last.pt", "baselines/student_kd_teacher_schedule/seed0/last.pt",
                 "report.md", "report.json", "plots/curves.png", "plots/schedules.png"):
        assert (out / path).is_file(), path


def test_report_table_matches_report_json_and_metric_files(finished_run):
    out, report = finished_run
    cfg = tiny_cfg()
    table = _table_numbers((out / "report.md").read_text())
    rows = {r["label"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert set(table) == {r.label for r in plan_rows(cfg)} == set(rows)
    for row in plan_rows(cfg):
        metrics = [json.loads(l) for l in (out / row.folder / "seed0" / "metrics.jsonl").read_text().splitlines()]
        accs = [m["val_acc"] for m in metrics]
        last, best = table[row.label]
        assert last == pytest.approx(round(100 * accs[-1], 2))
        assert best == pytest.approx(round(100 * max(accs), 2))
        assert rows[row.label]["last"]["mean"] == accs[-1]
        assert rows[row.label]["best"]["mean"] == max(accs)


def test_report_summarises_each_search_from_its_records(finished_run):
    out, report = finished_run
    searches = {s["schedule"]: s for s in report["searches"]}
    assert set(searches) == {"A_T", "A_S"}
    for key, stage in (("A_T", "stage_alpha"), ("A_S", "stage_beta")):
        history = (out / stage / "search" / "history.jsonl")
        exploits = len(history.read_text().splitlines()) if history.is_file() else 0
        assert searches[key]["summary"]["exploits"] == exploits
        schedule = json.loads((out / stage / "schedule.json").read_text())
        active = sum(seg["epochs"] for seg in schedule["segments"] if any(e["prob"] for e in seg["policy"]))
        assert searches[key]["epochs_with_augmentation"] == active
        empty_note = f"- {key} is empty" in (out / "report.md").read_text()
        assert empty_note == (active == 0)


def test_resume_mid_stage_beta_skips_alpha_and_matches_uninterrupted(finished_run, tmp_path):
    done, _ = finished_run
    out = tmp_path / "demo"
    # the state of a run killed during stage β's retraining: searches and teachers finished
    keep = ["config.yaml", "stage_alpha", "stage_beta/schedule.json", "stage_beta/search",
            "baselines/teacher_vanilla", "timings.json"]
    for rel in keep:
        src, dst = done / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    teacher_mtime = (out / "stage_alpha/teacher/seed0/last.pt").stat().st_mtime_ns
    trained: list[str] = []

    @contextmanager
    def killing_progress(label, epochs):
        trained.append(label)

        def cb(kind, info):
            if label.startswith("student_beta") and kind == "step" and info["epoch"] == 1:
                raise KeyboardInterrupt

        yield cb

    with pytest.raises(KeyboardInterrupt):
        Pipeline(tiny_cfg(), out, resume=True, progress=killing_progress, say=quiet).run()
    assert (out / "stage_beta/student/seed0/last.pt").is_file()  # epoch 1 was saved before the kill

    @contextmanager
    def recording(label, epochs):
        trained.append(label)
        yield None

    trained.clear()
    Pipeline(tiny_cfg(), out, resume=True, progress=recording, say=quiet).run()
    assert not any(t.startswith("teacher") for t in trained)
    assert (out / "stage_alpha/teacher/seed0/last.pt").stat().st_mtime_ns == teacher_mtime
    assert _table_numbers((out / "report.md").read_text()) == _table_numbers((done / "report.md").read_text())


def test_a_run_folder_of_another_config_is_refused(finished_run, tmp_path):
    out, _ = finished_run
    with pytest.raises(RunFolderError, match="different config"):
        Pipeline(tiny_cfg("student.w_bits=4"), out, resume=True, say=quiet).run()
    with pytest.raises(RunFolderError, match="--resume"):
        Pipeline(tiny_cfg(), out, resume=False, say=quiet).run()


@pytest.mark.parametrize("override, field", [
    ("distill.method=telepathy", "distill.method"),
    ("student.model=resnet1000", "student.model"),
])
def test_unknown_names_fail_before_any_training(tmp_path, override, field):
    out = tmp_path / "x"
    with pytest.raises(ValueError, match=field) as exc:
        Pipeline(tiny_cfg(override), out, say=quiet).run()
    assert "\n" not in str(exc.value)
    assert not out.exists()
