"""Which of a run's trainings may start now (``pipeline.job_queue``): no Ray, no threads, no files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolekd.pipeline.in_process import train_in_order
from rolekd.pipeline.job_queue import JobQueue
from rolekd.pipeline.jobs import Job
from rolekd.pipeline.resources import Resources

TWO_CPUS = {"teacher": Resources(2.0, 0.0), "student": Resources(2.0, 0.0)}


def job(key: str, seed: int = 0, after: Job | None = None) -> Job:
    role = "teacher" if key.startswith("teacher") else "student"
    return Job(key, role, seed, Path(f"/nowhere/{key}/{seed}"), 1, after=after.label if after else None)


def queue(*jobs: Job, cpus: float = 8.0, cap: int | None = None) -> JobQueue:
    q = JobQueue(TWO_CPUS, Resources(cpus, 0.0), cap)
    q.check(jobs)
    for j in jobs:
        q.add(j)
    return q


def started(q: JobQueue) -> list[str]:
    """Start what ``take`` hands out until nothing more may start now, as an executor does."""
    labels = []
    while (j := q.take()) is not None:
        q.start(j, j.label)
        labels.append(j.label)
    return labels


def test_teachers_others_wait_for_start_first_then_queue_order():
    t0, t1 = job("teacher_alpha", 0), job("teacher_alpha", 1)
    vanilla, kd1 = job("student_vanilla"), job("student_kd", 1, after=t1)
    q = queue(vanilla, kd1, t0, t1)
    assert q.ready() == [vanilla, t0, t1]  # kd1 waits for its teacher
    assert q.next_up() == [t1, vanilla, t0]  # the awaited teacher first, then in queue order
    assert started(q) == [t1.label, vanilla.label, t0.label]  # 6 of 8 CPUs: kd1 still waits for t1


def test_a_student_starts_only_once_its_after_job_has_finished():
    t = job("teacher_alpha")
    kd = job("student_kd", after=t)
    q = queue(kd, t)
    assert started(q) == [t.label] and q.queued == [kd]
    assert not q.satisfied({t.label})
    q.stop(t.label)
    assert q.satisfied({t.label}) and not q.satisfied(None)
    assert started(q) == [kd.label]
    q.stop(kd.label)
    assert q.satisfied(None) and q.finished == {t.label, kd.label}


def test_an_after_that_is_not_a_training_of_the_run_is_refused():
    q = queue(job("teacher_alpha"))
    q.check([job("student_kd", after=job("teacher_alpha"))])  # known: queued
    with pytest.raises(ValueError, match=r"student_kd \(seed 1\) waits for teacher_alpha \(seed 1\), which is not"):
        q.check([job("student_kd", 1, after=job("teacher_alpha", 1))])


def test_trainings_fill_the_free_resources_and_the_cap():
    jobs = [job("student_vanilla", s) for s in range(5)]
    assert len(started(queue(*jobs, cpus=8.0))) == 4
    assert len(started(queue(*jobs, cpus=8.0, cap=3))) == 3
    assert len(started(queue(*jobs, cpus=1.0))) == 1  # larger than the machine: still one, alone


def test_the_reservation_keeps_the_searchs_share_from_new_trainings_only():
    jobs = [job("student_vanilla", s) for s in range(4)]
    q = queue(*jobs)
    q.start(jobs[0], "a")
    q.start(jobs[1], "b")  # 4 of 8 CPUs training
    q.reserve(Resources(4.0, 0.0))
    assert q.take() is None  # the ones running go on; nothing new beside the search
    q.stop("a")
    assert started(q) == [jobs[2].label]  # 8 CPUs - the search's 4 - one training's 2: room for one more
    q.release()
    assert started(q) == [jobs[3].label]


def test_a_reservation_of_everything_holds_new_trainings_even_on_an_idle_machine():
    q = queue(job("student_vanilla"))
    q.reserve(Resources(8.0, 0.0))
    assert q.take() is None
    q.release()
    assert q.take() is not None


def test_the_reservation_is_taken_from_the_moment_its_trigger_job_finishes():
    teacher, other = job("teacher_alpha"), job("teacher_vanilla")
    q = queue(teacher, other, cpus=8.0)
    q.start(teacher, "t")
    q.reserve(Resources(7.0, 0.0), after=teacher.label)
    assert q.reserved == Resources(0.0, 0.0) and q.fits(other)  # the teacher still trains: nothing kept yet
    q.stop("t")  # what it frees goes to the search before anything else can start
    assert q.reserved == Resources(7.0, 0.0) and q.take() is None
    q.release()
    assert q.take() == other


def test_a_reservation_after_a_finished_job_is_kept_at_once():
    teacher = job("teacher_alpha")
    q = queue(teacher)
    q.start(teacher, "t")
    q.stop("t")
    q.reserve(Resources(3.0, 0.0), after=teacher.label)
    assert q.reserved == Resources(3.0, 0.0)


def test_in_process_trains_ready_jobs_in_queue_order_only_as_far_as_wanted():
    t0, t1 = job("teacher_alpha", 0), job("teacher_alpha", 1)
    kd1 = job("student_kd", 1, after=t1)
    q = queue(kd1, t0, t1)
    trained: list[str] = []
    train_in_order(q, {t0.label}, lambda j: trained.append(j.label))
    assert trained == [t0.label]
    train_in_order(q, None, lambda j: trained.append(j.label))
    assert trained == [t0.label, t1.label, kd1.label] and q.satisfied(None)


def test_in_process_says_when_what_a_job_waits_for_is_not_queued():
    t = job("teacher_alpha")
    q = JobQueue(TWO_CPUS, Resources(8.0, 0.0))
    q.add(job("student_kd", after=t))  # unchecked: its teacher never comes
    with pytest.raises(RuntimeError, match="cannot start: what they wait for is not queued"):
        train_in_order(q, None, lambda j: None)


def test_a_finished_job_stays_finished_when_its_checkpoints_are_pruned(tmp_path):
    """A study carried between machines keeps each finished training's metrics and finished.json, not its
    checkpoints: --resume must not train it again; a marker of another length (the config changed) does not count."""
    import json

    from rolekd.pipeline.jobs import FINISHED, Job

    job = Job("student_kd", "student", 0, tmp_path / "seed0", epochs=40)
    assert not job.complete
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / FINISHED).write_text(json.dumps({"epochs": 30, "last": {}}))
    assert not job.complete
    (tmp_path / "seed0" / FINISHED).write_text(json.dumps({"epochs": 40, "last": {"val_acc": 0.5}}))
    assert job.complete
    (tmp_path / "seed0" / FINISHED).write_text("{torn")
    assert not job.complete
