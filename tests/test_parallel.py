"""`rolekd run`'s trainings several at once on Ray: the same numbers as one after another, resume, and slots."""

from __future__ import annotations

import json
import os

import pytest
import ray

from rolekd.config import TrainConfig, load_config
from rolekd.pipeline.parallel import RECORD, Resources, at_once, training_resources
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
    assert at_once(Resources(8.0, 0.0), 8, 0, None) == 1
    assert at_once(Resources(2.0, 0.0), 8, 0, None) == 4
    assert at_once(Resources(2.0, 0.0), 8, 0, 3) == 3  # pipeline.max_parallel
    assert at_once(Resources(1.0, 1.0), 16, 2, None) == 2  # GPUs bound it
    assert at_once(Resources(0.5, 0.25), 16, 1, None) == 4  # trainings sharing one GPU
    assert at_once(Resources(4.0, 0.0), 2, 0, None) == 1  # a training larger than the machine still runs


@pytest.mark.slow
def test_parallel_trainings_give_the_sequential_runs_numbers_and_resume_skips_them(tmp_path):
    said: list[str] = []
    parallel = run_pipeline(load_config("demo", TINY), tmp_path / "par", say=said.append)
    assert any("trainings, 4 at once on a local Ray" in line for line in said), said
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


def test_progress_shows_each_training_in_flight_once_per_epoch_with_its_eta_and_the_phases(tmp_path):
    from rolekd.pipeline.parallel import Job, _Board

    jobs = [Job("student_kd", "student", seed, tmp_path / f"seed{seed}", 10) for seed in (0, 1)]
    for job, epochs in zip(jobs, (2, 0)):
        job.folder.mkdir()
        if epochs:
            (job.folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "time_s": 3.0}) + "\n"
                                                              for e in range(epochs)))
    said: list[str] = []
    board = _Board(jobs, at_once=2, say=said.append)
    board.show(jobs)
    board.show(jobs)  # nothing new: nothing said
    # 8 epochs left at 3 s; the phase: 8 + 10 epochs left at 3 s, 2 at once
    assert said == ["   student_kd (seed 0): epoch 2/10, ETA 0:24 │ phase ETA 0:27"]
    board.finished(jobs[0], {"last": {"val_acc": 0.5}})
    assert said[-1] == "   finished student_kd (seed 0), test 50.00% (1 of 2, phase ETA 0:15)"


def test_a_cpu_config_takes_no_gpu_even_where_one_is_present(monkeypatch):
    from rolekd.pipeline import parallel
    from rolekd.pipeline.parallel import Trainings

    monkeypatch.setattr("rolekd.pba.run.local_gpus", lambda: 4)
    cfg = load_config("demo", ["device=cpu"])
    trainings = Trainings(cfg.training(), None, None, address=None, cap=None, train_here=None, record_time=None,
                          say=quiet)
    assert trainings._local_gpus() == 0
    assert parallel.training_resources(cfg.teacher.train, 8, trainings._local_gpus()).gpus == 0.0
    auto = Trainings(load_config("demo").training(), None, None, address=None, cap=None, train_here=None,
                     record_time=None, say=quiet)
    assert auto._local_gpus() == 4
