"""`rolekd run`'s trainings several at once on Ray: the same numbers as one after another, resume, and slots."""

from __future__ import annotations

import json
import os

import pytest
import ray

from rolekd.config import TrainConfig, load_config
from rolekd.pipeline.parallel import RECORD, Resources, training_resources
from rolekd.pipeline.resources import at_once, local_gpus
from rolekd.pipeline.run import run_pipeline

# tiny demo, 2 seeds, a fixed schedule for stage α and only the rows that need no search of their own but A_S
TINY = [
    "teacher.model_args.width=4", "student.model_args.width=4",
    "teacher.train.epochs=2", "student.train.epochs=2",
    "data.reduced_train=60", "data.reduced_val=60",
    "search.population=2", "search.epochs=1", "search.cpus_per_trial=1",
    "distill.method=soft", "pipeline.seeds=[0,1]",
    "pipeline.baselines=[teacher_vanilla,student_kd]", "pipeline.stage_alpha.schedule=pba-rcifar10",
    "teacher.train.cpus=0.5", "student.train.cpus=0.5",  # 1 intra-op thread each, here and in a worker
]


@pytest.fixture(autouse=True)
def _ray_down():
    yield
    if ray.is_initialized():
        ray.shutdown()


def quiet(*_args, **_kw):
    return None


def _accuracies(report: dict) -> dict[str, list[float]]:
    return {r["key"]: r["last_per_seed"] for r in report["rows"]}


def test_one_training_per_slot_from_the_roles_resources():
    assert training_resources(TrainConfig(), cpus=8, gpus=0) == Resources(8.0, 0.0)  # all CPUs: one at a time
    assert training_resources(TrainConfig(), cpus=16, gpus=4) == Resources(4.0, 1.0)  # a GPU and a CPU share each
    assert training_resources(TrainConfig(cpus=2), cpus=8, gpus=0) == Resources(2.0, 0.0)
    # how many at once: raycluster.slots (tests/test_raycluster.py), at least one, at most pipeline.max_parallel
    assert at_once(Resources(8.0, 0.0), 8, 0, cap=None) == 1
    assert at_once(Resources(2.0, 0.0), 8, 0, cap=None) == 4
    assert at_once(Resources(2.0, 0.0), 8, 0, cap=3) == 3  # pipeline.max_parallel
    assert at_once(Resources(1.0, 1.0), 16, 2, cap=None) == 2  # GPUs bound it
    assert at_once(Resources(0.5, 0.25), 16, 1, cap=None) == 4  # trainings sharing one GPU
    assert at_once(Resources(4.0, 0.0), 2, 0, cap=None) == 1  # a training larger than the machine still runs


@pytest.mark.slow
def test_parallel_trainings_give_the_sequential_runs_numbers_and_resume_skips_them(tmp_path):
    said: list[str] = []
    parallel = run_pipeline(load_config("demo", TINY), tmp_path / "par", say=said.append)
    assert any("teacher trainings: 4 at once on a local Ray" in line for line in said), said
    ray.shutdown()
    sequential = run_pipeline(load_config("demo", [*TINY, "pipeline.max_parallel=1"]), tmp_path / "seq", say=quiet)
    assert _accuracies(parallel) == _accuracies(sequential)
    assert set(_accuracies(parallel)) == {"teacher_alpha", "teacher_vanilla", "student_beta", "student_kd"}
    # the parallel run's trainings ran in Ray workers, not in this process; the sequential one records none
    records = [json.loads(line) for line in (tmp_path / "par" / RECORD).read_text().splitlines()]
    assert len(records) == 8 and all(r["pid"] != os.getpid() for r in records)
    assert not (tmp_path / "seq" / RECORD).exists()
    # --resume: every training is found finished and skipped; the report is the same
    said.clear()
    again = run_pipeline(load_config("demo", TINY), tmp_path / "par", resume=True, say=said.append)
    assert sum("done already" in line for line in said) == 8
    assert _accuracies(again) == _accuracies(parallel)


