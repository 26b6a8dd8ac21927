"""metrics.jsonl appended a line an epoch, TensorBoard scalars beside it (training/events.py, atomic.append_jsonl)."""

import json
import struct
from pathlib import Path

import pytest
import torch
from tensorboardX.proto.event_pb2 import Event, SessionLog

from rolekd.atomic import append_jsonl, read_jsonl
from rolekd.training import fit
from rolekd.training.events import MetricsLog

from test_train import make_trainer

TIMES = ("time_s", "epoch_time_s", "images_per_s")


def read_scalars(folder: Path, suffix: str = ".metrics") -> dict[str, dict[int, float]]:
    """What TensorBoard shows: every scalar by tag and step, reading the TFRecord framing of each event file in
    name order and honouring its purge marker (a SessionLog START hides earlier-written steps from its step on)."""
    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob(f"events.out.tfevents.*{suffix}")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            if event.session_log.status == SessionLog.START:
                for steps in scalars.values():
                    for step in [s for s in steps if s >= event.step]:
                        del steps[step]
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def without_times(rows):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


def test_fit_writes_each_epochs_metrics_as_tensorboard_scalars(tmp_path):
    fit(make_trainer(epochs=3), tmp_path, meta={"model": "cnn"})
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    scalars = read_scalars(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert set(scalars) == {k for k in rows[0] if k != "epoch"}
    for tag in ("train_loss", "val_acc", "lr", "best_acc"):
        assert scalars[tag] == {r["epoch"]: pytest.approx(r[tag]) for r in rows}, tag
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_resumed_run_metrics_and_curves_equal_an_uninterrupted_one(tmp_path):
    fit(make_trainer(), tmp_path / "a", meta={"model": "cnn"})

    def die(kind, info):
        if kind == "step" and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(make_trainer(), tmp_path / "b", meta={"model": "cnn"}, callback=die)
    # a kill between the metrics line and last.pt: epoch 3's line (and scalars) are written, its checkpoint is not
    stale = {**read_jsonl(tmp_path / "b" / "metrics.jsonl")[-1], "epoch": 3, "val_acc": 0.123}
    with MetricsLog(tmp_path / "b", resume_epoch=2) as log:
        log.append(stale)
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "train_lo')  # and a torn line after it
    torch.manual_seed(5)
    fit(make_trainer(), tmp_path / "b", meta={"model": "cnn"}, resume=True)

    a, b = read_jsonl(tmp_path / "a" / "metrics.jsonl"), read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert without_times(a) == without_times(b)
    assert (tmp_path / "b" / "metrics.jsonl").read_text().count("\n") == 4
    curves_a, curves_b = read_scalars(tmp_path / "a"), read_scalars(tmp_path / "b")
    for tag in ("train_loss", "val_acc", "best_epoch"):
        assert curves_b[tag] == pytest.approx(curves_a[tag]), tag
    assert curves_b["val_acc"][3] != 0.123


def test_a_fresh_log_replaces_an_old_one_and_only_its_own_event_files(tmp_path):
    with MetricsLog(tmp_path) as log:
        log.append({"epoch": 1, "loss": 2.0})
    with MetricsLog(tmp_path, filename="trial.jsonl") as other:
        other.append({"epoch": 1, "loss": 9.0})
    with MetricsLog(tmp_path) as log:
        assert log.rows() == []
        log.append({"epoch": 1, "loss": 1.0})
    assert read_scalars(tmp_path)["loss"] == {1: 1.0}
    assert read_scalars(tmp_path, ".trial")["loss"] == {1: 9.0}


def test_resume_keeps_rows_up_to_the_epoch_and_hides_later_steps(tmp_path):
    with MetricsLog(tmp_path) as first:
        for e in (1, 2, 3, 4):
            first.append({"epoch": e, "acc": e / 10})
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"epoch": 5, "a')
    log = MetricsLog(tmp_path, resume_epoch=2)
    assert [r["epoch"] for r in log.rows()] == [1, 2]
    log.append({"epoch": 3, "acc": 0.5, "note": "text is kept in the line, not plotted", "ok": True})
    log.close()
    assert [r["acc"] for r in read_jsonl(path)] == [0.1, 0.2, 0.5]
    assert read_scalars(tmp_path) == {"acc": {1: pytest.approx(0.1), 2: pytest.approx(0.2), 3: 0.5}}  # no step 4


def test_append_cuts_a_torn_last_line_and_only_a_last_line_may_be_torn(tmp_path):
    path = tmp_path / "trainings.jsonl"
    append_jsonl(path, {"row": "a"})
    with open(path, "a") as f:
        f.write('{"row": "b", "no')  # killed mid-line
    assert read_jsonl(path) == [{"row": "a"}]
    append_jsonl(path, {"row": "c"})
    assert path.read_text() == '{"row": "a"}\n{"row": "c"}\n'
    path.write_text('{"row": "a"}\n{"ro\n{"row": "c"}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_jsonl(path)


def test_a_record_without_an_integer_epoch_is_refused_in_one_line(tmp_path):
    with MetricsLog(tmp_path) as log, pytest.raises(ValueError, match="integer 'epoch'") as exc:
        log.append({"step": 3, "loss": 1.0})
    assert "\n" not in str(exc.value) and not (tmp_path / "metrics.jsonl").exists()
