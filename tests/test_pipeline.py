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


@pytest.mark.slow
def test_every_stage_writes_its_files(finished_run):
    out, _ = finished_run
    for path in ("config.yaml", "stage_alpha/schedule.json", "stage_beta/schedule.json",
                 "stage_alpha/teacher/seed0/last.pt", "stage_beta/student/seed0/metrics.jsonl",
                 "baselines/teacher_vanilla/seed0/best.pt", "baselines/student_vanilla/seed0/last.pt",
                 "baselines/student_kd/seed0/last.pt", "baselines/student_kd_teacher_schedule/seed0/last.pt",
                 "report.md", "report.json", "plots/curves.png", "plots/schedules.png"):
        assert (out / path).is_file(), path


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_run_folder_of_another_config_is_refused(finished_run, tmp_path):
    out, _ = finished_run
    with pytest.raises(RunFolderError, match=r"another config: student.w_bits \(saved 2, now 4\)"):
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


def _state_hash(state: dict) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(state.items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_no_row_changes_the_teacher_the_other_rows_receive(finished_run, tmp_path):
    """DML trains its teacher as a peer: it must train a copy, not the cached teacher later rows use."""
    from rolekd.augment.schedule import Schedule
    from rolekd.pipeline.setup import prepare
    from rolekd.training import load_checkpoint

    done, _ = finished_run
    out = tmp_path / "dml"
    shutil.copytree(done / "stage_alpha" / "teacher", out / "stage_alpha" / "teacher")
    cfg = tiny_cfg("distill.method=dml")  # DML's own default: the peer is trained
    assert cfg.distill.per_method == {}
    on_disk = _state_hash(load_checkpoint(out / "stage_alpha/teacher/seed0/last.pt")["model"])
    pipeline = Pipeline(cfg, out, say=quiet)
    pipeline.prep = prepare(cfg)
    pipeline.schedules = {k: Schedule.load(done / stage / "schedule.json")
                          for k, stage in (("A_T", "stage_alpha"), ("A_S", "stage_beta"))}
    students = [r for r in plan_rows(cfg) if r.role == "student"]
    assert [r.key for r in students][:2] == ["student_beta", "student_kd"]  # a DML row first, then more
    for job in pipeline._jobs(students):  # seed 0's trainings, in the run's order
        pipeline._train(job, None)
        if job.teacher:
            assert _state_hash(pipeline.teachers[0].model.state_dict()) == on_disk, job.key
    kd_metrics = json.loads((out / "baselines/student_kd/seed0/metrics.jsonl").read_text().splitlines()[0])
    assert "train_kd_dml_peer" in kd_metrics  # the rows did train a peer


@pytest.mark.slow
def test_warm_start_and_teacher_schedule_rows_train_without_kd(finished_run):
    from rolekd.training import load_checkpoint

    out, report = finished_run

    def first_metrics(folder: str) -> dict:
        return json.loads((out / folder / "seed0/metrics.jsonl").read_text().splitlines()[0])

    for folder in ("baselines/student_warm_start", "baselines/student_teacher_schedule"):
        assert not any(k.startswith("train_kd_") for k in first_metrics(folder)), folder
    assert any(k.startswith("train_kd_") for k in first_metrics("baselines/student_kd"))
    meta = {f: load_checkpoint(out / f / "seed0/last.pt")["meta"]
            for f in ("baselines/student_warm_start", "baselines/student_teacher_schedule", "baselines/student_kd")}
    assert meta["baselines/student_warm_start"].get("warm_started") is True
    assert meta["baselines/student_kd"].get("warm_started") is True
    assert not meta["baselines/student_teacher_schedule"].get("warm_started")
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["student_teacher_schedule"]["augmentation"].startswith("A_T")
    pairs = {(c["row"], c["reference"]): c for c in report["comparisons"]}
    assert set(pairs) == {("student_beta", "student_kd"), ("student_beta", "student_kd_teacher_schedule"),
                          ("student_kd_teacher_schedule", "student_kd"), ("teacher_alpha", "teacher_vanilla")}
    beta, kd = rows["student_beta"]["last_per_seed"], rows["student_kd"]["last_per_seed"]
    assert pairs["student_beta", "student_kd"]["deltas"] == [beta[0] - kd[0]]
    assert all(c["n"] == 1 and "one seed" in c["verdict"] for c in pairs.values())
    assert "## Signal or noise" in (out / "report.md").read_text()
    assert report["schedule_sources"]["A_T"].startswith("searched in this run")