DIES_ONCE = '''
import os
from pathlib import Path
from torch import nn
from rolekd.models import build_model, register_model


class DiesOnce(nn.Module):
    """A CNN whose worker process dies at its ``after``-th training step unless ``marker`` exists (then it is made)."""

    def __init__(self, num_classes, marker, after):
        super().__init__()
        self.net, self.marker, self.after, self.calls = build_model("cnn", num_classes, width=4), Path(marker), after, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.after and not self.marker.exists():
                self.marker.write_text(str(os.getpid()))
                os._exit(1)  # the worker dies as a killed process does: no exception, no cleanup
        return self.net(x)


@register_model("dies_once")
def dies_once(num_classes, marker="", after=10):
    return DiesOnce(num_classes, marker, after)
'''


@pytest.mark.slow
def test_a_training_whose_worker_dies_is_retried_and_continues_from_its_checkpoint(tmp_path):
    from rolekd.plugins import import_user_modules

    (tmp_path / "dies_once.py").write_text(DIES_ONCE)
    import_user_modules([str(tmp_path / "dies_once.py")])
    marker = tmp_path / "died"
    # the demo's teacher takes 22 steps an epoch: the first worker to reach its 30th dies in epoch 2, once
    cfg = load_config("demo", [*TINY, "teacher.model=dies_once", "teacher.train.epochs=3",
                               f"teacher.model_args={{marker: '{marker}', after: 30}}"])
    report = run_pipeline(cfg, tmp_path / "run", say=quiet)
    assert marker.is_file() and int(marker.read_text()) != os.getpid()  # a Ray worker died, not this process
    for key in ("teacher_alpha", "teacher_vanilla"):
        for seed in (0, 1):
            row = "stage_alpha/teacher" if key == "teacher_alpha" else f"baselines/{key}"
            folder = tmp_path / "run" / row / f"seed{seed}"
            epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
            assert epochs == [1, 2, 3], (key, seed, epochs)  # the retried one resumed: no epoch lost or repeated
    assert {r["key"] for r in report["rows"]} == {"teacher_alpha", "teacher_vanilla", "student_beta", "student_kd"}


def _metrics(folder, times):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "time_s": t}) + "\n"
                                                  for e, t in enumerate(times)))


def test_progress_shows_each_training_in_flight_once_per_epoch_with_its_eta_and_the_runs(tmp_path):
    from rolekd.pipeline.parallel import Job
    from rolekd.pipeline.progress_board import Board

    jobs = [Job("student_kd", "student", seed, tmp_path / f"seed{seed}", 10) for seed in (0, 1)]
    _metrics(jobs[0].folder, [3.0, 3.0])
    said: list[str] = []
    board = Board(said.append, lambda: "run ETA 1:00")
    board.show(jobs)
    board.show(jobs)  # nothing new: nothing said
    assert said == ["   student_kd (seed 0): epoch 2/10, ETA 0:24 │ run ETA 1:00"]  # 8 epochs left at 3 s
    board.finished(jobs[0], {"last": {"val_acc": 0.5}})
    assert said[-1] == "   finished student_kd (seed 0), test 50.00% │ run ETA 1:00"


def test_the_runs_eta_adds_what_is_left_at_the_measured_rates_and_names_what_is_not_measured(tmp_path):
    from rolekd.pipeline.eta import PlannedSearch, PlannedTraining, RunEta

    teachers = [PlannedTraining("teacher", tmp_path / f"t{i}", 4) for i in range(3)]
    students = [PlannedTraining("student", tmp_path / f"s{i}", 5) for i in range(2)]
    alpha = PlannedSearch("teacher", tmp_path / "alpha", trial_epochs=10)
    beta = PlannedSearch("student", tmp_path / "beta", trial_epochs=8)
    eta = RunEta(teachers + students, [alpha, beta])
    assert eta.line({"teacher": 1, "student": 1}) == ""  # nothing measured: nothing said
    _metrics(teachers[0].folder, [2.0] * 4)  # finished
    _metrics(teachers[1].folder, [2.0])  # 3 epochs left; the third training 4
    assert eta.line({"teacher": 1, "student": 1}) == ("run ETA > 0:14 (+ student trainings, teacher search, student "
                                                      "search: not measured yet)")
    # two at once share the 7 epochs left, but never finish before the longest training left (4 epochs)
    assert eta.line({"teacher": 2}).startswith("run ETA > 0:08 ")
    alpha.folder.mkdir()
    (alpha.folder / "search_summary.json").write_text(json.dumps({"wall_time_s": 100.0}))  # 10 s a trial-epoch
    _metrics(students[0].folder, [3.0])  # a student epoch costs 1.5 teacher epochs
    # 14 s of teachers + 4 x 3 + 5 x 3 s of students + the student search 10 s x 1.5 x 8 trial-epochs
    assert eta.line({"teacher": 1, "student": 1}) == f"run ETA {(14 + 27 + 120) // 60}:{(14 + 27 + 120) % 60:02d}"
    eta.searching = "student"
    assert eta.line({"teacher": 1, "student": 1}) == "run ETA > 0:41 (+ student search in progress: not measured yet)"


def test_a_cpu_config_takes_no_gpu_even_where_one_is_present(monkeypatch):
    from rolekd.pipeline import parallel
    from rolekd.pipeline.parallel import Trainings

    monkeypatch.setattr("rolekd.raycluster.local_gpus", lambda: 4)
    cfg = load_config("demo", ["device=cpu"])
    trainings = Trainings(cfg.training(), None, None, address=None, cap=None, train_here=None, record_time=None,
                          say=quiet)
    assert local_gpus(cfg.device) == 0 and trainings.jobs.capacity.gpus == 0.0
    assert parallel.training_resources(cfg.teacher.train, 8, local_gpus(cfg.device)).gpus == 0.0
    auto = Trainings(load_config("demo").training(), None, None, address=None, cap=None, train_here=None,
                     record_time=None, say=quiet)
    assert local_gpus(load_config("demo").device) == 4 and auto.jobs.capacity.gpus == 4.0


def _trainings(cfg, prep, out, said, trained=None):
    from rolekd.pipeline.parallel import Trainings

    def train_here(job, cpus):
        trained.append(job.label)

    return Trainings(cfg.training(), prep, out, address=None, cap=cfg.pipeline.max_parallel, train_here=train_here,
                     record_time=lambda key, s: None, say=said.append)


def test_in_one_slot_the_queue_trains_in_order_only_as_far_as_a_wait_needs_and_a_student_after_its_teacher(tmp_path):
    from rolekd.pipeline.parallel import Job

    trained: list[str] = []
    trainings = _trainings(load_config("demo", ["device=cpu"]), None, tmp_path, [], trained)
    assert not trainings.on_ray  # all CPUs per training: one at a time, in this process
    t0, t1 = (Job("teacher_alpha", "teacher", s, tmp_path / f"t{s}", 2) for s in (0, 1))
    s1 = Job("student_kd", "student", 1, tmp_path / "s1", 2, after=t1.label)
    with trainings:
        trainings.add([t0, s1, t1])  # the student of seed 1 is queued before its teacher
        assert trainings.jobs.next_up() == [t1, t0]  # on Ray: first the teacher a student waits for; the student after it
        trainings.wait([t0.label])
        assert trained == [t0.label]  # only as far as the stage-β search needs
        trainings.wait()
    assert trained == [t0.label, t1.label, s1.label]  # the student waited for its teacher
    with pytest.raises(ValueError, match=r"cannot wait for \['teacher_alpha \(seed 2\)'\]: not trainings of this"):
        trainings.wait(["teacher_alpha (seed 2)"])
    with pytest.raises(ValueError, match=r"student_kd \(seed 2\) waits for teacher_alpha \(seed 2\), which is not"):
        trainings.add([Job("student_kd", "student", 2, tmp_path / "s2", 2, after="teacher_alpha (seed 2)")])


WAITS_FOR_GO = '''
import time
from pathlib import Path
from torch import nn
from rolekd.models import build_model, register_model


class WaitsForGo(nn.Module):
    """A CNN whose training steps wait until the file ``go`` exists (two minutes at most)."""

    def __init__(self, num_classes, go):
        super().__init__()
        self.net, self.go = build_model("cnn", num_classes, width=4), Path(go)

    def forward(self, x):
        t0 = time.time()
        while self.training and not self.go.exists():
            if time.time() - t0 > 120:
                raise RuntimeError("no go")
            time.sleep(0.05)
        return self.net(x)


@register_model("waits_for_go")
def waits_for_go(num_classes, go=""):
    return WaitsForGo(num_classes, go)
'''


@pytest.mark.slow
def test_on_ray_a_wait_returns_while_other_trainings_go_on_and_a_student_starts_only_after_its_teacher(tmp_path):
    from rolekd.pipeline.parallel import Job
    from rolekd.pipeline.setup import prepare
    from rolekd.plugins import import_user_modules

    (tmp_path / "waits_for_go.py").write_text(WAITS_FOR_GO)
    import_user_modules([str(tmp_path / "waits_for_go.py")])
    go = tmp_path / "go"
    cfg = load_config("demo", [*TINY, "teacher.model=waits_for_go", f"teacher.model_args={{go: '{go}'}}",
                               "teacher.train.epochs=1", "student.train.epochs=1"])
    said: list[str] = []
    trainings = _trainings(cfg, prepare(cfg), tmp_path, said)
    teacher = Job("teacher_alpha", "teacher", 0, tmp_path / "teacher", 1)
    student = Job("student_vanilla", "student", 0, tmp_path / "student", 1)
    on_teacher = Job("student_kd", "student", 0, tmp_path / "on_teacher", 1, teacher=str(teacher.folder / "last.pt"),
                     distill=True, after=teacher.label)
    with trainings:
        trainings.add([teacher, on_teacher, student])
        assert trainings.on_ray
        trainings.wait([student.label])  # returns although the teacher is still training (it waits for `go`)
        assert trainings.jobs.finished == {student.label}
        assert [j.label for j in trainings.jobs.running.values()] == [teacher.label]
        assert [j.label for j in trainings.jobs.queued] == [on_teacher.label] and not on_teacher.folder.exists()
        go.touch()
        trainings.wait()
    assert trainings.jobs.finished == {student.label, teacher.label, on_teacher.label}
    rows = [json.loads(line)["row"] for line in (tmp_path / RECORD).read_text().splitlines()]
    assert rows == ["student_vanilla", "teacher_alpha", "student_kd"]  # in the order they finished


def test_while_a_search_runs_new_trainings_get_only_what_its_trials_leave(tmp_path):
    from rolekd.pipeline.parallel import Job

    cfg = load_config("demo", ["device=cpu", "teacher.train.cpus=2", "student.train.cpus=2"])
    trainings = _trainings(cfg, None, tmp_path, [])
    trainings.jobs.capacity = Resources(8.0, 0.0)  # what RayTrainings.start reads from Ray
    job = Job("teacher_vanilla", "teacher", 0, tmp_path / "t", 2)
    trainings.jobs.running = {"ref1": job, "ref2": job}  # 4 of 8 CPUs training
    assert trainings.jobs.fits(job)
    with trainings.reserved(Resources(4.0, 1.0)):  # the search's 4 CPUs (its GPU share: none here to keep)
        assert not trainings.jobs.fits(job)
        trainings.jobs.running = {}
        assert trainings.jobs.fits(job)  # 4 left beside the search
    with trainings.reserved(Resources(8.0, 0.0)):
        assert not trainings.jobs.fits(job)  # nothing left: trainings wait for the search, even on an idle machine
    assert trainings.jobs.fits(job)  # the search is over
    # kept from the moment the training the search waits for finishes, before the loop can hand its CPUs on
    teacher = Job("teacher_alpha", "teacher", 0, tmp_path / "a", 2)
    trainings.jobs.running = {"ref1": teacher}
    with trainings.reserved(Resources(7.0, 0.0), after=teacher.label):
        assert trainings.jobs.fits(job)  # the teacher is still training: nothing kept yet
        with trainings._cv:
            trainings.jobs.stop("ref1")
        assert not trainings.jobs.fits(job)  # 1 CPU left beside the search
    assert trainings.jobs.fits(job)


def test_a_jobs_epochs_are_the_ones_its_trainer_runs_and_complete_expects(tmp_path):
    from rolekd.pipeline.parallel import Job, train_job
    from rolekd.pipeline.setup import prepare

    cfg = load_config("demo", [*TINY, "teacher.train.epochs=3"])
    job = Job("teacher_vanilla", "teacher", 0, tmp_path / "t", 1)  # the run's answer, not the config's 3
    assert not job.complete
    train_job(cfg, prepare(cfg), job, None)
    assert len((job.folder / "metrics.jsonl").read_text().splitlines()) == 1 and job.complete
